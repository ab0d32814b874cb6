package api_test

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestClientTimeout: a switch that accepts the connection and never
// answers (stopped with SIGSTOP, hung) kept ctl and capture waiting for
// ever; a request now ends after the Client's Timeout, saying so.
func TestClientTimeout(t *testing.T) {
	sock := filepath.Join(porttest.SocketDir(t), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, never answered
		}
	}()
	c := api.NewClient(sock)
	c.Timeout = 200 * time.Millisecond
	start := time.Now()
	var st vswitch.Stats
	err = c.Do(context.Background(), "GET", "/v1/stats", nil, &st)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("Do: %v, want no answer within 200ms", err)
	}
	if _, err := c.Capture(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("Capture: %v, want no answer within 200ms", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("two requests took %v", d)
	}

	// The caller's own deadline (capture --duration) is not the Client's
	// timeout, and is not reported as one.
	c.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := c.Capture(ctx, ""); err == nil || strings.Contains(err.Error(), "no answer within") {
		t.Errorf("Capture ended by the caller's deadline: %v, want no mention of the Client's timeout", err)
	}
	if err := c.Do(ctx, "GET", "/v1/stats", nil, &st); err == nil || strings.Contains(err.Error(), "no answer within") {
		t.Errorf("Do ended by the caller's deadline: %v, want no mention of the Client's timeout", err)
	}
	// A negative Timeout bounds nothing but the context.
	c.Timeout = -1
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := c.Do(ctx, "GET", "/v1/stats", nil, &st); err == nil || time.Since(start) < 250*time.Millisecond {
		t.Errorf("Do with Timeout -1: %v after %v, want the context's 300ms deadline", err, time.Since(start))
	}
}

// TestCaptureOutlivesTimeout: the timeout bounds the wait for a capture's
// answer, not the stream.
func TestCaptureOutlivesTimeout(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	p := porttest.New(porttest.Config{Name: "p"})
	if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	sock, stop := serve(t, &api.Server{Switch: sw})
	defer stop()
	c := api.NewClient(sock)
	c.Timeout = 100 * time.Millisecond
	cs, err := c.Capture(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	hdr := make([]byte, 24)
	if _, err := cs.Read(hdr); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	p.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, make([]byte, 28)))
	rec := make([]byte, 16+42)
	if n, err := cs.Read(rec); err != nil || n < 16 {
		t.Fatalf("a frame after the timeout: %d bytes, %v", n, err)
	}
}
