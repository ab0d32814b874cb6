package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// serveAPI runs the control API of sw on a fresh socket until the test
// ends, and returns the socket's path.
func serveAPI(t *testing.T, srv *api.Server) string {
	t.Helper()
	sock := filepath.Join(porttest.SocketDir(t), "ctl.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-served })
	return sock
}

// runCmd runs tapswitch with args and returns what it printed and its error.
func runCmd(args ...string) (string, error) {
	root := newRootCmd()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

// TestCapturePortLeaves: capture --port ends, with an error saying so,
// when its port leaves the switch. It used to run on, recording the frames
// flooded to the other ports.
func TestCapturePortLeaves(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	a, err := sw.AddPort(porttest.New(porttest.Config{Name: "vm", Discard: true}), vswitch.PortConfig{Kind: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	sock := serveAPI(t, &api.Server{Switch: sw})
	file := filepath.Join(t.TempDir(), "vm.pcap")
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runCmd("capture", "--ctl", sock, "--port", "vm", "-w", file)
		done <- result{out, err}
	}()
	// The file has the stream's header once the switch captures.
	porttest.WaitFor(t, "the capture to start", func() bool {
		fi, err := os.Stat(file)
		return err == nil && fi.Size() == 24
	})
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("capture file mode %v, %v; want 0600: the frames of every VM", fi.Mode(), err)
	}
	a.Close()
	var r result
	select {
	case r = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("capture still running 20 s after its port left")
	}
	if r.err == nil || !strings.Contains(r.err.Error(), "port vm left the switch") {
		t.Errorf("capture: %v (printed %q), want an error saying that port vm left", r.err, r.out)
	}
}

// TestCaptureNegativeLimits: a negative --count or --duration is refused
// before anything is opened. -c -1 wrote a header-only file and exited 0,
// --duration -5s meant no limit.
func TestCaptureNegativeLimits(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	sock := serveAPI(t, &api.Server{Switch: sw})
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "-1"}, "--count -1: must be 0 (no limit) or more"},
		{[]string{"--duration", "-5s"}, "--duration -5s: must be 0 (no limit) or more"},
	} {
		file := filepath.Join(t.TempDir(), "c.pcap")
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second) // a bound for the old code's endless capture
		root := newRootCmd()
		root.SetOut(io.Discard)
		root.SetArgs(append([]string{"capture", "--ctl", sock, "-w", file}, c.args...))
		err := root.ExecuteContext(ctx)
		cancel()
		if err == nil || err.Error() != c.want {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
		if _, err := os.Stat(file); err == nil {
			t.Errorf("%q: %s written", c.args, file)
		}
	}
}
