package porttest

import (
	"net"
	"testing"
)

// StreamServer stands in for a QEMU started with -netdev
// stream,server=on: it listens on the unix socket path and passes on every
// connection made to it, for tests of a switch that dials. The listener is
// closed when the test ends; the connections are the caller's.
func StreamServer(t testing.TB, path string) <-chan net.Conn {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns <- c
		}
	}()
	return conns
}
