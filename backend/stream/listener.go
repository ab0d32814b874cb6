package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/internal/logx"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// PortKind is the PortConfig.Kind of every port this package adds.
const PortKind = "stream"

// Accept retry delays: after a failed Accept (EMFILE, ENFILE, ENOBUFS,
// ECONNABORTED...) the listener waits, doubling from the first to the
// last, and tries again; it never gives up while open.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// ListenerConfig configures a Listener. The zero value is usable.
type ListenerConfig struct {
	// Logger receives listener and client events (one line per client
	// joining or leaving, rate-limited lines for accept failures). Nil
	// discards them.
	Logger logrus.FieldLogger
	// Conn configures each client's port. Its Name is set per client and
	// its Logger defaults to Logger.
	Conn ConnConfig
	// Mode is the permission of a unix socket file (default 0660:
	// listen.DefaultMode).
	Mode os.FileMode
	// Group, if not nil, is the group ID a unix socket file is given
	// before it appears at its path; nil leaves the group it is created
	// with.
	Group *int
	// AllowUIDs and AllowGIDs, if either is set, admit to a unix socket
	// only clients whose user ID is in AllowUIDs or whose (primary) group
	// ID is in AllowGIDs, as SO_PEERCRED/LOCAL_PEERCRED report them;
	// others are disconnected at accept and logged. Empty lists admit
	// everyone the socket file's mode lets connect.
	AllowUIDs, AllowGIDs []int
	// Port is the template of each client's PortConfig (port security
	// limits); Kind and Peer are set by the listener.
	Port vswitch.PortConfig
	// MaxClients bounds the clients connected at once (default
	// DefaultMaxClients); one beyond is disconnected at accept and counted
	// as refused.
	MaxClients int
}

// DefaultMaxClients bounds a listener's clients, and so the memory their
// ports' queues may hold, as dgram.DefaultMaxPeers does a datagram
// listener's peers.
const DefaultMaxClients = 1024

// Cred is the identity of the process at the other end of a unix socket.
type Cred struct {
	PID, UID, GID int
}

// String formats c as "pid=P uid=U gid=G", as the port's peer shows it.
func (c Cred) String() string {
	return "pid=" + strconv.Itoa(c.PID) + " uid=" + strconv.Itoa(c.UID) + " gid=" + strconv.Itoa(c.GID)
}

// admits reports whether cfg lets a client with credentials c in.
func (cfg *ListenerConfig) admits(c Cred) bool {
	if len(cfg.AllowUIDs) == 0 && len(cfg.AllowGIDs) == 0 {
		return true
	}
	return slices.Contains(cfg.AllowUIDs, c.UID) || slices.Contains(cfg.AllowGIDs, c.GID)
}

// Listener accepts clients (up to ListenerConfig.MaxClients at once) on a
// unix or TCP stream socket and attaches each one to a switch as its own
// port. A client that hangs up or sends a malformed stream loses its port
// (and the switch forgets its MAC addresses); the others carry on.
type Listener struct {
	addr listen.Addr
	ln   net.Listener
	file *listen.SocketFile // nil for TCP
	sw   *vswitch.Switch
	cfg  ListenerConfig
	log  logrus.FieldLogger
	lim  logx.Limiter

	seq atomic.Uint64
	// accepted counts the clients that got a port; refused those turned
	// away (see ListenerStats).
	accepted, refused atomic.Uint64
	done              chan struct{}
	wg                sync.WaitGroup
	stop              func() bool

	closeOnce sync.Once
	closeErr  error

	mu     sync.Mutex
	closed bool
	ports  map[*vswitch.Attachment]struct{}
	// watchers are the goroutines that take each client off ports when
	// its port goes.
	watchers sync.WaitGroup
}

// Listen parses rawURL (unix:///path or tcp://host:port, see listen.Parse)
// and calls ListenAddr.
func Listen(ctx context.Context, rawURL string, cfg ListenerConfig, sw *vswitch.Switch) (*Listener, error) {
	a, err := listen.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	return ListenAddr(ctx, a, cfg, sw)
}

// ListenAddr listens on a, a unix or tcp address, and attaches every
// client that connects to sw as a port of kind "stream". The port's peer is
// the client's credentials for a unix socket ("pid=123 uid=0 gid=0") and
// its address for TCP.
//
// A unix socket file is created as listen.ListenUnix describes: a stale
// file is replaced, a live socket or a non-socket file is refused, and the
// mode is set before anyone can connect.
//
// The listener runs until ctx is cancelled or Close is called.
func ListenAddr(ctx context.Context, a listen.Addr, cfg ListenerConfig, sw *vswitch.Switch) (*Listener, error) {
	if a.Kind() != listen.KindStream {
		return nil, fmt.Errorf("listen %s: not a stream address (want unix:// or tcp://)", a)
	}
	cfg.Logger = logx.OrDiscard(cfg.Logger)
	if cfg.Conn.Logger == nil {
		cfg.Conn.Logger = cfg.Logger
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	l := &Listener{
		addr:  a,
		sw:    sw,
		cfg:   cfg,
		done:  make(chan struct{}),
		ports: make(map[*vswitch.Attachment]struct{}),
	}
	switch a.Network {
	case "unix":
		ln, f, err := listen.ListenUnix(a.Address, cfg.Mode, cfg.Group)
		if err != nil {
			return nil, err
		}
		l.ln, l.file = ln, f
	default:
		var lc net.ListenConfig
		ln, err := lc.Listen(ctx, a.ListenNetwork(), a.Address)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", a, err)
		}
		l.ln = ln
		l.addr.Address = ln.Addr().String()
	}
	l.log = cfg.Logger.WithField("listener", l.addr.String())
	register(l)
	l.wg.Add(1)
	go l.acceptLoop()
	l.stop = context.AfterFunc(ctx, func() { l.shutdown() })
	l.log.Info("listening")
	return l, nil
}

// ListenerStats are a stream listener's counters.
type ListenerStats struct {
	// Accepted counts the clients that got a port.
	Accepted uint64 `json:"accepted"`
	// Refused counts the clients disconnected at once: not in
	// --allow-uid/--allow-gid (ListenerConfig.AllowUIDs, AllowGIDs),
	// beyond ListenerConfig.MaxClients, or refused a port by the switch
	// (Config.MaxPorts reached).
	Refused uint64 `json:"refused"`
}

// Stats returns the listener's counters.
func (l *Listener) Stats() ListenerStats {
	return ListenerStats{Accepted: l.accepted.Load(), Refused: l.refused.Load()}
}

// Addr returns the address the listener serves, with the port chosen by
// the system when a TCP port of 0 was asked for.
func (l *Listener) Addr() listen.Addr { return l.addr }

// String returns the listener's address in URL form.
func (l *Listener) String() string { return l.addr.String() }

// Ports returns the attachments of the clients currently connected.
func (l *Listener) Ports() []*vswitch.Attachment {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pruneLocked()
	out := make([]*vswitch.Attachment, 0, len(l.ports))
	for a := range l.ports {
		out = append(out, a)
	}
	return out
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
			if ok, n := l.lim.Allow(); ok {
				l.log.WithError(err).WithField("suppressed", n).Warn("accept failed; retrying")
			}
			t := time.NewTimer(delay)
			select {
			case <-l.done:
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		delay = 0
		l.attach(c)
	}
}

func (l *Listener) attach(c net.Conn) {
	ccfg := l.cfg.Conn
	peer := c.RemoteAddr().String()
	if uc, ok := c.(*net.UnixConn); ok {
		cred, err := unixCred(uc)
		if err == nil {
			peer = cred.String()
		}
		if len(l.cfg.AllowUIDs)+len(l.cfg.AllowGIDs) > 0 && (err != nil || !l.cfg.admits(cred)) {
			c.Close()
			l.refused.Add(1)
			// Rate-limited: a refused user may connect as fast as it
			// likes.
			if ok, n := l.lim.Allow(); ok {
				e := l.log.WithFields(logrus.Fields{"peer": peer, "suppressed": n})
				if err != nil {
					e = e.WithError(err)
				}
				e.Warn("client refused: not in --allow-uid / --allow-gid")
			}
			return
		}
	}
	if l.addr.Network == "unix" {
		ccfg.Name = "unix:" + l.addr.Address + "#" + strconv.FormatUint(l.seq.Add(1), 10)
	} else {
		ccfg.Name = "tcp:" + c.RemoteAddr().String() // Go sets TCP_NODELAY
	}
	conn := NewConn(c, ccfg)

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		conn.Close()
		return
	}
	if l.pruneLocked(); len(l.ports) >= l.cfg.MaxClients {
		conn.Close()
		l.refused.Add(1)
		if ok, n := l.lim.Allow(); ok {
			l.log.WithFields(logrus.Fields{"peer": peer, "max_clients": l.cfg.MaxClients, "suppressed": n}).Warn("too many clients; client refused")
		}
		return
	}
	pc := l.cfg.Port
	pc.Kind, pc.Peer = PortKind, peer
	a, err := l.sw.AddPort(conn, pc)
	if err != nil {
		conn.Close()
		l.refused.Add(1)
		if ok, n := l.lim.Allow(); ok {
			l.log.WithError(err).WithFields(logrus.Fields{"peer": peer, "suppressed": n}).Warn("cannot attach client")
		}
		return
	}
	l.ports[a] = struct{}{}
	l.accepted.Add(1)
	// Forget the client when its port goes, so that a departed client's
	// buffers are not kept until the next accept.
	l.watchers.Go(func() {
		<-a.Done()
		l.mu.Lock()
		delete(l.ports, a) // nil after Close: a no-op
		l.mu.Unlock()
	})
}

// pruneLocked forgets clients whose ports the switch has removed.
func (l *Listener) pruneLocked() {
	for a := range l.ports {
		select {
		case <-a.Done():
			delete(l.ports, a)
		default:
		}
	}
}

// Close stops accepting, removes every client's port from the switch and
// deletes the unix socket file. It is idempotent and safe to call
// concurrently.
func (l *Listener) Close() error {
	l.stop()
	return l.shutdown()
}

func (l *Listener) shutdown() error {
	l.closeOnce.Do(func() {
		unregister(l)
		close(l.done)
		err := l.ln.Close()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			l.closeErr = fmt.Errorf("close listener %s: %w", l.addr, err)
		}
		l.wg.Wait()
		l.mu.Lock()
		l.closed = true
		ports := l.ports
		l.ports = nil
		l.mu.Unlock()
		for a := range ports {
			a.Close()
		}
		l.watchers.Wait()
		if l.file != nil {
			if err := l.file.Remove(); err != nil && l.closeErr == nil {
				l.closeErr = err
			}
		}
		l.log.Info("listener closed")
	})
	return l.closeErr
}

// unixCred returns the credentials of the process at the other end of c.
func unixCred(c *net.UnixConn) (Cred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return Cred{}, err
	}
	return peerCred(rc)
}
