package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/backend/tap"
	"github.com/tapswitch/tapswitch/vmnet"
)

// planFor plans serve with args as if on goos.
func planFor(t *testing.T, goos string, args ...string) (*plan, error) {
	t.Helper()
	saved := hostOS
	hostOS = goos
	t.Cleanup(func() { hostOS = saved })
	var o serveOptions
	f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	o.addFlags(f)
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	return o.plan()
}

// TestPlanSocketsOnEverySystem: the control socket's default path and
// --socket-group apply to macOS setups (a vmnet host interface) as they
// do on Linux. They used to be set only after the vmnet branch had
// returned, so macOS ran without a control socket path and ignored
// --socket-group.
func TestPlanSocketsOnEverySystem(t *testing.T) {
	for _, tc := range []struct {
		goos string
		args []string
		mode string // vmnet mode planned, "" for none
	}{
		{"linux", nil, ""},
		{"linux", []string{"--listen", "unix:///tmp/t.sock", "--socket-group", "20"}, ""},
		{"darwin", nil, "shared"},
		{"darwin", []string{"--socket-group", "20", "--host-mode", "host", "--listen", "unix:///tmp/t.sock"}, "host"},
	} {
		p, err := planFor(t, tc.goos, tc.args...)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.goos, tc.args, err)
		}
		if p.ctl != defaultCtlPath() || p.ctl == "" {
			t.Errorf("%s %q: control socket %q, want %q", tc.goos, tc.args, p.ctl, defaultCtlPath())
		}
		wantGID := -1
		if len(tc.args) > 0 {
			wantGID = 20
		}
		if p.socketGID != wantGID {
			t.Errorf("%s %q: socket group %d, want %d", tc.goos, tc.args, p.socketGID, wantGID)
		}
		if tc.mode != "" {
			m, err := vmnet.ParseMode(tc.mode)
			if err != nil {
				t.Fatal(err)
			}
			if p.host == nil || p.host.Mode != m {
				t.Errorf("%s %q: host %+v, want a vmnet interface in %s mode", tc.goos, tc.args, p.host, tc.mode)
			}
		}
	}
	if _, err := planFor(t, "linux", "--host-mode", "shared"); err == nil || !strings.Contains(err.Error(), "only on macOS") {
		t.Errorf("--host-mode on Linux: %v", err)
	}
	if p, _ := planFor(t, "darwin", "--ctl", "none"); p == nil || p.ctl != "none" {
		t.Errorf("--ctl none on macOS: %+v", p)
	}
}

// TestPlanDHCP: the default setup's responder can be turned off with
// --dhcp=false (it was ignored), keeping the host leg's gateway address;
// and DHCP settings a responder would refuse are refused by the plan, so
// that a SIGHUP, which checks the file with the plan, no longer accepts
// what the next start refuses.
func TestPlanDHCP(t *testing.T) {
	p, err := planFor(t, "linux")
	if err != nil || p.dhcp == nil || p.host == nil {
		t.Fatalf("default setup: %+v, %v; want DHCP and a host interface", p, err)
	}
	for _, args := range [][]string{{"--dhcp=false"}, {"--dhcp=false", "--gateway", "198.18.9.1/24"}} {
		p, err := planFor(t, "linux", args...)
		want := "192.168.109.1/24"
		if len(args) > 1 {
			want = args[2]
		}
		if err != nil || p.dhcp != nil || p.host == nil || len(p.host.Addrs) != 1 || p.host.Addrs[0].String() != want {
			t.Errorf("%q: %+v, %v; want no DHCP and a host interface holding %s", args, p, err, want)
		}
	}
	manyDNS := []string{"--listen", "unix:///tmp/t.sock", "--dhcp"}
	for i := range 100 {
		manyDNS = append(manyDNS, "--dns", fmt.Sprintf("198.18.1.%d", i+1))
	}
	for _, c := range []struct {
		args []string
		flag string // the flag the error starts with, "" for none
	}{
		{[]string{"--dhcp-lease-time", "5s"}, "--dhcp-lease-time: "},
		{[]string{"--gateway", "198.18.0.1/31"}, "--gateway: "},
		{[]string{"--listen", "unix:///tmp/t.sock", "--host", "198.18.0.1/31", "--dhcp"}, "--host: "},
		{[]string{"--listen", "unix:///tmp/t.sock", "--dhcp", "--dhcp-static", "52:54:00:00:00:01=10.0.0.5"}, "--dhcp-static: "},
		{[]string{"--dhcp-range", "198.18.0.10-198.18.0.20"}, "--dhcp-range: "},
		// A reply longer than clients accept was refused only by the
		// responder, after the host interface had been made.
		{manyDNS, "--dns: "},
	} {
		_, err := planFor(t, "linux", c.args...)
		if err == nil || !strings.Contains(err.Error(), "invalid dhcp configuration") {
			t.Errorf("%q: %v, want the responder's refusal", c.args, err)
			continue
		}
		if c.flag != "" && !strings.HasPrefix(err.Error(), c.flag) {
			t.Errorf("%q: %v, want it to start with %q", c.args, err, c.flag)
		}
	}
	// A tap of the responder's port name: ctl detach could not tell the
	// two apart, and a reload that dropped the tap closed both.
	if _, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--dhcp", "--tap", "dhcp"); err == nil || !strings.HasPrefix(err.Error(), "--tap dhcp: ") {
		t.Errorf("--tap dhcp with the responder: %v, want it refused", err)
	}
}

// TestPlanHostAndDHCPFlags: the gateway defaults to the first IPv4 --host
// address (an IPv6 one before it was taken, and refused as a --gateway
// nobody gave); --gateway and --dhcp-lease-time without --dhcp are refused
// like the other DHCP flags (they were ignored); an IPv6 --host with an
// MTU below 1280 is refused with the reason (Linux said "invalid
// argument").
func TestPlanHostAndDHCPFlags(t *testing.T) {
	p, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--host", "fd00:1::1/64", "--host", "198.18.0.1/24", "--dhcp")
	if err != nil || p.dhcp == nil || p.dhcp.Gateway.String() != "198.18.0.1/24" {
		t.Errorf("IPv6 --host first: %+v, %v; want DHCP on 198.18.0.1/24", p, err)
	}
	for _, args := range [][]string{
		{"--listen", "unix:///tmp/t.sock", "--gateway", "198.18.0.254/24"},
		{"--listen", "unix:///tmp/t.sock", "--dhcp-lease-time", "5m"},
	} {
		_, err := planFor(t, "linux", args...)
		if err == nil || !strings.HasPrefix(err.Error(), args[2]+": needs --dhcp, as do --") || strings.Count(err.Error(), args[2]) != 1 {
			t.Errorf("%q: %v, want it refused for want of --dhcp, naming %s once", args, err, args[2])
		}
	}
	if _, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--host", "fd00:1::1/64", "--mtu", "576"); err == nil || !strings.Contains(err.Error(), "1280") {
		t.Errorf("IPv6 --host with --mtu 576: %v, want it refused", err)
	}
}

// TestPlanHostMAC: the Linux host interface gets the same MAC at every
// start (a random one each time left guests' ARP entries for the gateway
// stale after a restart), one of its own per name, locally administered;
// a --tap of the host interface's name is refused (it was "in use by
// another process", this one).
func TestPlanHostMAC(t *testing.T) {
	mac := func(args ...string) string {
		t.Helper()
		p, err := planFor(t, "linux", args...)
		if err != nil || p.host == nil || p.host.MAC == nil {
			t.Fatalf("%q: %+v, %v; want a host interface with a MAC", args, p, err)
		}
		if p.host.MAC[0]&1 != 0 || p.host.MAC[0]&2 == 0 {
			t.Errorf("%q: MAC %v is not unicast and locally administered", args, p.host.MAC)
		}
		return p.host.MAC.String()
	}
	if a, b := mac(), mac(); a != b {
		t.Errorf("two starts of the default setup: %s, %s", a, b)
	}
	if a, b := mac("--host", "198.18.0.1/24"), mac("--host", "198.18.0.1/24", "--host-ifname", "tsh1"); a == b {
		t.Errorf("two host interfaces of different names got %s", a)
	}
	if p, _ := planFor(t, "darwin"); p == nil || p.host == nil || p.host.MAC != nil {
		t.Errorf("macOS (vmnet chooses): %+v", p)
	}
	if _, err := planFor(t, "linux", "--host", "198.18.0.1/24", "--tap", "tsh1", "--host-ifname", "tsh1"); err == nil || !strings.Contains(err.Error(), "--host-ifname") {
		t.Errorf("a --tap of the host interface's name: %v, want it refused", err)
	}
}

// TestPlanQueueBounds: a --queue-len that would make a huge channel per
// port (the daemon ran out of memory at its first client) and a
// --queue-bytes below one super-frame's buffer (every such frame dropped)
// are refused at start.
func TestPlanQueueBounds(t *testing.T) {
	for _, args := range [][]string{
		{"--queue-len", "100000000000"},
		{"--queue-bytes", "1000"},
	} {
		if _, err := planFor(t, "linux", append([]string{"--listen", "unix:///tmp/t.sock"}, args...)...); err == nil || !strings.HasPrefix(err.Error(), args[0]+" ") {
			t.Errorf("%q: %v, want it refused", args, err)
		}
	}
	if _, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--queue-len", "1048576", "--queue-bytes", "65569"); err != nil {
		t.Errorf("the bounds themselves: %v", err)
	}
}

// TestConfigErrorsNameTheLine: an error found after the file was read (by
// the plan, or when serve opens what it plans) names the file and the line
// of the key that set the flag it is about; one about a flag given on the
// command line, which wins over the file, does not.
func TestConfigErrorsNameTheLine(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ts.yaml")
	file := "listen: unix:///tmp/t.sock\ndhcp: true\ngateway: 198.18.0.1/24\n" +
		"dhcp-static:\n  - 52:54:00:00:00:01=198.18.0.5\n  - 52:54:00:00:00:02=10.0.0.5\nfdb-size: 0\n"
	if err := os.WriteFile(cfg, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, cfg + ":7: --fdb-size 0: must be positive"},
		{[]string{"--fdb-size", "10"}, cfg + ":4: --dhcp-static: "},
		{[]string{"--fdb-size", "10", "--dhcp-static", "52:54:00:00:00:02=10.0.0.5"}, "--dhcp-static: "},
		// The file's DHCP keys without dhcp: the error said "--gateway,
		// --dhcp-range, ... need --dhcp", and no line.
		{[]string{"--fdb-size", "10", "--dhcp=false"}, cfg + ":3: --gateway: needs --dhcp"},
	} {
		var o serveOptions
		f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
		o.addFlags(f)
		if err := f.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		lines, err := applyConfigFile(f, cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = o.plan()
		if err == nil {
			t.Fatalf("%q: planned", c.args)
		}
		if err = lines.locate(err); !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want it to start with %q", c.args, err, c.want)
		}
	}
}

// TestPlanIsolatedNetworkDHCP: on an isolated vmnet network macOS serves
// no DHCP, so --dhcp there plans tapswitch's responder on --gateway (the
// docs/macos.md example); on the other vmnet networks it is refused.
func TestPlanIsolatedNetworkDHCP(t *testing.T) {
	const netID = "8e2bc5a1-5c53-4b0e-9a56-2f0d3c1e7a11"
	p, err := planFor(t, "darwin", "--listen", "unix:///tmp/t.sock",
		"--host-mode", "host", "--host-network-id", netID, "--host", "192.168.107.1/24",
		"--gateway", "192.168.107.1/24", "--dhcp", "--dhcp-range", "192.168.107.2-192.168.107.254")
	if err != nil {
		t.Fatal(err)
	}
	if p.dhcp == nil || p.dhcp.Gateway.String() != "192.168.107.1/24" ||
		p.dhcp.Range.Start.String() != "192.168.107.2" || p.dhcp.Range.End.String() != "192.168.107.254" {
		t.Fatalf("dhcp %+v, want 192.168.107.1/24 handing out .2-.254", p.dhcp)
	}
	if p.host == nil || p.host.NetworkID.IsZero() || p.host.StartAddr.IsValid() || p.host.EndAddr.IsValid() ||
		len(p.host.Addrs) != 1 || p.host.Addrs[0].String() != "192.168.107.1/24" {
		t.Fatalf("host %+v, want an isolated network holding 192.168.107.1/24 and no vmnet DHCP range", p.host)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--host-mode", "host", "--dhcp"}, "--host-mode: vmnet serves DHCP itself"},
		{[]string{"--host-mode", "shared", "--dns", "192.168.105.1"}, "--host-mode: vmnet serves DHCP itself"},
		{[]string{"--host-mode", "shared", "--dhcp-lease-time", "2h"}, "--host-mode: vmnet serves DHCP itself"},
		{[]string{"--host-mode", "host", "--host-network-id", netID, "--dns", "192.168.107.1"}, "--dns: needs --dhcp"},
		{[]string{"--host-mode", "host", "--host-network-id", netID, "--dhcp-lease-time", "2h"}, "--dhcp-lease-time: needs --dhcp"},
		// The default setup is vmnet's shared mode: not --host-mode's
		// error for a flag the user did not give.
		{[]string{"--dhcp"}, "--dhcp: the default host leg on macOS is vmnet's shared mode"},
		{[]string{"--dns", "192.168.105.1"}, "--dns: the default host leg on macOS is vmnet's shared mode"},
		{[]string{"--dhcp-lease-time", "2h"}, "--dhcp-lease-time: the default host leg on macOS is vmnet's shared mode"},
		{[]string{"--host-network-id", netID, "--dhcp"}, "--host-network-id: an isolated network needs --host-mode host"},
	} {
		if _, err := planFor(t, "darwin", c.args...); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error starting %q", c.args, err, c.want)
		}
	}
	// --dhcp with a listener: no host leg, tapswitch's DHCP.
	p, err = planFor(t, "darwin", "--dhcp", "--listen", "unix:///tmp/t.sock")
	if err != nil || p.host != nil || p.dhcp == nil {
		t.Fatalf("--dhcp --listen: %+v, %v; want tapswitch's DHCP and no host leg", p, err)
	}
	// Without --dhcp, --gateway and --dhcp-range are still vmnet's.
	p, err = planFor(t, "darwin", "--host-mode", "host", "--gateway", "192.168.106.1/24", "--dhcp-range", "192.168.106.2-192.168.106.200")
	if err != nil {
		t.Fatal(err)
	}
	if p.dhcp != nil || p.host.StartAddr.String() != "192.168.106.1" || p.host.EndAddr.String() != "192.168.106.200" {
		t.Fatalf("host mode: dhcp %+v, vmnet %v-%v", p.dhcp, p.host.StartAddr, p.host.EndAddr)
	}
}

// TestPidfileReplacesSymlink: a symlink planted at the pidfile's path (in
// a directory others may write) is replaced, not written through: root
// used to overwrite the file it pointed to.
func TestPidfileReplacesSymlink(t *testing.T) {
	dir := t.TempDir()
	target, path := filepath.Join(dir, "precious"), filepath.Join(dir, "ts.pid")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if err := writePidfile(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Errorf("the symlink's target now holds %q", b)
	}
	fi, err := os.Lstat(path)
	if b, _ := os.ReadFile(path); err != nil || !fi.Mode().IsRegular() || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("pidfile: %v %v %q, want a regular file holding %d", fi, err, b, os.Getpid())
	}
	removePidfile(path)
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("pidfile left after removePidfile: %v", err)
	}
}

// TestOwnLinks: a lease file given as a chain of symlinks (relative or
// not) is the file at its end; a dangling link is kept, to be replaced by
// the first write; a link that another user owns is refused, not followed:
// root created and locked files through one planted in /tmp.
func TestOwnLinks(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "leases")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	abs, rel, dangling := filepath.Join(dir, "abs"), filepath.Join(dir, "rel"), filepath.Join(dir, "dangling")
	for link, target := range map[string]string{abs: file, rel: "abs", dangling: "nowhere"} {
		if err := os.Symlink(target, link); err != nil {
			t.Fatal(err)
		}
	}
	for path, want := range map[string]string{file: file, abs: file, rel: file, dangling: dangling} {
		if got, err := ownLinks(path); err != nil || got != want {
			t.Errorf("ownLinks(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
	// Relative links going up, reached through a symlinked directory:
	// alias -> persist/vm, persist/vm/leases -> ../data/leases,
	// persist/data/leases -> ../real/leases.
	for _, d := range []string{"vm", "data", "real"} {
		if err := os.MkdirAll(filepath.Join(dir, "persist", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	real := filepath.Join(dir, "persist", "real", "leases")
	if err := os.WriteFile(real, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{
		"alias":               "persist/vm",
		"persist/vm/leases":   "../data/leases",
		"persist/data/leases": "../real/leases",
	} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := ownLinks(filepath.Join(dir, "alias", "leases"))
	want, _ := os.Stat(real)
	if fi, serr := os.Lstat(got); err != nil || serr != nil || !fi.Mode().IsRegular() || !os.SameFile(fi, want) {
		t.Errorf("ownLinks(alias/leases) = %q, %v (%v); want persist/real/leases", got, err, serr)
	}
	if os.Geteuid() != 0 {
		t.Skip("a link another user owns needs root to make (lchown)")
	}
	if err := os.Lchown(abs, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{abs, rel} {
		if got, err := ownLinks(path); err == nil || !strings.Contains(err.Error(), abs+" is a symlink owned by uid 65534") {
			t.Errorf("ownLinks(%s) through a link uid 65534 owns = %q, %v; want it refused", path, got, err)
		}
	}
}

// TestUsesRunDir: the run directory is checked (checkPrivateDir) when a
// socket is made there, and when the lease file's directory is there,
// stateDir's fallback without a home directory.
func TestUsesRunDir(t *testing.T) {
	dir := runDir()
	for _, c := range []struct {
		p    plan
		want bool
	}{
		{plan{ctl: filepath.Join(dir, "ctl.sock")}, true},
		{plan{ctl: "none", listens: []listen.Addr{{Network: "unix", Address: filepath.Join(dir, "s.sock")}}}, true},
		{plan{ctl: "none", leaseDir: filepath.Join(dir, "state")}, true},
		{plan{ctl: "none", leaseDir: "/var/lib/tapswitch", listens: []listen.Addr{{Network: "unix", Address: "/elsewhere/s.sock"}}}, false},
	} {
		if got := usesRunDir(&c.p); got != c.want {
			t.Errorf("usesRunDir(%+v) = %v, want %v", c.p, got, c.want)
		}
	}
}

// TestCheckPrivateDir: the fallback run directory under the temporary
// directory must be this user's and writable by nobody else; one another
// user made first (or left writable) is refused.
func TestCheckPrivateDir(t *testing.T) {
	base := t.TempDir()
	own := filepath.Join(base, "own")
	if err := checkPrivateDir(own); err != nil {
		t.Fatalf("a directory it makes: %v", err)
	}
	if fi, _ := os.Stat(own); fi.Mode().Perm() != 0o700 {
		t.Errorf("made with mode %v, want 0700", fi.Mode().Perm())
	}
	open := filepath.Join(base, "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(open); err == nil || !strings.Contains(err.Error(), "is writable by others (drwxrwxrwx)") {
		t.Errorf("a world-writable directory: %v", err)
	}
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 65534, 65534); err != nil {
		t.Skipf("cannot give a directory to another user here (not root): %v", err)
	}
	if err := checkPrivateDir(other); err == nil || !strings.Contains(err.Error(), "is not this user's own (owned by uid 65534)") {
		t.Error("another user's directory accepted")
	}
}

// TestHostOptional: serve without --host flags carries on without a host
// interface when it lacks the privilege (Linux CAP_NET_ADMIN, macOS root,
// where vmnet may say VMNET_FAILURE) or the build has no vmnet (macOS
// without cgo), and fails on anything else.
func TestHostOptional(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		// A container without /dev/net/tun: the default setup goes on without the host leg.
		{fmt.Errorf("host interface: tap tapswitch0: open /dev/net/tun: %w", tap.ErrNoTunDevice), true},
		{fmt.Errorf("host interface tapswitch0: create: %w", fs.ErrPermission), true},
		{fmt.Errorf("host interface vmnet-shared: open: %w: vmnet needs cgo", errors.ErrUnsupported), true},
		{fmt.Errorf("host interface tapswitch0: %w", vmnet.ErrNoBridge), false},
		{errors.New("host interface vmnet-shared: vmnet_start_interface: VMNET_SHARING_SERVICE_BUSY"), false},
	} {
		if got := hostOptional(tc.err); got != tc.want {
			t.Errorf("hostOptional(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// TestDHCPFlagChangeSeen: the reloader compares flags by their text, so
// "--dhcp not given" and "--dhcp=false" must differ: a file adding
// "dhcp: false" to the default setup turns the responder off at the next
// start, and SIGHUP must say so.
func TestDHCPFlagChangeSeen(t *testing.T) {
	var unset, off, on optionalBool
	if err := off.Set("false"); err != nil {
		t.Fatal(err)
	}
	if err := on.Set("true"); err != nil {
		t.Fatal(err)
	}
	if unset.String() == off.String() || off.String() == on.String() || unset.String() == on.String() {
		t.Errorf("unset %q, false %q, true %q: want three different texts", unset.String(), off.String(), on.String())
	}
	if err := unset.Set("maybe"); err == nil {
		t.Error("--dhcp=maybe accepted")
	}
}

// TestPlanPorts: the plan refuses a tap name tap.Open would refuse, one
// the control API would take for a port ID, and a tap, listening socket or
// --connect URL given twice. Tap names were checked only when the tap was
// opened: a SIGHUP with a bad one was applied up to that tap and reported
// as reloaded, and a tap given twice failed as "in use by another process".
func TestPlanPorts(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--tap", "bad:name"}, "--tap: tap \"bad:name\": invalid interface name"},
		{[]string{"--tap", "tapswitch-0123456"}, "--tap: tap tapswitch-0123456: invalid interface name"},
		{[]string{"--tap", "7"}, "--tap: tap \"7\": a name of digits only"},
		{[]string{"--tap", "ts%d"}, "--tap: tap \"ts%d\": a name template"},
		{[]string{"--tap", "a", "--tap", "b", "--tap", "a"}, "--tap a: given twice"},
		{[]string{"--listen", "unix:///tmp/t.sock", "--listen", "unix:///tmp//t.sock"}, "--listen unix:///tmp//t.sock: given twice"},
		{[]string{"--listen", "unix:///tmp/t.sock", "--listen", "unixgram:///tmp/t.sock"}, "--listen unixgram:///tmp/t.sock: given twice"},
		{[]string{"--listen", "tcp://127.0.0.1:5555", "--listen", "tcp://127.0.0.1:5555"}, "--listen tcp://127.0.0.1:5555: given twice"},
		{[]string{"--connect", "unix:///tmp/q.sock", "--connect", "unix:///tmp/q.sock"}, "--connect unix:///tmp/q.sock: given twice"},
	} {
		_, err := planFor(t, "linux", c.args...)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error starting with %q", c.args, err, c.want)
		}
	}
	// Different sockets of one address, and one path in two directories,
	// are not the same.
	// Port 0 twice is two ports the system chooses.
	if _, err := planFor(t, "linux", "--tap", "a", "--tap", "b", "--listen", "tcp://127.0.0.1:5555", "--listen", "udp://127.0.0.1:5555",
		"--listen", "unix:///tmp/a/t.sock", "--listen", "unix:///tmp/b/t.sock",
		"--listen", "tcp://127.0.0.1:0", "--listen", "tcp://127.0.0.1:0", "--listen", "udp://[::1]:0", "--listen", "udp://[::1]:0"); err != nil {
		t.Errorf("distinct ports refused: %v", err)
	}
}

// TestConfigHelpKey: "help" in the file is an unknown key at start, as on
// SIGHUP. Cobra's help flag, in serve's flag set at start but not in the
// fresh set a reload reads the file into, made it accepted at start only.
func TestConfigHelpKey(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "ts.yaml")
	if err := os.WriteFile(cfg, []byte("listen: unix:///tmp/t.sock\nhelp: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newServeCmd()
	cmd.InitDefaultHelpFlag()
	if _, err := applyConfigFile(cmd.Flags(), cfg); err == nil || !strings.Contains(err.Error(), `:2: unknown key "help"`) {
		t.Errorf("help key at start: %v, want unknown key", err)
	}
}

// TestPlanSocketsAndMetrics: what would fail only when opened, after the
// host interface and taps were made (and what a reload then accepted), is
// refused by the plan.
func TestPlanSocketsAndMetrics(t *testing.T) {
	long := "/tmp/" + strings.Repeat("s", 100)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--listen", "unix://" + long}, "--listen unix://" + long + ": socket path longer than 103 bytes"},
		{[]string{"--ctl", long}, "--ctl " + long + ": socket path longer than 103 bytes"},
		{[]string{"--metrics", "not-an-address"}, "--metrics not-an-address: want HOST:PORT"},
		{[]string{"--metrics", "127.0.0.1:nosuchservice"}, "--metrics 127.0.0.1:nosuchservice: want HOST:PORT"},
	} {
		if _, err := planFor(t, "linux", append([]string{"--tap", "tap0"}, c.args...)...); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error starting %q", c.args, err, c.want)
		}
	}
	if _, err := planFor(t, "linux", "--tap", "tap0", "--metrics", "127.0.0.1:9141", "--ctl", "rel/ctl.sock"); err != nil {
		t.Errorf("a good --metrics and a relative --ctl: %v", err)
	}
	// A path dialled may be as long as the system allows (107 bytes on
	// Linux, where QEMU may listen on it).
	if _, err := planFor(t, "linux", "--tap", "tap0", "--connect", "unix://"+long); err != nil {
		t.Errorf("--connect to a %d-byte path: %v", len(long), err)
	}
}

// TestPidfileOwnerZombie: a switch killed but not yet reaped by its parent
// (a zombie, which signal 0 still reaches) does not block a restart.
func TestPidfileOwnerZombie(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process states are read from /proc (Linux)")
	}
	if !sameProgramRunning(os.Getpid()) {
		t.Fatal("this process is not seen as running")
	}
	// A copy of this test binary (same comm) that exits at once and is
	// not waited for until the check is done.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	pid := cmd.Process.Pid
	stat := "/proc/" + strconv.Itoa(pid) + "/stat"
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && strings.HasPrefix(string(b[i:]), ") Z") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("child %d not a zombie after 10 s: %s", pid, b)
		}
	}
	if sameProgramRunning(pid) {
		t.Errorf("zombie %d (this program, exited, not reaped) counted as a running switch", pid)
	}
}

// TestPlanMaxPortsFitsOwnPorts: --max-ports below the number of ports the
// configuration makes itself is refused at planning, naming the flag; the
// default setup used to create its host interface and then fail with "add
// port dhcp: too many ports (1)".
func TestPlanMaxPortsFitsOwnPorts(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // "" = accepted
	}{
		{[]string{"--max-ports", "1"}, "--max-ports 1: the configuration itself has 2 ports"},
		{[]string{"--max-ports", "2"}, ""},
		{[]string{"--tap", "t0", "--tap", "t1", "--connect", "unix:///tmp/q.sock", "--max-ports", "2"}, "has 3 ports"},
		{[]string{"--tap", "t0", "--host", "198.18.0.1/24", "--dhcp", "--max-ports", "3"}, ""},
		{[]string{"--listen", "unix:///tmp/t.sock", "--max-ports", "1"}, ""},
	} {
		_, err := planFor(t, "linux", c.args...)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%q: %v, want %q", c.args, err, c.want)
		}
	}
}

// TestPlanConnectOwnListen: a --connect naming one of the same
// configuration's --listen sockets is refused. It used to be dialled: the
// switch held both ends of the connection as two ports, and every flooded
// frame went round between them for ever. (stream.Dial refuses what the
// addresses do not tell, once connected.)
func TestPlanConnectOwnListen(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "sw.sock")
	if err := os.WriteFile(sock, nil, 0o600); err != nil { // stands in for the socket file
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "link.sock")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	const why = ": every flooded frame would loop between the two ends"
	for _, c := range []struct{ listen, connect string }{
		{"unix://" + sock, "unix://" + sock},
		{"unix://" + sock, "unix://" + dir + "/./sw.sock"},
		{"unix://" + sock, "unix://" + link},
		{"unix:///tmp/nonexistent-rl/a.sock", "unix:///tmp/nonexistent-rl//a.sock"},
		{"tcp://127.0.0.1:5599", "tcp://127.0.0.1:5599"},
		{"tcp://localhost:5599", "tcp://LOCALHOST:5599"},
		{"tcp://[::1]:5599", "tcp://[::1]:5599"},
		{"tcp://:5599", "tcp://127.0.0.1:5599"},
		{"tcp://:5599", "tcp://127.0.0.2:5599"},
		{"tcp://:5599", "tcp://localhost:5599"},
		{"tcp://:5599", "tcp://[::1]:5599"},
		{"tcp://0.0.0.0:5599", "tcp://127.0.0.1:5599"},
		{"tcp://[::]:5599", "tcp://localhost:5599"},
		{"tcp://127.0.0.1:5599", "tcp://localhost:5599"},
		// An unspecified target is the local system.
		{"tcp://0.0.0.0:5599", "tcp://[::]:5599"},
		{"tcp://[::]:5599", "tcp://0.0.0.0:5599"},
		{"tcp://:5599", "tcp://[::]:5599"},
		{"tcp://127.0.0.1:5599", "tcp://0.0.0.0:5599"},
		{"tcp://0.0.0.0:5599", "tcp://[::ffff:127.0.0.1]:5599"},
		{"tcp://127.0.0.1:5599", "tcp://[::ffff:0.0.0.0]:5599"},
		// A listener on localhost takes 127.0.0.1.
		{"tcp://localhost:5599", "tcp://127.0.0.1:5599"},
		{"tcp://localhost:5599", "tcp://:5599"},
		{"tcp://localhost:5599", "tcp://0.0.0.0:5599"},
	} {
		want := "--connect " + c.connect + " is this switch's own --listen " + c.listen + why
		_, err := planFor(t, "linux", "--listen", c.listen, "--connect", c.connect)
		if err == nil || err.Error() != want {
			t.Errorf("--listen %s --connect %s: %v, want %q", c.listen, c.connect, err, want)
		}
	}
	// Another socket, port or host; a datagram socket of the same path
	// (not a stream listener); port 0 (not known until listened on).
	for _, c := range []struct{ listen, connect string }{
		{"unix://" + sock, "unix://" + dir + "/other.sock"},
		{"unixgram://" + sock, "unix://" + sock},
		{"tcp://127.0.0.1:5599", "tcp://127.0.0.1:5598"},
		{"tcp://127.0.0.1:5599", "tcp://198.18.0.1:5599"},
		{"tcp://127.0.0.1:5599", "tcp://[::1]:5599"},
		{"tcp://0.0.0.0:5599", "tcp://[::1]:5599"}, // 0.0.0.0 takes IPv4 only
		{"tcp://[::1]:5599", "tcp://:5599"},        // "" is dialled as 127.0.0.1
		{"tcp://[::1]:5599", "tcp://0.0.0.0:5599"}, // and 0.0.0.0 too
		{"tcp://198.18.0.1:5599", "tcp://localhost:5599"},
		{"tcp://localhost:5599", "tcp://[::1]:5599"},
		{"tcp://:5599", "tcp://198.18.0.1:5599"},
		{"udp://127.0.0.1:5599", "tcp://127.0.0.1:5599"},
		{"tcp://127.0.0.1:0", "tcp://127.0.0.1:0"},
	} {
		if _, err := planFor(t, "linux", "--listen", c.listen, "--connect", c.connect); err != nil {
			t.Errorf("--listen %s --connect %s: %v, want it planned", c.listen, c.connect, err)
		}
	}
}

// TestConfigNotRegularFile: a --config that is a FIFO or a device is
// refused at once. Read whole, a FIFO blocked start-up, or a SIGHUP and so
// the shutdown waiting for it, and /dev/zero grew the switch's memory by
// gigabytes; a file past maxConfigSize is refused too.
func TestConfigNotRegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#\n"), maxConfigSize/2+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		fifo:        "not a regular file",
		"/dev/zero": "not a regular file",
		big:         "more than the 1048576 bytes allowed",
	} {
		done := make(chan error, 1)
		go func() {
			f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
			new(serveOptions).addFlags(f)
			_, err := applyConfigFile(f, path)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s: %v, want %q", path, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: still reading after 10 s", path)
		}
	}
}

// TestPlanMTUBound: --mtu above --max-frame minus the Ethernet header is
// refused: guests' full-size frames would be dropped as too_long.
func TestPlanMTUBound(t *testing.T) {
	if _, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--max-frame", "1514", "--mtu", "1501"); err == nil || !strings.Contains(err.Error(), "--mtu") {
		t.Errorf("--mtu 1501 with --max-frame 1514: %v, want it refused", err)
	}
	if _, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--max-frame", "1514", "--mtu", "1500"); err != nil {
		t.Errorf("--mtu 1500 with --max-frame 1514: %v", err)
	}
}

// TestPlanTapIsBridgedHostIf: a --tap named as the bridged host interface
// (--host-bridge) is refused when planned, before a reload changes
// anything, not when the switch opens them.
func TestPlanTapIsBridgedHostIf(t *testing.T) {
	if _, err := planFor(t, "linux", "--host-bridge", "br0", "--tap", "tsh1", "--host-ifname", "tsh1"); err == nil || !strings.Contains(err.Error(), "--host-ifname") {
		t.Errorf("--tap named as the bridged host interface: %v, want it refused", err)
	}
}

// TestWarmIntervalDefault: the timer wakeups are on by default on Linux,
// where they were measured, and off on macOS; a negative interval is
// refused.
func TestWarmIntervalDefault(t *testing.T) {
	saved := hostOS
	t.Cleanup(func() { hostOS = saved })
	for goos, want := range map[string]time.Duration{"linux": 2 * time.Millisecond, "darwin": 0} {
		hostOS = goos
		var o serveOptions
		o.addFlags(pflag.NewFlagSet("serve", pflag.ContinueOnError))
		if o.warm != want {
			t.Errorf("%s: --warm-interval defaults to %v, want %v", goos, o.warm, want)
		}
	}
	_, err := planFor(t, "linux", "--listen", "unix:///tmp/t.sock", "--warm-interval", "-1ms")
	if err == nil || err.Error() != "--warm-interval -1ms: must be 0 (off) or more" {
		t.Errorf("--warm-interval -1ms: %v, want it refused", err)
	}
}
