package metrics

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// serveTest serves a handler that answers "ok" on a loopback port with
// the given bounds and returns its address.
func serveTest(t *testing.T, read time.Duration, conns int) string {
	t.Helper()
	oldRead, oldConns := readTimeout, maxConns
	readTimeout, maxConns = read, conns
	t.Cleanup(func() { readTimeout, maxConns = oldRead, oldConns })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }), nil)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return ln.Addr().String()
}

// get sends one keep-alive request on c and reads the answer.
func get(t *testing.T, c net.Conn, r *bufio.Reader) error {
	t.Helper()
	if _, err := io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		return err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

// TestServeClosesIdle: a connection left idle after a scrape is closed;
// it was held for ever, and enough of them took every descriptor the
// daemon had.
func TestServeClosesIdle(t *testing.T) {
	addr := serveTest(t, 300*time.Millisecond, 64)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := get(t, c, r); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("idle connection: read %d, %v; want it closed (EOF) after the read timeout", n, err)
	}
}

// TestServeBoundsConnections: with as many connections open as the server
// takes, the next is not served until one closes.
func TestServeBoundsConnections(t *testing.T) {
	addr := serveTest(t, 10*time.Second, 2)
	var idle []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	c, err := net.Dial("tcp", addr) // the kernel completes it; the server does not take it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	answered := make(chan error, 1)
	go func() { answered <- get(t, c, bufio.NewReader(c)) }()
	select {
	case err := <-answered:
		t.Fatalf("a third connection was served (%v) while two were open, with room for two", err)
	case <-time.After(300 * time.Millisecond):
	}
	idle[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the third connection was not served once one of the others closed")
	}
}
