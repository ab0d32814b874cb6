package vswitch

import (
	"sync"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// smallFrame is the payload capacity of the small buffer class: a full
// 1500-byte-MTU frame with a VLAN tag fits, which is what almost all traffic
// is; larger frames take a buffer sized for Config.MaxFrame.
const smallFrame = 1536

// frame is a queued copy of one frame: the bytes are buf[Headroom:Headroom+n].
// count is the number of frames received that it carries (see send).
type frame struct {
	buf   []byte
	n     int
	count int
}

// framePool hands out frame buffers in two size classes so that a queue
// full of small frames does not pin 64 KiB per entry.
type framePool struct {
	small, large sync.Pool
	maxFrame     int
}

func newFramePool(maxFrame int) *framePool {
	p := &framePool{maxFrame: maxFrame}
	p.small.New = func() any { return &frame{buf: make([]byte, Headroom+smallFrame)} }
	p.large.New = func() any { return &frame{buf: make([]byte, Headroom+maxFrame)} }
	return p
}

// size returns the length of the buffer get takes for a frame of n bytes.
func (p *framePool) size(n int) int {
	if n <= smallFrame {
		return Headroom + smallFrame
	}
	return Headroom + p.maxFrame
}

// get returns a frame holding a copy of buf[offset:], and of the
// virtio-net header in front of it (see OffloadPort).
func (p *framePool) get(buf []byte, offset int) *frame {
	var f *frame
	if len(buf)-offset <= smallFrame {
		f = p.small.Get().(*frame)
	} else {
		f = p.large.Get().(*frame)
	}
	f.n = copy(f.buf[Headroom-offload.HdrLen:], buf[offset-offload.HdrLen:]) - offload.HdrLen
	return f
}

func (p *framePool) put(f *frame) {
	if len(f.buf) == Headroom+smallFrame {
		p.small.Put(f)
	} else {
		p.large.Put(f)
	}
}
