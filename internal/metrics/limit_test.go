package metrics

import (
	"errors"
	"net"
	"testing"
	"time"
)

// flakyListener fails its first fails Accepts (as accept does with EMFILE),
// then hands out one end of a pipe.
type flakyListener struct {
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, errors.New("accept: too many open files")
	}
	c, _ := net.Pipe()
	return c, nil
}
func (l *flakyListener) Close() error   { return nil }
func (l *flakyListener) Addr() net.Addr { return &net.TCPAddr{} }

// accept calls l.Accept and reports whether it returned within d.
func accept(l net.Listener, d time.Duration) (net.Conn, error, bool) {
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() { c, err := l.Accept(); ch <- res{c, err} }()
	select {
	case r := <-ch:
		return r.c, r.err, true
	case <-time.After(d):
		return nil, nil, false
	}
}

// TestLimitAcceptErrorsReleaseRoom: a failed Accept (EMFILE, which
// net/http retries) gives its room back; otherwise maxConns failures left
// the metrics server unable to accept anything again.
func TestLimitAcceptErrorsReleaseRoom(t *testing.T) {
	l := limit(&flakyListener{fails: 3}, 2)
	for range 3 {
		if _, err, ok := accept(l, 2*time.Second); !ok || err == nil {
			t.Fatalf("failing Accept: returned %v, err %v; want an error", ok, err)
		}
	}
	c, err, ok := accept(l, 2*time.Second)
	if !ok {
		t.Fatal("Accept blocks after failed accepts, with no connection open")
	}
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestLimitConnDoubleClose: closing a connection twice (net/http's
// serving goroutine and Server.Close both may) gives its room back once:
// a second release would let more than n connections be open, or block.
func TestLimitConnDoubleClose(t *testing.T) {
	l := limit(&flakyListener{}, 2)
	c1, _, _ := accept(l, time.Second)
	c2, _, _ := accept(l, time.Second)
	if c1 == nil || c2 == nil {
		t.Fatal("the first two Accepts did not return")
	}
	// Closed in the background: with room given back twice, a Close
	// blocks.
	var open []net.Conn
	defer func() {
		go func() {
			for _, c := range open {
				c.Close()
			}
		}()
	}()
	open = append(open, c2)
	closed := make(chan struct{})
	go func() { c1.Close(); c1.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("a second Close blocks")
	}
	c3, _, ok := accept(l, time.Second)
	if !ok {
		t.Fatal("no room after a connection closed")
	}
	open = append(open, c3)
	if c4, _, ok := accept(l, 300*time.Millisecond); ok {
		open = append(open, c4)
		t.Fatal("a third connection accepted while two were open: a double Close gave back room twice")
	}
	l.Close() // ends the pending Accept
}
