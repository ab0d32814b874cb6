package stream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/internal/logx"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Reconnect delays of Dial, by default.
const (
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 5 * time.Second
	DefaultDialTimeout = 5 * time.Second
)

// DialConfig configures Dial. The zero value is usable.
type DialConfig struct {
	// Logger receives connection events: each connect and disconnect, and
	// the first failure of a run of failed attempts (later ones at debug
	// level). Nil discards them.
	Logger logrus.FieldLogger
	// Conn configures the port. Its Name defaults to the dialled URL and
	// its Logger to Logger.
	Conn ConnConfig
	// MinBackoff and MaxBackoff bound the wait between attempts, which
	// doubles after each failure (defaults 100 ms and 5 s). The wait goes
	// back to MinBackoff once a connection has lasted MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one connection attempt (default 5 s).
	DialTimeout time.Duration
	// Port is the template of the port's PortConfig (port security
	// limits); Kind and Peer are set by Dial.
	Port vswitch.PortConfig
	// Status, if set, is kept up to date by Dial, for the caller to show
	// how the dialling goes (tapswitch ctl dials).
	Status *DialStatus
}

// DialStatus is where Dial reports its progress. The zero value is ready
// to use; it is safe for concurrent use.
type DialStatus struct {
	mu   sync.Mutex
	info DialInfo
}

// DialInfo is the state of a Dial at one moment.
type DialInfo struct {
	// Connected is true while a connection is attached as a port.
	Connected bool `json:"connected"`
	// Since is when it connected, or when it began dialling (its start,
	// or the end of its last connection).
	Since time.Time `json:"since,omitzero"`
	// Failures counts the attempts that failed since then.
	Failures int `json:"failures"`
	// LastError is the last failed attempt's error, "" once connected.
	LastError string `json:"last_error,omitempty"`
}

// Get returns the state now.
func (s *DialStatus) Get() DialInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

func (s *DialStatus) set(connected bool) {
	if s != nil {
		s.mu.Lock()
		s.info = DialInfo{Connected: connected, Since: time.Now()}
		s.mu.Unlock()
	}
}

func (s *DialStatus) failed(err error) {
	if s != nil {
		s.mu.Lock()
		s.info.Failures++
		s.info.LastError = err.Error()
		s.mu.Unlock()
	}
}

// Dial keeps sw connected, as a client, to the stream socket at rawURL
// (unix:///path or tcp://host:port): typically a QEMU started with
// `-netdev stream,server=on,...`. The connection is attached as a port of
// kind "stream"; when it fails or the peer goes away, Dial connects again
// after an exponential backoff, for as long as ctx lasts.
//
// Dial blocks. It returns nil once ctx is cancelled (after removing its
// port) or its port is detached (Attachment.Close, e.g. `tapswitch ctl
// detach`), and an error if rawURL is not a stream URL or the switch is
// closed. A connection that reaches a Listener of sw itself (by the same
// path, a symlink to it, or any address of this host the listener serves)
// is closed before it becomes a port, logged as an error, and Dial returns
// nil without dialling again: the switch would hold both ends of one
// connection, and every flooded frame would loop between them. A switch
// that has its Config.MaxPorts refuses the connection: Dial closes it and
// tries again after the backoff, as after a failed connect.
func Dial(ctx context.Context, rawURL string, cfg DialConfig, sw *vswitch.Switch) error {
	a, err := listen.Parse(rawURL)
	if err != nil {
		return err
	}
	if a.Kind() != listen.KindStream {
		return fmt.Errorf("connect %s: not a stream address (want unix:// or tcp://)", a)
	}
	cfg.Logger = logx.OrDiscard(cfg.Logger)
	if cfg.Conn.Logger == nil {
		cfg.Conn.Logger = cfg.Logger
	}
	if cfg.Conn.Name == "" {
		cfg.Conn.Name = a.PortName()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	log := cfg.Logger.WithField("connect", a.String())
	d := net.Dialer{Timeout: cfg.DialTimeout}
	backoff := cfg.MinBackoff
	failures := 0
	cfg.Status.set(false)
	for {
		c, err := d.DialContext(ctx, a.Network, a.Address)
		var att *vswitch.Attachment
		var peer string
		failed := "connect failed; retrying"
		if err == nil {
			if l := ownListener(sw, a, c); l != nil {
				// Attached, both ends of the connection would be ports
				// of sw. Dialling again would only reach it again.
				c.Close()
				log.WithField("listener", l.String()).Error("connected to this switch's own listener: every flooded frame " +
					"would loop between the two ends; connection closed, no longer dialled")
				return nil
			}
			peer = a.String()
			if uc, ok := c.(*net.UnixConn); ok {
				if cred, err := unixCred(uc); err == nil {
					peer = cred.String()
				}
			}
			conn := NewConn(c, cfg.Conn)
			pc := cfg.Port
			pc.Kind, pc.Peer = PortKind, peer
			att, err = sw.AddPort(conn, pc)
			if err != nil {
				conn.Close()
				if errors.Is(err, vswitch.ErrClosed) {
					return fmt.Errorf("connect %s: %w", a, err)
				}
				// The switch is full (MaxPorts): try again later, as
				// after a failed connect.
				failed = "switch refused the connection; retrying"
			}
		}
		if err == nil {
			log.WithField("peer", peer).Info("connected")
			failures = 0
			cfg.Status.set(true)
			start := time.Now()
			select {
			case <-ctx.Done():
				att.Close()
				<-att.Done()
				return nil
			case <-att.Done():
			}
			cfg.Status.set(false)
			if att.Detached() {
				// Detached by the user (tapswitch ctl detach): dialling
				// again would undo that.
				log.Info("detached; no longer dialled")
				return nil
			}
			if time.Since(start) >= cfg.MaxBackoff {
				backoff = cfg.MinBackoff
			}
			log.WithField("retry_in", backoff).Info("disconnected; reconnecting")
		} else {
			if ctx.Err() != nil {
				return nil
			}
			cfg.Status.failed(err)
			l := log.WithError(err).WithField("retry_in", backoff)
			if failures == 0 {
				l.Warn(failed)
			} else {
				l.Debug(failed)
			}
			failures++
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		backoff = min(2*backoff, cfg.MaxBackoff)
	}
}
