package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/internal/logx"
)

// Bounds of the metrics server: a scrape is one short request, so a
// connection that sends nothing for readTimeout (idle between scrapes
// included) is closed, and at most maxConns are served at once; further
// ones wait in the listen queue, holding none of the switch's descriptors.
// Without them a client could hold idle connections open for ever, until
// the daemon had no descriptor left for VMs, taps and ctl.
var (
	readTimeout  = 10 * time.Second
	writeTimeout = 30 * time.Second
	maxConns     = 64
)

// Serve answers HTTP requests on ln with h (the /metrics handler) until ctx
// ends. Errors of the HTTP server go to log.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log logrus.FieldLogger) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: readTimeout, ReadTimeout: readTimeout,
		WriteTimeout: writeTimeout, ErrorLog: logx.StdLogger(log)}
	go func() {
		<-ctx.Done()
		hs.Close()
	}()
	if err := hs.Serve(limit(ln, maxConns)); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

// limit returns ln accepting at most n connections that are open at once:
// Accept waits for one to close first.
func limit(ln net.Listener, n int) net.Listener {
	return &limitListener{Listener: ln, sem: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	sem  chan struct{}
	done chan struct{}
	once sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.sem <- struct{}{}:
	case <-l.done:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.sem }}, nil
}

func (l *limitListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}
