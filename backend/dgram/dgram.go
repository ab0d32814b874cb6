// Package dgram connects datagram sockets to the switch: one Ethernet frame
// per datagram, over unixgram or UDP.
//
// That is the wire format of QEMU's `-netdev dgram` (7.2 and later) and
// `-netdev socket,udp=`, of vfkit, and of Apple Virtualization's
// VZFileHandleNetworkDeviceAttachment. The switch binds one socket; every
// distinct source address that sends to it becomes a port of its own
// (vswitch.PortConfig{NoReader: true}). One read loop reads datagrams in
// batches (recvmmsg(2) on Linux, one recvfrom(2) per datagram until the
// socket is empty elsewhere), demultiplexes them by source address and
// hands each run of consecutive frames from one peer to the peer's
// Attachment.Input in one call; each peer's port sends to its address (in
// batches with sendmmsg(2) on Linux), from the shared socket, or on Linux
// from a socket of the peer's own unless the peer's socket is connected to
// the shared one (see ownSocket). Neither direction allocates per frame.
//
// Peers come and go without a connection to tell: a unixgram peer is
// removed when a send to it fails for good (ECONNREFUSED or ENOENT: its
// socket is closed or its file removed), which the next broadcast finds
// out; a guest that stays silent for hours keeps its port. A UDP peer that
// vanishes gives no such error, since ICMP errors are not reported on an
// unconnected socket, so a UDP peer is removed when it has sent nothing
// for Config.IdleTimeout.
//
// The package sits between the socket and the switch (package vswitch)
// and knows nothing of forwarding.
package dgram

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/internal/logx"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// PortKind is the PortConfig.Kind of every port this package adds.
const PortKind = "dgram"

// Defaults for the zero values of Config.
const (
	// DefaultIdleTimeout is how long a UDP peer may stay silent before it
	// is forgotten: an hour, above the half lease time (30 minutes with
	// tapswitch's default DHCP lease) at which even an otherwise silent
	// guest renews its address. UDP peers that vanished give no send
	// error; DefaultMaxPeers bounds how many can pile up meanwhile.
	DefaultIdleTimeout = time.Hour
	// DefaultMaxPeers bounds the number of peers, so that datagrams from
	// many (possibly spoofed) UDP source addresses cannot make unbounded
	// numbers of ports.
	DefaultMaxPeers = 1024
	// DefaultEvictAfter is how long a peer must have been silent before a
	// new sender may take its place when MaxPeers are reached: senders
	// that sent once and went (a UDP source port each) would otherwise
	// keep every new VM out until they expire.
	DefaultEvictAfter = time.Minute
	// DefaultMaxFrame is the longest frame accepted, Ethernet header
	// included.
	DefaultMaxFrame = 65535
	// DefaultSendBuffer and DefaultRecvBuffer are the socket buffer sizes,
	// after Apple's guidance for VZFileHandleNetworkDeviceAttachment: a
	// receive buffer of at least 2-4 times the send buffer, with 1 MiB and
	// 4 MiB the usual values. On Linux, where the values are capped by
	// net.core.wmem_max and rmem_max, SO_SNDBUFFORCE and SO_RCVBUFFORCE
	// are tried first (they need CAP_NET_ADMIN).
	DefaultSendBuffer = 1 << 20
	DefaultRecvBuffer = 4 << 20
	// DefaultBatchSize is the peers' ports' batch size and the number of
	// datagrams read at once (see Config.BatchSize).
	DefaultBatchSize = 32
)

// Send retries: a send failing with ENOBUFS (macOS under load) or EAGAIN
// (the peer's receive queue is full; on Linux it holds
// net.unix.max_dgram_qlen datagrams, 10 by default) is retried after
// 50, 100 and 200 µs, then the frame and the rest of its batch are
// dropped. The bound keeps one slow peer from holding its transmit
// goroutine for long; other peers are not held, since sends do not take
// a socket's write lock and each unconnected unixgram peer is sent to from
// a socket of its own (see ownSocket).
var sendRetryDelays = [...]time.Duration{50 * time.Microsecond, 100 * time.Microsecond, 200 * time.Microsecond}

// MagicVFKit is the 4-byte datagram vfkit sends when it connects, so that
// the switch learns its address before the guest sends anything. It is
// consumed, never forwarded.
var MagicVFKit = []byte("VFKT")

// Config configures a Listener. The zero value is usable.
type Config struct {
	// Logger receives peer and listener events (one line per peer joining
	// or leaving, rate-limited lines for repeated trouble). Nil discards
	// them.
	Logger logrus.FieldLogger
	// IdleTimeout removes a UDP peer that has sent nothing for this long
	// (default DefaultIdleTimeout). Unixgram peers have none: a send to a
	// departed one fails and removes it.
	IdleTimeout time.Duration
	// MaxPeers bounds the number of peers (default DefaultMaxPeers). When
	// it is reached, a new sender takes the place of the peer that has
	// been silent longest, if that one has been silent for EvictAfter
	// (default DefaultEvictAfter); otherwise its datagrams are dropped and
	// counted as refused.
	MaxPeers   int
	EvictAfter time.Duration
	// MaxFrame is the longest frame accepted (default DefaultMaxFrame).
	MaxFrame int
	// SendBuffer and RecvBuffer are the socket's SO_SNDBUF and SO_RCVBUF
	// (defaults DefaultSendBuffer and DefaultRecvBuffer).
	SendBuffer, RecvBuffer int
	// BatchSize is each peer port's batch size and, on Linux, the number
	// of datagrams read at once (default DefaultBatchSize). The listener
	// reads into BatchSize buffers of MaxFrame bytes: 2 MiB with the
	// defaults.
	BatchSize int
	// Mode is the permission of a unixgram socket file (default 0660:
	// listen.DefaultMode).
	Mode os.FileMode
	// Group, if not nil, is the group ID a unixgram socket file is given
	// before it appears at its path; nil leaves the group it is created
	// with.
	Group *int
	// Port is the template of each peer's PortConfig (port security
	// limits); Kind, Peer and NoReader are set by the listener.
	Port vswitch.PortConfig
	// AllowUIDs and AllowGIDs, if either is set, admit as unixgram peers
	// only senders whose user ID is in AllowUIDs or whose group ID is in
	// AllowGIDs, as the credentials that come with each datagram
	// (SO_PASSCRED) tell them: Linux only. Datagrams from others are
	// dropped and counted as refused. Elsewhere, and for UDP, datagrams
	// carry no credentials and the lists do not apply.
	AllowUIDs, AllowGIDs []int
}

func (c *Config) setDefaults() {
	c.Logger = logx.OrDiscard(c.Logger)
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = DefaultMaxPeers
	}
	if c.EvictAfter <= 0 {
		c.EvictAfter = DefaultEvictAfter
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = DefaultMaxFrame
	}
	if c.SendBuffer <= 0 {
		c.SendBuffer = DefaultSendBuffer
	}
	if c.RecvBuffer <= 0 {
		c.RecvBuffer = DefaultRecvBuffer
	}
	if c.BatchSize <= 0 {
		c.BatchSize = DefaultBatchSize
	}
}

// Stats counts a Listener's datagrams and peers. Frames a peer's port
// forwarded or dropped are counted by the switch, on that port.
type Stats struct {
	// Datagrams counts datagrams received.
	Datagrams uint64 `json:"datagrams"`
	// Magic counts vfkit "VFKT" datagrams consumed.
	Magic uint64 `json:"magic"`
	// Unbound counts datagrams from unixgram sockets bound to no path or
	// to a relative one, which cannot be answered and are dropped.
	Unbound uint64 `json:"unbound"`
	// Invalid counts datagrams shorter than an Ethernet header from
	// addresses that are not peers; they make no peer. (From a peer they go
	// to the switch, which counts them as too_short on the peer's port.)
	Invalid uint64 `json:"invalid"`
	// TooLong counts datagrams longer than MaxFrame, dropped.
	TooLong uint64 `json:"too_long"`
	// Refused counts datagrams from new senders dropped because no peer
	// could be added for them: MaxPeers reached, the switch refused the
	// port (vswitch.Config.MaxPorts), or (Linux) the sender's socket file
	// is not a socket the sender owns, or the sender's socket cannot be
	// connected to (gone, in another network namespace, not writable).
	// MaxPeers and MaxPorts refuse only when no peer of the listener has
	// been silent for EvictAfter.
	Refused uint64 `json:"refused"`
	// ReadErrors counts failed reads other than the socket closing.
	ReadErrors uint64 `json:"read_errors"`
	// SendRetries counts sends retried after ENOBUFS or EAGAIN.
	SendRetries uint64 `json:"send_retries"`
	// SendErrors counts frames that could not be sent (the switch counts
	// them too, as tx_error on the peer's port).
	SendErrors uint64 `json:"send_errors"`
	// PeersAdded, PeersExpired, PeersGone and PeersEvicted count peers
	// learned, removed for idleness, removed because their socket was
	// gone, and removed to make room for a new sender (MaxPeers).
	PeersAdded   uint64 `json:"peers_added"`
	PeersExpired uint64 `json:"peers_expired"`
	PeersGone    uint64 `json:"peers_gone"`
	PeersEvicted uint64 `json:"peers_evicted"`
	// Peers is the number of current peers.
	Peers int `json:"peers"`
	// SendBuffer and RecvBuffer are the listening socket's buffer sizes as
	// the system reports them (Linux reports twice the value set, for its
	// bookkeeping); peers sent to from sockets of their own (ownSocket)
	// have the system's default send buffer.
	SendBuffer int `json:"send_buffer"`
	RecvBuffer int `json:"recv_buffer"`
}

type counters struct {
	datagrams, magic, unbound, invalid, tooLong, refused, readErrors atomic.Uint64
	sendRetries, sendErrors, added, expired, gone, evicted           atomic.Uint64
}

// peerKey identifies a peer: a unixgram path or a UDP address.
type peerKey struct {
	// path is the unixgram socket name as the system reports it: a leading
	// NUL marks a Linux abstract address.
	path string
	// ap is the UDP address, without zone, and with IPv4-mapped IPv6
	// addresses unmapped; scope is the IPv6 zone's interface index, kept
	// as a number so that reading it allocates nothing.
	ap    netip.AddrPort
	scope uint32
}

// source is the sender of a datagram as read: it holds what peerKey holds,
// with path aliasing the reader's buffers until its next read.
type source struct {
	path  []byte
	ap    netip.AddrPort
	scope uint32
	// uid and gid are the sending process's user and group
	// (SCM_CREDENTIALS, unixgram on Linux), if cred.
	uid, gid uint32
	cred     bool
}

func (s *source) same(o *source) bool {
	return s.ap == o.ap && s.scope == o.scope && s.uid == o.uid && s.cred == o.cred && bytes.Equal(s.path, o.path)
}

// key returns s as a peerKey, allocating the path. Lookups index the map
// with a peerKey literal holding string(s.path) instead, which the compiler
// does without allocating.
func (s *source) key() peerKey {
	return peerKey{path: string(s.path), ap: s.ap, scope: s.scope}
}

// Listener is a datagram socket attached to a switch, with one port per
// peer address.
type Listener struct {
	addr listen.Addr
	conn net.PacketConn
	udp  *net.UDPConn  // set for udp
	ux   *net.UnixConn // set for unixgram
	rc   syscall.RawConn
	v6   bool // the UDP socket is AF_INET6: send to v4-mapped addresses
	file *listen.SocketFile
	sw   *vswitch.Switch
	cfg  Config
	log  logrus.FieldLogger
	lim  logx.Limiter

	sndbuf, rcvbuf int
	// epoch is the listener's start; peers' lastSeen is measured from it
	// on the monotonic clock, so a step of the wall clock does not expire
	// every peer at once or keep idle ones.
	epoch time.Time

	c    counters
	done chan struct{}
	wg   sync.WaitGroup
	stop func() bool
	once sync.Once

	mu     sync.Mutex
	closed bool
	peers  map[peerKey]*peer
}

// Listen parses rawURL (unixgram:///path or udp://host:port, see
// listen.Parse) and calls ListenAddr.
func Listen(ctx context.Context, rawURL string, cfg Config, sw *vswitch.Switch) (*Listener, error) {
	a, err := listen.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	return ListenAddr(ctx, a, cfg, sw)
}

// ListenAddr binds a datagram socket at a (unixgram or udp) and attaches
// every peer that sends to it to sw as a port of kind "dgram", whose peer
// is the sender's address. A unixgram socket file is created as
// listen.ListenUnixgram describes (stale file replaced, live socket or
// other file refused, mode set before anyone can send) and removed by
// Close. The listener runs until ctx is cancelled or Close is called.
func ListenAddr(ctx context.Context, a listen.Addr, cfg Config, sw *vswitch.Switch) (*Listener, error) {
	if a.Kind() != listen.KindDgram {
		return nil, fmt.Errorf("listen %s: not a datagram address (want unixgram:// or udp://)", a)
	}
	cfg.setDefaults()
	l := &Listener{
		addr:  a,
		sw:    sw,
		cfg:   cfg,
		done:  make(chan struct{}),
		peers: make(map[peerKey]*peer),
		epoch: time.Now(),
	}
	switch a.Network {
	case "unixgram":
		c, f, err := listen.ListenUnixgram(a.Address, cfg.Mode, cfg.Group)
		if err != nil {
			return nil, err
		}
		l.conn, l.ux, l.file = c, c, f
	default:
		var lc net.ListenConfig
		pc, err := lc.ListenPacket(ctx, a.ListenNetwork(), a.Address)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		l.conn, l.udp = pc, pc.(*net.UDPConn)
		l.addr.Address = pc.LocalAddr().String()
	}
	l.log = cfg.Logger.WithField("listener", l.addr.String())
	fail := func(err error) (*Listener, error) {
		l.conn.Close()
		if l.file != nil {
			l.file.Remove()
		}
		return nil, err
	}
	rc, err := l.conn.(syscall.Conn).SyscallConn()
	if err != nil {
		return fail(fmt.Errorf("listen %s: %w", l.addr, err))
	}
	l.rc = rc
	if l.udp != nil {
		var serr error
		err := rc.Control(func(fd uintptr) {
			var sa unix.Sockaddr
			sa, serr = unix.Getsockname(int(fd))
			_, l.v6 = sa.(*unix.SockaddrInet6)
		})
		if err == nil {
			err = serr
		}
		if err != nil {
			return fail(fmt.Errorf("listen %s: getsockname: %w", l.addr, err))
		}
	}
	if l.ux != nil {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = passCred(int(fd)) })
		if err == nil {
			err = serr
		}
		if err != nil {
			return fail(fmt.Errorf("listen %s: SO_PASSCRED: %w", l.addr, err))
		}
	}
	if err := l.setBuffers(); err != nil {
		return fail(err)
	}
	l.wg.Add(1)
	go l.readLoop()
	if l.ux == nil {
		l.wg.Add(1)
		go l.janitor()
	}
	l.stop = context.AfterFunc(ctx, func() { l.shutdown() })
	l.log.WithFields(logrus.Fields{"sndbuf": l.sndbuf, "rcvbuf": l.rcvbuf}).Info("listening")
	return l, nil
}

// setBuffers sets and reads back the socket buffer sizes, warning when the
// system granted less than asked.
func (l *Listener) setBuffers() error {
	var serr error
	err := l.rc.Control(func(fd uintptr) {
		setBuffer(int(fd), unix.SO_SNDBUF, l.cfg.SendBuffer)
		setBuffer(int(fd), unix.SO_RCVBUF, l.cfg.RecvBuffer)
		if l.sndbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF); serr != nil {
			return
		}
		l.rcvbuf, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("listen %s: socket buffers: %w", l.addr, err)
	}
	if l.sndbuf < l.cfg.SendBuffer || l.rcvbuf < l.cfg.RecvBuffer {
		l.log.WithFields(logrus.Fields{
			"sndbuf": l.sndbuf, "want_sndbuf": l.cfg.SendBuffer,
			"rcvbuf": l.rcvbuf, "want_rcvbuf": l.cfg.RecvBuffer,
		}).Warn("socket buffers smaller than asked; raise the system limit (Linux: net.core.wmem_max, rmem_max; macOS: kern.ipc.maxsockbuf)")
	}
	return nil
}

// Addr returns the address the listener is bound to, with the port chosen
// by the system when a UDP port of 0 was asked for.
func (l *Listener) Addr() listen.Addr { return l.addr }

// String returns the listener's address in URL form.
func (l *Listener) String() string { return l.addr.String() }

// Stats returns the listener's counters.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	n := len(l.peers)
	l.mu.Unlock()
	return Stats{
		Datagrams:    l.c.datagrams.Load(),
		Magic:        l.c.magic.Load(),
		Unbound:      l.c.unbound.Load(),
		Invalid:      l.c.invalid.Load(),
		TooLong:      l.c.tooLong.Load(),
		Refused:      l.c.refused.Load(),
		ReadErrors:   l.c.readErrors.Load(),
		SendRetries:  l.c.sendRetries.Load(),
		SendErrors:   l.c.sendErrors.Load(),
		PeersAdded:   l.c.added.Load(),
		PeersExpired: l.c.expired.Load(),
		PeersGone:    l.c.gone.Load(),
		PeersEvicted: l.c.evicted.Load(),
		Peers:        n,
		SendBuffer:   l.sndbuf,
		RecvBuffer:   l.rcvbuf,
	}
}

// readLoop is the only reader of the socket: it hands each batch read to
// handle.
func (l *Listener) readLoop() {
	defer l.wg.Done()
	r := newReader(l)
	for {
		n, err := r.read()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			l.c.readErrors.Add(1)
			if ok, s := l.lim.Allow(); ok {
				l.log.WithError(err).WithField("suppressed", s).Warn("read failed")
			}
			select {
			case <-l.done:
				return
			case <-time.After(time.Millisecond):
			}
			continue
		}
		l.handle(r.srcs[:n], r.bufs[:n], r.sizes[:n])
	}
}

// handle takes a batch of datagrams: datagram i, from srcs[i], is
// bufs[i][vswitch.Headroom:][:sizes[i]], and bufs[i] has room for
// vswitch.Headroom+MaxFrame+1 bytes. It registers peers (VFKT hello, first
// frame) and hands each run of consecutive frames from one peer to the
// peer's port in one Input call, so each peer's frames keep their order.
func (l *Listener) handle(srcs []source, bufs [][]byte, sizes []int) {
	const off = vswitch.Headroom
	l.c.datagrams.Add(uint64(len(bufs)))
	now := int64(time.Since(l.epoch))
	var (
		last *peer // the peer of srcs[i-1], if it has one
		run  *peer // the peer of bufs[from:i], not yet handed on
		from int
	)
	for i := range bufs {
		src, n := &srcs[i], sizes[i]
		if last != nil && (last.dead.Load() || !src.same(&srcs[i-1])) {
			last = nil
		}
		if last == nil {
			// Hand on the frames before: a peer added below must not
			// receive frames sent before it was.
			l.input(run, bufs[from:i], sizes[from:i])
			run = nil
		}
		var to *peer // where bufs[i] goes; nil drops it
		switch {
		case len(src.path) == 0 && !src.ap.IsValid():
			l.c.unbound.Add(1)
			if ok, s := l.lim.Allow(); ok {
				l.log.WithField("suppressed", s).Warn("datagram from a socket bound to no path dropped: bind the sending socket so that it can be answered")
			}
		case len(src.path) > 0 && src.path[0] != '/' && src.path[0] != 0:
			// Relative to the sender's directory, which is not ours.
			l.c.unbound.Add(1)
			if ok, s := l.lim.Allow(); ok {
				l.log.WithFields(logrus.Fields{"path": string(src.path), "suppressed": s}).
					Warn("datagram from a socket bound to a relative path dropped: it cannot be answered; bind it to an absolute path")
			}
		case n > l.cfg.MaxFrame:
			l.c.tooLong.Add(1)
			last = l.peer(src, last, now, false)
		case bytes.Equal(bufs[i][off:off+n], MagicVFKit):
			l.c.magic.Add(1)
			last = l.peer(src, last, now, true)
		default:
			last = l.peer(src, last, now, n >= 14)
			if last == nil && n < 14 {
				l.c.invalid.Add(1)
			}
			to = last
		}
		if to != run {
			l.input(run, bufs[from:i], sizes[from:i])
			run, from = to, i
		}
	}
	l.input(run, bufs[from:], sizes[from:])
}

// input hands frames to p's port; a nil p has none.
func (l *Listener) input(p *peer, bufs [][]byte, sizes []int) {
	if p == nil {
		return
	}
	if a := p.att.Load(); a != nil {
		a.Input(bufs, sizes, vswitch.Headroom)
	}
}

// peer returns the peer of src, refreshing its idle timer: last, which
// the caller knows to be src's peer, or the one in the table, or, if
// create, a new one. It returns nil when there is no such peer and none
// was made.
func (l *Listener) peer(src *source, last *peer, now int64, create bool) *peer {
	if last != nil {
		last.lastSeen.Store(now)
		return last
	}
	l.mu.Lock()
	if p := l.peers[peerKey{path: string(src.path), ap: src.ap, scope: src.scope}]; p != nil {
		if !src.cred || !p.cred || src.uid == p.uid {
			l.mu.Unlock()
			p.lastSeen.Store(now)
			return p
		}
		l.mu.Unlock()
		// Another user's socket has the peer's path: a new sender, never
		// one for the old peer's port. It takes the path over only if it
		// is admitted and the old peer's socket is gone: a pinned one can
		// be asked; for an unpinned one (root's or the switch's user's),
		// the path, as this process sees it, must lead to a socket of the
		// new sender's now. The path the sender reports is as its mount
		// namespace sees it: a tmpfs mounted over the directory there
		// (unprivileged, in a user namespace) gave it the live VM's path.
		if !create || !l.admits(src) || p.pin != nil && !p.socketGone() || p.pin == nil && !socketOf(p.key.path, src.uid) {
			l.c.refused.Add(1)
			if ok, s := l.lim.Allow(); ok {
				l.log.WithFields(logrus.Fields{"port": p.name, "uid": p.uid, "sender_uid": src.uid, "suppressed": s}).
					Warn("datagram from a peer's path but another user refused")
			}
			return nil
		}
		l.mu.Lock()
		if l.peers[p.key] == p {
			delete(l.peers, p.key)
		}
		l.mu.Unlock()
		if p.leaving() {
			l.c.gone.Add(1)
			if ok, s := l.lim.Allow(); ok {
				l.log.WithFields(logrus.Fields{"port": p.name, "uid": p.uid, "new_uid": src.uid, "suppressed": s}).
					Info("peer's socket gone and its path another user's now; removing the old peer")
			}
		}
		p.kill()
		l.mu.Lock()
	}
	if !create || l.closed {
		l.mu.Unlock()
		return nil
	}
	key := src.key()
	if !l.admits(src) {
		l.mu.Unlock()
		l.c.refused.Add(1)
		if ok, s := l.lim.Allow(); ok {
			l.log.WithFields(logrus.Fields{"peer": key.String(), "uid": src.uid, "gid": src.gid, "suppressed": s}).
				Warn("datagram refused: sender not in --allow-uid / --allow-gid")
		}
		return nil
	}
	// The peer is made before another is evicted for it: one that cannot
	// be made (its socket gone, not its own) must not cost a silent VM
	// its port.
	full := len(l.peers) >= l.cfg.MaxPeers
	if full && l.quietest(now) == nil {
		l.mu.Unlock()
		l.refuseFull(key)
		return nil
	}
	p, err := l.newPeer(key, src)
	if err != nil {
		l.mu.Unlock()
		l.c.refused.Add(1)
		if ok, s := l.lim.Allow(); ok {
			l.log.WithError(err).WithFields(logrus.Fields{"peer": key.String(), "suppressed": s}).Warn("cannot add peer")
		}
		return nil
	}
	p.lastSeen.Store(now)
	pc := l.cfg.Port
	pc.Kind, pc.Peer, pc.NoReader = PortKind, key.String(), true
	var a, replaced *vswitch.Attachment
	// The port replaced finishes closing (vswitch.ReplacePort) after
	// l.mu is let go: here, in the read loop, which Close waits for.
	defer func() {
		if replaced != nil {
			replaced.Close()
		}
	}()
	if full {
		a, replaced, err = l.replace(now, false, p, pc)
	} else if a, err = l.sw.AddPort(p, pc); errors.Is(err, vswitch.ErrTooManyPorts) {
		// The switch is full (Config.MaxPorts) before the listener:
		// room is made the same way, or silent peers would keep every
		// new port out until they expire.
		if a2, r2, err2 := l.replace(now, true, p, pc); !errors.Is(err2, errNoneSilent) {
			a, replaced, err = a2, r2, err2
		}
	}
	if err != nil {
		l.mu.Unlock()
		p.discard()
		if errors.Is(err, errNoneSilent) {
			l.refuseFull(key)
			return nil
		}
		l.c.refused.Add(1)
		if ok, s := l.lim.Allow(); ok {
			l.log.WithError(err).WithFields(logrus.Fields{"peer": key.String(), "suppressed": s}).Warn("cannot add peer")
		}
		return nil
	}
	p.att.Store(a)
	l.peers[key] = p
	l.mu.Unlock()
	l.c.added.Add(1)
	// A send may have failed for good before att was stored (see kill).
	if p.dead.Load() {
		a.Close()
		return nil
	}
	return p
}

// refuseFull counts and logs a datagram from a new sender, key, refused
// because the listener has MaxPeers peers, none silent for EvictAfter.
func (l *Listener) refuseFull(key peerKey) {
	l.c.refused.Add(1)
	if ok, s := l.lim.Allow(); ok {
		l.log.WithFields(logrus.Fields{"peer": key.String(), "max_peers": l.cfg.MaxPeers, "suppressed": s}).
			Warn("too many peers, none silent for long; datagram dropped")
	}
}

// quietest returns the peer silent longest, if it has been silent for
// EvictAfter at now, or nil. The caller holds l.mu.
func (l *Listener) quietest(now int64) *peer {
	var victim *peer
	oldest := now - int64(l.cfg.EvictAfter)
	for _, p := range l.peers {
		if seen := p.lastSeen.Load(); seen <= oldest {
			victim, oldest = p, seen
		}
	}
	return victim
}

// errNoneSilent: no peer has been silent for EvictAfter (replace).
var errNoneSilent = errors.New("no peer silent long enough to make room")

// replace adds p, a new peer with port configuration pc, to the switch in
// the place of the peer quietest finds, which is removed
// (vswitch.ReplacePort: the room it leaves goes to p, not to a port added
// elsewhere meanwhile). It returns p's port and the one replaced, which
// the caller closes once it has let go of l.mu, or fails with
// errNoneSilent when there is no such peer. switchFull says, for the log,
// whether the switch (MaxPorts) or the listener (MaxPeers) is full. The
// caller holds l.mu.
func (l *Listener) replace(now int64, switchFull bool, p *peer, pc vswitch.PortConfig) (*vswitch.Attachment, *vswitch.Attachment, error) {
	victim := l.quietest(now)
	if victim == nil {
		return nil, nil, errNoneSilent
	}
	old := victim.att.Load()
	a, err := l.sw.ReplacePort(old, p, pc)
	if errors.Is(err, vswitch.ErrPortGone) {
		// It went meanwhile (a send to it failed for good), and so did
		// its room, unless another port has taken that.
		delete(l.peers, victim.key)
		a, err = l.sw.AddPort(p, pc)
		return a, nil, err
	}
	if err != nil {
		return nil, nil, err
	}
	// Its port's Close finds it gone from the table.
	delete(l.peers, victim.key)
	if !victim.leaving() {
		return a, old, nil // gone meanwhile, and counted so
	}
	l.c.evicted.Add(1)
	if ok, s := l.lim.Allow(); ok {
		e := l.log.WithFields(logrus.Fields{"port": victim.name, "silent": time.Duration(now - victim.lastSeen.Load()).Round(time.Second), "suppressed": s})
		if switchFull {
			e.Info("the switch has its maximum of ports; removing the peer silent longest for a new sender")
		} else {
			e.WithField("max_peers", l.cfg.MaxPeers).Info("too many peers; removing the one silent longest for a new sender")
		}
	}
	return a, old, nil
}

// socketOf reports whether path is an absolute path, as this process
// sees it, that leads to a socket file owned by uid (not through a
// symlink as its last component).
func socketOf(path string, uid uint32) bool {
	if path == "" || path[0] != '/' {
		return false
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == uid
}

// admits reports whether a new peer may send from src: always, unless
// the allow lists are set and src is a unixgram sender whose credentials
// are in neither (or who came without any, which Linux always gives).
func (l *Listener) admits(src *source) bool {
	if len(l.cfg.AllowUIDs)+len(l.cfg.AllowGIDs) == 0 || l.ux == nil || !credsPassed {
		return true
	}
	return src.cred && (slices.Contains(l.cfg.AllowUIDs, int(src.uid)) || slices.Contains(l.cfg.AllowGIDs, int(src.gid)))
}

// String returns the path ("@name" for an abstract address) or the UDP
// address, with the interface's name as zone.
func (k peerKey) String() string {
	switch {
	case k.path != "":
		if k.path[0] == 0 {
			return "@" + k.path[1:]
		}
		return k.path
	case k.scope != 0:
		zone := strconv.FormatUint(uint64(k.scope), 10)
		if ifi, err := net.InterfaceByIndex(int(k.scope)); err == nil {
			zone = ifi.Name
		}
		return netip.AddrPortFrom(k.ap.Addr().WithZone(zone), k.ap.Port()).String()
	}
	return k.ap.String()
}

func (l *Listener) newPeer(key peerKey, src *source) (*peer, error) {
	p := &peer{l: l, key: key, closed: make(chan struct{})}
	if key.path != "" {
		p.name = "unixgram:" + key.String()
	} else {
		if !l.v6 && !key.ap.Addr().Is4() {
			return nil, fmt.Errorf("peer %s: IPv6 address on an IPv4 socket", key)
		}
		p.name = "udp:" + key.String()
	}
	if key.path != "" && key.path[0] == 0 && credsPassed && !(src.cred && (src.uid == 0 || int(src.uid) == os.Geteuid())) {
		// An abstract name has no owner to check, and a sender in a
		// network namespace of its own can report the name of another
		// program's socket in the switch's: the switch would send there.
		return nil, fmt.Errorf("peer %s: an abstract name is taken from root and the switch's own user only (uid %d)", key, src.uid)
	}
	to := key
	if key.path != "" && key.path[0] == '/' {
		// Send to the socket the peer sent from, not to whatever its path
		// names later (see pinPeer).
		dst, f, err := pinPeer(key.path, src, l.file)
		if err != nil {
			return nil, fmt.Errorf("peer %s: %w", key, err)
		}
		to.path, p.pin = dst, f
		if f != nil {
			rc, err := f.SyscallConn()
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("peer %s: %w", key, err)
			}
			p.pinRC, p.pinned = rc, p.pinnedSend
		}
	}
	p.uid, p.cred = src.uid, src.cred
	if to.path != "" {
		p.dst = to.path
		if to.path[0] == 0 {
			p.dst = "@" + to.path[1:] // an abstract name, as x/sys spells it
		}
	}
	p.to = to
	rc := l.rc
	if l.ux != nil {
		var err error
		if p.own, rc, err = ownSocket(p.dst); err != nil {
			p.discard()
			return nil, fmt.Errorf("peer %s: %w", key, err)
		}
		if p.own == nil {
			rc = l.rc
		} else {
			to = peerKey{} // connected: datagrams go without an address
			if p.pin == nil && key.path[0] == '/' {
				p.dir = openDir(key.path) // for reconnected
			}
		}
	}
	if err := p.tx.init(rc, to, l.v6, l.cfg.BatchSize); err != nil {
		p.discard()
		return nil, fmt.Errorf("peer %s: %w", key, err)
	}
	return p, nil
}

// discard closes the descriptors of a peer that never became a port:
// nothing was sent to it.
func (p *peer) discard() {
	if p.pin != nil {
		p.pin.Close()
	}
	if p.dir != nil {
		p.dir.Close()
	}
	if p.own != nil {
		p.own.Close()
	}
}

// forget drops p from the peer table, if it is still there.
func (l *Listener) forget(p *peer) {
	l.mu.Lock()
	if l.peers[p.key] == p {
		delete(l.peers, p.key)
	}
	l.mu.Unlock()
}

// janitor removes peers that have been idle for IdleTimeout.
func (l *Listener) janitor() {
	defer l.wg.Done()
	every := min(max(l.cfg.IdleTimeout/4, 10*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
		}
		limit := int64(time.Since(l.epoch) - l.cfg.IdleTimeout)
		var idle []*peer
		l.mu.Lock()
		for k, p := range l.peers {
			if p.lastSeen.Load() < limit {
				delete(l.peers, k)
				idle = append(idle, p)
			}
		}
		l.mu.Unlock()
		for _, p := range idle {
			if p.leaving() {
				l.c.expired.Add(1)
				l.log.WithFields(logrus.Fields{"port": p.name, "idle": l.cfg.IdleTimeout}).Info("peer idle; removing")
			}
			p.kill()
		}
	}
}

// Close stops the listener, removes every peer's port from the switch and
// deletes the unixgram socket file. It is idempotent.
func (l *Listener) Close() error {
	l.stop()
	return l.shutdown()
}

func (l *Listener) shutdown() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		if cerr := l.conn.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = fmt.Errorf("close listener %s: %w", l.addr, cerr)
		}
		l.wg.Wait()
		l.mu.Lock()
		l.closed = true
		peers := l.peers
		l.peers = map[peerKey]*peer{}
		l.mu.Unlock()
		for _, p := range peers {
			p.kill()
		}
		if l.file != nil {
			if rerr := l.file.Remove(); rerr != nil && err == nil {
				err = rerr
			}
		}
		l.log.Info("listener closed")
	})
	return err
}

// peer is the vswitch.Port of one remote address.
type peer struct {
	l    *Listener
	key  peerKey
	name string

	// tx and one are used by one goroutine at a time: the switch never
	// calls a port's WriteFrames and WriteFrameNow concurrently (see
	// vswitch.DirectWriter).
	tx  sender
	one [1][]byte // WriteFrameNow's frame, as a batch for tx.send
	// own is the socket tx sends from, a unixgram peer's own on Linux
	// (see ownSocket), or nil: the listener's. It is closed with the peer.
	own *os.File
	// pin holds the peer's socket open while tx sends to it by
	// descriptor (Linux, unixgram; see pinPeer). Every send and connect
	// that may name it runs inside pinRC.Control, which keeps the
	// descriptor, and so its number, from being closed (and reused for
	// another file) under it; Close closes it.
	pin   *os.File
	pinRC syscall.RawConn
	// pinned is p.pinnedSend, bound once; sendBufs, sendOffset, sent and
	// sendErr are its arguments and results.
	pinned     func(uintptr)
	sendBufs   [][]byte
	sendOffset int
	sent       int
	sendErr    error
	// uid is the user that sent the peer's first datagram, if cred
	// (unixgram on Linux): a datagram from the same path but another user
	// is another sender.
	uid  uint32
	cred bool
	// dir is the directory an unpinned peer's path led to when the peer
	// was added (O_PATH, Linux), for reconnected; nil if none.
	dir *os.File
	// dst is where a unixgram peer's frames go: its path, or
	// /proc/self/fd/N of its pinned socket ("@name" for an abstract one).
	dst string
	// to is the address frames sent from the listener's socket go to.
	to peerKey

	lastSeen atomic.Int64 // nanoseconds from the listener's epoch to the last datagram
	att      atomic.Pointer[vswitch.Attachment]
	dead     atomic.Bool

	closed chan struct{}
	once   sync.Once
}

var (
	_ vswitch.Port         = (*peer)(nil)
	_ vswitch.DirectWriter = (*peer)(nil)
	_ vswitch.Prober       = (*peer)(nil)
)

// leaving claims the peer's departure for the caller, which counts it
// (gone, expired or evicted) and logs it: of those that find the peer
// going at the same time, only the first does, so that each peer is
// counted once. It marks the peer dead.
func (p *peer) leaving() bool { return p.dead.CompareAndSwap(false, true) }

// kill removes the peer's port from the switch. If the port is still being
// added, Listener.peer sees dead and removes it.
func (p *peer) kill() {
	p.dead.Store(true)
	if a := p.att.Load(); a != nil {
		a.Close()
	} else {
		p.Close()
	}
}

// ReadFrames blocks until Close: the listener's read loop delivers the
// peer's frames with Attachment.Input (the port is added with NoReader).
func (p *peer) ReadFrames([][]byte, []int, int) (int, error) {
	<-p.closed
	return 0, fmt.Errorf("dgram %s: read: %w", p.name, net.ErrClosed)
}

// WriteFrames sends each frame as one datagram to the peer's address, as
// many per system call as the system takes, and returns how many were
// sent. Sends never wait (the listener's socket is shared by the peers
// connected to it). A
// frame the system has no room for (ENOBUFS, EAGAIN) is retried briefly,
// then it and the rest of the batch are dropped. A peer whose socket is
// gone (ECONNREFUSED, ENOENT) is removed. Other errors drop the frame and
// go on with the next.
func (p *peer) WriteFrames(bufs [][]byte, offset int) (int, error) {
	select {
	case <-p.closed:
		return 0, fmt.Errorf("dgram %s: write: %w", p.name, net.ErrClosed)
	default:
	}
	sent, try := 0, 0
	reconnected := false
	var firstErr error
	for len(bufs) > 0 {
		n, err := p.send(bufs, offset)
		if err == nil {
			sent += n
			bufs = bufs[n:]
			try = 0
			continue
		}
		if p.fromListener(err) {
			continue
		}
		if !reconnected && p.reconnected(err) {
			reconnected = true // once: a socket closed again is gone
			continue
		}
		// bufs[0] failed.
		if noRoom(err) && try < len(sendRetryDelays) {
			p.l.c.sendRetries.Add(1)
			time.Sleep(sendRetryDelays[try])
			try++
			continue
		}
		try = 0
		err = p.sendFailed(err)
		switch {
		case p.dead.Load():
			return sent, err
		case errors.Is(err, net.ErrClosed), noRoom(err):
			p.l.c.sendErrors.Add(uint64(len(bufs) - 1))
			return sent, err
		}
		if firstErr == nil {
			firstErr = err
		}
		bufs = bufs[1:]
	}
	return sent, firstErr
}

// WriteFrameNow implements vswitch.DirectWriter: one send, without the
// retries of WriteFrames. When the socket or the peer has no room
// (ENOBUFS, EAGAIN) the frame is left to the switch's queue.
func (p *peer) WriteFrameNow(b []byte, offset int) (bool, error) {
	select {
	case <-p.closed:
		return true, fmt.Errorf("dgram %s: write: %w", p.name, net.ErrClosed)
	default:
	}
	p.one[0] = b
	_, err := p.send(p.one[:], offset)
	if p.fromListener(err) || p.reconnected(err) {
		_, err = p.send(p.one[:], offset)
	}
	p.one[0] = nil
	switch {
	case err == nil:
		return true, nil
	case noRoom(err):
		return false, nil
	}
	return true, p.sendFailed(err)
}

// send is p.tx.send, holding a pinned peer's descriptor open meanwhile
// (see peer.pin). Once Close has closed it, the send fails with
// net.ErrClosed.
func (p *peer) send(bufs [][]byte, offset int) (int, error) {
	if p.pinRC == nil {
		return p.tx.send(bufs, offset)
	}
	p.sendBufs, p.sendOffset = bufs, offset
	err := p.pinRC.Control(p.pinned)
	p.sendBufs = nil
	if err != nil {
		return 0, net.ErrClosed
	}
	return p.sent, p.sendErr
}

func (p *peer) pinnedSend(uintptr) { p.sent, p.sendErr = p.tx.send(p.sendBufs, p.sendOffset) }

// fromListener moves tx to the listener's socket if err says that the
// peer takes datagrams from that socket only (its socket was connected to
// it after the peer's own socket was connected to it: see ownSocket), and
// reports whether it did, so that the caller sends again. The peer's own
// socket is closed.
func (p *peer) fromListener(err error) bool {
	if p.own == nil || !connectedElsewhere(err) || p.tx.rc == p.l.rc {
		return false
	}
	if p.tx.init(p.l.rc, p.to, p.l.v6, p.l.cfg.BatchSize) != nil {
		return false // not seen: the same address was taken at newPeer
	}
	p.own.Close()
	return true
}

// reconnected connects the peer's own socket again to its path, if err
// says that the socket it was connected to has closed (ECONNREFUSED) and a
// socket of the same user has the path now: the VM restarted with the
// same path. It reports whether it did, so that the caller sends again.
// Only peers sent to by path are (root's, the switch's user's: a pinned
// peer's socket file is another file now, and an abstract name has no
// owner to check); any other socket at the path takes over only as a new
// peer, at its own first datagram.
func (p *peer) reconnected(err error) bool {
	if p.own == nil || p.dir == nil || p.tx.rc == p.l.rc || !errors.Is(err, unix.ECONNREFUSED) {
		return false
	}
	// In the directory the path led to when the peer was added, not one
	// put in its place since (a symlink to another directory with a
	// socket of the same user and name).
	base := p.key.path[strings.LastIndexByte(p.key.path, '/')+1:]
	return reconnectIn(p.tx.rc, p.dir, base, p.uid, p.cred) == nil
}

// Probe implements vswitch.Prober: a unixgram peer whose socket is gone
// (closed, or its file removed) is removed, which frees the addresses it
// held; nothing is sent to it. A UDP peer cannot be asked and stays until
// it expires.
func (p *peer) Probe() {
	select {
	case <-p.closed:
		return // removed already; its pin, if any, closed
	default:
	}
	if p.dst == "" || !p.socketGone() || !p.leaving() {
		return
	}
	p.l.c.gone.Add(1)
	p.l.log.WithField("port", p.name).Info("peer gone (its socket is closed); removing")
	p.kill()
}

// socketGone reports whether the socket p's frames go to is gone: a socket
// of the switch's own is refused a connection to it or finds no file there.
// Any other answer (EPERM: it is connected to the switch's socket, as vz's
// and vfkit's are) means that it is there.
func (p *peer) socketGone() bool {
	// No SOCK_CLOEXEC on macOS: hold ForkLock, as package net does.
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if p.pinRC == nil {
		return goneErr(connectUnix(fd, p.dst))
	}
	gone := true // pin closed: the peer is
	p.pinRC.Control(func(uintptr) { gone = goneErr(connectUnix(fd, p.dst)) })
	return gone
}

// goneErr reports whether err, from sending or connecting to a unixgram
// peer, says that its socket is gone: closed, or its file removed.
func goneErr(err error) bool {
	return errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)
}

// noRoom reports whether a send failed for want of buffer space, in the
// socket (ENOBUFS, macOS under load) or in the peer's receive queue
// (EAGAIN).
func noRoom(err error) bool {
	return errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.EAGAIN)
}

// sendFailed counts a failed send and removes the peer when its socket is
// gone (ECONNREFUSED, ENOENT, ENOTDIR). It returns err with the peer named.
func (p *peer) sendFailed(err error) error {
	p.l.c.sendErrors.Add(1)
	err = fmt.Errorf("dgram %s: send: %w", p.name, err)
	if goneErr(err) {
		if p.leaving() {
			p.l.c.gone.Add(1)
			p.l.log.WithError(err).WithField("port", p.name).Info("peer gone; removing")
		}
		p.kill()
	}
	return err
}

// BatchSize returns Config.BatchSize.
func (p *peer) BatchSize() int { return p.l.cfg.BatchSize }

// maxUDPFrame is the longest frame a UDP datagram carries over IPv4
// (65535 minus the IPv4 and UDP headers).
const maxUDPFrame = 65507

// MTU returns the largest payload a frame of MaxFrame bytes carries (for
// UDP peers, of at most maxUDPFrame bytes).
func (p *peer) MTU() int {
	if p.l.ux == nil {
		return min(p.l.cfg.MaxFrame, maxUDPFrame) - 14
	}
	return p.l.cfg.MaxFrame - 14
}

// String returns "unixgram:PATH" or "udp:HOST:PORT" of the peer.
func (p *peer) String() string { return p.name }

// Close forgets the peer and closes its own socket; the shared socket
// stays open. It is idempotent.
func (p *peer) Close() error {
	p.once.Do(func() {
		close(p.closed)
		p.l.forget(p)
		if p.own != nil {
			p.own.Close() // a send under way holds the descriptor until it returns
		}
		if p.dir != nil {
			p.dir.Close() // likewise a reconnection under way
		}
		if p.pin != nil {
			p.pin.Close() // and a send or connect naming it
		}
	})
	return nil
}
