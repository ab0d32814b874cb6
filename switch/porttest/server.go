package porttest

import (
	"net"
	"testing"
)

// StreamServer stands in for a QEMU started with -netdev
// stream,server=on: it listens on the unix socket path and passes on every
// connection made to it, for tests of a switch that dials. The listener is
// closed when the test ends; the connections are the caller's, but for
// one still waiting for room in the channel then, which is closed.
func StreamServer(t testing.TB, path string) <-chan net.Conn {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
	})
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case conns <- c:
			case <-done: // the test has ended without taking it
				c.Close()
				return
			}
		}
	}()
	return conns
}
