// Package stream connects QEMU-style stream sockets to the switch: each
// connection is a vswitch.Port carrying Ethernet frames, each preceded by
// its length as a 32-bit big-endian integer.
//
// That framing is spoken by QEMU's `-netdev stream` (7.2 and later), the
// stream mode of `-netdev socket` (connect=, listen= and fd=), passt and
// socket_vmnet clients, over unix and TCP sockets. QEMU's receive buffer
// is NET_BUFSIZE = 4096+65536 bytes (net/net.c, net_fill_rstate); a longer
// frame makes it drop the connection, so the switch never sends more than
// MaxFrame (default 65535) bytes.
//
// The package offers the port itself (NewConn), a listener that makes a
// port of every client (Listen), and a client that keeps a connection to a
// QEMU listening with server=on (Dial). It sits between the socket and the
// switch (package vswitch) and knows nothing of forwarding.
package stream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/internal/logx"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Wire format and defaults.
const (
	// HeaderLen is the size of the length prefix in front of every frame.
	HeaderLen = 4
	// MinFrame is the shortest frame accepted: an Ethernet header.
	MinFrame = 14
	// DefaultMaxFrame is the longest frame accepted by default: the largest
	// length QEMU's 4096+65536-byte receive buffer takes that is also the
	// switch's default maximum.
	DefaultMaxFrame = 65535
	// DefaultBatchSize is the default number of frames per ReadFrames and
	// WriteFrames call.
	DefaultBatchSize = 32
	// DefaultReadBuffer is the default size of a connection's read buffer:
	// big enough to hold a batch of full-size 1500-byte frames and a few
	// 64 KiB ones, so that one read system call yields many frames.
	DefaultReadBuffer = 256 << 10
	// DefaultWriteTimeout bounds how long one WriteFrames call waits for a
	// peer that is not reading.
	DefaultWriteTimeout = time.Second
)

// ErrBadLength is returned, wrapped with the length, by ReadFrames when a
// peer sends a length prefix outside [MinFrame, MaxFrame]. The stream
// cannot be resynchronised after that, so the error ends the port: the
// switch removes it and logs the error once, and other ports carry on.
var ErrBadLength = errors.New("bad frame length")

// ConnConfig configures a Conn. The zero value is usable.
type ConnConfig struct {
	// Name is returned by String. Default: the remote address with its
	// network, such as "tcp:127.0.0.1:40000", or the local one when the
	// remote has none (an accepted unix socket).
	Name string
	// MaxFrame is the longest frame, Ethernet header included, accepted in
	// either direction (default DefaultMaxFrame). A longer length prefix
	// from the peer ends the port with ErrBadLength.
	MaxFrame int
	// BatchSize is returned by BatchSize (default DefaultBatchSize).
	BatchSize int
	// ReadBuffer is the size of the read buffer (default DefaultReadBuffer,
	// at least HeaderLen+MaxFrame).
	ReadBuffer int
	// WriteTimeout is how long WriteFrames waits for a peer that does not
	// read (default DefaultWriteTimeout). Frames it could not start are
	// dropped and reported with n < len(bufs).
	WriteTimeout time.Duration
	// Logger receives connection events, never one line per frame. Nil
	// discards them.
	Logger logrus.FieldLogger
}

func (cfg *ConnConfig) setDefaults(c net.Conn) {
	if cfg.Name == "" {
		cfg.Name = defaultName(c)
	}
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.ReadBuffer <= 0 {
		cfg.ReadBuffer = DefaultReadBuffer
	}
	cfg.ReadBuffer = max(cfg.ReadBuffer, HeaderLen+cfg.MaxFrame)
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	cfg.Logger = logx.OrDiscard(cfg.Logger)
}

func defaultName(c net.Conn) string {
	for _, a := range []net.Addr{c.RemoteAddr(), c.LocalAddr()} {
		if a == nil {
			continue
		}
		if s := a.String(); s != "" && s != "<nil>" && s != "@" {
			return a.Network() + ":" + s
		}
	}
	return "stream"
}

// ConnStats counts what a Conn did about trouble that did not end it.
type ConnStats struct {
	// Discarded counts received frames skipped because they did not fit
	// the caller's buffer (a caller whose buffers are smaller than
	// MaxFrame).
	Discarded uint64
	// WriteTimeouts counts WriteFrames calls cut short by WriteTimeout.
	WriteTimeouts uint64
	// PartialWrites counts frames that were written in part when a write
	// timed out; their tails went out first on the next call.
	PartialWrites uint64
}

// Conn is a vswitch.Port over one stream connection.
//
// ReadFrames and WriteFrames may run concurrently with each other and with
// Close, but each must be called from one goroutine at a time, as the
// switch does.
type Conn struct {
	c    net.Conn
	cfg  ConnConfig
	r    *bufio.Reader
	log  logrus.FieldLogger
	once sync.Once

	closed atomic.Bool

	// Transmit side, owned by the WriteFrames caller.
	vec     [][]byte
	bv      net.Buffers // vec as written; a field so that WriteTo does not allocate
	pending []byte      // unsent tail of a frame cut short by a write timeout

	discarded, timeouts, partial atomic.Uint64
}

var (
	_ vswitch.Port           = (*Conn)(nil)
	_ vswitch.SizedReader    = (*Conn)(nil)
	_ vswitch.BackendCounter = (*Conn)(nil)
)

// NewConn returns a port that reads and writes length-prefixed frames on
// c. The Conn owns c from then on and closes it on Close.
func NewConn(c net.Conn, cfg ConnConfig) *Conn {
	cfg.setDefaults(c)
	return &Conn{
		c:   c,
		cfg: cfg,
		r:   bufio.NewReaderSize(c, cfg.ReadBuffer),
		log: cfg.Logger.WithField("port", cfg.Name),
		vec: make([][]byte, 0, cfg.BatchSize+1),
	}
}

// errClosed is what ReadFrames and WriteFrames return after Close.
func (c *Conn) errClosed(op string) error {
	return fmt.Errorf("stream %s: %s: %w", c.cfg.Name, op, net.ErrClosed)
}

func (c *Conn) validLength(n int) bool { return n >= MinFrame && n <= c.cfg.MaxFrame }

// ReadFrames reads up to len(bufs) frames into bufs[i][offset:]. It blocks
// until one frame has arrived, then adds only frames that are already
// whole in the read buffer, so it never waits once it has something to
// return, and it ends a batch before a frame that does not fit the next
// buffer (vswitch.SizedReader). It fails, ending the port, on a length
// prefix outside [MinFrame, MaxFrame] (ErrBadLength), on a frame cut short
// by the end of the stream (io.ErrUnexpectedEOF), when the peer hangs up
// (io.EOF) and after Close (net.ErrClosed). Frames already decoded are
// returned first; the error comes with the next call.
func (c *Conn) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	if c.closed.Load() {
		return 0, c.errClosed("read")
	}
	n := 0
	for n < len(bufs) {
		if n > 0 {
			if c.r.Buffered() < HeaderLen {
				break
			}
			hdr, _ := c.r.Peek(HeaderLen)
			l := int(binary.BigEndian.Uint32(hdr))
			if !c.validLength(l) || c.r.Buffered() < HeaderLen+l || l > len(bufs[n])-offset {
				break // a frame too long for this buffer starts the next batch
			}
		}
		hdr, err := c.r.Peek(HeaderLen)
		if err != nil {
			return n, c.readErr(err, len(hdr) == 0)
		}
		l := int(binary.BigEndian.Uint32(hdr))
		if !c.validLength(l) {
			return n, fmt.Errorf("stream %s: frame length %d: %w", c.cfg.Name, l, ErrBadLength)
		}
		c.r.Discard(HeaderLen)
		dst := bufs[n][offset:]
		if l > len(dst) {
			if _, err := c.r.Discard(l); err != nil {
				return n, c.readErr(err, false)
			}
			c.discarded.Add(1)
			continue
		}
		if _, err := io.ReadFull(c.r, dst[:l]); err != nil {
			return n, c.readErr(err, false)
		}
		sizes[n] = l
		n++
	}
	return n, nil
}

// readErr wraps a read error; atBoundary says whether the stream ended
// between frames (a clean hang-up) rather than inside one.
func (c *Conn) readErr(err error, atBoundary bool) error {
	if c.closed.Load() {
		return c.errClosed("read")
	}
	if errors.Is(err, io.EOF) {
		if atBoundary {
			return fmt.Errorf("stream %s: peer hung up: %w", c.cfg.Name, io.EOF)
		}
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("stream %s: read frame: %w", c.cfg.Name, err)
}

// WriteFrames writes the frames bufs[i][offset:] in one vectored write,
// each preceded by its length, which it stores in
// bufs[i][offset-HeaderLen:offset]; offset must be at least HeaderLen.
//
// A peer that does not read makes the write time out after WriteTimeout:
// frames not yet started are dropped and reported with n < len(bufs), and
// the connection stays open. If the timeout struck inside a frame, the
// rest of that frame is kept (the only copy WriteFrames makes) and sent
// first on the next call, so the peer never sees a torn frame; that frame
// is counted as written. Any other write error closes the connection,
// which ends the port. A frame outside [MinFrame, MaxFrame] ends the batch
// with ErrBadLength.
func (c *Conn) WriteFrames(bufs [][]byte, offset int) (int, error) {
	if c.closed.Load() {
		return 0, c.errClosed("write")
	}
	if offset < HeaderLen {
		return 0, fmt.Errorf("stream %s: write: offset %d leaves no room for the %d-byte length", c.cfg.Name, offset, HeaderLen)
	}
	var badErr error
	vec := c.vec[:0]
	if len(c.pending) > 0 {
		vec = append(vec, c.pending)
	}
	for i, b := range bufs {
		l := len(b) - offset
		if !c.validLength(l) {
			badErr = fmt.Errorf("stream %s: write frame of %d bytes: %w", c.cfg.Name, l, ErrBadLength)
			bufs = bufs[:i]
			break
		}
		binary.BigEndian.PutUint32(b[offset-HeaderLen:offset], uint32(l))
		vec = append(vec, b[offset-HeaderLen:])
	}
	if len(vec) == 0 {
		return 0, badErr
	}
	c.c.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	c.bv = vec
	written, err := c.bv.WriteTo(c.c)
	c.bv = nil
	clear(vec) // keep no reference to the caller's buffers
	c.vec = vec[:0]
	if err == nil {
		c.pending = c.pending[:0]
		return len(bufs), badErr
	}

	// Find where the write stopped.
	if p := int64(len(c.pending)); p > 0 {
		if written < p {
			c.pending = c.pending[:copy(c.pending, c.pending[written:])]
			return 0, c.writeErr(err)
		}
		written -= p
		c.pending = c.pending[:0]
	}
	k := 0
	for ; k < len(bufs); k++ {
		fl := int64(HeaderLen + len(bufs[k]) - offset)
		if written < fl {
			break
		}
		written -= fl
	}
	if k < len(bufs) && written > 0 {
		c.pending = append(c.pending[:0], bufs[k][int64(offset-HeaderLen)+written:]...)
		c.partial.Add(1)
		k++
	}
	return k, c.writeErr(err)
}

func (c *Conn) writeErr(err error) error {
	if c.closed.Load() {
		return c.errClosed("write")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.timeouts.Add(1)
		return fmt.Errorf("stream %s: write: peer not reading: %w", c.cfg.Name, err)
	}
	if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
		// The peer hung up: the reader reports the end as usual.
		c.log.WithError(err).Debug("write failed: the peer has closed the connection")
	} else {
		c.log.WithError(err).Warn("write failed; closing connection")
	}
	c.Close()
	return fmt.Errorf("stream %s: write: %w", c.cfg.Name, err)
}

// ReadsSized implements vswitch.SizedReader: ReadFrames reads a frame's
// length before the frame.
func (c *Conn) ReadsSized() bool { return true }

// BatchSize returns ConnConfig.BatchSize.
func (c *Conn) BatchSize() int { return c.cfg.BatchSize }

// MTU returns the largest payload a frame of MaxFrame bytes carries.
func (c *Conn) MTU() int { return c.cfg.MaxFrame - MinFrame }

// String returns ConnConfig.Name.
func (c *Conn) String() string { return c.cfg.Name }

// Stats returns the connection's counters.
func (c *Conn) Stats() ConnStats {
	return ConnStats{
		Discarded:     c.discarded.Load(),
		WriteTimeouts: c.timeouts.Load(),
		PartialWrites: c.partial.Load(),
	}
}

// BackendCounters returns Stats by name, for the switch's port statistics
// (vswitch.BackendCounter).
func (c *Conn) BackendCounters() map[string]uint64 {
	st := c.Stats()
	return map[string]uint64{"discarded": st.Discarded, "write_timeouts": st.WriteTimeouts, "partial_writes": st.PartialWrites}
}

// Close closes the connection, unblocking ReadFrames and WriteFrames; later
// calls of either return an error matching net.ErrClosed. It is
// idempotent.
func (c *Conn) Close() error {
	var err error
	c.once.Do(func() {
		c.closed.Store(true)
		err = c.c.Close()
	})
	return err
}
