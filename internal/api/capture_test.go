package api_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/pcap"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// memSwitch returns a switch, closed when the test ends, with the
// in-memory port "one" to send from and a discarding port of each name.
func memSwitch(t *testing.T, names ...string) (*vswitch.Switch, *porttest.Port) {
	t.Helper()
	sw := vswitch.New(vswitch.Config{})
	t.Cleanup(func() { sw.Close() })
	p1 := porttest.New(porttest.Config{Name: "one"})
	if _, err := sw.AddPort(p1, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if _, err := sw.AddPort(porttest.New(porttest.Config{Name: n, Discard: true}), vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
	}
	return sw, p1
}

// capture starts a capture of port ("" for all), closed when the test
// ends, and returns it with a reader of its records.
func capture(t *testing.T, c *api.Client, port string) (*api.CaptureStream, *pcap.Reader) {
	t.Helper()
	rc, err := c.Capture(context.Background(), port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rc.Close() })
	r, err := pcap.NewReader(rc)
	if err != nil {
		t.Fatal(err)
	}
	return rc, r
}

// TestCaptureLossLogged: frames a capture loses to a reader that does not
// keep up are not silent: the capture's end is logged with their number.
func TestCaptureLossLogged(t *testing.T) {
	sw, p1 := memSwitch(t)
	log, hook := logtest.NewNullLogger()
	sock, stop := serve(t, &api.Server{Switch: sw, Logger: log})
	defer stop()

	cctx, ccancel := context.WithCancel(t.Context())
	rc, err := api.NewClient(sock).Capture(cctx, "")
	if err != nil {
		t.Fatal(err)
	}
	// Nothing reads the capture: 20 000 frames of 1400 bytes (28 MB) are
	// far more than its 1024-frame buffer and the socket's buffers hold.
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, make([]byte, 1400))
	for range 20_000 {
		if err := p1.Send(fr); err != nil {
			t.Fatal(err)
		}
	}
	porttest.WaitFor(t, "the switch to take every frame", func() bool { return sw.Stats().Totals.RxFrames == 20_000 })
	ccancel()
	rc.Close()
	porttest.WaitFor(t, "the capture's end logged", func() bool { return len(hook.AllEntries()) > 0 })
	e := hook.LastEntry()
	lost, _ := e.Data["lost"].(uint64)
	if e.Level != logrus.WarnLevel || lost == 0 || lost >= 20_000 {
		t.Fatalf("logged %v %q %v, want a warning with 1..19999 frames lost", e.Level, e.Message, e.Data)
	}
	// A capture of every port says so; its port field was empty.
	if e.Data["port"] != "all" {
		t.Errorf("logged port=%q, want all", e.Data["port"])
	}
}

// TestCaptureEndsCleanlyOnShutdown: when the API stops (the daemon exits),
// a running capture's stream ends after its last whole record, so that
// `tapswitch capture` ends normally. The connection used to be cut, and
// the reader failed with a truncated record.
func TestCaptureEndsCleanlyOnShutdown(t *testing.T) {
	sw, p1 := memSwitch(t)
	sock, stop := serve(t, &api.Server{Switch: sw})
	_, r := capture(t, api.NewClient(sock), "")
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, []byte("before the end"))
	if err := p1.Send(fr); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(nil); !errors.Is(err, io.EOF) {
		t.Fatalf("after shutdown the capture ended with %v, want io.EOF", err)
	}
}

// TestCaptureEndsWhenPortLeaves: the stream of a capture of one port ends
// after its last whole record when the port leaves the switch, and says
// so. It used to run on, recording the frames flooded to other ports.
func TestCaptureEndsWhenPortLeaves(t *testing.T) {
	sw, p1 := memSwitch(t, "two", "three")
	sock, stop := serve(t, &api.Server{Switch: sw})
	defer stop()
	c := api.NewClient(sock)
	rc, r := capture(t, c, "two")
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, []byte("flooded"))
	if err := p1.Send(fr); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Detach(t.Context(), "two"); err != nil {
		t.Fatal(err)
	}
	if err := p1.Send(fr); err != nil { // flooded to three only
		t.Fatal(err)
	}
	if rec, err := r.Next(nil); !errors.Is(err, io.EOF) {
		t.Fatalf("after the port left the capture gave %x, %v; want io.EOF", rec, err)
	}
	if !rc.PortLeft() {
		t.Error("the stream does not say that the port left")
	}
}

// TestShutdownCutsStalledCapture: a capture whose reader has stopped
// reading does not hold up the API's shutdown: its handler, blocked in a
// write, used to keep the connection until Serve's grace ran out and cut
// it.
func TestShutdownCutsStalledCapture(t *testing.T) {
	sw, p1 := memSwitch(t)
	log, hook := logtest.NewNullLogger()
	sock, stop := serve(t, &api.Server{Switch: sw, Logger: log})
	rc, err := api.NewClient(sock).Capture(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Nothing reads: 28 MB fill the capture's buffer and the socket's, and
	// the handler waits in a write.
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, make([]byte, 1400))
	for range 20_000 {
		if err := p1.Send(fr); err != nil {
			t.Fatal(err)
		}
	}
	porttest.WaitFor(t, "the switch to take every frame", func() bool { return sw.Stats().Totals.RxFrames == 20_000 })
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, e := range hook.AllEntries() {
		if strings.Contains(e.Message, "at shutdown") {
			t.Errorf("logged %q %v: the shutdown waited for the capture until its grace ran out", e.Message, e.Data)
		}
	}
}

// TestReadTimeout: a client that sends part of a request does not hold its
// connection for ever, while a capture's stream lasts longer than the
// bound on reading a request.
func TestReadTimeout(t *testing.T) {
	sw, p1 := memSwitch(t)
	srv := &api.Server{Switch: sw, Attach: func(api.AttachRequest) error { return nil }}
	const timeout = 100 * time.Millisecond
	api.SetReadTimeout(srv, timeout)
	sock, stop := serve(t, srv)
	defer stop()

	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /v1/ports HTTP/1.1\r\nHost: tapswitch\r\nContent-Length: 100\r\n\r\n{\"ta"); err != nil {
		t.Fatal(err)
	}
	// Only a bound for the old code, which waited for the rest.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the server kept a connection with half a request: %v", err)
	}

	_, r := capture(t, api.NewClient(sock), "")
	time.Sleep(3 * timeout) // past the bound on reading the request
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, []byte("still capturing"))
	if err := p1.Send(fr); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatalf("the capture ended with the bound on reading its request: %v", err)
	}
}

// TestCaptureLimit: at most api.MaxCaptures captures run at once, each
// holding up to 4 MiB for a slow reader; there was no limit.
func TestCaptureLimit(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	sock, stop := serve(t, &api.Server{Switch: sw})
	defer stop()
	c := api.NewClient(sock)
	var streams []io.Closer
	defer func() {
		for _, s := range streams {
			s.Close()
		}
	}()
	for range api.MaxCaptures {
		rc, err := c.Capture(t.Context(), "")
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, rc)
	}
	if rc, err := c.Capture(t.Context(), ""); err == nil || !strings.Contains(err.Error(), "captures are running already") {
		if rc != nil {
			rc.Close()
		}
		t.Fatalf("capture %d: %v, want it refused", api.MaxCaptures+1, err)
	}
	// One ends: another may start.
	streams[0].Close()
	streams = streams[1:]
	porttest.WaitFor(t, "a capture to start after one ended", func() bool {
		rc, err := c.Capture(t.Context(), "")
		if err == nil {
			streams = append(streams, rc)
		}
		return err == nil
	})
}

// TestCaptureDialledPortByURL: a port the switch dialled is captured by
// its URL, as ctl detach finds it; capture answered "no port".
func TestCaptureDialledPortByURL(t *testing.T) {
	sw, p1 := memSwitch(t, "unix:/tmp/vm.sock")
	sock, stop := serve(t, &api.Server{Switch: sw})
	defer stop()
	_, r := capture(t, api.NewClient(sock), "unix:///tmp/vm.sock")
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, []byte("flooded"))
	if err := p1.Send(fr); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(nil); err != nil {
		t.Fatal(err)
	}
}
