package api_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestAttachRefusesAmbiguousRequests: a request naming both a tap and a
// URL, or with a field the API does not know (a typo of "connect"), is
// refused with 400 rather than half-done: Attach is not called.
func TestAttachRefusesAmbiguousRequests(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	var calls atomic.Int32
	sock, stop := serve(t, &api.Server{Switch: sw, Attach: func(api.AttachRequest) error { calls.Add(1); return nil }})
	defer stop()
	for _, body := range []string{
		`{"tap":"tap9","connect":"unix:///run/vm.sock"}`,
		`{"tap":"tap9","conect":"unix:///run/vm.sock"}`,
	} {
		if code, _, answer := rawDo(t, sock, "POST", "/v1/ports", body); code != http.StatusBadRequest {
			t.Errorf("POST %s: %d %s, want 400", body, code, answer)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("Attach called %d times for requests that were refused", n)
	}
}

// TestServeWaitsForRequests: Serve returns only once the requests under
// way have been answered, so that serve does not close the switch (or the
// lease store) under a handler, nor exit before a capture's clean end.
func TestServeWaitsForRequests(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	started := make(chan struct{})
	var answered atomic.Bool
	sock, stop := serve(t, &api.Server{Switch: sw, Leases: func() []api.Lease {
		close(started)
		time.Sleep(300 * time.Millisecond)
		answered.Store(true)
		return []api.Lease{}
	}})
	got := make(chan error, 1)
	go func() { got <- api.NewClient(sock).Do(context.Background(), "GET", "/v1/leases", nil, nil) }()
	<-started
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if !answered.Load() {
		t.Error("Serve returned while a request was under way")
	}
	if err := <-got; err != nil {
		t.Errorf("the request under way at shutdown: %v", err)
	}
}

// TestShutdownCutsHalfRequest: a client that has sent part of a request
// when the API stops has its connection cut once the shutdown grace has
// run out, not left open until the read timeout.
func TestShutdownCutsHalfRequest(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	log, hook := logtest.NewNullLogger()
	sock, stop := serve(t, &api.Server{Switch: sw, Logger: log})
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /v1/stats HTTP/1.1\r\nHost: tapswitch\r\n"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the server has read it: the connection is active
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("connection with half a request still open after shutdown: %v", err)
	}
	logged := false
	for _, e := range hook.AllEntries() {
		logged = logged || strings.Contains(e.Message, "at shutdown")
	}
	if !logged {
		t.Error("the cut connection was not logged")
	}
}

// TestCaptureNameEscaped: a port name with characters a query gives a
// meaning to ('+', '&', '#', '%') is captured by that name: a datagram
// peer's port is named after the path it chose, a tap may have a '+'.
func TestCaptureNameEscaped(t *testing.T) {
	const name = "unixgram:/tmp/vm+1&a=b#c%41.sock"
	sw, p1 := memSwitch(t, name)
	sock, stop := serve(t, &api.Server{Switch: sw})
	defer stop()
	_, r := capture(t, api.NewClient(sock), name)
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, []byte("flooded"))
	if err := p1.Send(fr); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatal(err)
	}
}
