package vswitch

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/internal/logx"
	"github.com/tapswitch/tapswitch/switch/offload"
)

// Defaults for the zero values of Config.
const (
	DefaultFDBSize  = 8192
	DefaultFDBAge   = 300 * time.Second
	DefaultMaxFrame = 65535
	DefaultQueueLen = 512
	DefaultWarmFor  = time.Second
	// DefaultQueueBytes bounds the buffer memory one port's queue may
	// hold: 63 TCP super-frames, ~450 jumbo frames, or all of
	// DefaultQueueLen small frames.
	DefaultQueueBytes = 4 << 20
	// MinQueueBytes is the smallest Config.QueueBytes that holds a TCP
	// super-frame: below it, every one queued would be dropped.
	MinQueueBytes = Headroom + maxGSOFrame
)

// maxDeparted bounds the removed ports kept in Stats.Departed.
const maxDeparted = 64

// Errors returned by AddPort.
var (
	// ErrClosed: the switch has been closed.
	ErrClosed = errors.New("switch closed")
	// ErrTooManyPorts: the switch has Config.MaxPorts ports already.
	ErrTooManyPorts = errors.New("too many ports")
	// ErrPortGone: ReplacePort's old port is no longer on the switch.
	ErrPortGone = errors.New("port removed already")
)

// Config configures a Switch. The zero value is usable.
type Config struct {
	// Logger receives port and FDB events (never one line per frame).
	// Nil discards them.
	Logger logrus.FieldLogger
	// FDBSize bounds the number of learned MAC addresses (default 8192).
	// When the table is full, new addresses are not learned (their frames
	// flood) until entries age out; each refusal is counted.
	FDBSize int
	// FDBAge is how long a MAC stays learned after its last frame
	// (default 300 s, as in the Linux bridge).
	FDBAge time.Duration
	// MaxFrame is the largest frame, Ethernet header included, that the
	// switch accepts (default 65535).
	MaxFrame int
	// QueueLen is the capacity, in frames, of each port's transmit queue
	// (default 512).
	QueueLen int
	// QueueBytes bounds the buffer memory held by each port's transmit
	// queue (default 4 MiB), so that a peer that stops reading cannot pin
	// QueueLen 64 KiB frames; beyond it frames are dropped as queue_full.
	QueueBytes int
	// MaxPorts, if positive, bounds the number of ports; AddPort fails
	// with ErrTooManyPorts beyond it.
	MaxPorts int
	// WarmInterval, if positive, is how often the switch wakes while
	// traffic is sparse, so that the next frame finds the CPU and the
	// runtime's scheduler ready rather than asleep: it lowers the round
	// trip of an idle path at the cost of those wakeups (see Stats.Wakeups).
	// The wakeups run only while a frame has crossed the switch within the
	// last WarmFor; after that they start again with the next frame.
	// Frames less than 50 µs apart keep the process awake by themselves:
	// while they come, there are none. Each wakeup also polls the Poller
	// ports (taps) that received a frame within the last WarmFor, so that
	// the next frame's way in is cached too. Zero (the default) disables
	// them.
	WarmInterval time.Duration
	// WarmFor is how long after the last frame WarmInterval's wakeups go
	// on (default 1 s).
	WarmFor time.Duration
	// Now is the clock used for FDB ageing, rate limits and capture
	// timestamps; nil means time.Now. Tests inject a fake clock to age
	// entries without sleeping. Ageing measures the time since New on the
	// monotonic clock when Now's readings carry one (time.Now's do), so a
	// step of the wall clock neither stalls nor rushes it.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	c.Logger = logx.OrDiscard(c.Logger)
	if c.FDBSize <= 0 {
		c.FDBSize = DefaultFDBSize
	}
	if c.FDBAge <= 0 {
		c.FDBAge = DefaultFDBAge
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.QueueLen <= 0 {
		c.QueueLen = DefaultQueueLen
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.WarmFor <= 0 {
		c.WarmFor = DefaultWarmFor
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Switch is a learning Ethernet switch. Create it with New; ports may be
// added and removed at any time while traffic flows.
type Switch struct {
	cfg  Config
	log  logrus.FieldLogger
	fdb  *fdb
	pool *framePool

	// ports is the copy-on-write list of live ports read by every
	// forwarding decision; mu serialises its writers.
	ports atomic.Pointer[[]*Attachment]
	// dhcp, if set, receives every DHCP request (IPv4 UDP to port 67).
	dhcp atomic.Pointer[Attachment]
	// captures lists the running captures (nil when there are none).
	captures atomic.Pointer[[]*Capture]

	mu       sync.Mutex
	nextID   int
	closed   bool
	departed []PortStats
	gone     PortStats // counters of every departed port, summed
	// departing holds the ports taken off the list whose counters have
	// not reached gone yet (their transmit side is still draining), so
	// that Stats counts each port exactly once.
	departing map[*Attachment]struct{}
	// locks holds, by macBits, the port each address is reserved for:
	// the address a LockMAC port is bound to, and a port's OwnMAC. No
	// other LockMAC port may bind to it while that port is attached.
	locks map[uint64]*Attachment

	forwarded, flooded atomic.Uint64
	wakeups            atomic.Uint64 // by warmer
	// warmIdle is set while the warmer waits out a quiet WarmFor: the
	// next frame forwarded ends the wait through warmKick (kickWarmer).
	warmIdle atomic.Bool
	warmKick chan struct{}

	// epoch is Now at New, and epochNanos its Unix nanoseconds: see nanos.
	epoch      time.Time
	epochNanos int64

	wg   sync.WaitGroup
	done chan struct{}
}

// New returns a running switch. Call Close to stop it.
func New(cfg Config) *Switch {
	cfg.setDefaults()
	s := &Switch{
		cfg:  cfg,
		log:  cfg.Logger,
		fdb:  newFDB(cfg.FDBSize, cfg.FDBAge),
		pool: newFramePool(max(cfg.MaxFrame, maxGSOFrame)),
		done: make(chan struct{}),

		departing: make(map[*Attachment]struct{}),
		locks:     make(map[uint64]*Attachment),
	}
	s.epoch = cfg.Now()
	s.epochNanos = s.epoch.UnixNano()
	s.ports.Store(&[]*Attachment{})
	s.wg.Add(1)
	go s.ager()
	if cfg.WarmInterval > 0 {
		s.warmKick = make(chan struct{}, 1)
		s.warmIdle.Store(true)
		s.wg.Add(1)
		go s.warmer()
	}
	return s
}

// nanos is the switch's clock for ageing and rate limits, in nanoseconds:
// the Unix time at New plus the time elapsed since, which t.Sub measures on
// the monotonic clock when both readings have one.
func (s *Switch) nanos(t time.Time) int64 {
	return s.epochNanos + int64(t.Sub(s.epoch))
}

// now reads the switch's clock (see nanos).
func (s *Switch) now() int64 { return s.nanos(s.cfg.Now()) }

// ager deletes expired FDB entries in the background so that the table's
// size reflects live addresses.
func (s *Switch) ager() {
	defer s.wg.Done()
	every := min(max(s.cfg.FDBAge/10, time.Second), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.fdb.sweep(s.now())
		}
	}
}

// warmDense is the gap between frames below which traffic keeps the
// process awake by itself: the warmer's wakeups would add nothing to it but
// their cost.
const warmDense = 50 * time.Microsecond

// warmer wakes every cfg.WarmInterval for as long as a frame has been
// forwarded or flooded within the last cfg.WarmFor; otherwise it waits for
// the next frame (kickWarmer), or WarmFor at most. While frames come
// denser than warmDense, it checks only every WarmFor/10. The wakeup
// itself is the work: on a machine idle between sparse frames, the CPU the
// next frame wakes is then out of a long sleep no more than WarmInterval,
// and the timer's path through the runtime's scheduler (the one a tap's
// readiness takes too) has run recently. Each wakeup also polls the Poller
// ports that have received lately (rehearse).
func (s *Switch) warmer() {
	defer s.wg.Done()
	wait := s.cfg.WarmFor
	t := time.NewTimer(wait)
	defer t.Stop()
	var seen uint64
	quiet := s.cfg.WarmFor
	for {
		kicked := false
		select {
		case <-s.done:
			return
		case <-t.C:
		case <-s.warmKick:
			kicked = true
		}
		dense := false
		if n := s.forwarded.Load() + s.flooded.Load(); n != seen {
			dense = time.Duration(n-seen)*warmDense > wait
			seen, quiet = n, 0
		}
		switch {
		case dense:
			wait = s.cfg.WarmFor / 10
		case quiet < s.cfg.WarmFor:
			wait = s.cfg.WarmInterval
			quiet += wait
			s.wakeups.Add(1)
			for _, p := range *s.ports.Load() {
				p.rehearse(wait)
			}
		case kicked:
			// Kicked for frames that all were dropped: the next kick
			// only after WarmFor, so that a port sending nothing else
			// wakes the warmer no more often than that.
			wait = s.cfg.WarmFor
		default:
			wait = s.cfg.WarmFor
			s.warmIdle.Store(true)
			// A frame counted before the store did not see it.
			if s.forwarded.Load()+s.flooded.Load() != seen {
				s.kickWarmer()
			}
		}
		t.Reset(wait)
	}
}

// kickWarmer ends the warmer's wait for traffic, if it is waiting: Input
// calls it after forwarding, so that the wakeups start with the first
// frame after a quiet spell rather than up to WarmFor later.
func (s *Switch) kickWarmer() {
	if s.warmIdle.CompareAndSwap(true, false) {
		select {
		case s.warmKick <- struct{}{}:
		default:
		}
	}
}

// PortConfig describes a port being added.
type PortConfig struct {
	// Kind names the transport for statistics: "tap", "stream", "dgram",
	// "host", "dhcp", "mem", ...
	Kind string
	// Peer describes the other end (a socket address, a PID), if any.
	Peer string
	// NoReader means the switch starts no receive loop for the port: its
	// owner delivers received frames with Attachment.Input. Datagram
	// listeners use this, since one socket read serves many ports.
	NoReader bool
	// DHCPServer makes the port the destination of the DHCP requests (IPv4
	// UDP to port 67) entering the switch that are broadcast or addressed
	// to the IPv4 address DHCPAddr, whatever their destination MAC: so a
	// renewal sent to the gateway's address reaches the responder even when
	// a host interface owns that address. Requests unicast to any other
	// address are forwarded as usual. At most one port may have it.
	DHCPServer bool
	DHCPAddr   netip.Addr

	// Security limits, for ports whose peer is not trusted (VMs).
	//
	// LockMAC binds the port to one source MAC: LockedMAC if set, else the
	// first unicast source address the port sends. Frames from any other
	// source are dropped and counted (DropLockedMAC): a guest can neither
	// spoof another station nor flood the FDB.
	LockMAC   bool
	LockedMAC MAC
	// OwnMAC, if set, is the port's own address (the host interface's,
	// the DHCP responder's): no LockMAC port may bind to it while this
	// port is attached, even when it has been silent for longer than the
	// FDB keeps it.
	OwnMAC MAC
	// MaxMACs, if positive, bounds the addresses learned on the port;
	// NewMACRate, if positive, bounds how many new addresses per second it
	// may teach the switch (with a burst of the same size). Frames from an
	// address refused are still forwarded, as from an unknown station; the
	// refusals are counted in PortStats.LearnRefused.
	MaxMACs    int
	NewMACRate float64
}

// Attachment is a port as the switch holds it: its queue, its counters and
// its goroutines. It is returned by AddPort.
type Attachment struct {
	s     *Switch
	port  Port
	id    int
	name  string
	cfg   PortConfig
	added time.Time

	queue chan *frame
	c     portCounters

	// direct is the port's DirectWriter, if it is one. wmu serialises
	// writes to the port: the transmit goroutine holds it around
	// WriteFrames, a receiving goroutine try-locks it to write directly
	// and queues the frame when it cannot have it. inflight counts frames
	// queued but not yet written: a direct write is tried only when it is
	// zero, so that it never overtakes a queued frame of the same flow.
	direct   DirectWriter
	wmu      sync.Mutex
	inflight atomic.Int64
	// queued is the buffer memory held by the queue (Config.QueueBytes).
	queued atomic.Int64

	// offload: the port's frames carry a virtio-net header (OffloadPort).
	// seg cuts the super-frames it receives for ports without offloads
	// that are written to directly or flooded; only the receiving
	// goroutine uses it. txSeg cuts those queued to the port whole when
	// it has no offloads (see forwardGSO); only the transmit goroutine
	// uses it.
	offload bool
	seg     segmenter
	txSeg   segmenter
	// udpGSO: the port takes UDP super-frames (UDPSegmentPort). coal and
	// tcpCoal build UDP and TCP super-frames from the datagrams and
	// segments this port receives, for ports that take them, in coalBuf at
	// Headroom; only the goroutine forwarding them uses them, created at
	// the first run of two frames for such a port.
	udpGSO  bool
	coal    *offload.Coalescer
	tcpCoal *offload.TCPCoalescer
	coalBuf []byte

	// poller is the port's Poller, if it is one. rxmu serialises its reads
	// and the forwarding of what they return, into rxBufs and rxSizes:
	// the receive loop locks it, and a goroutine that has just written to
	// the port directly try-locks it to forward the answer (pollNow).
	// pollAfter lists the ports Input wrote to directly, to poll once the
	// batch is done; pollMisses and pollSkip back off from polling a port
	// that had nothing to answer (a one-way stream).
	poller     Poller
	rxmu       sync.Mutex
	rxBufs     [][]byte
	rxSizes    []int
	pollAfter  []*Attachment
	pollMisses int
	pollSkip   atomic.Int32
	// warmSeen and warmQuiet are the warmer's (rehearse): rxFrames when it
	// last looked, and for how long the count has not moved since.
	warmSeen  uint64
	warmQuiet time.Duration

	// locked holds the MAC a LockMAC port is bound to, with bit 48 set
	// once it is bound; only the port's receiving goroutine sets it.
	locked atomic.Uint64
	// lastProbe is when the port was last asked to Probe (Switch.nanos).
	lastProbe atomic.Int64
	// macs counts the port's FDB entries; tokens and tokensAt are its
	// new-address budget. All three change under the FDB's write lock.
	macs     atomic.Int64
	tokens   float64
	tokensAt int64

	removed   atomic.Bool
	detached  atomic.Bool // removed by Close
	closeOnce sync.Once
	stop      chan struct{} // closed when the port is removed
	done      chan struct{} // closed when its transmit side has finished
}

// AddPort attaches p to the switch and starts its receive loop (unless
// cfg.NoReader) and transmit goroutine. The switch closes p when the port
// is removed: by Attachment.Close, when ReadFrames fails, or by Switch.Close.
func (s *Switch) AddPort(p Port, cfg PortConfig) (*Attachment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.add(p, cfg, nil)
}

// ReplacePort adds p in the place of old, in one step: on a switch with
// Config.MaxPorts ports the room old leaves goes to p, not to a port added
// elsewhere in between, and so do old's place as the DHCP server port and
// the addresses reserved for it. old leaves the switch as by
// Attachment.Close (its captures end, its addresses are forgotten), but
// the closing of its Port finishes in the background (old.Done says when;
// old.Close waits for it), so that the caller may hold a lock the Port's
// Close takes. ReplacePort fails, changing nothing, when AddPort would for
// another reason than MaxPorts, or with ErrPortGone when old is not on
// the switch (removed already).
func (s *Switch) ReplacePort(old *Attachment, p Port, cfg PortConfig) (*Attachment, error) {
	s.mu.Lock()
	if old == nil || !slices.Contains(*s.ports.Load(), old) {
		s.mu.Unlock()
		return nil, fmt.Errorf("add port %s in the place of another: %w", p, ErrPortGone)
	}
	a, err := s.add(p, cfg, old)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	ended := s.capturesOf(old)
	s.wg.Add(1) // Close waits for the rest of the removal
	s.mu.Unlock()
	// What needs no lock of the caller's is done now, as Close does it.
	for _, c := range ended {
		c.endPortLeft()
	}
	s.fdb.purge(old)
	go func() {
		defer s.wg.Done()
		old.remove(nil, true)
	}()
	return a, nil
}

// add is AddPort, called with s.mu held. If replacing is not nil, it is
// taken off the port list in the same step, marked removed, counted as
// departing, and what it holds (room under MaxPorts, the DHCP server's
// place, reserved addresses) goes to p; the caller then finishes its
// removal (remove, which finds these done).
func (s *Switch) add(p Port, cfg PortConfig, replacing *Attachment) (*Attachment, error) {
	if p.BatchSize() < 1 {
		return nil, fmt.Errorf("add port %s: batch size %d < 1", p, p.BatchSize())
	}
	if s.closed {
		return nil, ErrClosed
	}
	n := len(*s.ports.Load())
	if replacing != nil {
		n--
	}
	if s.cfg.MaxPorts > 0 && n >= s.cfg.MaxPorts {
		return nil, fmt.Errorf("add port %s: %w (%d)", p, ErrTooManyPorts, s.cfg.MaxPorts)
	}
	if d := s.dhcp.Load(); cfg.DHCPServer && d != nil && d != replacing {
		return nil, fmt.Errorf("add port %s: a DHCP server port is already attached", p)
	}
	s.nextID++
	a := &Attachment{
		s:     s,
		port:  p,
		id:    s.nextID,
		name:  p.String(),
		cfg:   cfg,
		added: time.Now(),
		queue: make(chan *frame, s.cfg.QueueLen),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	a.direct, _ = p.(DirectWriter)
	if op, ok := p.(OffloadPort); ok {
		a.offload = op.Offload()
	}
	if up, ok := p.(UDPSegmentPort); ok && a.offload {
		a.udpGSO = up.AcceptsUDPSegments()
	}
	if !cfg.NoReader {
		a.poller, _ = p.(Poller)
		a.rxBufs, a.rxSizes = a.receiveBuffers()
	}
	var reserve []MAC
	if cfg.OwnMAC != (MAC{}) {
		reserve = append(reserve, cfg.OwnMAC)
	}
	if cfg.LockMAC && cfg.LockedMAC != (MAC{}) {
		reserve = append(reserve, cfg.LockedMAC)
		a.locked.Store(macBits(cfg.LockedMAC) | lockedBit)
	}
	for _, m := range reserve {
		if o := s.locks[macBits(m)]; o != nil && o != replacing {
			return nil, fmt.Errorf("add port %s: address %s is reserved for port %s", p, m, o.name)
		}
	}
	for _, m := range reserve {
		s.locks[macBits(m)] = a
	}
	if cfg.NewMACRate > 0 {
		a.tokens = max(cfg.NewMACRate, 1)
	}
	old := *s.ports.Load()
	ports := make([]*Attachment, 0, len(old)+1)
	for _, o := range old {
		if o != replacing {
			ports = append(ports, o)
		}
	}
	ports = append(ports, a)
	s.ports.Store(&ports)
	if replacing != nil {
		// Until remove has run, Stats counts it as departing, and it
		// learns no address.
		replacing.removed.Store(true)
		s.departing[replacing] = struct{}{}
		s.dhcp.CompareAndSwap(replacing, nil)
		for m, o := range s.locks {
			if o == replacing {
				delete(s.locks, m)
			}
		}
	}
	if cfg.DHCPServer {
		s.dhcp.Store(a)
	}
	s.wg.Add(1)
	go a.txLoop()
	if !cfg.NoReader {
		s.wg.Add(1)
		go a.rxLoop()
	}
	s.log.WithFields(logrus.Fields{"port": a.name, "id": a.id, "kind": cfg.Kind, "peer": cfg.Peer}).Info("port added")
	return a, nil
}

// ID is the port's number, unique for the life of the switch.
func (a *Attachment) ID() int { return a.id }

// Name is the port's String() at the time it was added.
func (a *Attachment) Name() string { return a.name }

// Kind is PortConfig.Kind.
func (a *Attachment) Kind() string { return a.cfg.Kind }

// Port returns the attached Port.
func (a *Attachment) Port() Port { return a.port }

// Done is closed when the port has been removed from the switch and its
// final counters are in Stats().Departed.
func (a *Attachment) Done() <-chan struct{} { return a.done }

// Close removes the port from the switch and closes it. It is idempotent
// and returns at once; the port's goroutines finish in the background.
func (a *Attachment) Close() error {
	a.remove(nil, true)
	return nil
}

// Detached reports whether the port was removed by Close (a detach), not
// by its peer leaving, an error, or the switch closing.
func (a *Attachment) Detached() bool { return a.detached.Load() }

// remove takes the port off the switch once; cause is the error that
// ended it (nil for a normal end), detach whether Close did.
func (a *Attachment) remove(cause error, detach bool) {
	a.closeOnce.Do(func() {
		s := a.s
		a.detached.Store(detach)
		a.removed.Store(true)
		s.mu.Lock()
		old := *s.ports.Load()
		ports := make([]*Attachment, 0, len(old))
		for _, p := range old {
			if p != a {
				ports = append(ports, p)
			}
		}
		s.ports.Store(&ports)
		s.departing[a] = struct{}{}
		s.dhcp.CompareAndSwap(a, nil)
		for m, o := range s.locks {
			if o == a {
				delete(s.locks, m)
			}
		}
		ended := s.capturesOf(a)
		s.mu.Unlock()
		for _, c := range ended {
			c.endPortLeft() // takes s.mu
		}

		s.fdb.purge(a)
		if err := a.port.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.WithField("port", a.name).WithError(err).Warn("closing port")
		}
		close(a.stop)
		l := s.log.WithFields(logrus.Fields{"port": a.name, "id": a.id})
		if cause != nil {
			l.WithError(cause).Warn("port ended")
		} else {
			l.Info("port removed")
		}
	})
}

// capturesOf lists the captures limited to port a, which end when it
// leaves. The caller holds s.mu.
func (s *Switch) capturesOf(a *Attachment) []*Capture {
	var cs []*Capture
	for _, c := range s.captureList() {
		if c.cfg.Port == a.id {
			cs = append(cs, c)
		}
	}
	return cs
}

const lockedBit = 1 << 48

func macBits(m MAC) uint64 {
	return uint64(m[0])<<40 | uint64(m[1])<<32 | uint64(m[2])<<24 | uint64(m[3])<<16 | uint64(m[4])<<8 | uint64(m[5])
}

// allowSource reports whether a LockMAC port may send from src, binding
// the port to src if it is not bound yet. A port is not bound to an
// address that is live on another port, nor to one reserved for another
// (bound to another LockMAC port, or another port's OwnMAC), however long
// that port has been silent: that would let a VM take over another's (or
// the gateway's) address with its first frame.
//
// When it refuses src because the port holding it has been silent for
// longer than the FDB keeps an address, it also returns that port, for
// the caller to probe (see Prober).
func (a *Attachment) allowSource(src MAC, now int64) (ok bool, probe *Attachment) {
	l := a.locked.Load()
	if l != 0 {
		return l == macBits(src)|lockedBit, nil
	}
	s := a.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := a.locked.Load(); l != 0 { // bound meanwhile (Poller)
		return l == macBits(src)|lockedBit, nil
	}
	if a.removed.Load() {
		return false, nil
	}
	live := s.fdb.lookup(src, now)
	if o := s.locks[macBits(src)]; o != nil && o != a {
		if live != o {
			return false, o
		}
		return false, nil
	}
	if live != nil && live != a {
		return false, nil
	}
	s.locks[macBits(src)] = a
	a.locked.Store(macBits(src) | lockedBit)
	return true, nil
}

// probe asks a Prober port whether it is gone, at most once a second.
func (a *Attachment) probe(now int64) {
	pr, ok := a.port.(Prober)
	if !ok {
		return
	}
	last := a.lastProbe.Load()
	if now-last < int64(time.Second) || !a.lastProbe.CompareAndSwap(last, now) {
		return
	}
	pr.Probe()
}

// Stats returns the port's current counters.
func (a *Attachment) Stats() PortStats {
	ps := PortStats{ID: a.id, Name: a.name, Kind: a.cfg.Kind, Peer: a.cfg.Peer, Added: a.added, Removed: a.removed.Load(),
		LearnedMACs: int(a.macs.Load())}
	if l := a.locked.Load(); l != 0 {
		m := MAC{byte(l >> 40), byte(l >> 32), byte(l >> 24), byte(l >> 16), byte(l >> 8), byte(l)}
		ps.LockedMAC = &m
	}
	a.c.snapshot(&ps)
	if bc, ok := a.port.(BackendCounter); ok {
		ps.Backend = bc.BackendCounters()
	}
	return ps
}

// mayLearn reports whether a may learn one more address at now, taking a
// token of its new-address budget. Called with the FDB's write lock held.
func (a *Attachment) mayLearn(now int64) bool {
	if max := a.cfg.MaxMACs; max > 0 && a.macs.Load() >= int64(max) {
		a.c.learnRefused.Add(1)
		return false
	}
	if r := a.cfg.NewMACRate; r > 0 {
		if a.tokensAt != 0 {
			// The bucket holds at least one token, so that a rate below
			// one a second still lets an address in now and then.
			a.tokens = min(max(r, 1), a.tokens+r*float64(now-a.tokensAt)/float64(time.Second))
		}
		a.tokensAt = now
		if a.tokens < 1 {
			a.c.learnRefused.Add(1)
			return false
		}
		a.tokens--
	}
	return true
}

// receiveBuffers returns a batch of receive buffers for the port, each
// with room for Headroom and the largest frame it may deliver; for a
// SizedReader, all but the first with room for a small frame only.
func (a *Attachment) receiveBuffers() ([][]byte, []int) {
	n := a.port.BatchSize()
	bufs := make([][]byte, n)
	size := a.s.cfg.MaxFrame
	if a.offload {
		size = max(size, maxGSOFrame)
	}
	// One byte more than the largest frame: a port that reads into a
	// buffer (a tap) cuts a longer frame to the buffer's length, and Input
	// can then tell it from one that fits (and drop it as too long).
	size++
	bufs[0] = make([]byte, Headroom+size)
	if sr, ok := a.port.(SizedReader); ok && sr.ReadsSized() && size > smallFrame {
		size = smallFrame
	}
	rest := make([]byte, (n-1)*(Headroom+size))
	for i := 1; i < n; i++ {
		bufs[i], rest = rest[:Headroom+size:Headroom+size], rest[Headroom+size:]
	}
	return bufs, make([]int, n)
}

func (a *Attachment) rxLoop() {
	defer a.s.wg.Done()
	if a.poller != nil {
		a.pollLoop()
		return
	}
	bufs, sizes := a.rxBufs, a.rxSizes
	for {
		n, err := a.port.ReadFrames(bufs, sizes, Headroom)
		if n > 0 {
			a.Input(bufs[:n], sizes[:n], Headroom)
		}
		if err != nil {
			a.readFailed(err)
			return
		}
	}
}

// pollLoop is rxLoop for a Poller port.
func (a *Attachment) pollLoop() {
	var rerr error
	ready := func() bool {
		for {
			a.rxmu.Lock()
			n, err := a.poller.PollFrames(a.rxBufs, a.rxSizes, Headroom)
			if n > 0 {
				a.Input(a.rxBufs[:n], a.rxSizes[:n], Headroom)
			}
			a.rxmu.Unlock()
			if err != nil {
				rerr = err
				return true
			}
			if n == 0 {
				return false
			}
		}
	}
	if err := a.poller.WaitFrames(ready); rerr == nil {
		rerr = err
	}
	a.readFailed(rerr)
}

// readFailed removes the port after its reads failed with err.
func (a *Attachment) readFailed(err error) {
	// A peer hanging up is a normal end; anything else is logged.
	if a.removed.Load() || errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) {
		err = nil
	}
	a.remove(err, false)
}

// pollNow forwards the frames waiting on a Poller port that was just
// written to directly, unless its receive side is busy or it has had
// nothing waiting lately. A miss makes the next 2^k-1 polls skip (k
// consecutive misses, at most 10), so a port that only receives costs a
// failed read once per 1024 frames.
func (a *Attachment) pollNow() {
	if a.pollSkip.Load() > 0 {
		a.pollSkip.Add(-1)
		return
	}
	if a.removed.Load() || !a.rxmu.TryLock() {
		return
	}
	n, err := a.poller.PollFrames(a.rxBufs, a.rxSizes, Headroom)
	switch {
	case n > 0:
		a.pollMisses = 0
		a.c.rxAnswers.Add(uint64(n))
		a.Input(a.rxBufs[:n], a.rxSizes[:n], Headroom)
	case err == nil:
		a.pollMisses = min(a.pollMisses+1, 10)
		a.pollSkip.Store(1<<a.pollMisses - 1)
	}
	// An error is the receive loop's to act on: it meets it too.
	a.rxmu.Unlock()
}

// rehearse is the warmer's turn at a: if a is a Poller port that has
// received a frame within the last WarmFor, it polls it as pollNow does,
// and forwards what it finds. Usually it finds nothing; what it is for is
// that the way in of a's next frame, from the port's read (its system
// call, for a tap) to the switch's state, then runs with the caches and
// TLB still holding it. every is the time until the warmer's next turn.
func (a *Attachment) rehearse(every time.Duration) {
	if a.poller == nil {
		return
	}
	if n := a.c.rxFrames.Load(); n != a.warmSeen {
		a.warmSeen, a.warmQuiet = n, 0
	} else if a.warmQuiet >= a.s.cfg.WarmFor {
		return
	}
	a.warmQuiet += every
	if a.removed.Load() || !a.rxmu.TryLock() {
		return
	}
	if n, _ := a.poller.PollFrames(a.rxBufs, a.rxSizes, Headroom); n > 0 {
		a.Input(a.rxBufs[:n], a.rxSizes[:n], Headroom)
	}
	// An error is the receive loop's to act on: it meets it too.
	a.rxmu.Unlock()
}

func (a *Attachment) txLoop() {
	s := a.s
	defer s.wg.Done()
	defer close(a.done)
	n := a.port.BatchSize()
	frames := make([]*frame, 0, n)
	bufs := make([][]byte, n)
	for {
		frames = frames[:0]
		select {
		case f := <-a.queue:
			frames = append(frames, f)
		case <-a.stop:
			a.drain()
			return
		}
	fill:
		for len(frames) < n {
			select {
			case f := <-a.queue:
				frames = append(frames, f)
			default:
				break fill
			}
		}
		var t txTally
		for rest := frames; len(rest) > 0; {
			if rest[0].whole {
				a.writeCut(rest[0], bufs, &t)
				rest = rest[1:]
				continue
			}
			k := 1
			for k < len(rest) && !rest[k].whole {
				k++
			}
			a.write(rest[:k], bufs, &t)
			rest = rest[k:]
		}
		a.inflight.Add(-int64(len(frames)))
		var held int64
		for _, f := range frames {
			held += int64(len(f.buf))
			s.pool.put(f)
		}
		a.queued.Add(-held)
		a.c.txFrames.Add(t.sent)
		a.c.txCoalesced.Add(t.coalesced)
		a.c.txBytes.Add(t.bytes)
		if t.failed > 0 {
			a.c.drops[DropTxError].Add(t.failed)
		}
	}
}

// txTally sums what one turn of txLoop wrote, in frames as counted by
// send's count, and what it failed to.
type txTally struct {
	sent, coalesced, failed, bytes uint64
}

// write writes frames, at most a batch, to the port.
func (a *Attachment) write(frames []*frame, bufs [][]byte, t *txTally) {
	for i, f := range frames {
		bufs[i] = f.buf[:Headroom+f.n]
	}
	a.wmu.Lock()
	w, _ := a.port.WriteFrames(bufs[:len(frames)], Headroom)
	a.wmu.Unlock()
	clear(bufs[:len(frames)])
	for i, f := range frames {
		if i >= w {
			t.failed += uint64(f.count)
			continue
		}
		t.sent += uint64(f.count)
		t.bytes += uint64(f.n)
		if f.count > 1 {
			t.coalesced += uint64(f.count)
		}
	}
}

// writeCut cuts the super-frame f and writes its segments to the port, a
// batch at a time; after a failed write the rest are dropped with it.
// Each segment counts as a frame sent, as when the receiving goroutine
// cuts a super-frame.
func (a *Attachment) writeCut(f *frame, bufs [][]byte, t *txTally) {
	h := offload.DecodeHdr(f.buf[Headroom-offload.HdrLen : Headroom])
	segs := a.txSeg.cut(h, f.buf[Headroom:Headroom+f.n])
	if segs == nil { // forwardGSO checked that it can be cut
		a.c.drops[DropBadOffload].Add(1)
		return
	}
	for len(segs) > 0 {
		k := copy(bufs, segs)
		a.wmu.Lock()
		w, _ := a.port.WriteFrames(bufs[:k], Headroom)
		a.wmu.Unlock()
		clear(bufs[:k])
		for _, seg := range segs[:w] {
			t.bytes += uint64(len(seg) - Headroom)
		}
		t.sent += uint64(w)
		if w < k {
			t.failed += uint64(len(segs) - w)
			return
		}
		segs = segs[k:]
	}
}

// drain returns queued frames to the pool, counting them as tx_error (they
// were counted forwarded, and are not written), and records the port's
// final counters once its transmit side has stopped.
func (a *Attachment) drain() {
	s := a.s
	for {
		select {
		case f := <-a.queue:
			a.c.drops[DropTxError].Add(uint64(f.count))
			s.pool.put(f)
		default:
			// The final snapshot is taken under mu: Stats, under mu too,
			// then counts the port either live or by this snapshot, never
			// by a snapshot older than what it counted live before (the
			// switch-wide totals went back).
			s.mu.Lock()
			ps := a.Stats()
			delete(s.departing, a)
			s.gone.addCounters(&ps)
			if len(s.departed) == maxDeparted {
				copy(s.departed, s.departed[1:])
				s.departed = s.departed[:maxDeparted-1]
			}
			s.departed = append(s.departed, ps)
			s.mu.Unlock()
			return
		}
	}
}

// send delivers the frame buf[offset:] to a: written at once when a is a
// DirectWriter with nothing queued and free to write, else a copy goes on
// its transmit queue, or a drop is counted. The caller keeps buf. It
// reports whether the frame was written directly. count is the number of
// frames received that buf carries: 1, or more for a super-frame
// coalesced from them; counters move by it.
func (a *Attachment) send(buf []byte, offset, count int) bool {
	if a.direct != nil && a.inflight.Load() == 0 && a.wmu.TryLock() {
		if a.inflight.Load() == 0 {
			done, err := a.direct.WriteFrameNow(buf, offset)
			a.wmu.Unlock()
			if done {
				if err != nil {
					a.c.drops[DropTxError].Add(uint64(count))
					return false
				}
				a.c.txFrames.Add(uint64(count))
				if count > 1 {
					a.c.txCoalesced.Add(uint64(count))
				}
				a.c.txBytes.Add(uint64(len(buf) - offset))
				return true
			}
		} else {
			a.wmu.Unlock()
		}
	}
	a.enqueue(buf, offset, count, false)
	return false
}

// enqueue puts a copy of the frame buf[offset:], and of the virtio-net
// header in front of it, on a's transmit queue, or counts a drop. count is
// as for send; whole marks a super-frame for the transmit goroutine to
// cut (a has no offloads).
func (a *Attachment) enqueue(buf []byte, offset, count int, whole bool) {
	// A full queue drops before the copy: a port that stopped reading
	// costs its senders a check, not a buffer.
	if len(a.queue) == cap(a.queue) {
		a.c.drops[DropQueueFull].Add(uint64(count))
		return
	}
	size := int64(a.s.pool.size(len(buf) - offset))
	if a.queued.Add(size) > int64(a.s.cfg.QueueBytes) {
		a.queued.Add(-size)
		a.c.drops[DropQueueFull].Add(uint64(count))
		return
	}
	f := a.s.pool.get(buf, offset)
	f.count = count
	f.whole = whole
	a.inflight.Add(1)
	select {
	case a.queue <- f:
	default:
		a.inflight.Add(-1)
		a.queued.Add(-size)
		a.s.pool.put(f)
		a.c.drops[DropQueueFull].Add(uint64(count))
	}
}

// Input forwards frames received on this port: frame i is
// bufs[i][offset:offset+sizes[i]]. The switch copies what it keeps, so the
// caller may reuse bufs as soon as Input returns; offset must be at least
// Headroom, since a port written to directly may use the bytes in front of
// the frame (see DirectWriter). The receive loop calls
// it for ordinary ports; owners of NoReader ports call it themselves, from
// one goroutine at a time per port.
func (a *Attachment) Input(bufs [][]byte, sizes []int, offset int) {
	s := a.s
	if a.removed.Load() {
		return
	}
	wall := s.cfg.Now()
	now := s.nanos(wall)
	ports := *s.ports.Load()
	dhcp := s.dhcp.Load()
	var caps []*Capture
	if p := s.captures.Load(); p != nil {
		caps = *p
	}
	// Counters move before the frames are handed on, so that whoever
	// receives a frame also sees it counted.
	var rxBytes uint64
	for _, n := range sizes[:len(bufs)] {
		rxBytes += uint64(n)
	}
	a.c.rxFrames.Add(uint64(len(bufs)))
	a.c.rxBytes.Add(rxBytes)
	merged := 0 // frames after i already sent in a UDP super-frame
	for i, b := range bufs {
		if merged > 0 {
			merged--
			continue
		}
		b = b[:offset+sizes[i]]
		fr := b[offset:]
		// The virtio-net header in front of the frame: read from an
		// offload port, zeroed otherwise, so that it is valid for any
		// offload port the frame is written to.
		hb := b[offset-offload.HdrLen : offset]
		var h offload.Hdr
		if a.offload {
			h = offload.DecodeHdr(hb)
		} else {
			clear(hb)
		}
		if len(fr) < 14 {
			a.c.drops[DropTooShort].Add(1)
			continue
		}
		if len(fr) > s.cfg.MaxFrame && (h.GSOType == offload.GSONone || len(fr) > maxGSOFrame || segmentsTooLong(h, fr, s.cfg.MaxFrame)) {
			a.c.drops[DropTooLong].Add(1)
			continue
		}
		src := MAC(fr[6:12])
		if src.Multicast() || src == (MAC{}) { // as the Linux bridge drops them
			a.c.drops[DropSrcMulticast].Add(1)
			continue
		}
		if a.cfg.LockMAC {
			if ok, holder := a.allowSource(src, now); !ok {
				a.c.drops[DropLockedMAC].Add(1)
				if holder != nil {
					holder.probe(now)
				}
				continue
			}
		}
		s.fdb.learn(src, a, now)
		var out *Attachment // nil: flood
		dst := MAC(fr[0:6])
		if dhcp != nil && dhcp != a && dhcp.wantsDHCP(dst, fr) {
			out = dhcp
		} else if !dst.Multicast() {
			out = s.fdb.lookup(dst, now)
			if out == a {
				a.c.drops[DropSamePort].Add(1)
				continue
			}
		}
		if h.Flags&offload.NeedsCsum != 0 && h.GSOType == offload.GSONone && (out == nil || !out.offload) {
			// A partial checksum goes through to an offload port as it
			// is (its kernel takes it as verified); for any other
			// destination it is completed, once for every port.
			if offload.Checksum(h, fr) != nil {
				a.c.drops[DropBadOffload].Add(1)
				continue
			}
			h = offload.Hdr{}
			clear(hb)
		}
		for _, c := range caps {
			c.offer(wall, fr, a, out)
		}
		if h.GSOType != offload.GSONone {
			a.forwardGSO(h, b, offset, out, ports)
			continue
		}
		if out != nil {
			off, count := offset, 1
			if out.offload && i+1 < len(bufs) {
				if sb, n := a.coalesce(out, h, fr, bufs[i+1:], sizes[i+1:], offset); sb != nil {
					merged = n - 1
					for _, c := range caps {
						for j := i + 1; j <= i+merged; j++ {
							c.offer(wall, bufs[j][offset:offset+sizes[j]], a, out)
						}
					}
					b, off, count = sb, Headroom, merged+1
				}
			}
			s.forwarded.Add(uint64(count))
			if out.send(b, off, count) && out.poller != nil && !slices.Contains(a.pollAfter, out) {
				a.pollAfter = append(a.pollAfter, out)
			}
			continue
		}
		s.flooded.Add(1)
		for _, p := range ports {
			if p != a {
				p.send(b, offset, 1)
			}
		}
	}
	for i, p := range a.pollAfter {
		p.pollNow()
		a.pollAfter[i] = nil
	}
	a.pollAfter = a.pollAfter[:0]
	if s.warmIdle.Load() {
		s.kickWarmer()
	}
}

// coalescer is what offload.Coalescer and offload.TCPCoalescer have in
// common.
type coalescer interface {
	Start(h offload.Hdr, frame []byte) bool
	Add(h offload.Hdr, frame []byte) bool
	Merged() int
	Finish() (offload.Hdr, []byte)
}

// coalesce merges the frame fr, with virtio-net header h, and those of the
// same flow that follow it in next (frame j at
// next[j][offset:offset+sizes[j]]) into one super-frame for out, an offload
// port: a run of UDP datagrams with partial checksums from an offload port
// if out takes UDP super-frames (UDPSegmentPort), a run of TCP segments
// from any port (offload.TCPCoalescer). It returns the super-frame in
// a.coalBuf from its Headroom, header in front, and the number of frames
// in it, fr included; nil when not even the first of next joined.
func (a *Attachment) coalesce(out *Attachment, h offload.Hdr, fr []byte, next [][]byte, sizes []int, offset int) ([]byte, int) {
	if h.GSOType != offload.GSONone {
		return nil, 0
	}
	if a.coalBuf == nil {
		a.coalBuf = make([]byte, Headroom+maxGSOFrame)
		a.coal = offload.NewCoalescer(a.coalBuf[Headroom:])
		a.tcpCoal = offload.NewTCPCoalescer(a.coalBuf[Headroom:])
	}
	var c coalescer
	switch {
	case out.udpGSO && a.offload && a.coal.Start(h, fr):
		c = a.coal // only datagrams with partial checksums merge
	case a.tcpCoal.Start(h, fr):
		c = a.tcpCoal
	default:
		return nil, 0
	}
	for j, b := range next {
		b = b[:offset+sizes[j]]
		// The headers of the frames after fr are read only from an
		// offload port: Input has not zeroed them yet for another.
		var nh offload.Hdr
		if a.offload {
			nh = offload.DecodeHdr(b[offset-offload.HdrLen : offset])
		}
		if !c.Add(nh, b[offset:]) {
			break
		}
	}
	n := c.Merged()
	if n < 2 {
		return nil, 0
	}
	sh, sf := c.Finish()
	sh.Encode(a.coalBuf[Headroom-offload.HdrLen : Headroom])
	return a.coalBuf[:Headroom+len(sf)], n
}

// segmentsTooLong reports whether the TCP super-frame fr (described by h)
// would be cut into frames longer than maxFrame. Such a super-frame is
// dropped whole, for every destination: one that takes it whole would get
// frames longer than the switch's maximum, and one that needs it cut would
// fail on its segments. A frame that cannot be cut is left to segment,
// which counts it as bad_offload where it must be cut.
func segmentsTooLong(h offload.Hdr, fr []byte, maxFrame int) bool {
	_, maxLen, err := offload.SegmentCount(h, fr)
	return err == nil && maxLen > maxFrame
}

// maxGSOFrame is the largest super-frame an offload port may deliver: a
// 64 KiB IP packet behind an Ethernet header and one VLAN tag.
const maxGSOFrame = 65535 + 14 + 4

// maxSegments bounds the segments of one super-frame: its largest
// payload cut at Linux's smallest TCP MSS (TCP_MIN_MSS, 88 bytes). A
// header asking for more (gso_size 1 would cut 64 KiB into 65 000
// segments and as many buffers) is a counted bad_offload drop.
const maxSegments = (maxGSOFrame + 87) / 88

// keptSegments is how many segment buffers a port keeps between
// super-frames: those of one cut at MSS 1000 or more. A super-frame cut
// finer gets its extra buffers for itself.
const keptSegments = 64

// segmentCount returns the number of segments the super-frame fr, with
// header h, is cut into and the longest's length; ok is false if it cannot
// be cut or would make more than maxSegments.
func segmentCount(h offload.Hdr, fr []byte) (n, maxLen int, ok bool) {
	n, maxLen, err := offload.SegmentCount(h, fr)
	return n, maxLen, err == nil && n <= maxSegments
}

// segmenter cuts TCP super-frames into buffers it keeps between calls.
// bufs hold the segments of the last super-frame cut, each at Headroom;
// out is the list handed to offload.Segment. One goroutine uses each.
type segmenter struct {
	bufs [][]byte
	out  [][]byte
}

// cut splits the super-frame fr, with header h, and returns its segments,
// each with the segment at Headroom; nil if fr cannot be cut. The result
// is valid until the next call.
func (g *segmenter) cut(h offload.Hdr, fr []byte) [][]byte {
	// Input has dropped super-frames whose segments are over MaxFrame.
	n, maxLen, ok := segmentCount(h, fr)
	if !ok {
		return nil
	}
	if len(g.bufs) > keptSegments {
		// Those of the last fine cut, which its caller has done with.
		clear(g.bufs[keptSegments:])
		clear(g.out[keptSegments:])
		g.bufs, g.out = g.bufs[:keptSegments], g.out[:keptSegments]
	}
	for len(g.bufs) < n {
		g.bufs = append(g.bufs, nil)
		g.out = append(g.out, nil)
	}
	for i := range n {
		if len(g.bufs[i]) < Headroom+maxLen {
			g.bufs[i] = make([]byte, Headroom+max(maxLen, smallFrame))
		}
		g.out[i] = g.bufs[i][Headroom:Headroom]
	}
	k, err := offload.Segment(h, fr, g.out[:n])
	if err != nil {
		return nil
	}
	for i := range k {
		g.out[i] = g.bufs[i][:Headroom+len(g.out[i])]
	}
	return g.out[:k]
}

// segment cuts the super-frame fr received on a with a.seg; nil, and a
// counted drop, if fr is bad.
func (a *Attachment) segment(h offload.Hdr, fr []byte) [][]byte {
	segs := a.seg.cut(h, fr)
	if segs == nil {
		a.c.drops[DropBadOffload].Add(1)
	}
	return segs
}

// forwardGSO forwards the TCP super-frame b[offset:] with header h, from
// a: whole to offload ports, segmented for the others (once, shared by all
// of them; a single destination that is not written to directly gets it
// queued whole, and cuts it as it writes). out is the destination port,
// nil to flood. A frame that
// cannot be cut for its one destination is a bad_offload drop only, not
// forwarded too; a flooded one still reached the offload ports.
func (a *Attachment) forwardGSO(h offload.Hdr, b []byte, offset int, out *Attachment, ports []*Attachment) {
	switch {
	case out != nil && out.offload:
		a.s.forwarded.Add(1)
		out.send(b, offset, 1)
		return
	case out != nil && out.direct == nil:
		// Queued whole and cut by out's transmit goroutine: one queue
		// entry and one copy instead of one of each per segment.
		if _, _, ok := segmentCount(h, b[offset:]); !ok {
			a.c.drops[DropBadOffload].Add(1)
			return
		}
		a.s.forwarded.Add(1)
		out.enqueue(b, offset, 1, true)
		return
	case out != nil:
		segs := a.segment(h, b[offset:])
		if segs == nil {
			return
		}
		a.s.forwarded.Add(1)
		for _, seg := range segs {
			out.send(seg, Headroom, 1)
		}
		return
	}
	a.s.flooded.Add(1)
	var segs [][]byte
	segmented := false
	for _, p := range ports {
		if p == a {
			continue
		}
		if p.offload {
			p.send(b, offset, 1)
			continue
		}
		if !segmented {
			segmented = true
			segs = a.segment(h, b[offset:])
		}
		for _, seg := range segs {
			p.send(seg, Headroom, 1)
		}
	}
}

// wantsDHCP reports whether the DHCP server port d takes fr, a frame to
// dst: an IPv4 UDP datagram to port 67 (untagged, first fragment) that is
// broadcast or addressed to d's DHCPAddr.
func (d *Attachment) wantsDHCP(dst MAC, fr []byte) bool {
	if len(fr) < 14+20+8 || fr[12] != 0x08 || fr[13] != 0x00 {
		return false
	}
	ip := fr[14:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < 20 || ip[9] != 17 || len(ip) < ihl+8 {
		return false
	}
	if ip[6]&0x1f != 0 || ip[7] != 0 { // a non-first fragment has no UDP header
		return false
	}
	if udp := ip[ihl:]; udp[2] != 0 || udp[3] != 67 {
		return false
	}
	// Broadcast to everyone (255.255.255.255, as clients without an
	// address send), or to the responder's address. A request with a
	// broadcast MAC but another server's address is switched as usual.
	ipDst := netip.AddrFrom4([4]byte(ip[16:20]))
	return dst.Multicast() && ipDst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) || ipDst == d.cfg.DHCPAddr
}

// Stats returns a snapshot of every counter.
func (s *Switch) Stats() Stats {
	// Under mu the live ports, the departing ones and gone hold every
	// port exactly once.
	s.mu.Lock()
	defer s.mu.Unlock()
	ports := *s.ports.Load()
	st := Stats{
		Ports:     make([]PortStats, 0, len(ports)),
		Forwarded: s.forwarded.Load(),
		Flooded:   s.flooded.Load(),
		Wakeups:   s.wakeups.Load(),
		FDB:       s.fdb.stats(),
		Limits:    Limits{MaxPorts: s.cfg.MaxPorts, QueueLen: s.cfg.QueueLen, QueueBytes: s.cfg.QueueBytes, MaxFrame: s.cfg.MaxFrame},
	}
	for _, a := range ports {
		ps := a.Stats()
		st.Ports = append(st.Ports, ps)
		st.Totals.addCounters(&ps)
	}
	for a := range s.departing {
		ps := a.Stats()
		st.Totals.addCounters(&ps)
	}
	st.Departed = append([]PortStats(nil), s.departed...)
	st.Totals.addCounters(&s.gone)
	st.Totals.Name = "total"
	return st
}

// Ports returns the live ports in the order they were added.
func (s *Switch) Ports() []*Attachment {
	return append([]*Attachment(nil), *s.ports.Load()...)
}

// FDB returns the live FDB entries, ordered by port and MAC.
func (s *Switch) FDB() []FDBEntry { return s.fdb.entries(s.now()) }

// FlushFDB forgets every learned address and returns how many there were.
func (s *Switch) FlushFDB() int { return s.fdb.flush() }

// Close removes and closes every port and stops the switch, waiting for
// its goroutines. It is idempotent.
func (s *Switch) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.mu.Unlock()
	for _, a := range *s.ports.Load() {
		a.remove(nil, false)
	}
	s.wg.Wait()
	return nil
}
