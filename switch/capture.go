package vswitch

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// CapturedFrame is a copy of one frame seen by a Capture.
type CapturedFrame struct {
	Time time.Time
	// In is the ID of the port the frame entered by.
	In int
	// Data is the whole Ethernet frame; it belongs to the receiver.
	Data []byte
}

// CaptureConfig selects what a Capture sees.
type CaptureConfig struct {
	// Port limits the capture to frames entering or leaving the port with
	// this ID (flooded frames included); 0 captures every frame that enters
	// the switch. The capture ends (C is closed) when the port leaves the
	// switch, or at once if no port has the ID: it would otherwise record
	// the frames flooded to the other ports.
	Port int
	// Buffer is the number of frames held for a slow reader (default 1024),
	// and MaxBytes the bytes they may hold in all (default
	// DefaultCaptureBytes); frames beyond either are dropped and counted.
	Buffer   int
	MaxBytes int
}

// DefaultCaptureBytes bounds the frames a capture holds for a slow reader:
// 1024 TCP super-frames from taps, of up to 64 KiB each, would pin 64 MiB.
const DefaultCaptureBytes = 4 << 20

// Capture receives copies of the frames crossing the switch, for
// `tapswitch capture`. Frames are captured as they enter the switch, after
// the frame checks: a dropped frame (too short, multicast source) is not
// captured. When no capture is running the data path pays one atomic load
// per batch.
type Capture struct {
	s       *Switch
	cfg     CaptureConfig
	c       chan CapturedFrame
	dropped atomic.Uint64
	// portLeft is set when the capture ended because its port left.
	portLeft atomic.Bool
	once     sync.Once
	// mu is read-held by each offer and write-held by Close, so that no
	// frame is sent on c once it is closed. It is never held while
	// anything else is locked or forwarded: a frame is offered to a
	// capture that Close has just taken off the list, and dropped.
	mu     sync.RWMutex
	closed bool

	// qmu serializes the offers that get past the filter, so that sizes,
	// a ring of the lengths of the frames sent on c in order, tells how
	// many bytes c holds: its last len(c) entries are the frames still
	// in c, the reader having taken the older ones.
	qmu   sync.Mutex
	sizes []int
	head  int // the oldest entry
	n     int // the entries
	held  int // the sum of the entries
	// last is the newest time stamped on a frame sent on c. Batches are
	// stamped once, as they enter, and ports forward concurrently, so a
	// batch may be offered after a later one: its frames take this time,
	// and the capture's times never go back (Wireshark takes frames whose
	// times do as out of order).
	last time.Time
}

// StartCapture starts a capture. Read frames from C; call Close when done.
func (s *Switch) StartCapture(cfg CaptureConfig) *Capture {
	if cfg.Buffer <= 0 {
		cfg.Buffer = 1024
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = DefaultCaptureBytes
	}
	c := &Capture{s: s, cfg: cfg, c: make(chan CapturedFrame, cfg.Buffer), sizes: make([]int, cfg.Buffer)}
	s.mu.Lock()
	caps := append(slices.Clone(s.captureList()), c)
	s.captures.Store(&caps)
	// Checked under s.mu, which a port's removal holds while it collects
	// the captures to end: the port is live now, or the capture ends.
	gone := cfg.Port != 0 && !slices.ContainsFunc(*s.ports.Load(), func(a *Attachment) bool { return a.id == cfg.Port })
	s.mu.Unlock()
	if gone {
		c.endPortLeft()
	}
	return c
}

// endPortLeft ends a capture whose port has left the switch.
func (c *Capture) endPortLeft() {
	c.portLeft.Store(true)
	c.Close()
}

// captureList returns the running captures; callers hold s.mu or only read.
func (s *Switch) captureList() []*Capture {
	if p := s.captures.Load(); p != nil {
		return *p
	}
	return nil
}

// C delivers the captured frames. It is closed by Close, and when the
// port a capture is limited to leaves the switch (see PortLeft).
func (c *Capture) C() <-chan CapturedFrame { return c.c }

// PortLeft reports whether the capture ended because the port it is
// limited to (CaptureConfig.Port) left the switch.
func (c *Capture) PortLeft() bool { return c.portLeft.Load() }

// Dropped is the number of frames not captured because C held Buffer
// frames or MaxBytes bytes.
func (c *Capture) Dropped() uint64 { return c.dropped.Load() }

// Close stops the capture and closes C. It is idempotent.
func (c *Capture) Close() {
	c.once.Do(func() {
		s := c.s
		s.mu.Lock()
		caps := slices.DeleteFunc(slices.Clone(s.captureList()), func(x *Capture) bool { return x == c })
		if len(caps) == 0 {
			s.captures.Store(nil)
		} else {
			s.captures.Store(&caps)
		}
		s.mu.Unlock()
		// A batch that loaded the list before may still offer frames.
		c.mu.Lock()
		c.closed = true
		close(c.c)
		c.mu.Unlock()
	})
}

// offer hands a copy of fr to c unless c filters it out or is full; the
// copy is made only when it fits. in is the ingress port, out the egress
// port (nil when flooded).
func (c *Capture) offer(now time.Time, fr []byte, in, out *Attachment) {
	// A flooded frame leaves by every port but its ingress one.
	if p := c.cfg.Port; p != 0 && out != nil && in.id != p && out.id != p {
		return
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed {
		return
	}
	c.qmu.Lock()
	defer c.qmu.Unlock()
	// The reader may take more frames meanwhile: held is then high, never
	// low.
	for c.n > len(c.c) {
		c.held -= c.sizes[c.head]
		c.head = (c.head + 1) % len(c.sizes)
		c.n--
	}
	if c.n == len(c.sizes) || c.held+len(fr) > c.cfg.MaxBytes {
		c.dropped.Add(1)
		return
	}
	if now.Before(c.last) {
		now = c.last
	}
	c.last = now
	// Does not block: only offers send, under qmu, and c has room.
	c.c <- CapturedFrame{Time: now, In: in.id, Data: append([]byte(nil), fr...)}
	c.sizes[(c.head+c.n)%len(c.sizes)] = len(fr)
	c.n++
	c.held += len(fr)
}
