// Package loadgen drives tapswitch's VM socket transports the way guests
// do, to measure the switch: clients that speak the stream framing (QEMU
// -netdev stream, socket_vmnet clients: a 4-byte big-endian length before
// every frame, over a unix socket) or the datagram protocol (QEMU -netdev
// dgram, vfkit: one frame per unixgram datagram, vfkit's "VFKT" hello
// first).
//
// A Session attaches two active clients and any number of idle ones to a
// switch listening on a socket path: an in-process one (StartSwitch) or a
// running `tapswitch serve --listen ...`. Every client first broadcasts a
// hello so that the switch learns its MAC address; the idle clients then
// stay connected and reading, but silent. Run makes the two active clients
// send unicast frames to each other as fast as they can, with at most
// Config.Window frames in flight per direction (so that the measure is the
// switch's lossless rate, not how fast it drops), and reports frames/s,
// Gbit/s and what the idle clients received (a learning switch sends them
// nothing). Every data frame carries the number of the Run that sent it,
// so that a frame of an earlier run arriving late counts in none.
//
// The clients allocate nothing per frame, so that allocations measured
// around Run in the same process are the switch's. The package lives under
// bench/ and is used by its benchmarks and by cmd/loadgen; it is no part of
// the product.
package loadgen

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tapswitch/tapswitch/backend/dgram"
)

// Transports, as Config.Transport names them.
const (
	// Stream is a unix stream socket carrying length-prefixed frames.
	Stream = "stream"
	// Dgram is a unixgram socket carrying one frame per datagram; each
	// client binds a path of its own, connects to the switch's and sends
	// vfkit's "VFKT" hello first. (Being connected, its socket is exempt
	// from net.unix.max_dgram_qlen for the switch's sends; see
	// docs/performance.md.)
	Dgram = "dgram"
)

// EtherTypes of the generated frames (IEEE 802 local experimental): data
// frames and the hellos that teach the switch each client's MAC.
const (
	dataType  = 0x88b5
	helloType = 0x88b6
)

// minSize is the shortest data frame: the Ethernet header and, after it,
// the run number (big-endian uint32) that tells a frame of the current Run
// from a late one of an earlier Run.
const minSize = 14 + 4

// Defaults for the zero values of Config.
const (
	DefaultSize        = 1500
	DefaultWindow      = 256
	DefaultBatch       = 64
	DefaultLossTimeout = 200 * time.Millisecond
)

// Config configures a Session.
type Config struct {
	// Transport is Stream or Dgram.
	Transport string
	// Path is the switch's socket file: a stream listener's for Stream,
	// a datagram listener's for Dgram.
	Path string
	// Size is the length of each data frame, Ethernet header included,
	// without FCS (default 1500; at least 18, the header and the run
	// number, at most 65535).
	Size int
	// Idle is the number of idle clients (default 0).
	Idle int
	// Window bounds the frames in flight from one active client to the
	// other (default 256, half the switch's default queue length). A
	// negative value sends without bound: then frames the switch drops
	// count as lost.
	Window int
	// Batch is how many frames a stream client writes per system call
	// (default 64, at most Window). Datagram clients send one per call.
	Batch int
	// LossTimeout is how long a sender waits for progress before it counts
	// the frames in flight as lost (default 200 ms).
	LossTimeout time.Duration
}

func (c *Config) setDefaults() error {
	if c.Transport != Stream && c.Transport != Dgram {
		return fmt.Errorf("loadgen: transport %q: want %q or %q", c.Transport, Stream, Dgram)
	}
	if c.Path == "" {
		return errors.New("loadgen: no socket path")
	}
	if c.Size == 0 {
		c.Size = DefaultSize
	}
	if c.Size < minSize || c.Size > 65535 {
		return fmt.Errorf("loadgen: frame size %d: want %d to 65535", c.Size, minSize)
	}
	if c.Idle < 0 {
		return fmt.Errorf("loadgen: %d idle clients", c.Idle)
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	if c.Batch <= 0 {
		c.Batch = DefaultBatch
	}
	if c.Window > 0 {
		c.Batch = min(c.Batch, c.Window)
	}
	if c.LossTimeout <= 0 {
		c.LossTimeout = DefaultLossTimeout
	}
	return nil
}

// Result is what one Run measured.
type Result struct {
	// Size is the frame length.
	Size int
	// Sent, Received and Lost count data frames of the two active
	// clients, both directions together; Received+Lost == Sent. Lost
	// frames are those that had not arrived when Run returned: a sender
	// that sees no progress for Config.LossTimeout writes off the frames it
	// has in flight, and takes back those that arrive later in the run.
	Sent, Received, Lost uint64
	// Late counts frames written off after LossTimeout that arrived later
	// in the run: they are in Received, not in Lost. They come from
	// stalls of the switch (or of the machine) longer than LossTimeout.
	Late uint64
	// IdleReceived counts data frames that reached idle clients.
	IdleReceived uint64
	// Elapsed runs from the first send to the last frame received.
	Elapsed time.Duration
	// CPU is the user and system time of this process during Run: the
	// clients' and, for an in-process switch, the switch's.
	CPU time.Duration
}

// FramesPerSec is the rate of frames received.
func (r Result) FramesPerSec() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Received) / r.Elapsed.Seconds()
}

// Gbps is the rate of frame bytes received (Ethernet headers included,
// length prefixes not), in Gbit/s.
func (r Result) Gbps() float64 { return r.FramesPerSec() * float64(r.Size) * 8 / 1e9 }

// String formats r on one line.
func (r Result) String() string {
	return fmt.Sprintf("%d B: %.0f frames/s %.3f Gbit/s sent=%d received=%d lost=%d late=%d idle_rx=%d cpu=%.2f cores in %v",
		r.Size, r.FramesPerSec(), r.Gbps(), r.Sent, r.Received, r.Lost, r.Late, r.IdleReceived,
		r.CPU.Seconds()/max(r.Elapsed.Seconds(), 1e-9), r.Elapsed.Round(time.Millisecond))
}

// Session is a set of clients attached to a switch: clients 0 and 1 are
// active, the rest idle. Run may be called more than once, one call at a
// time; Close ends it.
type Session struct {
	cfg     Config
	dir     string // the datagram clients' socket files
	clients []*client
	prefix  [4]byte       // MAC prefix unique to the session
	run     atomic.Uint32 // number of the current (or last) Run
}

// NewSession connects 2 active and cfg.Idle idle clients to the switch and
// waits until every client has heard every other's hello (up to 5 s), so
// that the switch has learned every MAC address.
func NewSession(cfg Config) (*Session, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Session{cfg: cfg}
	// 02:xx:xx:xx: locally administered, random per session, so that
	// sessions against a long-running switch do not move each other's MACs.
	binary.BigEndian.PutUint32(s.prefix[:], rand.Uint32())
	s.prefix[0] = 0x02
	if cfg.Transport == Dgram {
		dir, err := os.MkdirTemp("", "loadgen-")
		if err != nil {
			return nil, err
		}
		s.dir = dir
	}
	n := 2 + cfg.Idle
	for i := range n {
		c, err := s.dial(i, n)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.clients = append(s.clients, c)
		go c.readLoop()
	}
	if err := s.learn(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Session) mac(i int) [6]byte {
	return [6]byte{s.prefix[0], s.prefix[1], s.prefix[2], s.prefix[3], byte(i >> 8), byte(i)}
}

func (s *Session) dial(i, n int) (*client, error) {
	c := &client{s: s, idx: i, mac: s.mac(i), notify: make(chan struct{}, 1), done: make(chan struct{}),
		seen: make([]atomic.Bool, n)}
	switch s.cfg.Transport {
	case Stream:
		conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.cfg.Path, Net: "unix"})
		if err != nil {
			return nil, fmt.Errorf("loadgen: client %d: %w", i, err)
		}
		c.conn = conn
	case Dgram:
		local := &net.UnixAddr{Name: filepath.Join(s.dir, fmt.Sprintf("c%d.sock", i)), Net: "unixgram"}
		conn, err := net.DialUnix("unixgram", local, &net.UnixAddr{Name: s.cfg.Path, Net: "unixgram"})
		if err != nil {
			return nil, fmt.Errorf("loadgen: client %d: %w", i, err)
		}
		// vfkit's sizes, after Apple's advice (receive 4x send); Linux caps
		// them at net.core.{r,w}mem_max.
		conn.SetReadBuffer(4 << 20)
		conn.SetWriteBuffer(1 << 20)
		c.conn = conn
		if _, err := conn.Write(dgram.MagicVFKit); err != nil {
			conn.Close()
			return nil, fmt.Errorf("loadgen: client %d: hello: %w", i, err)
		}
	}
	c.frame = s.frame(c.mac, s.mac(i^1), dataType, s.cfg.Size)
	if s.cfg.Transport == Stream {
		// Batch frames back to back, each behind its length, written with
		// one call.
		one := append(binary.BigEndian.AppendUint32(nil, uint32(len(c.frame))), c.frame...)
		for range s.cfg.Batch {
			c.wbuf = append(c.wbuf, one...)
		}
	}
	return c, nil
}

func (s *Session) frame(src, dst [6]byte, etherType uint16, size int) []byte {
	f := make([]byte, size)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:14], etherType)
	return f
}

// learn has every client broadcast hellos until each has heard all others.
func (s *Session) learn() error {
	bcast := [6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	deadline := time.Now().Add(5 * time.Second)
	for {
		for _, c := range s.clients {
			if err := c.write(s.frame(c.mac, bcast, helloType, 60)); err != nil {
				return fmt.Errorf("loadgen: client %d: hello: %w", c.idx, err)
			}
		}
		wait := time.Now().Add(50 * time.Millisecond)
		for time.Now().Before(wait) {
			if s.allLearned() {
				return nil
			}
			time.Sleep(2 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			for _, c := range s.clients {
				if err := c.err(); err != nil {
					return fmt.Errorf("loadgen: client %d: %w", c.idx, err)
				}
			}
			return fmt.Errorf("loadgen: clients did not hear each other's hellos within 5 s (is %s a %s listener?)", s.cfg.Path, s.cfg.Transport)
		}
	}
}

func (s *Session) allLearned() bool {
	for _, c := range s.clients {
		if int(c.nseen.Load()) < len(s.clients)-1 {
			return false
		}
	}
	return true
}

// Run sends frames data frames (0: no limit), split between the two active
// clients, or sends until d has passed (0: no limit), and waits for them to
// arrive or be written off (see Result.Lost). Runs of a Session must not
// overlap.
func (s *Session) Run(frames int, d time.Duration) (Result, error) {
	if frames <= 0 && d <= 0 {
		return Result{}, errors.New("loadgen: Run needs a frame count or a duration")
	}
	run := s.run.Add(1)
	for _, c := range s.clients[:2] {
		c.stamp(run)
	}
	var deadline time.Time
	if d > 0 {
		deadline = time.Now().Add(d)
	}
	a, b := s.clients[0], s.clients[1]
	quota := [2]int{-1, -1}
	if frames > 0 {
		quota = [2]int{frames - frames/2, frames / 2}
	}
	cpu0 := cpuTime()
	start := time.Now()
	a.lastRecv.Store(start.UnixNano())
	b.lastRecv.Store(start.UnixNano())
	var wg sync.WaitGroup
	var res [2]sendResult
	for i, peer := range []*client{b, a} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = s.clients[i].send(peer, run, quota[i], deadline)
		}()
	}
	wg.Wait()
	end := time.Unix(0, max(a.lastRecv.Load(), b.lastRecv.Load()))
	r := Result{Size: s.cfg.Size, Elapsed: end.Sub(start), CPU: cpuTime() - cpu0}
	var err error
	for i, sr := range res {
		// Frames written off may have arrived since the sender looked.
		got := s.clients[i^1].received(run)
		r.Sent += sr.sent
		r.Lost += sr.lost(got)
		r.Late += sr.late(got)
		r.Received += got
		err = errors.Join(err, sr.err)
	}
	for _, c := range s.clients[2:] {
		r.IdleReceived += c.received(run)
	}
	return r, err
}

// Close disconnects every client and removes their socket files.
func (s *Session) Close() error {
	for _, c := range s.clients {
		c.conn.Close()
		<-c.done
	}
	if s.dir != "" {
		return os.RemoveAll(s.dir)
	}
	return nil
}

// client is one simulated guest NIC.
type client struct {
	s     *Session
	idx   int
	mac   [6]byte
	conn  *net.UnixConn
	frame []byte // the data frame it sends
	wbuf  []byte // stream: Batch copies of frame, each behind its length

	// recv holds the data frames received of run recv>>48 (the low 16
	// bits of the run number) in its low 48 bits. Only readLoop writes it.
	recv     atomic.Uint64
	lastRecv atomic.Int64  // unix nanoseconds of the last data received
	notify   chan struct{} // a token after every read that brought data
	seen     []atomic.Bool // hellos heard, by client index
	nseen    atomic.Int32
	bad      atomic.Uint64 // frames neither hello nor data of this session

	errMu   sync.Mutex
	readErr error
	done    chan struct{}
}

func (c *client) err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.readErr
}

// runBits places the low 16 bits of run where client.recv holds them.
func runBits(run uint32) uint64 { return uint64(run&0xffff) << 48 }

// received returns the data frames of run that c has received.
func (c *client) received(run uint32) uint64 {
	v := c.recv.Load()
	if v&^(1<<48-1) != runBits(run) {
		return 0
	}
	return v & (1<<48 - 1)
}

// stamp writes run into the data frame and its copies in wbuf. Run calls
// it before the client sends.
func (c *client) stamp(run uint32) {
	binary.BigEndian.PutUint32(c.frame[14:], run)
	for off := 4; off < len(c.wbuf); off += 4 + len(c.frame) {
		binary.BigEndian.PutUint32(c.wbuf[off+14:], run)
	}
}

// writeData sends k data frames: one system call for a stream client,
// one per frame for a datagram client. It allocates nothing.
func (c *client) writeData(k int) error {
	if c.s.cfg.Transport == Stream {
		_, err := c.conn.Write(c.wbuf[:k*(4+len(c.frame))])
		return err
	}
	for range k {
		if _, err := c.conn.Write(c.frame); err != nil {
			return err
		}
	}
	return nil
}

// write sends one frame in the transport's framing.
func (c *client) write(frame []byte) error {
	if c.s.cfg.Transport == Stream {
		frame = append(binary.BigEndian.AppendUint32(nil, uint32(len(frame))), frame...)
	}
	_, err := c.conn.Write(frame)
	return err
}

// flight is a sender's account of its frames. It relies on the switch
// keeping them in order (a port's frames are read by one loop and leave
// through one FIFO queue), so that a frame that arrives is the oldest not
// yet arrived. When LossTimeout passes without one arriving, the sender
// writes off the frames in flight; those that arrive after all are late,
// no longer lost, and while they arrive the frames sent after them are in
// flight: so the window holds after a stall.
type flight struct {
	sent    uint64 // frames sent
	mark    uint64 // sent at the last write-off: frames before it that have not arrived are written off
	written uint64 // frames written off, all told
}

// inflight returns how many frames are neither received (got: the
// peer's count) nor written off.
func (f *flight) inflight(got uint64) uint64 {
	if done := max(got, f.mark); done < f.sent {
		return f.sent - done
	}
	return 0 // got may pass sent while a write is counted
}

// writeOff writes off the frames in flight.
func (f *flight) writeOff(got uint64) {
	f.written += f.inflight(got)
	f.mark = f.sent
}

// lost returns how many frames written off have not arrived.
func (f *flight) lost(got uint64) uint64 {
	if f.mark > got {
		return f.mark - got
	}
	return 0
}

// late returns how many frames written off have arrived.
func (f *flight) late(got uint64) uint64 { return f.written - f.lost(got) }

type sendResult struct {
	flight
	err error
}

// send sends data frames of run to peer until quota (if >= 0) or deadline
// (if set), keeping at most Window in flight, then waits until they have
// arrived or are written off.
func (c *client) send(peer *client, run uint32, quota int, deadline time.Time) sendResult {
	cfg := &c.s.cfg
	var r sendResult
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	// wait waits until fewer than limit frames are in flight, writing
	// them off when LossTimeout passes without a frame arriving.
	wait := func(limit uint64) {
		for {
			got := peer.received(run)
			if r.inflight(got) < limit {
				return
			}
			t.Reset(cfg.LossTimeout)
			select {
			case <-peer.notify:
			case <-t.C:
				if peer.received(run) == got {
					r.writeOff(got)
				}
			}
		}
	}
	for quota < 0 || int(r.sent) < quota {
		if !deadline.IsZero() && time.Now().After(deadline) {
			break
		}
		k := cfg.Batch
		if quota >= 0 {
			k = min(k, quota-int(r.sent))
		}
		if cfg.Window > 0 {
			wait(uint64(cfg.Window - k + 1))
		}
		if err := c.writeData(k); err != nil {
			r.err = fmt.Errorf("loadgen: client %d: send: %w", c.idx, err)
			break
		}
		r.sent += uint64(k)
	}
	wait(1)
	return r
}

// readLoop counts what the client receives until its connection closes.
func (c *client) readLoop() {
	defer close(c.done)
	buf := make([]byte, 256<<10)
	var err error
	if c.s.cfg.Transport == Dgram {
		for {
			var n int
			if n, err = c.conn.Read(buf); err != nil {
				break
			}
			// Loaded after the read: a frame of a new run was sent after
			// Run changed the number.
			run := c.s.run.Load()
			if c.account(buf[:n], run) {
				c.progress(run, 1)
			}
		}
	} else {
		r, w := 0, 0
		for {
			var n int
			if n, err = c.conn.Read(buf[w:]); err != nil {
				break
			}
			w += n
			run := c.s.run.Load()
			data := uint64(0)
			for w-r >= 4 {
				l := int(binary.BigEndian.Uint32(buf[r:]))
				if l > len(buf)-4 {
					err = fmt.Errorf("frame length %d", l)
					break
				}
				if w-r < 4+l {
					break
				}
				if c.account(buf[r+4:r+4+l], run) {
					data++
				}
				r += 4 + l
			}
			if err != nil {
				break
			}
			w = copy(buf, buf[r:w])
			r = 0
			if data > 0 {
				c.progress(run, data)
			}
		}
	}
	if !errors.Is(err, net.ErrClosed) {
		c.errMu.Lock()
		c.readErr = err
		c.errMu.Unlock()
	}
}

// account classifies one received frame and reports whether it is data
// of run.
func (c *client) account(f []byte, run uint32) bool {
	if len(f) < 14 || [4]byte(f[6:10]) != c.s.prefix {
		c.bad.Add(1)
		return false
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case dataType:
		if len(f) < minSize {
			c.bad.Add(1)
			return false
		}
		return binary.BigEndian.Uint32(f[14:]) == run // else late, of an earlier run
	case helloType:
		i := int(f[10])<<8 | int(f[11])
		if i < len(c.seen) && i != c.idx && !c.seen[i].Swap(true) {
			c.nseen.Add(1)
		}
	default:
		c.bad.Add(1)
	}
	return false
}

// progress counts n data frames of run.
func (c *client) progress(run uint32, n uint64) {
	v := c.recv.Load()
	if v&^(1<<48-1) != runBits(run) {
		v = runBits(run)
	}
	c.recv.Store(v + n)
	c.lastRecv.Store(time.Now().UnixNano())
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
