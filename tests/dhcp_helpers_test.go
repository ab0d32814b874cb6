//go:build linux

package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// The DHCP clients the end-to-end tests run, with the Debian package that
// has each (CI installs them).
var dhcpClientPackages = map[string]string{
	"udhcpc":   "busybox-static", // run as `busybox udhcpc`
	"dhclient": "isc-dhcp-client",
	"dhcpcd":   "dhcpcd-base",
}

// requireDHCPClient skips the test unless it runs as root and fails it if,
// as root, the client's program is missing: CI runs the tests as root with
// every client installed, and must not skip them.
func requireDHCPClient(t *testing.T, kind string) {
	t.Helper()
	testnet.RequireRoot(t)
	prog := kind
	if kind == "udhcpc" {
		prog = "busybox"
	}
	if _, err := exec.LookPath(prog); err != nil {
		t.Fatalf("%s not found: apt-get install %s: %v", prog, dhcpClientPackages[kind], err)
	}
	if _, err := exec.LookPath("mount"); err != nil {
		t.Fatalf("mount(8) not found (it keeps DHCP clients off the host's files): apt-get install mount: %v", err)
	}
}

// dhcpIsolateScript runs a DHCP client, inside the private mount namespace
// that `ip netns exec` gives each command, with the places clients write
// covered by the test's own directory ($0): /etc/resolv.conf (hook
// scripts rewrite it), /var/lib (dhcpcd's DUID, secret and leases,
// dhclient's default lease file) and /run (pid files, dhcpcd's control
// sockets). `ip netns exec` makes its mount namespace a slave of the
// host's, so these mounts never propagate back; the mount namespace,
// unlike the network namespace, would otherwise be the host's.
const dhcpIsolateScript = `set -e
mkdir -p "$0/var-lib" "$0/run"
: >"$0/resolv.conf"
if [ -e /etc/resolv.conf ]; then mount --bind "$0/resolv.conf" /etc/resolv.conf; fi
mount --bind "$0/var-lib" /var/lib
mount --bind "$0/run" /run
exec "$@"
`

// dhcpClient is a DHCP client daemon that a test runs on one interface of
// a namespace the test created. Its hook script appends one line per event,
// "EVENT IP LEASETIME UNIXTIME", to a file in its directory.
type dhcpClient struct {
	kind   string // "udhcpc", "dhclient" or "dhcpcd"
	ns     *testnet.NS
	link   string
	dir    string
	events string
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed once the process group's leader is reaped

	procMu sync.Mutex // held while signalling or reaping the process group
	reaped bool
}

// dhcpEvent is one line of a client's event log.
type dhcpEvent struct {
	Event string   // udhcpc: bound, renew, ...; dhclient and dhcpcd: BOUND, RENEW, ...
	IP    string   // "-" if none
	More  []string // the other fields
}

// dhcpClientScripts are the hook scripts, %[1]s being the event log. They log
// every event; the udhcpc and dhclient ones also apply the lease to the
// interface when %[2]s is 1 (dhcpcd configures the interface itself).
// None touches /etc.
var dhcpClientScripts = map[string]string{
	"udhcpc": `#!/bin/sh
if [ %[2]s = 1 ]; then
	case "$1" in
	deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
	bound) ip -4 addr flush dev "$interface"; ip addr replace "$ip/${mask:-32}" dev "$interface" ;;
	renew) ip addr replace "$ip/${mask:-32}" dev "$interface" ;;
	esac
fi
echo "$1 ${ip:--} ${lease:--} $(date +%%s)" >>'%[1]s'
`,
	"dhclient": `#!/bin/sh
if [ %[2]s = 1 ]; then
	case "$reason" in
	PREINIT) ip link set "$interface" up ;;
	BOUND|RENEW|REBIND|REBOOT)
		if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
			ip -4 addr flush dev "$interface"
		fi
		ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
	EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$interface" ;;
	esac
fi
echo "$reason ${new_ip_address:-${old_ip_address:--}} ${new_dhcp_lease_time:--} $(date +%%s)" >>'%[1]s'
`,
	"dhcpcd": `#!/bin/sh
echo "$reason ${new_ip_address:-${old_ip_address:--}} ${new_dhcp_lease_time:--} $(date +%%s)" >>'%[1]s'
`,
}

// startDHCPClient runs a client of the given kind on link in ns, with host
// name hostname. configure says whether udhcpc's and dhclient's hooks put
// the leased address on the interface. The client is stopped when the test
// ends.
func startDHCPClient(t *testing.T, kind string, ns *testnet.NS, link, hostname string, configure bool) *dhcpClient {
	t.Helper()
	requireDHCPClient(t, kind)
	c := newDHCPClient(t, kind, ns, link)
	script := filepath.Join(c.dir, "hook.sh")
	conf := "0"
	if configure {
		conf = "1"
	}
	dhcpWriteFile(t, script, fmt.Sprintf(dhcpClientScripts[kind], c.events, conf), 0o755)
	var argv []string
	switch kind {
	case "udhcpc":
		// Foreground (-f), so that it renews; DISCOVER every second.
		argv = []string{"busybox", "udhcpc", "-f", "-i", link, "-s", script, "-t", "30", "-T", "1", "-A", "1",
			"-x", "hostname:" + hostname}
	case "dhclient":
		cf := filepath.Join(c.dir, "dhclient.conf")
		dhcpWriteFile(t, cf, fmt.Sprintf("send host-name %q;\ninitial-interval 1;\nbackoff-cutoff 2;\n"+
			"request subnet-mask, broadcast-address, routers, domain-name-servers, domain-name, interface-mtu;\n", hostname), 0o644)
		argv = []string{"dhclient", "-d", "-4", "-v", "-cf", cf, "-sf", script,
			"-lf", filepath.Join(c.dir, "dhclient.leases"), "-pf", filepath.Join(c.dir, "dhclient.pid"), link}
	case "dhcpcd":
		// -B: no fork to the background; -c: our script instead of
		// dhcpcd-run-hooks; -f: no /etc/dhcpcd.conf.
		cf := filepath.Join(c.dir, "dhcpcd.conf")
		dhcpWriteFile(t, cf, "option domain_name_servers, domain_name, interface_mtu\n", 0o644)
		argv = []string{"dhcpcd", "-4", "-B", "-d", "-f", cf, "-c", script, "--noipv4ll", "-t", "60",
			"-h", hostname, link}
	default:
		t.Fatalf("unknown DHCP client %q", kind)
	}
	c.start(t, argv)
	return c
}

// dhcpChurnScript runs udhcpc on $1 again and again, each time with a new
// MAC address ($2:HH:LL, HHLL counting up), until the interface is gone:
// one new binding, and one lease file write, after another.
const dhcpChurnScript = `i=0
while :; do
	i=$((i + 1))
	mac=$(printf '%s:%02x:%02x' "$2" $((i / 256 % 256)) $((i % 256)))
	ip link set dev "$1" address "$mac" || exit 0
	TS_MAC=$mac busybox udhcpc -f -q -n -i "$1" -s "$3" -t 3 -T 1 -A 1 >/dev/null 2>&1
done
`

// dhcpChurnHook logs "EVENT IP MAC" to %[1]s. The MAC comes from the
// churn script: the interface may be gone by the time the hook runs.
const dhcpChurnHook = `#!/bin/sh
echo "$1 ${ip:--} $TS_MAC" >>'%[1]s'
`

// startDHCPChurn runs dhcpChurnScript on link in ns, the MAC addresses
// starting with macPrefix (4 bytes, e.g. "02:52:00:01"). Each bound event
// names the MAC that was acknowledged.
func startDHCPChurn(t *testing.T, ns *testnet.NS, link, macPrefix string) *dhcpClient {
	t.Helper()
	requireDHCPClient(t, "udhcpc")
	c := newDHCPClient(t, "udhcpc", ns, link)
	script := filepath.Join(c.dir, "hook.sh")
	dhcpWriteFile(t, script, fmt.Sprintf(dhcpChurnHook, c.events), 0o755)
	c.start(t, []string{"sh", "-c", dhcpChurnScript, "churn", link, macPrefix, script})
	return c
}

func newDHCPClient(t *testing.T, kind string, ns *testnet.NS, link string) *dhcpClient {
	t.Helper()
	// The interface must be in ns: a client must never run on an interface
	// of the root namespace.
	ns.IP(t, "link", "show", "dev", link)
	c := &dhcpClient{kind: kind, ns: ns, link: link, dir: t.TempDir(), out: &syncBuffer{}, exited: make(chan struct{})}
	c.events = filepath.Join(c.dir, "events")
	return c
}

// start runs argv in c.ns, isolated by dhcpIsolateScript, and stops it when
// the test ends.
func (c *dhcpClient) start(t *testing.T, argv []string) {
	t.Helper()
	argv = append([]string{"ip", "netns", "exec", c.ns.Name(), "sh", "-c", dhcpIsolateScript, c.dir}, argv...)
	c.cmd = exec.Command(argv[0], argv[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	// Its own process group, so that stop reaches dhcpcd's privilege
	// separated helpers too; SIGKILL should the test binary die.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := testproc.Start(c.cmd); err != nil {
		t.Fatal(err)
	}
	go c.reap()
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("%s on %s in %s: events:\n%s\noutput:\n%s", c.kind, c.link, c.ns, c.eventLog(), c.out.String())
		}
	})
}

// reap waits for the process group's leader to exit without reaping it,
// kills what is left of the group while the leader's pid, the group's id,
// cannot be reused, then reaps the leader.
func (c *dhcpClient) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, c.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	c.procMu.Lock()
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	_ = c.cmd.Wait()
	c.reaped = true
	c.procMu.Unlock()
	close(c.exited)
}

// signal sends sig to the client's process group unless its leader has
// been reaped (the group is then gone: reap killed it), so that a group
// whose id was reused is never signalled.
func (c *dhcpClient) signal(sig syscall.Signal) {
	c.procMu.Lock()
	defer c.procMu.Unlock()
	if !c.reaped {
		_ = syscall.Kill(-c.cmd.Process.Pid, sig)
	}
}

// stop ends the client: SIGTERM to its process group, SIGKILL after 5 s.
// Once the group's leader has exited, reap kills the rest of the group.
func (c *dhcpClient) stop(t *testing.T) {
	t.Helper()
	c.signal(syscall.SIGTERM)
	select {
	case <-c.exited:
		return
	case <-time.After(5 * time.Second):
		t.Logf("%s (pid %d) ignored SIGTERM for 5 s; killing it", c.kind, c.cmd.Process.Pid)
	}
	c.signal(syscall.SIGKILL)
	<-c.exited
	// Anything that left the process group dies with the namespace's
	// other processes, see dhcpKillNSProcesses.
}

func (c *dhcpClient) eventLog() string {
	b, _ := os.ReadFile(c.events)
	return string(b)
}

// Events returns the events logged so far.
func (c *dhcpClient) Events() []dhcpEvent {
	var evs []dhcpEvent
	sc := bufio.NewScanner(strings.NewReader(c.eventLog()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 {
			evs = append(evs, dhcpEvent{Event: f[0], IP: f[1], More: f[2:]})
		}
	}
	return evs
}

// waitEvent waits up to timeout for an event whose name is one of names
// after the first skip events, and returns it with its index.
func (c *dhcpClient) waitEvent(t *testing.T, timeout time.Duration, skip int, names ...string) (dhcpEvent, int) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := c.Events()
		for i := skip; i < len(evs); i++ {
			for _, n := range names {
				if evs[i].Event == n {
					return evs[i], i
				}
			}
		}
		select {
		case <-c.exited:
			t.Fatalf("%s on %s exited before %v: events:\n%s\noutput:\n%s", c.kind, c.link, names, c.eventLog(), c.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s on %s: no %v event within %v: events:\n%s\noutput:\n%s", c.kind, c.link, names, timeout, c.eventLog(), c.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dhcpKillNSProcesses registers a cleanup that SIGKILLs, by PID, whatever
// still runs in ns (a client helper that escaped its process group). Call
// it right after creating ns, so that it runs before ns is deleted.
func dhcpKillNSProcesses(t *testing.T, ns *testnet.NS) {
	t.Cleanup(func() {
		out, err := exec.Command("ip", "netns", "pids", ns.Name()).Output()
		if err != nil {
			return
		}
		for _, f := range strings.Fields(string(out)) {
			pid, err := strconv.Atoi(f)
			if err != nil || pid <= 1 {
				continue
			}
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Logf("killing pid %d left in %s: %s", pid, ns, strings.ReplaceAll(string(cmdline), "\x00", " "))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// dhcpLinkMAC returns the MAC address of link in ns.
func dhcpLinkMAC(t *testing.T, ns *testnet.NS, link string) vswitch.MAC {
	t.Helper()
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(ns.IP(t, "-j", "link", "show", "dev", link)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show %s in %s: %v", link, ns, err)
	}
	mac, err := vswitch.ParseMAC(links[0].Address)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// dhcpHasAddr reports whether link in ns has the IPv4 address ip.
func dhcpHasAddr(t *testing.T, ns *testnet.NS, link, ip string) bool {
	t.Helper()
	var links []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(ns.IP(t, "-j", "-4", "addr", "show", "dev", link)), &links); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Local == ip {
				return true
			}
		}
	}
	return false
}

// dhcpLeases returns d's leases as `tapswitch ctl leases --json` prints
// them, by MAC.
func dhcpLeases(t *testing.T, d *daemon) map[vswitch.MAC]api.Lease {
	t.Helper()
	var ls []api.Lease
	out := d.ctl(t, "leases", "--json")
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("ctl leases --json: %v\n%s", err, out)
	}
	m := make(map[vswitch.MAC]api.Lease, len(ls))
	for _, l := range ls {
		if _, dup := m[l.MAC]; dup {
			t.Fatalf("ctl leases --json lists %s twice:\n%s", l.MAC, out)
		}
		m[l.MAC] = l
	}
	return m
}

// dhcpTempDir returns a new directory with a short path (unix socket
// paths are limited to 107 bytes), removed when the test ends.
func dhcpTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tsdhcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func dhcpWriteFile(t *testing.T, path, data string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

// dhcpWaitFor polls cond every 100 ms until it holds or timeout passes.
func dhcpWaitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
