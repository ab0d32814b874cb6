// Package porttest provides an in-memory vswitch.Port for tests of the
// switch and of packages built on it, after wireguard-go's tun/tuntest.
//
// Frames given to Send are what the port "receives" from its outside world:
// the switch reads them with ReadFrames. Frames the switch writes come out
// of Recv (or are only counted, with Config.Discard).
package porttest

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/offload"
)

// Config configures a Port. The zero value is usable.
type Config struct {
	// Name is returned by String (default "mem").
	Name string
	// BatchSize is the port's batch size (default 16).
	BatchSize int
	// MTU is reported by MTU (default 1500).
	MTU int
	// OutLen is the capacity of the channel behind Recv (default 1024).
	// When it is full WriteFrames blocks, like a peer that reads slowly.
	OutLen int
	// Discard counts written frames instead of keeping them for Recv.
	Discard bool
	// Offload makes the port a vswitch.OffloadPort: frames carry a
	// virtio-net header (see SendOffload and RecvOffload).
	Offload bool
	// UDPSegments makes an Offload port take UDP super-frames
	// (vswitch.UDPSegmentPort), as a tap does on Linux 6.2 and later.
	UDPSegments bool
}

// Port is an in-memory vswitch.Port.
type Port struct {
	cfg    Config
	in     chan []byte
	out    chan []byte
	closed chan struct{}
	once   sync.Once

	stalled chan struct{} // closed by Stall

	written, writtenBytes atomic.Uint64
}

var (
	_ vswitch.Port           = (*Port)(nil)
	_ vswitch.OffloadPort    = (*Port)(nil)
	_ vswitch.UDPSegmentPort = (*Port)(nil)
)

// New returns an open Port.
func New(cfg Config) *Port {
	if cfg.Name == "" {
		cfg.Name = "mem"
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 16
	}
	if cfg.MTU <= 0 {
		cfg.MTU = 1500
	}
	if cfg.OutLen <= 0 {
		cfg.OutLen = 1024
	}
	return &Port{
		cfg:     cfg,
		in:      make(chan []byte),
		out:     make(chan []byte, cfg.OutLen),
		closed:  make(chan struct{}),
		stalled: make(chan struct{}, 1),
	}
}

// SendOffload hands frame to the switch with the virtio-net header hdr
// (offload.HdrLen bytes), for a port with Config.Offload. It blocks like
// Send.
func (p *Port) SendOffload(hdr, frame []byte) error {
	return p.Send(append(append([]byte(nil), hdr...), frame...))
}

// RecvOffload is Recv for a port with Config.Offload: it returns the
// header the switch wrote in front of the frame, and the frame.
func (p *Port) RecvOffload(timeout time.Duration) (hdr, frame []byte, ok bool) {
	f, ok := p.Recv(timeout)
	if !ok {
		return nil, nil, false
	}
	return f[:offload.HdrLen], f[offload.HdrLen:], true
}

// Send hands frame to the switch as if it had arrived on the port. It
// blocks until the switch has read it and fails once the port is closed.
// The port keeps frame until then; the caller must not modify it earlier.
func (p *Port) Send(frame []byte) error {
	select {
	case p.in <- frame:
		return nil
	case <-p.closed:
		return net.ErrClosed
	}
}

// Recv returns the next frame the switch wrote to the port, waiting at most
// timeout. ok is false on timeout or after Close.
func (p *Port) Recv(timeout time.Duration) (frame []byte, ok bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f := <-p.out:
		return f, true
	case <-t.C:
		return nil, false
	case <-p.closed:
		return nil, false
	}
}

// Stall makes every later WriteFrames block until Close: a peer that has
// stopped reading entirely.
func (p *Port) Stall() {
	select {
	case p.stalled <- struct{}{}:
	default:
	}
}

// Written returns how many frames and bytes WriteFrames accepted.
func (p *Port) Written() (frames, bytes uint64) {
	return p.written.Load(), p.writtenBytes.Load()
}

// ReadFrames implements vswitch.Port.
func (p *Port) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	var f []byte
	select {
	case f = <-p.in:
	case <-p.closed:
		return 0, net.ErrClosed
	}
	n := 0
	for {
		if p.cfg.Offload { // the header goes in front of the frame
			sizes[n] = copy(bufs[n][offset-offload.HdrLen:], f) - offload.HdrLen
		} else {
			sizes[n] = copy(bufs[n][offset:], f)
		}
		n++
		if n == len(bufs) {
			return n, nil
		}
		select {
		case f = <-p.in:
		default:
			return n, nil
		}
	}
}

// WriteFrames implements vswitch.Port.
func (p *Port) WriteFrames(bufs [][]byte, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, net.ErrClosed
	case <-p.stalled:
		p.stalled <- struct{}{}
		<-p.closed
		return 0, net.ErrClosed
	default:
	}
	for i, b := range bufs {
		f := b[offset:]
		if p.cfg.Offload {
			f = b[offset-offload.HdrLen:]
		}
		if p.cfg.Discard {
			p.written.Add(1)
			p.writtenBytes.Add(uint64(len(f)))
			continue
		}
		c := append([]byte(nil), f...)
		select {
		case p.out <- c:
			p.written.Add(1)
			p.writtenBytes.Add(uint64(len(f)))
		case <-p.closed:
			return i, net.ErrClosed
		}
	}
	return len(bufs), nil
}

// Offload implements vswitch.OffloadPort.
func (p *Port) Offload() bool { return p.cfg.Offload }

// AcceptsUDPSegments implements vswitch.UDPSegmentPort.
func (p *Port) AcceptsUDPSegments() bool { return p.cfg.UDPSegments }

// BatchSize implements vswitch.Port.
func (p *Port) BatchSize() int { return p.cfg.BatchSize }

// MTU implements vswitch.Port.
func (p *Port) MTU() int { return p.cfg.MTU }

// Close implements vswitch.Port.
func (p *Port) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

// String implements vswitch.Port.
func (p *Port) String() string { return p.cfg.Name }

// Frame builds an Ethernet frame from dst to src with the given EtherType
// and payload, padded to the 60-byte minimum.
func Frame(dst, src vswitch.MAC, etherType uint16, payload []byte) []byte {
	f := make([]byte, 14, max(60, 14+len(payload)))
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	f[12], f[13] = byte(etherType>>8), byte(etherType)
	f = append(f, payload...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

// MAC returns the locally administered unicast address 02:00:00:00:hi:lo
// for test station n.
func MAC(n int) vswitch.MAC {
	if n < 0 || n > 0xffff {
		panic(fmt.Sprintf("porttest.MAC(%d): out of range", n))
	}
	return vswitch.MAC{0x02, 0, 0, 0, byte(n >> 8), byte(n)}
}

// Broadcast is ff:ff:ff:ff:ff:ff.
var Broadcast = vswitch.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// SocketDir returns a new directory for a test's unix sockets, removed when
// the test ends. t.TempDir's path holds the test's name and can exceed
// sun_path's 104 bytes on macOS, whose TMPDIR alone is about 49.
func SocketDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ts")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
