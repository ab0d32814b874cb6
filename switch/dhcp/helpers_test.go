package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"go.uber.org/goleak"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Test addresses come from the benchmark range 198.18.0.0/15.
var (
	testGateway = netip.MustParsePrefix("198.18.0.1/24")
	testGW      = testGateway.Addr()
	zeroIP      = netip.IPv4Unspecified()
)

func ip4(s string) netip.Addr { return netip.MustParseAddr(s) }

// fakeClock is a Config.Now that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func hw(m vswitch.MAC) net.HardwareAddr { return net.HardwareAddr(m[:]) }

// newMsg returns a client message of type mt from m with a fixed xid.
func newMsg(t testing.TB, mt dhcpv4.MessageType, m vswitch.MAC, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	base := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw(m)),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{m[4], m[5], byte(mt), 0x42}),
	}
	d, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// clientFrame wraps d in Ethernet/IPv4/UDP from port 68 to port 67.
func clientFrame(dstMAC, srcMAC vswitch.MAC, src, dst netip.Addr, d *dhcpv4.DHCPv4) []byte {
	return buildUDP(dstMAC, srcMAC, 1, src, dst, portClient, portServer, d.ToBytes())
}

// bcastFrame is how a client without an address sends: 0.0.0.0 to
// 255.255.255.255, Ethernet broadcast.
func bcastFrame(m vswitch.MAC, d *dhcpv4.DHCPv4) []byte {
	return clientFrame(broadcastMAC, m, zeroIP, limitedBroadcast, d)
}

// sum16 is an independent Internet checksum for verifying frames.
func sum16(b []byte, initial uint32) uint16 {
	s := initial
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}

// replyFrame is a decoded frame the responder sent.
type replyFrame struct {
	dstMAC, srcMAC vswitch.MAC
	etherType      uint16
	src, dst       netip.Addr // IPv4 frames
	proto          uint8
	srcPort        uint16 // UDP frames
	dstPort        uint16
	l4             []byte // IPv4 payload, or the ARP packet
	dhcp           *dhcpv4.DHCPv4
}

// checkFrame verifies that f is a well-formed frame the responder may
// send and decodes it; it reports what is wrong with it otherwise.
func checkFrame(f []byte) (replyFrame, string) {
	var r replyFrame
	if len(f) < 60 {
		return r, "shorter than 60 bytes"
	}
	r.dstMAC, r.srcMAC = vswitch.MAC(f[0:6]), vswitch.MAC(f[6:12])
	if r.srcMAC.Multicast() {
		return r, "multicast source MAC"
	}
	r.etherType = binary.BigEndian.Uint16(f[12:14])
	b := f[14:]
	switch r.etherType {
	case etherTypeARP:
		if len(b) < 28 || binary.BigEndian.Uint16(b[0:2]) != 1 || binary.BigEndian.Uint16(b[2:4]) != 0x0800 || b[4] != 6 || b[5] != 4 {
			return r, "bad ARP header"
		}
		r.l4 = b[:28]
		return r, ""
	case etherTypeIPv4:
	default:
		return r, "unexpected EtherType"
	}
	if len(b) < 20 || b[0] != 0x45 {
		return r, "bad IPv4 version/IHL"
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < 20 || total > len(b) {
		return r, "bad IPv4 total length"
	}
	if sum16(b[:20], 0) != 0xffff {
		return r, "bad IPv4 header checksum"
	}
	if b[6]&0x3f != 0 || b[7] != 0 || b[8] == 0 {
		return r, "fragment or zero TTL"
	}
	r.src = netip.AddrFrom4([4]byte(b[12:16]))
	r.dst = netip.AddrFrom4([4]byte(b[16:20]))
	r.proto = b[9]
	r.l4 = b[20:total]
	switch r.proto {
	case protoICMP:
		if len(r.l4) < 8 || sum16(r.l4, 0) != 0xffff {
			return r, "bad ICMP checksum"
		}
		return r, ""
	case protoUDP:
	default:
		return r, "unexpected IP protocol"
	}
	u := r.l4
	if len(u) < 8 || int(binary.BigEndian.Uint16(u[4:6])) != len(u) {
		return r, "bad UDP length"
	}
	s, d := r.src.As4(), r.dst.As4()
	pseudo := uint32(binary.BigEndian.Uint16(s[0:])) + uint32(binary.BigEndian.Uint16(s[2:])) +
		uint32(binary.BigEndian.Uint16(d[0:])) + uint32(binary.BigEndian.Uint16(d[2:])) + 17 + uint32(len(u))
	if binary.BigEndian.Uint16(u[6:8]) == 0 || sum16(u, pseudo) != 0xffff {
		return r, "bad UDP checksum"
	}
	r.srcPort, r.dstPort = binary.BigEndian.Uint16(u[0:2]), binary.BigEndian.Uint16(u[2:4])
	if r.srcPort != 67 || r.dstPort != 68 {
		return r, "UDP ports are not 67 -> 68"
	}
	m, err := dhcpv4.FromBytes(u[8:])
	if err != nil {
		return r, "DHCP reply does not decode: " + err.Error()
	}
	if m.OpCode != dhcpv4.OpcodeBootReply {
		return r, "DHCP reply is not BOOTREPLY"
	}
	r.dhcp = m
	return r, ""
}

// env is a switch with the responder attached and test clients.
type env struct {
	t     *testing.T
	sw    *vswitch.Switch
	srv   *Server
	clock *fakeClock
	n     int
}

// newEnv starts a switch with a responder for cfg (Gateway and Now
// defaulted to the test ones).
func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = testGateway
	}
	clock := newClock()
	if cfg.Now == nil {
		cfg.Now = clock.Now
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sw := vswitch.New(vswitch.Config{})
	t.Cleanup(func() { sw.Close() })
	if _, err := sw.AddPort(srv, vswitch.PortConfig{Kind: "dhcp", DHCPServer: true, DHCPAddr: cfg.Gateway.Addr()}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, sw: sw, srv: srv, clock: clock}
}

// client is a guest on the switch.
type client struct {
	e   *env
	p   *porttest.Port
	mac vswitch.MAC
	ip  netip.Addr // once bound
}

func (e *env) client() *client {
	e.t.Helper()
	e.n++
	p := porttest.New(porttest.Config{Name: "vm"})
	if _, err := e.sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
		e.t.Fatal(err)
	}
	return &client{e: e, p: p, mac: porttest.MAC(e.n)}
}

func (c *client) send(f []byte) {
	c.e.t.Helper()
	if err := c.p.Send(f); err != nil {
		c.e.t.Fatal(err)
	}
}

// recv returns the next frame for c that match accepts, verified to be
// well-formed; frames it skips are returned in skipped.
func (c *client) recv(match func(replyFrame) bool) (r replyFrame, skipped []replyFrame) {
	c.e.t.Helper()
	for {
		f, ok := c.p.Recv(10 * time.Second)
		if !ok {
			c.e.t.Fatalf("client %v: no reply", c.mac)
		}
		r, bad := checkFrame(f)
		if bad != "" {
			c.e.t.Fatalf("client %v: malformed frame from responder: %s: % x", c.mac, bad, f)
		}
		if match(r) {
			return r, skipped
		}
		skipped = append(skipped, r)
	}
}

// recvDHCP returns the next DHCP reply for c's MAC with type mt.
func (c *client) recvDHCP(mt dhcpv4.MessageType) replyFrame {
	c.e.t.Helper()
	r, _ := c.recv(func(r replyFrame) bool { return r.dhcp != nil && vswitch.MAC(r.dhcp.ClientHWAddr) == c.mac })
	if got := r.dhcp.MessageType(); got != mt {
		c.e.t.Fatalf("client %v: got %v (%s), want %v", c.mac, got, r.dhcp.Message(), mt)
	}
	return r
}

// barrier sends an INFORM and waits for its ACK, returning every frame c
// received before it. Frames from the responder to c are delivered in the
// order they were produced, so nothing sent to c before the barrier can
// arrive after it.
func (c *client) barrier() []replyFrame {
	c.e.t.Helper()
	d := newMsg(c.e.t, dhcpv4.MessageTypeInform, c.mac, dhcpv4.WithTransactionID(dhcpv4.TransactionID{0xba, 0x44, 0x1e, 0x55}),
		dhcpv4.WithClientIP(net.IP{198, 18, 0, 250}))
	c.send(clientFrame(broadcastMAC, c.mac, ip4("198.18.0.250"), limitedBroadcast, d))
	_, skipped := c.recv(func(r replyFrame) bool {
		return r.dhcp != nil && r.dhcp.TransactionID == d.TransactionID && vswitch.MAC(r.dhcp.ClientHWAddr) == c.mac
	})
	return skipped
}

// dora runs DISCOVER, OFFER, REQUEST, ACK and returns the ACK.
func (c *client) dora(mods ...dhcpv4.Modifier) replyFrame {
	c.e.t.Helper()
	c.send(bcastFrame(c.mac, newMsg(c.e.t, dhcpv4.MessageTypeDiscover, c.mac, mods...)))
	offer := c.recvDHCP(dhcpv4.MessageTypeOffer)
	req := newMsg(c.e.t, dhcpv4.MessageTypeRequest, c.mac, append([]dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.dhcp.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.dhcp.ServerIdentifier())),
	}, mods...)...)
	c.send(bcastFrame(c.mac, req))
	ack := c.recvDHCP(dhcpv4.MessageTypeAck)
	c.ip = addr4(ack.dhcp.YourIPAddr)
	return ack
}
