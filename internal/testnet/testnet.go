// Package testnet helps tests build small networks out of network
// namespaces, taps, veths and bridges, so that every Linux data path of
// tapswitch is tested on real devices without touching the host's own
// interfaces.
//
// Each test makes its own namespaces with NewNS and names its devices with
// UniqueName, so tests (and packages tested in parallel) never collide;
// everything is removed by exact name in t.Cleanup, whether the test
// passes or not. A namespace's name carries the test process's PID, so
// that RemoveStale can remove those of a test binary killed before its
// cleanup ran. Tests must address only 198.18.0.0/15 inside their own
// namespaces.
//
// The helpers shell out to ip(8) from iproute2 and need root; RequireRoot
// skips a test that is not run as root (CI runs as root, where nothing
// skips).
package testnet

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netns"
)

// MaxNameLen is the longest interface name Linux accepts.
const MaxNameLen = 15

// RequireRoot skips the test unless it runs as root, saying why. As root it
// checks that ip(8) is installed and fails the test otherwise, so that a
// privileged CI run never skips silently.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces and devices (CAP_SYS_ADMIN, CAP_NET_ADMIN); " +
			"run the tests as root, e.g. sudo go test")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip(8) not found: install iproute2: %v", err)
	}
}

// UniqueName returns prefix followed by 6 random lowercase letters and
// digits, a name fit for a device or a namespace. prefix is cut to 9
// bytes so that the result has at most MaxNameLen bytes.
func UniqueName(prefix string) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	if len(prefix) > MaxNameLen-6 {
		prefix = prefix[:MaxNameLen-6]
	}
	b := make([]byte, 6)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return prefix + string(b)
}

// NS is a network namespace created by NewNS, known to ip(8) by its Name.
type NS struct {
	name string
}

// NewNS creates a network namespace with a unique name, "tsPID-XXXXXX"
// (PID: the test process's), and its loopback up, and removes it by name
// when the test ends. It skips the test unless run as root.
func NewNS(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	ns := &NS{name: fmt.Sprintf("ts%d-%s", os.Getpid(), UniqueName(""))}
	if out, err := exec.Command("ip", "netns", "add", ns.name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", ns.name, err, out)
	}
	t.Cleanup(func() {
		if err := ns.delete(); err != nil {
			t.Error(err)
		}
	})
	ns.IP(t, "link", "set", "lo", "up")
	return ns
}

// staleNS matches the names NewNS gives, capturing the PID.
var staleNS = regexp.MustCompile(`^ts([0-9]+)-[a-z0-9]{6}$`)

// RemoveStale deletes the namespaces that NewNS made in test processes
// that no longer run (killed before their cleanups ran), and returns their
// names. Namespaces of live processes, and those NewNS did not name, are
// left alone. A process still inside a deleted namespace keeps it (and its
// devices) until it exits.
func RemoveStale() ([]string, error) {
	ents, err := os.ReadDir("/run/netns")
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	var errs []error
	for _, e := range ents {
		m := staleNS.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || processExists(pid) {
			continue
		}
		ns := &NS{name: e.Name()}
		if err := ns.delete(); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, ns.name)
	}
	return removed, errors.Join(errs...)
}

// processExists reports whether a process with this PID exists (in this
// PID namespace), whoever owns it.
func processExists(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// Name returns the namespace's name, as used by `ip netns` and `ip -n`.
func (ns *NS) Name() string { return ns.name }

// String returns the namespace's name.
func (ns *NS) String() string { return ns.name }

// Delete removes the namespace now (the test's cleanup then has nothing to
// do). The kernel destroys it, and the virtual devices in it, once no
// process, open descriptor or mount refers to it any more.
func (ns *NS) Delete(t testing.TB) {
	t.Helper()
	if err := ns.delete(); err != nil {
		t.Fatal(err)
	}
}

func (ns *NS) delete() error {
	if _, err := os.Stat("/run/netns/" + ns.name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := exec.Command("ip", "netns", "del", ns.name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", ns.name, err, out)
	}
	return nil
}

// Exec returns a command that runs args inside the namespace (through
// `ip netns exec`, which executes args in its own process). It is killed
// when ctx is done: pass t.Context() so that nothing outlives the test. A
// command that runs while the test goes on should be started with
// testproc.Start, so that it also dies should the test binary be killed.
func (ns *NS) Exec(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.name}, args...)...)
}

// Output runs args inside the namespace and returns its standard output;
// it fails the test, showing the command's output, if the command fails.
func (ns *NS) Output(t testing.TB, args ...string) string {
	t.Helper()
	cmd := ns.Exec(t.Context(), args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("in netns %s: %s: %v\n%s%s", ns.name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// Run runs args inside the namespace and fails the test if it fails.
func (ns *NS) Run(t testing.TB, args ...string) {
	t.Helper()
	ns.Output(t, args...)
}

// IP runs `ip -n NAME args...` and fails the test if it fails. It is the
// quickest way to configure the namespace, e.g.
// ns.IP(t, "link", "add", "br0", "type", "bridge").
func (ns *NS) IP(t testing.TB, args ...string) string {
	t.Helper()
	return ip(t, append([]string{"-n", ns.name}, args...)...)
}

// AddAddr adds the address prefix (e.g. "198.18.3.1/24") to link in the
// namespace.
func (ns *NS) AddAddr(t testing.TB, link, prefix string) {
	t.Helper()
	ns.IP(t, "addr", "add", prefix, "dev", link)
}

// SetUp sets link in the namespace up.
func (ns *NS) SetUp(t testing.TB, link string) {
	t.Helper()
	ns.IP(t, "link", "set", link, "up")
}

// Ping pings addr from the namespace until three replies arrive, and fails
// the test if they have not within 10 seconds.
func (ns *NS) Ping(t testing.TB, addr string) {
	t.Helper()
	out, err := ns.Exec(t.Context(), "ping", "-n", "-q", "-c", "3", "-i", "0.2", "-w", "10", addr).CombinedOutput()
	if err != nil {
		t.Fatalf("ping %s from netns %s: %v\n%s", addr, ns.name, err, out)
	}
}

// Do runs fn on an OS thread that has joined the namespace, and returns
// its error. Sockets and taps that fn creates belong to the namespace for
// good and may be used from any goroutine afterwards. The thread is never
// returned to the Go scheduler: it ends with fn's goroutine.
func (ns *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		h, err := netns.GetFromName(ns.name)
		if err != nil {
			errc <- fmt.Errorf("netns %s: open: %w", ns.name, err)
			return
		}
		err = netns.Set(h)
		h.Close()
		if err != nil {
			errc <- fmt.Errorf("netns %s: enter: %w", ns.name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// MoveLink moves the network device link from namespace from into
// namespace to (`ip link set LINK netns TO`). A nil from means the test
// process's own namespace. The kernel sets a moved link down.
func MoveLink(t testing.TB, link string, from, to *NS) {
	t.Helper()
	args := []string{"link", "set", link, "netns", to.name}
	if from != nil {
		args = append([]string{"-n", from.name}, args...)
	}
	ip(t, args...)
}

func ip(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
