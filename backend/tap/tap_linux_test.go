package tap_test

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/tap"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testproc.IgnoreSpawner) }

// openIn opens a tap in ns and closes it when the test ends.
func openIn(t *testing.T, ns *testnet.NS, cfg tap.Config) *tap.Device {
	t.Helper()
	d, err := openInErr(ns, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func openInErr(ns *testnet.NS, cfg tap.Config) (d *tap.Device, err error) {
	err = ns.Do(func() error {
		d, err = tap.Open(cfg)
		return err
	})
	return d, err
}

// link returns the device called name in ns, or nil if there is none.
func link(t *testing.T, ns *testnet.NS, name string) netlink.Link {
	t.Helper()
	var l netlink.Link
	err := ns.Do(func() (err error) {
		l, err = netlink.LinkByName(name)
		return err
	})
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestOpenCreates(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	d := openIn(t, ns, tap.Config{Name: name, MTU: 9000})
	if d.Name() != name || !d.Created() || d.MTU() != 9000 || d.String() != name || d.BatchSize() != 32 {
		t.Errorf("got name %q created %v MTU %d String %q BatchSize %d, want %q true 9000 %q 32",
			d.Name(), d.Created(), d.MTU(), d.String(), d.BatchSize(), name, name)
	}
	l := link(t, ns, name)
	if tt, ok := l.(*netlink.Tuntap); !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.Attrs().MTU != 9000 {
		t.Fatalf("device %s is %#v, want a tap with MTU 9000", name, l)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if link(t, ns, name) != nil {
		t.Errorf("tap %s still exists after Close", name)
	}
}

func TestOpenAttachesPersistent(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	ns.IP(t, "tuntap", "add", name, "mode", "tap", "user", "65534", "group", "65534")
	d := openIn(t, ns, tap.Config{Name: name})
	if d.Created() {
		t.Error("Created() = true for a tap made by ip tuntap add")
	}
	d.Close()
	if link(t, ns, name) == nil {
		t.Errorf("persistent tap %s removed by Close", name)
	}
}

// TestCloseRestoresPersistent: a tap that existed before gets back its MTU
// and loses the offloads tapswitch turned on. Left on, the offloads made
// the next program to open the tap without virtio-net headers receive
// TCP segments with partial (wrong) checksums.
func TestCloseRestoresPersistent(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	ns.IP(t, "tuntap", "add", name, "mode", "tap")
	ns.IP(t, "link", "set", name, "mtu", "9000")
	offloads := func() string { return offloadsOn(t, ns, name) }
	if on := offloads(); on != "" {
		t.Fatalf("a new tap has %s on", on)
	}
	d, err := openInErr(ns, tap.Config{Name: name, MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	if mtu := link(t, ns, name).Attrs().MTU; mtu != 1400 || offloads() == "" {
		t.Fatalf("open: MTU %d, offloads on %q; want 1400 and some", mtu, offloads())
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if mtu := link(t, ns, name).Attrs().MTU; mtu != 9000 {
		t.Errorf("after Close: MTU %d, want its own 9000 back", mtu)
	}
	if on := offloads(); on != "" {
		t.Errorf("after Close: %s still on", on)
	}
}

// offloadsOn returns which of the offloads a virtio-net header user turns
// on are on for the device name in ns ("" for none), as ethtool -k says.
func offloadsOn(t *testing.T, ns *testnet.NS, name string) string {
	t.Helper()
	var on []string
	for _, l := range strings.Split(ns.Output(t, "ethtool", "-k", name), "\n") {
		for _, f := range []string{"tx-checksumming:", "tcp-segmentation-offload:"} {
			if strings.HasPrefix(l, f) && strings.Contains(l, ": on") {
				on = append(on, f)
			}
		}
	}
	return strings.Join(on, " ")
}

// TestOpenLeavesUDPSegmentationOff: Open asks the kernel whether it
// knows UDP segmentation offload by turning it on, then turns it off
// again: the switch does not split the UDP super-frames the host would
// send through a tap that takes them.
func TestOpenLeavesUDPSegmentationOff(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	d := openIn(t, ns, tap.Config{Name: name})
	defer d.Close()
	if !d.Offload() {
		t.Fatal("no offloads on the tap")
	}
	out := ns.Output(t, "ethtool", "-k", name)
	if !strings.Contains(out, "tx-udp-segmentation: off") {
		t.Errorf("UDP segmentation not off on a tap the switch opened:\n%s", out)
	}
}

// TestOpenNoOffloadClearsLeftovers: a persistent tap whose last user left
// its offloads on (a tapswitch killed before Close, a VM monitor) has
// them turned off by Open with NoOffload. They were left on: the switch,
// which reads no virtio-net header then, got TCP segments with partial
// checksums and super-frames it took for ordinary frames.
func TestOpenNoOffloadClearsLeftovers(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	ns.IP(t, "tuntap", "add", name, "mode", "tap")
	// What a killed tapswitch (or QEMU) leaves behind.
	err := ns.Do(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return err
		}
		return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6)
	})
	if err != nil {
		t.Fatal(err)
	}
	if on := offloadsOn(t, ns, name); on == "" {
		t.Fatal("the offloads set on the tap did not stay on after its descriptor was closed")
	}
	d := openIn(t, ns, tap.Config{Name: name, NoOffload: true})
	if d.Created() || d.Offload() {
		t.Fatalf("Created() = %v, Offload() = %v; want false, false", d.Created(), d.Offload())
	}
	if on := offloadsOn(t, ns, name); on != "" {
		t.Errorf("after Open with NoOffload: %s still on", on)
	}
}

// TestCloseRestoresMTUOfTapOnly: Close gives the MTU back to the tap
// itself, wherever it is and whatever it is called by then, and to no
// other device. It was set by name in the namespace where Open ran: a tap
// moved to another namespace or renamed kept the MTU Open set, and a
// device that had taken the tap's name there got the old MTU instead.
func TestCloseRestoresMTUOfTapOnly(t *testing.T) {
	for _, how := range []string{"moved", "renamed", "moved-renamed"} {
		t.Run(how, func(t *testing.T) {
			home := testnet.NewNS(t)
			away := home
			name := testnet.UniqueName("tap")
			home.IP(t, "tuntap", "add", name, "mode", "tap")
			d := openIn(t, home, tap.Config{Name: name, MTU: 9000})
			now := name
			if how != "renamed" {
				away = testnet.NewNS(t)
				testnet.MoveLink(t, name, home, away)
			}
			if how != "moved" {
				now = testnet.UniqueName("tap")
				away.IP(t, "link", "set", name, "name", now)
			}
			// Another device takes the tap's old name where Open ran.
			home.IP(t, "link", "add", name, "mtu", "1400", "type", "veth", "peer", "name", testnet.UniqueName("veth"))
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if l := link(t, home, name); l == nil || l.Type() != "veth" || l.Attrs().MTU != 1400 {
				t.Errorf("the veth %s in %s: %s, want MTU 1400 as it was made", name, home, linkMTU(l))
			}
			if l := link(t, away, now); l == nil || !isTap(l) || l.Attrs().MTU != 1500 {
				t.Errorf("the tap, %s in %s: %s, want its own MTU 1500 back", now, away, linkMTU(l))
			}
		})
	}
}

func isTap(l netlink.Link) bool {
	tt, ok := l.(*netlink.Tuntap)
	return ok && tt.Mode == netlink.TUNTAP_MODE_TAP
}

// linkMTU describes l as its kind and MTU, e.g. "veth MTU 1500".
func linkMTU(l netlink.Link) string {
	if l == nil {
		return "gone"
	}
	return fmt.Sprintf("%s MTU %d", l.Type(), l.Attrs().MTU)
}

func TestOpenWithoutCapNetAdmin(t *testing.T) {
	ns := testnet.NewNS(t)
	owned := testnet.UniqueName("tap")
	ns.IP(t, "tuntap", "add", owned, "mode", "tap", "user", fmt.Sprint(os.Geteuid()))
	foreign := testnet.UniqueName("tap")
	ns.IP(t, "tuntap", "add", foreign, "mode", "tap", "user", "65534", "group", "65534")
	fresh := testnet.UniqueName("tap")

	var d *tap.Device
	var errCreate, errForeign error
	err := ns.Do(func() (err error) {
		if err := testnet.DropNetAdmin(); err != nil {
			return err
		}
		_, errCreate = tap.Open(tap.Config{Name: fresh})
		_, errForeign = tap.Open(tap.Config{Name: foreign})
		d, err = tap.Open(tap.Config{Name: owned})
		return err
	})
	if err != nil {
		t.Fatalf("attaching to a persistent tap owned by this user without CAP_NET_ADMIN: %v", err)
	}
	d.Close()
	for _, err := range []error{errCreate, errForeign} {
		if !errors.Is(err, os.ErrPermission) || !strings.Contains(fmt.Sprint(err), "CAP_NET_ADMIN is missing") {
			t.Errorf("error %v does not match os.ErrPermission nor say CAP_NET_ADMIN is missing", err)
		}
	}
	if !strings.Contains(fmt.Sprint(errForeign), "belongs to another user") {
		t.Errorf("error %v does not say the tap belongs to another user", errForeign)
	}
	if link(t, ns, fresh) != nil {
		t.Errorf("tap %s created without CAP_NET_ADMIN", fresh)
	}
}

func TestOpenNameTaken(t *testing.T) {
	ns := testnet.NewNS(t)
	// Not a dummy: not every kernel has the module (this one has not).
	bridge := testnet.UniqueName("br")
	ns.IP(t, "link", "add", bridge, "type", "bridge")
	veth := testnet.UniqueName("veth")
	ns.IP(t, "link", "add", veth, "type", "veth", "peer", "name", testnet.UniqueName("veth"))
	tun := testnet.UniqueName("tun")
	ns.IP(t, "tuntap", "add", tun, "mode", "tun")
	for name, kind := range map[string]string{bridge: "bridge", veth: "veth", tun: "tun (layer 3)"} {
		_, err := openInErr(ns, tap.Config{Name: name})
		if !errors.Is(err, tap.ErrNameTaken) {
			t.Errorf("Open(%s) = %v, want ErrNameTaken", name, err)
			continue
		}
		if msg := err.Error(); !strings.Contains(msg, "a "+kind+" device") || !strings.Contains(msg, "choose another name") {
			t.Errorf("error %q does not say the device is a %s and what to do", msg, kind)
		}
	}
}

func TestOpenBusy(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	openIn(t, ns, tap.Config{Name: name})
	_, err := openInErr(ns, tap.Config{Name: name})
	if !errors.Is(err, tap.ErrBusy) || !strings.Contains(err.Error(), "close the other user") {
		t.Errorf("second Open(%s) = %v, want ErrBusy saying what to do", name, err)
	}
}

// frame returns an Ethernet broadcast frame from src with n bytes of
// payload, behind off bytes of headroom.
func frame(off int, src net.HardwareAddr, n int) []byte {
	b := make([]byte, off+14+n)
	copy(b[off:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(b[off+6:], src)
	b[off+12], b[off+13] = 0x88, 0xb5 // local experimental EtherType
	return b
}

// TestReadWrite sends a frame through a tap both ways: from the kernel
// side with a packet socket, and from the Device.
func TestReadWrite(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	d := openIn(t, ns, tap.Config{Name: name})
	sock := packetSocket(t, ns, name)

	const off = vswitch.Headroom
	out := frame(off, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 100)
	if n, err := d.WriteFrames([][]byte{out}, off); n != 1 || err != nil {
		t.Fatalf("WriteFrames = %d, %v", n, err)
	}
	got := make([]byte, 2000)
	n, _, err := unix.Recvfrom(sock, got, 0)
	if err != nil || !bytes.Equal(got[:n], out[off:]) {
		t.Fatalf("packet socket read %x, %v; want %x", got[:n], err, out[off:])
	}

	in := frame(0, net.HardwareAddr{2, 0, 0, 0, 0, 2}, 200)
	if _, err := unix.Write(sock, in); err != nil { // to the interface it is bound to
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, off+65535)}
	sizes := []int{0}
	for {
		if n, err := d.ReadFrames(bufs, sizes, off); n != 1 || err != nil {
			t.Fatalf("ReadFrames = %d, %v", n, err)
		}
		// The kernel may send its own frames (IPv6 router solicitations).
		if bytes.Equal(bufs[0][off:off+sizes[0]], in) {
			break
		}
	}

	// PollFrames takes what is waiting, in order, up to a batch, without
	// waiting.
	var sent [][]byte
	for i := range 5 {
		f := frame(0, net.HardwareAddr{2, 0, 0, 0, 0, byte(3 + i)}, 100+i)
		if _, err := unix.Write(sock, f); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, f)
	}
	bufs = make([][]byte, d.BatchSize())
	sizes = make([]int, len(bufs))
	for i := range bufs {
		bufs[i] = make([]byte, off+65535)
	}
	var ours [][]byte
	most := 0
	for len(ours) < len(sent) {
		n, err := d.PollFrames(bufs, sizes, off)
		if err != nil || n == 0 {
			t.Fatalf("PollFrames = %d, %v with %d of the %d frames written read", n, err, len(ours), len(sent))
		}
		most = max(most, n)
		for i := range n {
			if f := bufs[i][off : off+sizes[i]]; bytes.Equal(f[12:14], []byte{0x88, 0xb5}) {
				ours = append(ours, append([]byte(nil), f...))
			}
		}
	}
	if most < 2 {
		t.Errorf("PollFrames read one frame per call with %d waiting", len(sent))
	}
	for i := range sent {
		if !bytes.Equal(ours[i], sent[i]) {
			t.Fatalf("frame %d out of order or changed", i)
		}
	}
	for { // drained: (0, nil), not a wait
		n, err := d.PollFrames(bufs, sizes, off)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}

	// No more than len(bufs) frames per call; once closed, an error.
	for i := range 3 {
		if _, err := unix.Write(sock, frame(0, net.HardwareAddr{2, 0, 0, 0, 0, byte(9 + i)}, 60)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := d.PollFrames(bufs[:2], sizes, off); n != 2 || err != nil {
		t.Errorf("PollFrames with 2 buffers and 3 frames waiting = %d, %v; want 2, nil", n, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := d.PollFrames(bufs, sizes, off); n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Errorf("PollFrames after Close = %d, %v; want 0 and net.ErrClosed", n, err)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// packetSocket sets the tap name in ns up and returns a packet socket bound
// to it for frame's EtherType, with a 5 s receive timeout, closed when the
// test ends: what it sends, the tap's reader reads.
func packetSocket(tb testing.TB, ns *testnet.NS, name string) int {
	tb.Helper()
	ns.SetUp(tb, name)
	sock := -1
	err := ns.Do(func() (err error) {
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		sock, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(0x88b5)))
		if err != nil {
			return err
		}
		return unix.Bind(sock, &unix.SockaddrLinklayer{Protocol: htons(0x88b5), Ifindex: ifi.Index})
	})
	if sock >= 0 {
		tb.Cleanup(func() { unix.Close(sock) })
	}
	if err != nil {
		tb.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	if err := unix.SetsockoptTimeval(sock, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		tb.Fatal(err)
	}
	return sock
}

// BenchmarkPollFrames reads batches of 32 small frames from a tap with
// offloads (a virtio-net header on each), as the switch's receive loop
// does: ns/frame is the read side alone, the packet socket's sends that
// fill the tap are outside the timer.
func BenchmarkPollFrames(b *testing.B) {
	ns := testnet.NewNS(b)
	name := testnet.UniqueName("tap")
	d, err := openInErr(ns, tap.Config{Name: name})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	sock := packetSocket(b, ns, name)
	const off = vswitch.Headroom
	batch := d.BatchSize()
	bufs := make([][]byte, batch)
	sizes := make([]int, batch)
	for i := range bufs {
		bufs[i] = make([]byte, off+65535)
	}
	f := frame(0, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 50)
	read := 0
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		for range batch {
			if _, err := unix.Write(sock, f); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		for got := 0; got < batch; {
			n, err := d.PollFrames(bufs, sizes, off)
			if err != nil {
				b.Fatal(err)
			}
			got += n
			read += n
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(read), "ns/frame")
}

func TestPendingReadEndsOnCloseTap(t *testing.T) {
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tap")
	d := openIn(t, ns, tap.Config{Name: name})
	errc := make(chan error, 1)
	go func() {
		_, err := d.ReadFrames([][]byte{make([]byte, 16+65535)}, []int{0}, 16)
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("ReadFrames returned %v before Close, with nothing to read", err)
	case <-time.After(100 * time.Millisecond): // blocked, as it should be
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("pending ReadFrames after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadFrames")
	}
}

// TestDeleted checks what a Device reports once its tap is gone, deleted
// with ip link del or with the namespace it was moved into.
func TestDeleted(t *testing.T) {
	for _, how := range []string{"link-del", "netns-del"} {
		t.Run(how, func(t *testing.T) {
			home := testnet.NewNS(t)
			away := testnet.NewNS(t)
			name := testnet.UniqueName("tap")
			d := openIn(t, home, tap.Config{Name: name})
			testnet.MoveLink(t, name, home, away)
			errc := make(chan error, 1)
			go func() {
				_, err := d.ReadFrames([][]byte{make([]byte, 16+65535)}, []int{0}, 16)
				errc <- err
			}()
			if how == "link-del" {
				away.IP(t, "link", "del", name)
			} else {
				away.Delete(t)
			}
			select {
			case err := <-errc:
				if !errors.Is(err, tap.ErrDeviceGone) || !errors.Is(err, unix.EBADFD) {
					t.Errorf("ReadFrames = %v, want ErrDeviceGone and EBADFD", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("ReadFrames still blocked 10 s after the tap was deleted")
			}
			start := time.Now()
			n, err := d.WriteFrames([][]byte{frame(16, net.HardwareAddr{2, 0, 0, 0, 0, 1}, 50)}, 16)
			if n != 0 || !errors.Is(err, tap.ErrDeviceGone) || time.Since(start) > time.Second {
				t.Errorf("WriteFrames = %d, %v after %v, want 0, ErrDeviceGone at once", n, err, time.Since(start))
			}
		})
	}
}

// segment is a namespace joined to the switch by a tap that was opened in
// the switch's namespace and then moved into it.
type segment struct {
	ns   *testnet.NS
	dev  *tap.Device
	att  *vswitch.Attachment
	addr string // the namespace's address on the segment
}

// newSwitch returns a switch closed when the test ends, and the namespace
// where its taps are opened.
func newSwitch(t *testing.T) (*vswitch.Switch, *testnet.NS) {
	swNS := testnet.NewNS(t)
	sw := vswitch.New(vswitch.Config{})
	t.Cleanup(func() { sw.Close() })
	return sw, swNS
}

// addSegments adds n namespaces, with addresses 198.18.net.1, .2, ...
func addSegments(t *testing.T, sw *vswitch.Switch, swNS *testnet.NS, net, n int, cfgs ...tap.Config) []*segment {
	t.Helper()
	segs := make([]*segment, n)
	for i := range segs {
		s := &segment{ns: testnet.NewNS(t), addr: fmt.Sprintf("198.18.%d.%d", net, i+1)}
		name := testnet.UniqueName("tap")
		var cfg tap.Config
		if i < len(cfgs) {
			cfg = cfgs[i]
		}
		cfg.Name = name
		s.dev = openIn(t, swNS, cfg)
		var err error
		if s.att, err = sw.AddPort(s.dev, vswitch.PortConfig{Kind: "tap"}); err != nil {
			t.Fatal(err)
		}
		testnet.MoveLink(t, name, swNS, s.ns)
		s.ns.AddAddr(t, name, s.addr+"/24")
		s.ns.SetUp(t, name)
		segs[i] = s
	}
	return segs
}

// TestSwitchTwoTaps moves 64 MiB over TCP between two taps: with offloads
// on both (super-frames cross whole), from an offload tap to a plain one
// (the switch segments and checksums: the receiving kernel verifies
// every checksum), and between two plain taps.
func TestSwitchTwoTaps(t *testing.T) {
	for _, c := range []struct {
		name string
		a, b tap.Config
	}{
		{"offload-offload", tap.Config{}, tap.Config{}},
		{"offload-plain", tap.Config{}, tap.Config{NoOffload: true}},
		{"plain-offload", tap.Config{NoOffload: true}, tap.Config{}},
		{"plain-plain", tap.Config{NoOffload: true}, tap.Config{NoOffload: true}},
	} {
		t.Run(c.name, func(t *testing.T) { transfer64MiB(t, c.a, c.b) })
	}
}

func transfer64MiB(t *testing.T, cfgA, cfgB tap.Config) {
	sw, swNS := newSwitch(t)
	segs := addSegments(t, sw, swNS, 1, 2, cfgA, cfgB)
	a, b := segs[0], segs[1]
	a.ns.Ping(t, b.addr)
	b.ns.Ping(t, a.addr)
	// A write into a tap runs the receiving namespace's stack, which queues
	// its answer (the echo reply) before the write returns: the switch
	// forwards it from the writing goroutine (vswitch.Poller).
	var answers uint64
	for _, p := range sw.Stats().Ports {
		answers += p.RxAnswers
	}
	if answers == 0 {
		t.Errorf("no answer taken by the writing goroutine after the pings: %+v", sw.Stats().Ports)
	}

	transfer(t, sw, a.ns, b.ns, b.addr, 64<<20, nil)
}

// transfer sends size random bytes over TCP from a namespace to a listener
// on addr in another, through sw, and checks that they arrive whole and
// that no port dropped a frame. control, if not nil, is called on the
// sending socket before it connects.
func transfer(t *testing.T, sw *vswitch.Switch, from, to *testnet.NS, addr string, size int, control func(fd uintptr) error) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	took := testnet.TCPTransfer(t, from, to, addr, data, 3*time.Minute, control)
	t.Logf("%d MiB over TCP through the switch in %v", size>>20, took)
	// Nothing may be dropped, except writes to a tap that was still down
	// while the test set its namespace up (the kernel answers EIO).
	for _, p := range sw.Stats().Ports {
		if d := p.Drops.Total() - p.Drops[vswitch.DropTxError]; d != 0 {
			t.Errorf("port %s dropped %d frames: %+v", p.Name, d, p.Drops)
		}
	}
}

// TestSwitchIPv6ExtensionHeaders moves TCP whose packets carry an IPv6
// destination options header (IPV6_DSTOPTS on the sending socket) from an
// offload tap to a plain one, so that the switch segments super-frames
// with an extension header between the IPv6 and TCP headers. They were
// refused (bad_offload): the transfer crawled on retransmits, which the
// kernel sends as ordinary frames.
func TestSwitchIPv6ExtensionHeaders(t *testing.T) {
	sw, swNS := newSwitch(t)
	segs := addSegments(t, sw, swNS, 3, 2, tap.Config{}, tap.Config{NoOffload: true})
	a, b := segs[0], segs[1]
	for i, s := range segs {
		s.ns.IP(t, "addr", "add", fmt.Sprintf("2001:db8:3::%d/64", i+1), "dev", s.dev.Name(), "nodad")
	}
	a.ns.Ping(t, "2001:db8:3::2")
	// Destination options: one PadN option filling the header's 8 bytes.
	dstOpts := string([]byte{0, 0, 1, 4, 0, 0, 0, 0})
	transfer(t, sw, a.ns, b.ns, "2001:db8:3::2", 4<<20, func(fd uintptr) error {
		return unix.SetsockoptString(int(fd), unix.IPPROTO_IPV6, unix.IPV6_DSTOPTS, dstOpts)
	})
	// More frames written into b than read from a: super-frames were
	// split (b's own ACKs go the other way).
	if rx, tx := a.att.Stats().RxFrames, b.att.Stats().TxFrames; tx <= rx {
		t.Errorf("%d frames read from the offload tap, %d written into the plain one: nothing segmented", rx, tx)
	}
}

// TestSwitchOversizeFrameDropped: a frame longer than the switch's
// MaxFrame from a tap without offloads is dropped and counted (too_long).
// The receive buffer was exactly MaxFrame long, so the tap's read cut the
// frame to fit and the switch forwarded what was left.
func TestSwitchOversizeFrameDropped(t *testing.T) {
	swNS := testnet.NewNS(t)
	sw := vswitch.New(vswitch.Config{MaxFrame: 1014})
	t.Cleanup(func() { sw.Close() })
	segs := addSegments(t, sw, swNS, 4, 2, tap.Config{NoOffload: true}, tap.Config{NoOffload: true})
	a, b := segs[0], segs[1]
	a.ns.Ping(t, b.addr) // 98-byte frames
	before := b.att.Stats().TxBytes
	// A 1242-byte frame; the ping is not answered.
	a.ns.Exec(t.Context(), "ping", "-n", "-q", "-c", "1", "-W", "1", "-s", "1200", b.addr).Run()
	if d := a.att.Stats().Drops[vswitch.DropTooLong]; d != 1 {
		t.Errorf("%d frames dropped as too long, want 1", d)
	}
	// ARP may go on; the ping cut to 1014 bytes may not.
	if n := b.att.Stats().TxBytes - before; n >= 1014 {
		t.Errorf("%d bytes written into the other tap after the oversize ping: it went through cut", n)
	}
}

func TestSwitchSurvivesDeletedTaps(t *testing.T) {
	sw, swNS := newSwitch(t)
	segs := addSegments(t, sw, swNS, 2, 4)
	a, b, c, d := segs[0], segs[1], segs[2], segs[3]
	// Learn every address first, so that what follows is forwarded, not
	// flooded.
	a.ns.Ping(t, b.addr)
	c.ns.Ping(t, d.addr)

	ctx := t.Context()
	cd := c.ns.Exec(ctx, "ping", "-n", "-q", "-c", "200", "-i", "0.01", "-w", "30", d.addr)
	var cdOut bytes.Buffer
	cd.Stdout, cd.Stderr = &cdOut, &cdOut
	ab := a.ns.Exec(ctx, "ping", "-n", "-q", "-i", "0.01", b.addr)
	if err := testproc.Start(cd); err != nil {
		t.Fatal(err)
	}
	if err := testproc.Start(ab); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)

	// a's tap deleted while a pings b; then b's namespace removed, which
	// deletes b's tap with it.
	a.ns.IP(t, "link", "del", a.dev.Name())
	waitDone(t, a.att)
	ab.Process.Kill()
	ab.Wait()
	b.ns.Delete(t)
	waitDone(t, b.att)

	if err := cd.Wait(); err != nil {
		t.Fatalf("ping from %s to %s while other taps were deleted: %v\n%s", c.ns, d.addr, err, cdOut.Bytes())
	}
	d.ns.Ping(t, c.addr)

	st := sw.Stats()
	if len(st.Ports) != 2 {
		t.Errorf("%d ports left, want 2: %+v", len(st.Ports), st.Ports)
	}
	for _, s := range []*segment{a, b} {
		var found bool
		for _, ps := range st.Departed {
			if ps.Name == s.dev.Name() {
				found = true
				if !ps.Removed || ps.RxFrames == 0 || ps.TxFrames == 0 {
					t.Errorf("departed port %s: %+v, want removed with frames counted", ps.Name, ps)
				}
			}
		}
		if !found {
			t.Errorf("port %s not in Stats().Departed", s.dev.Name())
		}
	}
}

func waitDone(t *testing.T, a *vswitch.Attachment) {
	t.Helper()
	select {
	case <-a.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("port %s still attached 10 s after its tap was deleted", a.Name())
	}
}

// TestSwitchUDPCoalescing sends bursts of small UDP datagrams between two
// offload taps: the switch reads several at a time and writes each run of
// them as one UDP super-frame (vswitch.UDPSegmentPort), which the
// receiving kernel splits again. Every datagram must arrive, in order and
// intact, including the short ones that end a super-frame.
func TestSwitchUDPCoalescing(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &major, &minor)
	if major < 6 || major == 6 && minor < 2 {
		t.Skipf("kernel %d.%d has no UDP segmentation offload for taps (Linux 6.2)", major, minor)
	}
	sw, swNS := newSwitch(t)
	segs := addSegments(t, sw, swNS, 3, 2)
	a, b := segs[0], segs[1]
	if !b.dev.AcceptsUDPSegments() {
		t.Fatal("a tap on Linux 6.2 or later does not take UDP super-frames")
	}
	a.ns.Ping(t, b.addr)

	var rc, sc *net.UDPConn
	if err := b.ns.Do(func() (err error) {
		rc, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(b.addr)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if err := a.ns.Do(func() (err error) {
		sc, err = net.DialUDP("udp4", nil, rc.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()

	// Datagram seq carries seq and bytes derived from it; every 7th is
	// shorter than the others.
	payload := func(seq int) []byte {
		p := make([]byte, 64)
		if seq%7 == 6 {
			p = p[:20]
		}
		binary.BigEndian.PutUint64(p, uint64(seq))
		for i := 8; i < len(p); i++ {
			p[i] = byte(seq*31 + i)
		}
		return p
	}
	const bursts, burst = 300, 32
	buf := make([]byte, 2048)
	for n := range bursts {
		for i := range burst {
			if _, err := sc.Write(payload(n*burst + i)); err != nil {
				t.Fatal(err)
			}
		}
		for i := range burst {
			seq := n*burst + i
			rc.SetReadDeadline(time.Now().Add(5 * time.Second))
			m, err := rc.Read(buf)
			if err != nil {
				t.Fatalf("datagram %d: %v (stats %+v)", seq, err, sw.Stats().Ports)
			}
			if want := payload(seq); !bytes.Equal(buf[:m], want) {
				t.Fatalf("datagram %d: got %d bytes %x, want %d bytes %x", seq, m, buf[:m], len(want), want)
			}
		}
	}
	st := b.att.Stats()
	t.Logf("%d datagrams, %d of them written to the receiving tap in UDP super-frames", bursts*burst, st.TxCoalesced)
	if st.TxCoalesced == 0 {
		t.Error("no datagram went out in a UDP super-frame")
	}
	// The receiving kernel delivered each datagram on its own, and found
	// nothing wrong with any.
	var names, values []string
	for _, l := range strings.Split(b.ns.Output(t, "cat", "/proc/net/snmp"), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == "Udp:" {
			if names == nil {
				names = f
			} else {
				values = f
			}
		}
	}
	udp := map[string]string{}
	for i := 1; i < len(names) && i < len(values); i++ {
		udp[names[i]] = values[i]
	}
	if want := fmt.Sprint(bursts * burst); udp["InDatagrams"] != want || udp["InErrors"] != "0" || udp["InCsumErrors"] != "0" {
		t.Errorf("receiving namespace's UDP counters %v, want InDatagrams %s and no errors", udp, want)
	}
}

// TestIsNamed: a tap is known by its name now, in the caller's namespace,
// not by the name it had at Open nor by a namesake elsewhere.
func TestIsNamed(t *testing.T) {
	home, away := testnet.NewNS(t), testnet.NewNS(t)
	name, renamed := testnet.UniqueName("tap"), testnet.UniqueName("tap")
	d := openIn(t, home, tap.Config{Name: name})
	is := func(ns *testnet.NS, name string) (is bool) {
		if err := ns.Do(func() error { is = d.IsNamed(name); return nil }); err != nil {
			t.Fatal(err)
		}
		return is
	}
	if !is(home, name) || is(away, name) {
		t.Errorf("IsNamed(%s) = %v in its namespace and %v in another, want true and false", name, is(home, name), is(away, name))
	}
	home.IP(t, "link", "set", name, "name", renamed)
	if is(home, name) || !is(home, renamed) {
		t.Errorf("renamed %s to %s: IsNamed gives %v and %v, want false and true", name, renamed, is(home, name), is(home, renamed))
	}
	testnet.MoveLink(t, renamed, home, away)
	if is(home, renamed) || !is(away, renamed) {
		t.Errorf("moved %s away: IsNamed in its old and new namespace gives %v and %v, want false and true", renamed, is(home, renamed), is(away, renamed))
	}
}
