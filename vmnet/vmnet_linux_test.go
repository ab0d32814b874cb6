package vmnet_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	"go.uber.org/goleak"

	"github.com/tapswitch/tapswitch/backend/tap"
	"github.com/tapswitch/tapswitch/internal/testnet"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/vmnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// openIn opens the host interface in ns.
func openIn(ns *testnet.NS, cfg vmnet.Config) (i *vmnet.Interface, err error) {
	err = ns.Do(func() error {
		i, err = vmnet.Open(cfg)
		return err
	})
	return i, err
}

func mustOpenIn(t *testing.T, ns *testnet.NS, cfg vmnet.Config) *vmnet.Interface {
	t.Helper()
	i, err := openIn(ns, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}

// guest joins a new namespace to sw through a tap opened in swNS and moved
// there, with address addr/24, and returns the namespace.
func guest(t *testing.T, sw *vswitch.Switch, swNS *testnet.NS, addr string) *testnet.NS {
	t.Helper()
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	var d *tap.Device
	if err := swNS.Do(func() (err error) {
		d, err = tap.Open(tap.Config{Name: name})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if _, err := sw.AddPort(d, vswitch.PortConfig{Kind: "tap"}); err != nil {
		t.Fatal(err)
	}
	testnet.MoveLink(t, name, swNS, ns)
	ns.AddAddr(t, name, addr+"/24")
	ns.SetUp(t, name)
	return ns
}

func newSwitch(t *testing.T) (*vswitch.Switch, *testnet.NS) {
	swNS := testnet.NewNS(t)
	sw := vswitch.New(vswitch.Config{})
	t.Cleanup(func() { sw.Close() })
	return sw, swNS
}

func TestHostInterface(t *testing.T) {
	host := testnet.NewNS(t)
	mac := net.HardwareAddr{0x02, 0x74, 0x73, 0x00, 0x04, 0x01}
	i := mustOpenIn(t, host, vmnet.Config{
		Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.4.1/24")},
		MTU:   1400,
		MAC:   mac,
	})
	if i.String() != vmnet.DefaultName || i.MTU() != 1400 || i.MAC().String() != mac.String() {
		t.Errorf("name %q MTU %d MAC %v, want %q 1400 %v", i.String(), i.MTU(), i.MAC(), vmnet.DefaultName, mac)
	}
	out := host.IP(t, "-o", "addr", "show", "dev", vmnet.DefaultName) + host.IP(t, "-o", "link", "show", "dev", vmnet.DefaultName)
	if !strings.Contains(out, "198.18.4.1/24") || !strings.Contains(out, ",UP") {
		t.Errorf("host interface not up with its address: %s", out)
	}

	sw, swNS := newSwitch(t)
	if _, err := sw.AddPort(i, vswitch.PortConfig{Kind: "host"}); err != nil {
		t.Fatal(err)
	}
	g := guest(t, sw, swNS, "198.18.4.2")
	g.Ping(t, "198.18.4.1")
	host.Ping(t, "198.18.4.2")

	sw.Close() // closes the host interface
	if out := host.IP(t, "-br", "link"); strings.Contains(out, vmnet.DefaultName) {
		t.Errorf("host interface left after Close:\n%s", out)
	}
}

// TestAttachPersistent checks that Close undoes exactly what Open did to
// a tap that existed before.
func TestAttachPersistent(t *testing.T) {
	host := testnet.NewNS(t)
	name := testnet.UniqueName("host")
	host.IP(t, "tuntap", "add", name, "mode", "tap")
	host.AddAddr(t, name, "198.18.6.9/24") // not Open's: must stay
	i := mustOpenIn(t, host, vmnet.Config{
		Name:  name,
		Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.6.1/24"), netip.MustParsePrefix("198.18.6.9/24")},
	})
	if out := host.IP(t, "-br", "addr", "show", "dev", name); !strings.Contains(out, "198.18.6.1/24") {
		t.Errorf("address not added: %s", out)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if err := i.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	out := host.IP(t, "-br", "addr", "show", "dev", name)
	out += host.IP(t, "-o", "link", "show", "dev", name)
	if strings.Contains(out, "198.18.6.1/") || !strings.Contains(out, "198.18.6.9/24") || strings.Contains(out, ",UP") {
		t.Errorf("after Close, want the tap down with only 198.18.6.9/24: %s", out)
	}
}

// TestBridge puts the host interface in a bridge that also has a veth to
// another namespace, which then reaches a guest behind the switch.
func TestBridge(t *testing.T) {
	host := testnet.NewNS(t)
	peer := testnet.NewNS(t)
	br := testnet.UniqueName("br")
	host.IP(t, "link", "add", br, "type", "bridge")
	host.SetUp(t, br)
	vh, vp := testnet.UniqueName("veth"), testnet.UniqueName("veth")
	host.IP(t, "link", "add", vh, "type", "veth", "peer", "name", vp)
	host.IP(t, "link", "set", vh, "master", br, "up")
	testnet.MoveLink(t, vp, host, peer)
	peer.AddAddr(t, vp, "198.18.5.3/24")
	peer.SetUp(t, vp)

	name := testnet.UniqueName("host")
	i := mustOpenIn(t, host, vmnet.Config{Name: name, Bridge: br})
	if out := host.IP(t, "-d", "link", "show", name); !strings.Contains(out, "master "+br) {
		t.Fatalf("host interface not enslaved to %s: %s", br, out)
	}
	sw, swNS := newSwitch(t)
	if _, err := sw.AddPort(i, vswitch.PortConfig{Kind: "host"}); err != nil {
		t.Fatal(err)
	}
	g := guest(t, sw, swNS, "198.18.5.2")
	g.Ping(t, "198.18.5.3")
	peer.Ping(t, "198.18.5.2")
}

// TestBridgePersistent: a tap that existed before and was already in the
// bridge stays in it after Close; one that was in another bridge goes
// back to that one. Close used to take both out of every bridge.
func TestBridgePersistent(t *testing.T) {
	host := testnet.NewNS(t)
	br, other := testnet.UniqueName("br"), testnet.UniqueName("br")
	for _, b := range []string{br, other} {
		host.IP(t, "link", "add", b, "type", "bridge")
	}
	master := func(name string) string {
		out := host.IP(t, "-d", "link", "show", name)
		if _, after, ok := strings.Cut(out, " master "); ok {
			return strings.Fields(after)[0]
		}
		return ""
	}
	for _, was := range []string{br, other} {
		name := testnet.UniqueName("host")
		host.IP(t, "tuntap", "add", name, "mode", "tap")
		host.IP(t, "link", "set", name, "master", was)
		i := mustOpenIn(t, host, vmnet.Config{Name: name, Bridge: br})
		if m := master(name); m != br {
			t.Fatalf("open: %s is in %q, want %s", name, m, br)
		}
		if err := i.Close(); err != nil {
			t.Fatal(err)
		}
		if m := master(name); m != was {
			t.Errorf("after Close: %s (in %s before) is in %q", name, was, m)
		}
	}
}

func TestOpenErrors(t *testing.T) {
	ns := testnet.NewNS(t)
	veth := testnet.UniqueName("veth")
	ns.IP(t, "link", "add", veth, "type", "veth", "peer", "name", testnet.UniqueName("veth"))
	name := testnet.UniqueName("host")
	for _, tc := range []struct {
		what string
		cfg  vmnet.Config
		is   error
		says string
	}{
		{"no such bridge", vmnet.Config{Name: name, Bridge: "tsnobridge"}, vmnet.ErrNoBridge, "ip link add tsnobridge type bridge"},
		{"not a bridge", vmnet.Config{Name: name, Bridge: veth}, vmnet.ErrNotBridge, "its link type is veth"},
		{"name too long", vmnet.Config{Name: "tapswitch-host-0"}, tap.ErrInvalidName, "choose a shorter name"},
		{"name taken", vmnet.Config{Name: veth}, tap.ErrNameTaken, "choose another name"},
		{"addresses and bridge", vmnet.Config{Name: name, Bridge: veth, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.7.1/24")}},
			nil, "put the addresses on the bridge"},
	} {
		_, err := openIn(ns, tc.cfg)
		if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Open = %v, want %v saying %q", tc.what, err, tc.is, tc.says)
		}
	}
	if out := ns.IP(t, "-br", "link"); strings.Contains(out, name) {
		t.Errorf("failed Open left %s behind:\n%s", name, out)
	}
}

// TestSharedSubnetWarned: a host address whose subnet the kernel routes
// through another interface, which had an address in it first, is warned
// about, naming that interface: the host leg looked dead with nothing
// said. An interface with a wider prefix, or one that is down, does not
// take the route, and is not warned about. A name template ("%d") is the
// kernel's name after Open; it failed the lookup that configures the
// interface.
func TestSharedSubnetWarned(t *testing.T) {
	ns := testnet.NewNS(t)
	veth, peer := testnet.UniqueName("veth"), testnet.UniqueName("veth")
	ns.IP(t, "link", "add", veth, "type", "veth", "peer", "name", peer)
	ns.IP(t, "addr", "add", "198.18.8.2/24", "dev", veth)
	ns.IP(t, "addr", "add", "198.18.0.2/15", "dev", peer) // wider: 198.18.9.0/24 is inside
	down, downPeer := testnet.UniqueName("veth"), testnet.UniqueName("veth")
	ns.IP(t, "link", "add", down, "type", "veth", "peer", "name", downPeer)
	ns.IP(t, "addr", "add", "198.18.10.2/24", "dev", down)
	for _, l := range []string{veth, peer} {
		ns.SetUp(t, l)
	}
	log, hook := logtest.NewNullLogger()
	i := mustOpenIn(t, ns, vmnet.Config{Name: "tsh%d", Logger: log, Addrs: []netip.Prefix{
		netip.MustParsePrefix("198.18.8.1/24"), netip.MustParsePrefix("198.18.9.1/24"), netip.MustParsePrefix("198.18.10.1/24")}})
	if i.String() != "tsh0" {
		t.Errorf("name %q, want tsh0", i.String())
	}
	var warned []string
	for _, e := range hook.AllEntries() {
		if e.Level == logrus.WarnLevel {
			warned = append(warned, fmt.Sprint(e.Data["addr"], " ", e.Data["other"]))
		}
	}
	if len(warned) != 1 || warned[0] != "198.18.8.1/24 "+veth {
		t.Errorf("warnings %q, want one for 198.18.8.1/24 on %s", warned, veth)
	}
}

// TestOpenWithoutCapNetAdmin attaches to a persistent tap owned by this
// user, which needs no privilege, and checks that configuring it without
// CAP_NET_ADMIN fails saying so, and leaves the tap as it was.
func TestOpenWithoutCapNetAdmin(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("host")
	ns.IP(t, "tuntap", "add", name, "mode", "tap", "user", fmt.Sprint(os.Geteuid()))
	err := ns.Do(func() error {
		if err := testnet.DropNetAdmin(); err != nil {
			return err
		}
		i, err := vmnet.Open(vmnet.Config{Name: name, Addrs: []netip.Prefix{netip.MustParsePrefix("198.18.7.1/24")}})
		if err == nil {
			i.Close()
		}
		return err
	})
	if !errors.Is(err, os.ErrPermission) || !strings.Contains(fmt.Sprint(err), "CAP_NET_ADMIN is missing") {
		t.Errorf("Open without CAP_NET_ADMIN = %v, want os.ErrPermission saying CAP_NET_ADMIN is missing", err)
	}
	if out := ns.IP(t, "-o", "addr", "show", "dev", name); strings.Contains(out, "198.18.7.1") {
		t.Errorf("address added without CAP_NET_ADMIN: %s", out)
	}
}
