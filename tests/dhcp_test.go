//go:build linux

package tests

// End-to-end tests of the DHCP responder through the real binary: real
// DHCP clients (busybox udhcpc, ISC dhclient, dhcpcd) in namespaces of
// their own, each behind a tap of the switch; real QEMU guests on a
// stream listener; and the lease file across SIGTERM and SIGKILL.

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/dhcp"
	"github.com/tapswitch/tapswitch/tests/internal/guest"
)

// dhcpLeaseTime is the shortest lease the responder grants
// (--dhcp-lease-time below 10s is refused), so that clients renew within
// seconds. dhclient and dhcpcd renew at T1, 5 s (dhcpcd counts the lease
// as 20 s, its minimum); busybox udhcpc 1.35 renews after about 15 s, when
// the responder's lease has run out, which the responder accepts: the
// binding outlives its expiry.
const dhcpLeaseTime = "10s"

// TestDHCPRealClients runs udhcpc, dhclient and dhcpcd, each in its own
// namespace on a tap of the switch: each gets an address from the range,
// pings the gateway (answered by the responder: no host interface holds
// it) and renews, keeping its address.
func TestDHCPRealClients(t *testing.T) {
	testnet.RequireRoot(t)
	clients := []string{"udhcpc", "dhclient", "dhcpcd"}
	for _, kind := range clients {
		requireDHCPClient(t, kind)
	}
	const gw = "198.18.50.1"
	pool := dhcp.Range{Start: netip.MustParseAddr("198.18.50.100"), End: netip.MustParseAddr("198.18.50.199")}

	swNS := testnet.NewNS(t)
	taps := make([]string, len(clients))
	args := []string{"--dhcp", "--gateway", gw + "/24", "--dhcp-range", pool.String(),
		"--dhcp-lease-file", filepath.Join(t.TempDir(), "leases"), "--dhcp-lease-time", dhcpLeaseTime,
		"--dns", "198.18.50.53", "--domain", "dhcp.test"}
	for i := range taps {
		taps[i] = testnet.UniqueName("tsdc")
		args = append(args, "--tap", taps[i])
	}
	d := startSwitch(t, swNS, args...)

	t.Run("clients", func(t *testing.T) {
		for i, kind := range clients {
			t.Run(kind, func(t *testing.T) {
				t.Parallel()
				tap := taps[i]
				cli := testnet.NewNS(t)
				dhcpKillNSProcesses(t, cli)
				waitLink(t, swNS, tap)
				testnet.MoveLink(t, tap, swNS, cli)
				cli.SetUp(t, tap)
				mac := dhcpLinkMAC(t, cli, tap)
				host := "ts-" + kind

				c := startDHCPClient(t, kind, cli, tap, host, true)
				bound, n := c.waitEvent(t, 60*time.Second, 0, "bound", "BOUND", "REBOOT")
				ip, err := netip.ParseAddr(bound.IP)
				if err != nil || ip.Less(pool.Start) || pool.End.Less(ip) {
					t.Fatalf("%s bound %q, not an address of the pool %v", kind, bound.IP, pool)
				}
				if err := dhcpWaitFor(10*time.Second, func() bool { return dhcpHasAddr(t, cli, tap, bound.IP) }); err != nil {
					t.Fatalf("%s reported %s but %s does not have it:\n%s", kind, bound.IP, tap, cli.IP(t, "addr", "show", "dev", tap))
				}
				l, ok := dhcpLeases(t, d)[mac]
				if !ok || l.IP != ip || l.Hostname != host {
					t.Fatalf("ctl leases: %s has %+v (listed: %v), want %s with host name %s", mac, l, ok, ip, host)
				}
				t.Logf("%s: %s bound %s, lease until %s", kind, mac, ip, l.Expiry.Format(time.RFC3339))

				cli.Ping(t, gw)

				// Renewal at T1: same address, the expiry moves forward.
				renewed, _ := c.waitEvent(t, 60*time.Second, n+1, "renew", "RENEW", "REBIND")
				if renewed.IP != bound.IP {
					t.Fatalf("%s renewed %s, had %s; events:\n%s", kind, renewed.IP, bound.IP, c.eventLog())
				}
				// Renewals come every few seconds: if l was read after the
				// first one, the next moves the expiry.
				var l2 api.Lease
				_ = dhcpWaitFor(15*time.Second, func() bool {
					l2 = dhcpLeases(t, d)[mac]
					return l2.Expiry.After(l.Expiry)
				})
				if l2.IP != ip || !l2.Expiry.After(l.Expiry) {
					t.Fatalf("after %s's renewal, ctl leases has %s until %s; before: %s until %s",
						kind, l2.IP, l2.Expiry.Format(time.RFC3339), l.IP, l.Expiry.Format(time.RFC3339))
				}
				if !dhcpHasAddr(t, cli, tap, bound.IP) {
					t.Fatalf("%s lost %s after renewing:\n%s", tap, bound.IP, cli.IP(t, "addr", "show", "dev", tap))
				}
				for _, ev := range c.Events() {
					if strings.EqualFold(ev.Event, "nak") || ev.Event == "EXPIRE" || ev.Event == "FAIL" {
						t.Errorf("%s: unexpected %s event; events:\n%s", kind, ev.Event, c.eventLog())
					}
				}
				cli.Ping(t, gw)
				t.Logf("%s: renewed %s, lease until %s; events:\n%s", kind, ip, l2.Expiry.Format(time.RFC3339), c.eventLog())
			})
		}
	})
	if t.Failed() {
		return
	}
	// Three clients, three distinct addresses.
	seen := map[netip.Addr]vswitch.MAC{}
	for mac, l := range dhcpLeases(t, d) {
		if other, dup := seen[l.IP]; dup {
			t.Errorf("%s leased to both %s and %s", l.IP, other, mac)
		}
		seen[l.IP] = mac
	}
	if len(seen) != len(clients) {
		t.Errorf("ctl leases lists %d leases, want %d", len(seen), len(clients))
	}
}

// TestDHCPGuest boots QEMU guests on a stream listener: a guest with a
// static lease gets its address, a guest that asks for an address of the
// pool gets it, and after tapswitch restarts (SIGTERM, then start with
// the same lease file) a fresh guest with the second guest's MAC gets the
// same address again, by plain DISCOVER.
func TestDHCPGuest(t *testing.T) {
	testnet.RequireRoot(t)
	const (
		gw       = "198.18.51.1"
		staticIP = "198.18.51.10" // outside the range: static leases may be
		// wantedIP is not the pool's first address, which a responder that
		// forgot the lease would hand out first.
		wantedIP = "198.18.51.150"
	)
	swNS := testnet.NewNS(t)
	sock := filepath.Join(dhcpTempDir(t), "s.sock")
	leaseFile := filepath.Join(t.TempDir(), "leases")
	dynMAC, staticMAC := guest.NewMAC(), guest.NewMAC()
	args := []string{"--listen", "unix://" + sock, "--dhcp", "--gateway", gw + "/24",
		"--dhcp-range", "198.18.51.100-198.18.51.199", "--dhcp-static", staticMAC + "=" + staticIP,
		"--dhcp-lease-file", leaseFile}
	d := startSwitch(t, swNS, args...)

	// One guest at a time: two TCG guests on a 2-core machine boot slower
	// than one after the other.
	t.Run("static", func(t *testing.T) {
		vm := guest.Boot(t, guest.Config{Name: "ts-static", Netdev: guest.StreamNetdev("n0", sock), MAC: staticMAC, DHCP: true})
		if got := dhcpGuestLease(t, vm); got != staticIP+"/24" {
			t.Fatalf("guest with static MAC %s got %s, want %s/24", staticMAC, got, staticIP)
		}
		vm.MustRun(t, "ping -c 3 -W 2 "+gw, 30*time.Second)
	})
	t.Run("requested", func(t *testing.T) {
		vm := guest.Boot(t, guest.Config{Name: "ts-dyn", Netdev: guest.StreamNetdev("n0", sock), MAC: dynMAC})
		vm.MustRun(t, "udhcpc -i eth0 -s /etc/udhcpc/default.script -n -q -t 10 -T 1 -r "+wantedIP+" -x hostname:ts-dyn", 60*time.Second)
		if got := dhcpGuestLease(t, vm); got != wantedIP+"/24" {
			t.Fatalf("guest requesting %s got %s", wantedIP, got)
		}
		vm.MustRun(t, "ping -c 3 -W 2 "+gw, 30*time.Second)
	})
	if t.Failed() {
		return
	}
	ls := dhcpLeases(t, d)
	if l := ls[mustMAC(t, staticMAC)]; l.IP.String() != staticIP || !l.Static || l.Hostname != "ts-static" {
		t.Errorf("ctl leases: static guest %s has %+v, want %s, static, host name ts-static", staticMAC, l, staticIP)
	}
	if l := ls[mustMAC(t, dynMAC)]; l.IP.String() != wantedIP || l.Static || l.Hostname != "ts-dyn" {
		t.Errorf("ctl leases: guest %s has %+v, want %s, host name ts-dyn", dynMAC, l, wantedIP)
	}

	d.Stop(t)
	if d.err != nil {
		t.Errorf("tapswitch exited with %v after SIGTERM", d.err)
	}
	// The lease file holds the dynamic binding, host name and all (static
	// leases come from the flags and are not stored).
	stored, err := dhcp.ReadLeaseFile(leaseFile)
	if err != nil || len(stored) != 1 || stored[0].MAC != mustMAC(t, dynMAC) || stored[0].IP.String() != wantedIP ||
		stored[0].State != dhcp.LeaseBound || stored[0].Hostname != "ts-dyn" {
		t.Fatalf("lease file after SIGTERM: %+v, %v; want one bound lease %s=%s ts-dyn", stored, err, dynMAC, wantedIP)
	}

	d = startSwitch(t, swNS, args...)
	if l, ok := dhcpLeases(t, d)[mustMAC(t, dynMAC)]; !ok || l.IP.String() != wantedIP {
		t.Fatalf("after restart, ctl leases has %+v for %s (listed: %v), want %s", l, dynMAC, ok, wantedIP)
	}
	// QEMU 7.2 does not reconnect a stream netdev: a fresh guest with the
	// same MAC stands for the rebooted VM.
	vm := guest.Boot(t, guest.Config{Name: "ts-dyn-again", Netdev: guest.StreamNetdev("n0", sock), MAC: dynMAC, DHCP: true})
	if got := dhcpGuestLease(t, vm); got != wantedIP+"/24" {
		t.Fatalf("after restart, guest %s got %s, want its lease %s/24 back", dynMAC, got, wantedIP)
	}
	vm.MustRun(t, "ping -c 3 -W 2 "+gw, 30*time.Second)
}

// dhcpGuestLease waits for the guest's udhcpc to bind and returns the
// address its hook put on eth0, as ADDR/PLEN.
func dhcpGuestLease(t *testing.T, vm *guest.VM) string {
	t.Helper()
	// The hook records the lease in /run/tsguest-dhcp-lease; LEASE= tells
	// the output from console messages of background jobs.
	const cmd = `echo "LEASE=$(cat /run/tsguest-dhcp-lease 2>/dev/null)"`
	deadline := time.Now().Add(45 * time.Second)
	for {
		out, err := vm.Run(cmd, 10*time.Second)
		if err != nil {
			t.Fatalf("guest %s: %v", vm.Name(), err)
		}
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "LEASE="); ok && v != "" {
				return v
			}
		}
		if time.Now().After(deadline) {
			logs, _ := vm.Run("cat /run/tsguest-dhcp.log /run/udhcpc.log; ip addr show dev eth0", 10*time.Second)
			t.Fatalf("guest %s (MAC %s) got no DHCP lease within 45 s:\n%s", vm.Name(), vm.MAC(), logs)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestDHCPLeasesSurviveSIGKILL kills tapswitch with SIGKILL while
// udhcpc clients obtain leases one after another (each tap changes its
// MAC between leases, so every lease is a new binding and a lease file
// write), several times over, restarting it on the same lease file: every
// binding a client was acknowledged, in any round, is listed by the next
// tapswitch with the same address.
func TestDHCPLeasesSurviveSIGKILL(t *testing.T) {
	requireDHCPClient(t, "udhcpc")
	const (
		rounds = 3
		taps   = 4
	)
	swNS := testnet.NewNS(t)
	cli := testnet.NewNS(t)
	dhcpKillNSProcesses(t, cli)
	leaseFile := filepath.Join(t.TempDir(), "leases")
	base := []string{"--dhcp", "--gateway", "198.19.52.1/22", "--dhcp-range", "198.19.52.10-198.19.55.250",
		"--dhcp-lease-file", leaseFile}

	acked := map[vswitch.MAC]netip.Addr{}
	checkAcked := func(d *daemon) {
		t.Helper()
		ls := dhcpLeases(t, d)
		lost := 0
		for mac, ip := range acked {
			if l, ok := ls[mac]; !ok || l.IP != ip {
				lost++
				t.Errorf("%s was acknowledged %s; after SIGKILL and restart ctl leases has %+v (listed: %v)", mac, ip, l, ok)
			}
		}
		if strings.Contains(d.Output(), "corrupt") {
			t.Errorf("tapswitch found the lease file corrupt:\n%s", d.Output())
		}
		if lost > 0 {
			t.Fatalf("%d of %d acknowledged bindings lost", lost, len(acked))
		}
	}
	bound := func(clients []*dhcpClient) int {
		n := 0
		for _, c := range clients {
			for _, ev := range c.Events() {
				if ev.Event == "bound" {
					n++
				}
			}
		}
		return n
	}
	for round := range rounds {
		args := append([]string(nil), base...)
		names := make([]string, taps)
		for i := range names {
			names[i] = testnet.UniqueName("tsdk")
			args = append(args, "--tap", names[i])
		}
		d := startSwitch(t, swNS, args...)
		checkAcked(d)
		for _, tap := range names {
			waitLink(t, swNS, tap)
			testnet.MoveLink(t, tap, swNS, cli)
			cli.SetUp(t, tap)
		}
		clients := make([]*dhcpClient, taps)
		for i, tap := range names {
			clients[i] = startDHCPChurn(t, cli, tap, fmt.Sprintf("02:52:%02x:%02x", round, i))
		}
		// SIGKILL at a different point of the churn each round.
		want := 10 + 15*round
		deadline := time.Now().Add(60 * time.Second)
		for bound(clients) < want {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: only %d leases within 60 s, want %d", round, bound(clients), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		d.Kill()
		atKill := bound(clients)
		for _, c := range clients {
			c.stop(t)
		}
		// Every ACK a client got was sent by the killed tapswitch, and
		// followed a lease file write.
		n := 0
		for _, c := range clients {
			for _, ev := range c.Events() {
				if ev.Event != "bound" {
					continue
				}
				ip, err := netip.ParseAddr(ev.IP)
				if err != nil || len(ev.More) != 1 {
					t.Fatalf("event %+v", ev)
				}
				mac := mustMAC(t, ev.More[0])
				if old, ok := acked[mac]; ok && old != ip {
					t.Errorf("%s was acknowledged %s, then %s", mac, old, ip)
				}
				acked[mac] = ip
				n++
			}
		}
		t.Logf("round %d: SIGKILL after %d leases (%d in all); %d bindings acknowledged so far", round, atKill, n, len(acked))
	}
	// Restart with no client at all: the leases come from the file only.
	d := startSwitch(t, swNS, append(base, "--listen", "unix://"+filepath.Join(dhcpTempDir(t), "s.sock"))...)
	checkAcked(d)
	if ls, err := dhcp.ReadLeaseFile(leaseFile); err != nil {
		t.Errorf("lease file: %v", err)
	} else if len(ls) < len(acked) {
		// More is fine: an ACK written to the file may have died with
		// tapswitch before reaching its client.
		t.Errorf("lease file holds %d leases, %d were acknowledged", len(ls), len(acked))
	}
}

func mustMAC(t *testing.T, s string) vswitch.MAC {
	t.Helper()
	m, err := vswitch.ParseMAC(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSecondSwitchOnLeaseFile: a second switch given a running one's lease
// file fails on the file's lock before it creates its host interface (it
// made the interface, then removed it again).
func TestSecondSwitchOnLeaseFile(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	leases := filepath.Join(dir, "leases")
	startSwitch(t, ns, "--host", "198.18.24.1/24", "--host-ifname", testnet.UniqueName("tsh"),
		"--dhcp", "--dhcp-lease-file", leases, "--listen", "unix://"+filepath.Join(dir, "a.sock"))

	// Watch the namespace's links; a link made and removed (a veth pair:
	// this kernel has no dummy links) shows that the monitor is listening.
	mon := ns.Exec(t.Context(), "ip", "-o", "monitor", "link")
	events := &syncBuffer{}
	mon.Stdout = events
	if err := testproc.Start(mon); err != nil {
		t.Fatal(err)
	}
	defer func() { mon.Process.Kill(); mon.Wait() }()
	probe := testnet.UniqueName("tsp")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(events.String(), probe); {
		if time.Now().After(deadline) {
			t.Fatalf("ip monitor saw no link events: %q", events.String())
		}
		ns.Run(t, "ip", "link", "add", probe, "type", "veth", "peer", "name", probe+"p")
		ns.Run(t, "ip", "link", "del", probe)
		time.Sleep(50 * time.Millisecond)
	}

	second := testnet.UniqueName("tsh")
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, bin, "serve", "--ctl", filepath.Join(dir, "ctl2.sock"), "--host", "198.18.24.1/24",
		"--host-ifname", second, "--dhcp", "--dhcp-lease-file", leases, "--listen", "unix://"+filepath.Join(dir, "b.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "in use") {
		t.Fatalf("second switch on the same lease file: %v\n%s", err, out)
	}
	// The monitor reports within milliseconds; another probe marks the
	// end of what the second switch could have done.
	end := testnet.UniqueName("tsp")
	ns.Run(t, "ip", "link", "add", end, "type", "veth", "peer", "name", end+"p")
	ns.Run(t, "ip", "link", "del", end)
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(events.String(), end); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("ip monitor did not report %s: %q", end, events.String())
		}
	}
	if strings.Contains(events.String(), second) {
		t.Errorf("the refused switch created its host interface %s:\n%s", second, events.String())
	}
}

// TestLeaseFileSymlink: a lease file given as a symlink (to persistent
// storage, say) is written where it leads; the link was replaced by a
// regular file at the first write, and the file it led to went stale.
func TestLeaseFileSymlink(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	real, link := filepath.Join(dir, "real"), filepath.Join(dir, "link")
	if err := os.WriteFile(real, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	// An empty file is rewritten at start, with the header.
	d := startSwitch(t, ns, "--dhcp", "--gateway", "198.18.25.1/24",
		"--dhcp-lease-file", link, "--listen", "unix://"+filepath.Join(dir, "s.sock"))
	d.Stop(t)
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the lease file's symlink: %v, %v; want it kept", fi.Mode(), err)
	}
	if b, err := os.ReadFile(real); err != nil || !strings.HasPrefix(string(b), "tapswitch-leases ") {
		t.Errorf("the file the link leads to: %q, %v; want it written", b, err)
	}
	if _, err := os.Stat(real + ".lock"); err != nil {
		t.Errorf("the lock is not next to the file the link leads to: %v", err)
	}
}
