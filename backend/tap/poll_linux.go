package tap

import (
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/offload"
)

var _ vswitch.Poller = (*Device)(nil)

// batchSize is Device.BatchSize: a batch amortises the switch's work per
// call (Input's clock read, port list, capture check) over the frames
// waiting, and bounds the runs of UDP datagrams the switch can merge into
// one super-frame (vswitch.UDPSegmentPort). It costs 32 receive buffers
// of 64 KiB per tap, touched only as far as batches fill them.
const batchSize = 32

// PollFrames implements vswitch.Poller: it reads the frames waiting in the
// tap, up to len(bufs), without waiting.
func (d *Device) PollFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	rf := d.f.(*rawFile)
	n := 0
	for n < len(bufs) {
		b := bufs[n][offset:]
		if d.vnet {
			b = bufs[n][offset-offload.HdrLen:]
		}
		m, ok, err := rf.TryRead(b)
		if !ok {
			break
		}
		if err != nil {
			if n > 0 {
				break // the frames read first go on; the error comes again
			}
			return 0, d.ioError("read", err)
		}
		if d.vnet {
			if m < offload.HdrLen {
				continue
			}
			m -= offload.HdrLen
		}
		sizes[n] = m
		n++
	}
	return n, nil
}

// WaitFrames implements vswitch.Poller.
func (d *Device) WaitFrames(ready func() bool) error {
	if err := d.f.(*rawFile).Wait(ready); err != nil {
		return d.ioError("read", err)
	}
	return nil
}
