package vswitch

import (
	"sync"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// smallFrame is the payload capacity of the small buffer class: a full
// 1500-byte-MTU frame with a VLAN tag fits, which is what almost all traffic
// is.
const smallFrame = 1536

// jumboFrame is the payload capacity of the middle buffer class: a
// 9000-byte-MTU frame with a VLAN tag (9018 bytes) fits. Larger frames
// take a buffer sized for the largest frame the switch forwards.
const jumboFrame = 9216

// frame is a queued copy of one frame: the bytes are buf[Headroom:Headroom+n].
// count is the number of frames received that it carries (see send);
// whole marks a TCP super-frame that the port's transmit goroutine cuts
// (see forwardGSO).
type frame struct {
	buf   []byte
	n     int
	count int
	whole bool
}

// framePool hands out frame buffers in size classes (small, jumbo, the
// largest frame), so that a queue of small or jumbo frames does not pin
// 64 KiB per entry, nor count that much against Config.QueueBytes.
type framePool struct {
	caps  []int // payload capacity of each class, ascending
	pools []sync.Pool
}

func newFramePool(maxFrame int) *framePool {
	p := &framePool{}
	for _, c := range []int{smallFrame, jumboFrame} {
		if c < maxFrame {
			p.caps = append(p.caps, c)
		}
	}
	p.caps = append(p.caps, maxFrame)
	p.pools = make([]sync.Pool, len(p.caps))
	for i, c := range p.caps {
		p.pools[i].New = func() any { return &frame{buf: make([]byte, Headroom+c)} }
	}
	return p
}

// class returns the index of the smallest class that holds n bytes; a
// longer frame than any is the caller's error (Input drops those).
func (p *framePool) class(n int) int {
	last := len(p.caps) - 1
	for i, c := range p.caps[:last] {
		if n <= c {
			return i
		}
	}
	return last
}

// size returns the length of the buffer get takes for a frame of n bytes.
func (p *framePool) size(n int) int {
	return Headroom + p.caps[p.class(n)]
}

// get returns a frame holding a copy of buf[offset:], and of the
// virtio-net header in front of it (see OffloadPort).
func (p *framePool) get(buf []byte, offset int) *frame {
	f := p.pools[p.class(len(buf)-offset)].Get().(*frame)
	f.n = copy(f.buf[Headroom-offload.HdrLen:], buf[offset-offload.HdrLen:]) - offload.HdrLen
	return f
}

func (p *framePool) put(f *frame) {
	p.pools[p.class(len(f.buf)-Headroom)].Put(f)
}
