package tap

import vswitch "github.com/tapswitch/tapswitch/switch"

var _ vswitch.DirectWriter = (*Device)(nil)

// WriteFrameNow implements vswitch.DirectWriter. A tap accepts or refuses
// a frame at once, so the write is always done: the switch writes to a tap
// from the receiving goroutine whenever nothing is queued for it.
func (d *Device) WriteFrameNow(b []byte, offset int) (bool, error) {
	if err := d.writeFrame(b, offset); err != nil {
		return true, d.ioError("write", err)
	}
	return true, nil
}
