package testnet

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TCPTransfer sends data over TCP from a socket in from to a listener on
// addr in to, and fails the test unless it all arrives intact within
// timeout. control, if not nil, is called on the sending socket before it
// connects. It returns how long the transfer took.
func TCPTransfer(t testing.TB, from, to *NS, addr string, data []byte, timeout time.Duration, control func(fd uintptr) error) time.Duration {
	t.Helper()
	var ln net.Listener
	if err := to.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		sum []byte
		err error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		h := sha256.New()
		n, err := io.Copy(h, c)
		got <- result{n, h.Sum(nil), err}
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	if control != nil {
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var cerr error
			if err := rc.Control(func(fd uintptr) { cerr = control(fd) }); err != nil {
				return err
			}
			return cerr
		}
	}
	var c net.Conn
	if err := from.Do(func() (err error) {
		c, err = d.Dial("tcp", ln.Addr().String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetDeadline(time.Now().Add(timeout))
	_, werr := c.Write(data)
	c.Close()
	r := <-got
	if werr != nil || r.err != nil {
		t.Fatalf("transfer to %s: write: %v; read: %v", ln.Addr(), werr, r.err)
	}
	if want := sha256.Sum256(data); r.n != int64(len(data)) || !bytes.Equal(r.sum, want[:]) {
		t.Fatalf("transfer to %s: received %d bytes with sha256 %x, sent %d with %x", ln.Addr(), r.n, r.sum, len(data), want)
	}
	return time.Since(start)
}
