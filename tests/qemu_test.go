//go:build linux

package tests

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/qemu"
	"github.com/tapswitch/tapswitch/tests/internal/guest"
)

// Addresses of TestQEMUGuests, all in 198.18.40.0/24 inside the test's
// namespaces.
const (
	qemuHostIP  = "198.18.40.1"  // the host-side tap, in its own namespace
	qemuVFKitIP = "198.18.40.50" // the Go vfkit client
)

// TestQEMUGuests joins real QEMU guests to one `tapswitch serve`, one guest
// per transport: -netdev stream over unix and tcp, -netdev dgram over
// unixgram and udp, and the legacy -netdev socket,fd=3 through `tapswitch
// qemu --socket`. Each guest pings a host-side tap (moved into a namespace
// of its own) and a guest on another transport; a Go client speaking
// vfkit's protocol exchanges frames with a guest both ways; then two
// guests are SIGKILLed in the middle of a ping flood, their ports go, and
// the others go on talking.
//
// The switch runs in namespace swNS. QEMU reaches its tcp and udp
// listeners on swNS's loopback, so those guests run in swNS too (ip netns
// exec); the unix-socket guests run in the test's own namespace, since a
// socket path reaches across namespaces.
func TestQEMUGuests(t *testing.T) {
	testnet.RequireRoot(t)
	guest.Artifacts(t) // build or find the guest now, not inside a boot timeout

	swNS, hostNS := testnet.NewNS(t), testnet.NewNS(t)
	dir := t.TempDir()
	streamSock := filepath.Join(dir, "s.sock")
	dgramSock := filepath.Join(dir, "d.sock")
	// swNS is a fresh namespace: nothing else listens on its loopback, so
	// fixed ports are free.
	const tcpURL, udpURL = "tcp://127.0.0.1:15555", "udp://127.0.0.1:15556"
	tap := testnet.UniqueName("tsq")
	d := startSwitch(t, swNS,
		"--listen", "unix://"+streamSock,
		"--listen", tcpURL,
		"--listen", "unixgram://"+dgramSock,
		"--listen", udpURL,
		"--tap", tap)
	waitLink(t, swNS, tap)
	testnet.MoveLink(t, tap, swNS, hostNS)
	hostNS.AddAddr(t, tap, qemuHostIP+"/24")
	hostNS.SetUp(t, tap)

	inSwNS := []string{"ip", "netns", "exec", swNS.Name()}
	netdev := func(url, id string) []string { return qemuNetdev(t, url, id) }
	// The guests, in the order of the ping ring: each pings the next.
	type vmSpec struct {
		transport string
		kind      string // the kind of its switch port
		port      string // the prefix of its switch port's name
		cfg       guest.Config
	}
	specs := []vmSpec{
		{"unix", "stream", "unix:", guest.Config{Netdev: netdev("unix://"+streamSock, "unix")}},
		{"tcp", "stream", "tcp:", guest.Config{Netdev: netdev(tcpURL, "tcp"), Wrapper: inSwNS}},
		// The guest's own socket defaults to DIR/d-unixgram.sock.
		{"unixgram", "dgram", "unixgram:", guest.Config{Netdev: netdev("unixgram://"+dgramSock, "unixgram")}},
		{"udp", "dgram", "udp:", guest.Config{Netdev: netdev(udpURL, "udp"), Wrapper: inSwNS}},
		{"fd", "stream", "unix:", guest.Config{
			Netdev:  qemu.SocketFDArgs("fd", qemu.SocketFD),
			Wrapper: []string{bin, "qemu", "--socket", streamSock, "--"},
		}},
	}
	cfgs := make([]guest.Config, len(specs))
	ips := make([]string, len(specs))
	for i, s := range specs {
		ips[i] = fmt.Sprintf("198.18.40.%d", 11+i)
		cfgs[i] = s.cfg
		cfgs[i].Name = "ts-" + s.transport
		cfgs[i].IP = ips[i] + "/24"
		cfgs[i].BootTimeout = 150 * time.Second
	}
	start := time.Now()
	vms := bootGuests(t, cfgs)
	t.Logf("%d guests up in %v", len(vms), time.Since(start).Round(time.Millisecond))
	const (
		unixVM = iota
		tcpVM
		dgramVM
		udpVM
		fdVM
	)

	t.Run("host", func(t *testing.T) {
		var jobs []guestJob
		for i, vm := range vms {
			jobs = append(jobs, guestJob{specs[i].transport + " guest -> host tap", vm, pingCmd(qemuHostIP), time.Minute})
		}
		guestsRun(t, jobs)
		hostNS.Ping(t, ips[dgramVM])
	})

	t.Run("ring", func(t *testing.T) {
		var jobs []guestJob
		for i, vm := range vms {
			j := (i + 1) % len(vms)
			jobs = append(jobs, guestJob{fmt.Sprintf("%s guest -> %s guest", specs[i].transport, specs[j].transport), vm, pingCmd(ips[j]), time.Minute})
		}
		guestsRun(t, jobs)
		// Every guest is learned on a port of its transport's kind.
		ports := switchPorts(t, d)
		for i, vm := range vms {
			p, ok := portWithMAC(ports, vm.MAC())
			switch {
			case !ok:
				t.Errorf("%s guest: MAC %s not learned on any port", specs[i].transport, vm.MAC())
			case p.Kind != specs[i].kind || !strings.HasPrefix(p.Name, specs[i].port):
				t.Errorf("%s guest: learned on port %q of kind %q, want %s* of kind %q", specs[i].transport, p.Name, p.Kind, specs[i].port, specs[i].kind)
			default:
				t.Logf("%s guest: port %d %s (peer %q)", specs[i].transport, p.ID, p.Name, p.Peer)
			}
		}
	})

	t.Run("VFKit", func(t *testing.T) {
		local := filepath.Join(dir, "vfkit.sock")
		mac := net.HardwareAddr{0x5a, 0x94, 0xef, 0x12, 0x34, 0x56}
		vfkitIP := netip.MustParseAddr(qemuVFKitIP)
		c := newVFKitClient(t, local, dgramSock, mac, vfkitIP)
		// The hello alone makes the client a port.
		waitPorts(t, d, 10*time.Second, "a port for the vfkit client after its hello", func(ps []api.Port) bool {
			for _, p := range ps {
				if p.Kind == "dgram" && p.Peer == local {
					return true
				}
			}
			return false
		})

		// Guest to client: the guest's ARP request and echo requests reach
		// the client, whose replies reach the guest.
		g := vms[dgramVM]
		g.MustRun(t, pingCmd(qemuVFKitIP), time.Minute)
		guestIP := netip.MustParseAddr(ips[dgramVM])
		arps, echoes := c.answered(guestIP)
		if arps < 1 || echoes < 2 {
			t.Errorf("vfkit client answered %d ARP and %d echo requests from %s; want >= 1 and >= 2", arps, echoes, guestIP)
		}
		if neigh := g.MustRun(t, "ip neigh show "+qemuVFKitIP, 10*time.Second); !strings.Contains(neigh, mac.String()) {
			t.Errorf("guest's neighbour entry for %s: %q, want lladdr %s", qemuVFKitIP, neigh, mac)
		}

		// Client to guest: the client's ARP request reaches a guest on
		// another transport (tcp), whose reply reaches the client.
		other := vms[tcpVM]
		got, err := c.resolve(netip.MustParseAddr(ips[tcpVM]), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != other.MAC() {
			t.Errorf("ARP reply for %s: %s, want the tcp guest's MAC %s", ips[tcpVM], got, other.MAC())
		}
	})

	t.Run("kill", func(t *testing.T) {
		// Floods: the tcp guest pings the unixgram guest and the unixgram
		// guest pings the unix guest, 100 a second each. Then the unix and
		// unixgram guests die.
		// The subshell keeps ping out of the guest shell's jobs: killing a
		// job of busybox ash's interactive shell can make the shell exit
		// (and the guest power off) when the job's end is reported while
		// the shell waits for its next command line.
		flood := func(vm *guest.VM, addr string) {
			vm.MustRun(t, "(ping -q -i 0.01 "+addr+" >/dev/null 2>&1 & echo $! >/tmp/flood.pid)", 10*time.Second)
		}
		flood(vms[tcpVM], ips[dgramVM])
		flood(vms[dgramVM], ips[unixVM])
		before := switchPorts(t, d)
		victims := map[string]api.Port{}
		for _, i := range []int{unixVM, dgramVM} {
			p, ok := portWithMAC(before, vms[i].MAC())
			if !ok {
				t.Fatalf("%s guest: no port with its MAC %s", specs[i].transport, vms[i].MAC())
			}
			victims[specs[i].transport] = p
		}
		// Traffic is flowing: both victims' ports are being sent to.
		waitPorts(t, d, 30*time.Second, "flood traffic towards both guests", func(ps []api.Port) bool {
			for _, v := range victims {
				p, ok := portByID(ps, v.ID)
				if !ok || p.TxFrames < v.TxFrames+100 {
					return false
				}
			}
			return true
		})
		killed := time.Now()
		vms[unixVM].Kill()
		vms[dgramVM].Kill()
		goneAfter := map[string]time.Duration{}
		waitPorts(t, d, 5*time.Second, "the killed guests' ports removed", func(ps []api.Port) bool {
			for tr, v := range victims {
				if _, ok := portByID(ps, v.ID); ok {
					return false
				} else if _, seen := goneAfter[tr]; !seen {
					goneAfter[tr] = time.Since(killed).Round(time.Millisecond)
				}
			}
			return true
		})
		t.Logf("ports of the killed guests gone (at most this long after SIGKILL): %v", goneAfter)
		after := switchPorts(t, d) // and `ctl ports --json` agrees
		for tr, v := range victims {
			if p, ok := portByID(after, v.ID); ok {
				t.Errorf("%s guest killed, yet ctl ports still lists its port %d %s", tr, p.ID, p.Name)
			}
		}
		// The unixgram peer went because a send to its socket failed (the
		// tcp guest's flood kept coming), not because it fell idle; the
		// stream port because its connection closed.
		gone := false
		for _, line := range strings.Split(d.Output(), "\n") {
			gone = gone || strings.Contains(line, "peer gone; removing") && strings.Contains(line, victims["unixgram"].Peer)
		}
		if !gone {
			t.Errorf("switch log lacks a \"peer gone; removing\" line for %s", victims["unixgram"].Peer)
		}
		vms[tcpVM].MustRun(t, "kill $(cat /tmp/flood.pid)", 10*time.Second)

		// The survivors still reach each other and the host.
		alive := []int{tcpVM, udpVM, fdVM}
		for _, i := range alive {
			if p, ok := portWithMAC(before, vms[i].MAC()); !ok {
				t.Errorf("%s guest: no port before the kill", specs[i].transport)
			} else if _, ok := portByID(after, p.ID); !ok {
				t.Errorf("%s guest: its port %d %s went away with the killed guests", specs[i].transport, p.ID, p.Name)
			}
		}
		// Two pingCmds, each of which may take its whole 30 s budget.
		var jobs []guestJob
		for k, i := range alive {
			j := alive[(k+1)%len(alive)]
			jobs = append(jobs,
				guestJob{fmt.Sprintf("%s guest -> %s guest", specs[i].transport, specs[j].transport), vms[i], pingCmd(ips[j]) + " && " + pingCmd(qemuHostIP), 2 * time.Minute})
		}
		guestsRun(t, jobs)
	})
}

// TestQEMUTapBridge is the path of a libvirt guest on a bridge
// (<interface type='bridge'>): QEMU opens a tap of its own, which joins a
// Linux bridge that also holds tapswitch's host interface (serve
// --host-bridge). The tap guest and a guest on the switch's stream socket
// ping each other. (A tap tapswitch holds cannot be given to QEMU as
// well: a single-queue tap has one user, and the second gets EBUSY.)
func TestQEMUTapBridge(t *testing.T) {
	testnet.RequireRoot(t)
	guest.Artifacts(t)

	ns := testnet.NewNS(t)
	br, hostIf, vmTap := testnet.UniqueName("tsbr"), testnet.UniqueName("tsh"), testnet.UniqueName("tsv")
	ns.IP(t, "link", "add", br, "type", "bridge")
	ns.SetUp(t, br)
	sock := filepath.Join(t.TempDir(), "s.sock")
	d := startSwitch(t, ns, "--host-bridge", br, "--host-ifname", hostIf, "--listen", "unix://"+sock)

	const tapIP, streamIP = "198.18.41.11", "198.18.41.12"
	vms := bootGuests(t, []guest.Config{
		{
			Name: "ts-tap", IP: tapIP + "/24", BootTimeout: 150 * time.Second,
			// QEMU creates the tap in ns, as libvirt does for a bridge
			// interface; the test then enslaves it.
			Netdev:  []string{"-netdev", "tap,id=tap,ifname=" + vmTap + ",script=no,downscript=no"},
			Wrapper: []string{"ip", "netns", "exec", ns.Name()},
		},
		{Name: "ts-stream", IP: streamIP + "/24", BootTimeout: 150 * time.Second, Netdev: qemuNetdev(t, "unix://"+sock, "unix")},
	})
	ns.IP(t, "link", "set", vmTap, "master", br)
	ns.SetUp(t, vmTap)

	guestsRun(t, []guestJob{
		{"tap guest -> stream guest", vms[0], pingCmd(streamIP), time.Minute},
		{"stream guest -> tap guest", vms[1], pingCmd(tapIP), time.Minute},
	})
	if p, ok := portWithMAC(switchPorts(t, d), vms[0].MAC()); !ok || p.Kind != "host" || p.Name != hostIf {
		t.Errorf("tap guest's MAC %s: learned on %+v (found %v), want the host interface %s", vms[0].MAC(), p.PortStats, ok, hostIf)
	}
}
