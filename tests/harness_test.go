//go:build linux

package tests

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// bin is the tapswitch binary under test, built by TestMain with the race
// detector; binFast is the same without it.
var bin, binFast string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	removeStale()
	dir, err := os.MkdirTemp("", fmt.Sprintf("ts-e2e-%d-", os.Getpid()))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Tests run the binary as an unprivileged user too.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Every temporary file of the run goes in dir (t.TempDir's, os.MkdirTemp's
	// and those of the processes the tests start), so that the next run
	// removes what a killed one left.
	os.Setenv("TMPDIR", dir)
	bin = filepath.Join(dir, "tapswitch")
	// The race detector sleeps a second at exit by default: every ctl
	// call and shutdown would pay it. A data race stops the program.
	os.Setenv("GORACE", "atexit_sleep_ms=0 halt_on_error=1")
	// Lease files the tests do not name go here, not to /var/lib.
	os.Setenv("TAPSWITCH_STATE_DIR", filepath.Join(dir, "state"))
	// binFast, without the race detector, is for tests that compare
	// throughputs: the detector's own cost swings them by a factor of two.
	binFast = filepath.Join(dir, "tapswitch-norace")
	for _, b := range [][]string{{"-race", "-o", bin}, {"-o", binFast}} {
		build := exec.Command("go", append(append([]string{"build"}, b...), "../cmd/tapswitch")...)
		build.Stdout, build.Stderr = os.Stdout, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build tapswitch:", err)
			return 1
		}
	}
	return m.Run()
}

// removeStale removes what runs of this test binary killed before their
// cleanups ran left behind: their temporary directories and (as root)
// their network namespaces, each named after the PID of the test process
// that made it, if no process with that PID runs any more; and first the
// processes still running with such a directory as their TMPDIR, which
// the run gave them (a QEMU whose wrapper, tapswitch qemu --socket, was
// killed with the run: testproc.Start's signal reaches children only).
func removeStale() {
	var removed []string
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "ts-e2e-*-*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.Split(strings.TrimPrefix(filepath.Base(d), "ts-e2e-"), "-")[0])
		if err != nil || pid <= 0 || pid == os.Getpid() || processExists(pid) {
			continue
		}
		removed = append(removed, killStragglers(d)...)
		if err := os.RemoveAll(d); err != nil {
			fmt.Fprintf(os.Stderr, "removing %s, left by a killed run: %v\n", d, err)
			continue
		}
		removed = append(removed, d)
	}
	if os.Geteuid() == 0 {
		ns, err := testnet.RemoveStale()
		if err != nil {
			fmt.Fprintf(os.Stderr, "removing the namespaces of killed runs: %v\n", err)
		}
		removed = append(removed, ns...)
	}
	if len(removed) > 0 {
		fmt.Fprintf(os.Stderr, "removed what killed test runs left: %s\n", strings.Join(removed, " "))
	}
}

// killStragglers SIGKILLs the processes whose environment says
// TMPDIR=dir, and describes them.
func killStragglers(dir string) []string {
	var killed []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !slices.Contains(strings.Split(string(env), "\x00"), "TMPDIR="+dir) {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			killed = append(killed, fmt.Sprintf("pid %d (%s)", pid, bytes.TrimSpace(comm)))
		}
	}
	return killed
}

// processExists reports whether a process with this PID exists, whoever
// owns it.
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// syncBuffer collects a process's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemon is a `tapswitch serve` process started by a test.
type daemon struct {
	cmd    *exec.Cmd
	Ctl    string // control socket
	Dir    string // a private directory for its sockets and files
	out    *syncBuffer
	exited chan struct{}
	err    error
}

// startSwitch runs `tapswitch serve --ctl DIR/ctl.sock ARGS...` inside ns
// (the test's own namespace when ns is nil), waits until its control API
// answers, and stops it with SIGTERM when the test ends.
func startSwitch(t *testing.T, ns *testnet.NS, args ...string) *daemon {
	t.Helper()
	return startSwitchBin(t, ns, bin, args...)
}

// startSwitchBin is startSwitch with the binary binary (bin or binFast).
func startSwitchBin(t *testing.T, ns *testnet.NS, binary string, args ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl.sock")
	d := startDaemon(t, ns, ctl, append([]string{binary, "serve", "--ctl", ctl, "--log-level", "debug"}, args...)...)
	d.Dir = dir
	return d
}

// startDaemon runs argv (a tapswitch command whose control socket is ctl)
// inside ns, waits until the control API answers, and stops it with
// SIGTERM when the test ends. It is SIGKILLed should the test binary die
// (testproc.Start).
func startDaemon(t *testing.T, ns *testnet.NS, ctl string, argv ...string) *daemon {
	t.Helper()
	d := &daemon{Ctl: ctl, out: &syncBuffer{}, exited: make(chan struct{})}
	if ns != nil {
		// ip netns exec execs the command, so the PID is the switch's.
		argv = append([]string{"ip", "netns", "exec", ns.Name()}, argv...)
	}
	d.cmd = exec.Command(argv[0], argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := testproc.Start(d.cmd); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		d.Stop(t)
		if strings.Contains(d.out.String(), "WARNING: DATA RACE") {
			t.Error("the race detector found a data race in tapswitch")
		}
		if t.Failed() {
			t.Logf("tapswitch output:\n%s", d.out.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st vswitch.Stats
		err := api.NewClient(d.Ctl).Do(t.Context(), "GET", "/v1/stats", nil, &st)
		if err == nil {
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("tapswitch serve exited: %v\n%s", d.err, d.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tapswitch serve did not answer on %s: %v\n%s", d.Ctl, err, d.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits for the process to exit (SIGKILL after 10
// s); it returns how long the shutdown took.
func (d *daemon) Stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-d.exited:
		return 0
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("tapswitch did not stop within 10 s of SIGTERM; killing pid %d", d.cmd.Process.Pid)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	return time.Since(start)
}

// Kill sends SIGKILL and waits for the process to exit.
func (d *daemon) Kill() {
	_ = d.cmd.Process.Kill()
	<-d.exited
}

// Output returns what the process has logged so far.
func (d *daemon) Output() string { return d.out.String() }

// ctl runs `tapswitch ctl --ctl SOCK ARGS...` and returns its output.
func (d *daemon) ctl(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, bin, append([]string{"ctl", "--ctl", d.Ctl}, args...)...)
}

// portNames returns the names of the daemon's ports, from ctl ports.
func (d *daemon) portNames(t *testing.T) []string {
	t.Helper()
	var ps []api.Port
	mustJSON(t, d.ctl(t, "ports", "--json"), &ps)
	names := make([]string, 0, len(ps))
	for _, p := range ps {
		names = append(names, p.Name)
	}
	return names
}

// postPorts sends POST /v1/ports with body to the daemon's control API and
// returns the status and the answer (api.Client takes only well-formed
// requests, and tells no status).
func (d *daemon) postPorts(t *testing.T, body string) (int, string) {
	t.Helper()
	return d.request(t, "POST", "/v1/ports", body)
}

// request sends method path with body (none if "") to the daemon's
// control API and returns the status and the answer. A request that fails
// is reported with t.Error (so it may be called from any goroutine) and
// returns status 0.
func (d *daemon) request(t *testing.T, method, path, body string) (int, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", d.Ctl)
	}}}
	defer hc.CloseIdleConnections()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://ctl"+path, r)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Error(err)
		return 0, ""
	}
	return resp.StatusCode, string(b)
}

// api returns a client of the daemon's control API.
func (d *daemon) api() *api.Client { return api.NewClient(d.Ctl) }

// run runs a command and fails the test if it fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// waitLink waits until link exists in ns (nil: the test's namespace).
func waitLink(t *testing.T, ns *testnet.NS, link string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		args := []string{"link", "show", "dev", link}
		if ns != nil {
			args = append([]string{"-n", ns.Name()}, args...)
		}
		if exec.Command("ip", args...).Run() == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("link %s did not appear in %v", link, ns)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
