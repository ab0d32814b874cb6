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
	from, least := offset, 0
	if d.vnet {
		// each frame behind its virtio-net header; one shorter than the
		// header is dropped
		from, least = offset-offload.HdrLen, offload.HdrLen
	}
	n, err := d.f.(*rawFile).TryReadBatch(bufs, sizes, from, least)
	if d.vnet {
		for i := range n {
			sizes[i] -= offload.HdrLen
		}
	}
	if err != nil && n == 0 {
		return 0, d.ioError("read", err)
	}
	return n, nil // the frames read first go on; an error comes again
}

// WaitFrames implements vswitch.Poller.
func (d *Device) WaitFrames(ready func() bool) error {
	if err := d.f.(*rawFile).Wait(ready); err != nil {
		return d.ioError("read", err)
	}
	return nil
}
