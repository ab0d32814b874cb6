package dhcp

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestReplyOptions(t *testing.T) {
	srv, err := New(Config{
		Gateway:   testGateway,
		DNS:       []netip.Addr{ip4("198.18.0.53"), ip4("198.18.1.53")},
		Domain:    "vm.example.",
		Search:    []string{"vm.example", "example.org."},
		LeaseTime: 2 * time.Hour,
		MTU:       9000,
		Now:       newClock().Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	m := porttest.MAC(1)
	clientID := []byte{0xff, 0, 0, 0, 1, 0, 1, 0, 1, 2, 3, 4, 5, 6, 7} // dhcpcd style: IAID + DUID
	disc := newMsg(t, dhcpv4.MessageTypeDiscover, m, dhcpv4.WithOption(dhcpv4.OptClientIdentifier(clientID)))
	out := replies(t, exchange(t, srv, bcastFrame(m, disc)))
	if len(out) != 1 {
		t.Fatalf("DISCOVER: %d replies", len(out))
	}
	offer := out[0]
	req := newMsg(t, dhcpv4.MessageTypeRequest, m,
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier(clientID)),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.ServerIdentifier())))
	out = replies(t, exchange(t, srv, bcastFrame(m, req)))
	if len(out) != 1 {
		t.Fatalf("REQUEST: %d replies", len(out))
	}
	ack := out[0]

	for _, tc := range []struct {
		mt dhcpv4.MessageType
		d  *dhcpv4.DHCPv4
		x  *dhcpv4.DHCPv4
	}{{dhcpv4.MessageTypeOffer, offer, disc}, {dhcpv4.MessageTypeAck, ack, req}} {
		d := tc.d
		if d.MessageType() != tc.mt {
			t.Errorf("message type %v, want %v", d.MessageType(), tc.mt)
		}
		if d.TransactionID != tc.x.TransactionID || !bytes.Equal(d.ClientHWAddr, hw(m)) {
			t.Errorf("%v: xid/chaddr not copied", tc.mt)
		}
		if got := addr4(d.YourIPAddr); got != ip4("198.18.0.2") {
			t.Errorf("%v: yiaddr %v", tc.mt, got)
		}
		if got := d.SubnetMask(); !bytes.Equal(got, net.CIDRMask(24, 32)) {
			t.Errorf("%v: subnet mask %v", tc.mt, got)
		}
		if got := d.Router(); len(got) != 1 || !got[0].Equal(net.IP{198, 18, 0, 1}) {
			t.Errorf("%v: router %v", tc.mt, got)
		}
		if got := d.ServerIdentifier(); !got.Equal(net.IP{198, 18, 0, 1}) {
			t.Errorf("%v: server identifier %v", tc.mt, got)
		}
		if got := d.DNS(); len(got) != 2 || !got[0].Equal(net.IP{198, 18, 0, 53}) || !got[1].Equal(net.IP{198, 18, 1, 53}) {
			t.Errorf("%v: DNS %v", tc.mt, got)
		}
		if got := d.DomainName(); got != "vm.example" {
			t.Errorf("%v: domain %q", tc.mt, got)
		}
		if got := d.DomainSearch(); got == nil || !reflect.DeepEqual(got.Labels, []string{"vm.example", "example.org"}) {
			t.Errorf("%v: search %v", tc.mt, got)
		}
		if got := d.IPAddressLeaseTime(0); got != 2*time.Hour {
			t.Errorf("%v: lease time %v", tc.mt, got)
		}
		if got := d.IPAddressRenewalTime(0); got != time.Hour {
			t.Errorf("%v: T1 %v", tc.mt, got)
		}
		if got := d.IPAddressRebindingTime(0); got != 105*time.Minute {
			t.Errorf("%v: T2 %v", tc.mt, got)
		}
		if got := d.GetOneOption(dhcpv4.OptionInterfaceMTU); !bytes.Equal(got, []byte{0x23, 0x28}) {
			t.Errorf("%v: MTU option % x", tc.mt, got)
		}
		if got := d.GetOneOption(dhcpv4.OptionClientIdentifier); !bytes.Equal(got, clientID) {
			t.Errorf("%v: client identifier not echoed (RFC 6842): % x", tc.mt, got)
		}
		if len(d.ToBytes()) > maxReplyLen {
			t.Errorf("%v: %d bytes", tc.mt, len(d.ToBytes()))
		}
	}

	// The lease follows chaddr, not the client identifier.
	other := newMsg(t, dhcpv4.MessageTypeDiscover, m, dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 0, 0, 0, 0, 1})))
	if out := replies(t, exchange(t, srv, bcastFrame(m, other))); len(out) != 1 || addr4(out[0].YourIPAddr) != ip4("198.18.0.2") {
		t.Errorf("another client identifier on the same MAC: %v", out)
	}

	// INFORM: parameters, no lease.
	inf := newMsg(t, dhcpv4.MessageTypeInform, m, dhcpv4.WithClientIP(net.IP{198, 18, 0, 2}))
	out = replies(t, exchange(t, srv, clientFrame(srv.MAC(), m, ip4("198.18.0.2"), testGW, inf)))
	if len(out) != 1 || out[0].MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("INFORM: %v", out)
	}
	if d := out[0]; d.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || d.Options.Has(dhcpv4.OptionRenewTimeValue) ||
		!addr4(d.YourIPAddr).IsUnspecified() || len(d.Router()) != 1 || len(d.DNS()) != 2 || !d.ClientIPAddr.Equal(net.IP{198, 18, 0, 2}) {
		t.Errorf("INFORM ACK: %s", d.Summary())
	}

	// NAK: server identifier and message only.
	bad := newMsg(t, dhcpv4.MessageTypeRequest, m, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{10, 9, 8, 7})))
	out = replies(t, exchange(t, srv, bcastFrame(m, bad)))
	if len(out) != 1 || out[0].MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("bad REQUEST: %v", out)
	}
	nak := out[0]
	for code := range nak.Options {
		switch code {
		case dhcpv4.OptionDHCPMessageType.Code(), dhcpv4.OptionServerIdentifier.Code(), dhcpv4.OptionMessage.Code():
		default:
			t.Errorf("NAK carries option %v", dhcpv4.GenericOptionCode(code))
		}
	}
	if !addr4(nak.YourIPAddr).IsUnspecified() || nak.Message() == "" {
		t.Errorf("NAK: %s", nak.Summary())
	}
}

// TestRepeatedOptionNotEchoed: a client identifier or relay agent
// information sent as several options (which the codec joins into one
// value) is not echoed past what one option holds, so the reply stays
// within what every client accepts; one that fits is echoed.
func TestRepeatedOptionNotEchoed(t *testing.T) {
	srv, err := New(Config{Gateway: testGateway, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	long := bytes.Repeat([]byte{7}, 600) // sent as three options
	for _, tc := range []struct {
		code dhcpv4.OptionCode
		v    []byte
		echo bool
	}{
		{dhcpv4.OptionClientIdentifier, long, false},
		{dhcpv4.OptionRelayAgentInformation, long, false},
		{dhcpv4.OptionClientIdentifier, long[:maxEchoLen], true},
		{dhcpv4.OptionRelayAgentInformation, long[:maxEchoLen], true},
	} {
		m := porttest.MAC(2)
		disc := newMsg(t, dhcpv4.MessageTypeDiscover, m, dhcpv4.WithGeneric(tc.code, tc.v))
		out := replies(t, exchange(t, srv, bcastFrame(m, disc)))
		if len(out) != 1 {
			t.Fatalf("%v of %d bytes: %d replies", tc.code, len(tc.v), len(out))
		}
		got := out[0].Options.Get(tc.code)
		if echoed := got != nil; echoed != tc.echo || (echoed && !bytes.Equal(got, tc.v)) {
			t.Errorf("%v of %d bytes: echoed %d bytes, want echoed %v", tc.code, len(tc.v), len(got), tc.echo)
		}
		if !tc.echo && len(out[0].ToBytes()) > maxReplyLen {
			t.Errorf("%v of %d bytes: %d-byte reply", tc.code, len(tc.v), len(out[0].ToBytes()))
		}
	}
}

// TestNewReplyMatchesCodec: newReply is NewReplyFromRequest less the
// random transaction ID (for options that fit in one option).
func TestNewReplyMatchesCodec(t *testing.T) {
	req := newMsg(t, dhcpv4.MessageTypeRequest, porttest.MAC(1),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{1, 2, 3})),
		dhcpv4.WithOption(dhcpv4.OptRelayAgentInfo(dhcpv4.OptGeneric(dhcpv4.GenericOptionCode(1), []byte{4}))),
		dhcpv4.WithBroadcast(true))
	mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IP{1, 2, 3, 4})}
	want, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		t.Fatal(err)
	}
	if got := newReply(req, mods...); !bytes.Equal(got.ToBytes(), want.ToBytes()) {
		t.Errorf("newReply:\n%s\nNewReplyFromRequest:\n%s", got.Summary(), want.Summary())
	}
}

func TestConfigValidation(t *testing.T) {
	m := porttest.MAC(1)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"no gateway", Config{}},
		{"ipv6 gateway", Config{Gateway: netip.MustParsePrefix("2001:db8::1/64")}},
		{"/31", Config{Gateway: netip.MustParsePrefix("198.18.0.1/31")}},
		{"network address", Config{Gateway: netip.MustParsePrefix("198.18.0.0/24")}},
		{"range outside", Config{Gateway: testGateway, Range: Range{ip4("198.18.0.10"), ip4("198.18.1.10")}}},
		{"range reversed", Config{Gateway: testGateway, Range: Range{ip4("198.18.0.10"), ip4("198.18.0.9")}}},
		{"static outside", Config{Gateway: testGateway, Static: []StaticLease{{m, ip4("198.18.1.10")}}}},
		{"static gateway", Config{Gateway: testGateway, Static: []StaticLease{{m, testGW}}}},
		{"static reserved", Config{Gateway: testGateway, Reserved: []netip.Addr{ip4("198.18.0.9")}, Static: []StaticLease{{m, ip4("198.18.0.9")}}}},
		{"static dup MAC", Config{Gateway: testGateway, Static: []StaticLease{{m, ip4("198.18.0.9")}, {m, ip4("198.18.0.8")}}}},
		{"static dup IP", Config{Gateway: testGateway, Static: []StaticLease{{m, ip4("198.18.0.9")}, {porttest.MAC(2), ip4("198.18.0.9")}}}},
		{"static multicast", Config{Gateway: testGateway, Static: []StaticLease{{porttest.Broadcast, ip4("198.18.0.9")}}}},
		{"dns v6", Config{Gateway: testGateway, DNS: []netip.Addr{netip.MustParseAddr("::1")}}},
		{"domain", Config{Gateway: testGateway, Domain: "a..b"}},
		{"search", Config{Gateway: testGateway, Search: []string{"ok", "not ok"}}},
		{"lease", Config{Gateway: testGateway, LeaseTime: time.Millisecond}},
		{"mtu", Config{Gateway: testGateway, MTU: 20}},
		{"too long", Config{Gateway: testGateway, Search: longSearch()}},
	} {
		if _, err := New(tc.cfg); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
}

func longSearch() []string {
	var s []string
	for i := 0; i < 20; i++ {
		s = append(s, "a-rather-long-search-domain.example")
	}
	return s
}

func TestParseFlags(t *testing.T) {
	r, err := ParseRange("198.18.0.100-198.18.0.199")
	if err != nil || r != (Range{ip4("198.18.0.100"), ip4("198.18.0.199")}) || r.String() != "198.18.0.100-198.18.0.199" {
		t.Errorf("ParseRange: %v, %v", r, err)
	}
	for _, s := range []string{"", "198.18.0.100", "198.18.0.9-198.18.0.1", "::1-::2", "a-b"} {
		if _, err := ParseRange(s); err == nil {
			t.Errorf("ParseRange(%q) succeeded", s)
		}
	}
	l, err := ParseStaticLease("52:54:00:12:34:56=198.18.0.10")
	if err != nil || l.MAC != (vswitch.MAC{0x52, 0x54, 0, 0x12, 0x34, 0x56}) || l.IP != ip4("198.18.0.10") || l.String() != "52:54:00:12:34:56=198.18.0.10" {
		t.Errorf("ParseStaticLease: %v, %v", l, err)
	}
	for _, s := range []string{"", "52:54:00:12:34:56", "x=198.18.0.1", "52:54:00:12:34:56=::1"} {
		if _, err := ParseStaticLease(s); err == nil {
			t.Errorf("ParseStaticLease(%q) succeeded", s)
		}
	}
}

func TestDefaultMAC(t *testing.T) {
	a, b := defaultMAC(ip4("198.18.0.1")), defaultMAC(ip4("198.18.0.1"))
	if a != b || a.Multicast() || a[0]&2 == 0 {
		t.Errorf("default MAC %v: want stable, unicast, locally administered", a)
	}
	if defaultMAC(ip4("198.18.1.1")) == a {
		t.Error("two gateways share a default MAC")
	}
}

// The tests below run the responder on a switch, as the daemon does.

func TestSwitchDORA(t *testing.T) {
	e := newEnv(t, Config{})
	c1, c2 := e.client(), e.client()
	c1.send(bcastFrame(c1.mac, newMsg(t, dhcpv4.MessageTypeDiscover, c1.mac)))
	offer := c1.recvDHCP(dhcpv4.MessageTypeOffer)
	// No broadcast flag: unicast to chaddr and yiaddr.
	if offer.dstMAC != c1.mac || offer.dst != ip4("198.18.0.2") || offer.srcMAC != e.srv.MAC() || offer.src != testGW {
		t.Errorf("OFFER %v -> %v (%v -> %v), want unicast to the client", offer.srcMAC, offer.dstMAC, offer.src, offer.dst)
	}
	req := newMsg(t, dhcpv4.MessageTypeRequest, c1.mac,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.dhcp.YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offer.dhcp.ServerIdentifier())),
		dhcpv4.WithOption(dhcpv4.OptHostName("guest one")))
	c1.send(bcastFrame(c1.mac, req))
	ack := c1.recvDHCP(dhcpv4.MessageTypeAck)
	if ack.dstMAC != c1.mac || ack.dst != ip4("198.18.0.2") || addr4(ack.dhcp.YourIPAddr) != ip4("198.18.0.2") {
		t.Errorf("ACK to %v %v for %v", ack.dstMAC, ack.dst, ack.dhcp.YourIPAddr)
	}
	// Unicast replies did not reach the other guest.
	for _, r := range c2.barrier() {
		if r.dhcp != nil {
			t.Errorf("other guest received %v", r.dhcp)
		}
	}
	if ip := addr4(c2.dora().dhcp.YourIPAddr); ip != ip4("198.18.0.3") {
		t.Errorf("second guest got %v", ip)
	}
	ls := e.srv.Leases()
	if len(ls) != 2 || ls[0].MAC != c1.mac || ls[0].State != LeaseBound || ls[0].Hostname != "guestone" ||
		!ls[0].Expiry.Equal(e.clock.Now().Add(DefaultLeaseTime)) {
		t.Errorf("leases %+v", ls)
	}
	st := e.srv.Stats()
	if st.Discovers != 2 || st.Offers != 2 || st.Requests != 2 || st.Acks < 2 || st.LeasesInUse != 2 || st.PoolSize != 253 {
		t.Errorf("stats %+v", st)
	}
}

func TestSwitchBroadcastFlag(t *testing.T) {
	e := newEnv(t, Config{})
	c1, c2 := e.client(), e.client()
	c1.send(bcastFrame(c1.mac, newMsg(t, dhcpv4.MessageTypeDiscover, c1.mac, dhcpv4.WithBroadcast(true))))
	offer := c1.recvDHCP(dhcpv4.MessageTypeOffer)
	if offer.dstMAC != broadcastMAC || offer.dst != limitedBroadcast {
		t.Errorf("OFFER with the broadcast flag sent to %v %v", offer.dstMAC, offer.dst)
	}
	seen := false
	for _, r := range c2.barrier() {
		seen = seen || r.dhcp != nil && r.dhcp.MessageType() == dhcpv4.MessageTypeOffer
	}
	if !seen {
		t.Error("broadcast OFFER did not reach the other guest")
	}
}

func TestSwitchRenewal(t *testing.T) {
	e := newEnv(t, Config{})
	c := e.client()
	ip := addr4(c.dora().dhcp.YourIPAddr)
	e.clock.Add(40 * time.Minute)

	// RENEWING: unicast to the server's MAC and IP, ciaddr set.
	renew := newMsg(t, dhcpv4.MessageTypeRequest, c.mac, dhcpv4.WithClientIP(ip.AsSlice()))
	c.send(clientFrame(e.srv.MAC(), c.mac, ip, testGW, renew))
	ack := c.recvDHCP(dhcpv4.MessageTypeAck)
	if addr4(ack.dhcp.YourIPAddr) != ip || addr4(ack.dhcp.ClientIPAddr) != ip || ack.dstMAC != c.mac || ack.dst != ip {
		t.Errorf("renewal ACK %v (ciaddr %v) to %v %v", ack.dhcp.YourIPAddr, ack.dhcp.ClientIPAddr, ack.dstMAC, ack.dst)
	}
	// RENEWING towards a gateway MAC owned by a host interface: the
	// switch still hands the request to the responder.
	host := e.client()
	host.barrier() // teaches the switch the host's MAC
	c.send(clientFrame(host.mac, c.mac, ip, testGW, renew))
	c.recvDHCP(dhcpv4.MessageTypeAck)
	for _, r := range host.barrier() {
		t.Errorf("host port received %+v", r)
	}
	// REBINDING: broadcast, ciaddr set; the reply is unicast to ciaddr.
	c.send(clientFrame(broadcastMAC, c.mac, ip, limitedBroadcast, renew))
	if ack := c.recvDHCP(dhcpv4.MessageTypeAck); ack.dst != ip || ack.dstMAC != c.mac {
		t.Errorf("rebinding ACK to %v %v", ack.dstMAC, ack.dst)
	}
	if ls := e.srv.Leases(); len(ls) != 1 || !ls[0].Expiry.Equal(e.clock.Now().Add(time.Hour)) {
		t.Errorf("leases after renewal %+v", ls)
	}
}

func TestSwitchNak(t *testing.T) {
	e := newEnv(t, Config{})
	c1, c2 := e.client(), e.client()
	ip1 := addr4(c1.dora().dhcp.YourIPAddr)

	initReboot := func(c *client, ip netip.Addr) *dhcpv4.DHCPv4 {
		return newMsg(t, dhcpv4.MessageTypeRequest, c.mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())))
	}
	// INIT-REBOOT for an address on another network.
	c2.send(bcastFrame(c2.mac, initReboot(c2, ip4("10.1.2.3"))))
	nak := c2.recvDHCP(dhcpv4.MessageTypeNak)
	if nak.dstMAC != broadcastMAC || nak.dst != limitedBroadcast {
		t.Errorf("NAK sent to %v %v, want broadcast", nak.dstMAC, nak.dst)
	}
	// INIT-REBOOT for another MAC's address.
	c2.send(bcastFrame(c2.mac, initReboot(c2, ip1)))
	c2.recvDHCP(dhcpv4.MessageTypeNak)
	// RENEWING an address that is not the client's.
	renew := newMsg(t, dhcpv4.MessageTypeRequest, c2.mac, dhcpv4.WithClientIP(ip1.AsSlice()))
	c2.send(clientFrame(e.srv.MAC(), c2.mac, ip1, testGW, renew))
	// Broadcast too (RFC 2131 4.1), though the client has an address.
	if nak := c2.recvDHCP(dhcpv4.MessageTypeNak); nak.dstMAC != broadcastMAC || nak.dst != limitedBroadcast {
		t.Errorf("NAK to a renewal sent to %v %v, want broadcast", nak.dstMAC, nak.dst)
	}
	// INIT-REBOOT for a free pool address with no record is granted (the
	// lease file was lost, the guest keeps its address).
	c2.send(bcastFrame(c2.mac, initReboot(c2, ip4("198.18.0.77"))))
	if ack := c2.recvDHCP(dhcpv4.MessageTypeAck); addr4(ack.dhcp.YourIPAddr) != ip4("198.18.0.77") {
		t.Errorf("INIT-REBOOT ACK for %v", ack.dhcp.YourIPAddr)
	}
	if st := e.srv.Stats(); st.Naks != 3 {
		t.Errorf("naks %d, want 3", st.Naks)
	}
}

func TestSwitchOtherServerSelected(t *testing.T) {
	e := newEnv(t, Config{})
	c1, c2 := e.client(), e.client()
	c1.send(bcastFrame(c1.mac, newMsg(t, dhcpv4.MessageTypeDiscover, c1.mac)))
	offer := c1.recvDHCP(dhcpv4.MessageTypeOffer)
	// c1 picks another server's offer: no reply, and our offer lapses.
	req := newMsg(t, dhcpv4.MessageTypeRequest, c1.mac,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{198, 18, 0, 200})),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{198, 18, 0, 254})))
	c1.send(bcastFrame(c1.mac, req))
	for _, r := range c1.barrier() {
		if r.dhcp != nil {
			t.Errorf("reply to a REQUEST for another server: %v", r.dhcp)
		}
	}
	c2.send(bcastFrame(c2.mac, newMsg(t, dhcpv4.MessageTypeDiscover, c2.mac)))
	if got := c2.recvDHCP(dhcpv4.MessageTypeOffer); !got.dhcp.YourIPAddr.Equal(offer.dhcp.YourIPAddr) {
		t.Errorf("the forgotten offer's address %v went to %v", offer.dhcp.YourIPAddr, got.dhcp.YourIPAddr)
	}
}

func TestSwitchReleaseAndDecline(t *testing.T) {
	e := newEnv(t, Config{})
	c1, c2, c3 := e.client(), e.client(), e.client()
	ip1 := addr4(c1.dora().dhcp.YourIPAddr)

	rel := newMsg(t, dhcpv4.MessageTypeRelease, c1.mac, dhcpv4.WithClientIP(ip1.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testGW.AsSlice())))
	c1.send(clientFrame(e.srv.MAC(), c1.mac, ip1, testGW, rel))
	for _, r := range c1.barrier() {
		if r.dhcp != nil {
			t.Errorf("reply to RELEASE: %v", r.dhcp)
		}
	}
	// A released address stays its client's while others are free (RFC
	// 2131 4.3.1): a VM shut down cleanly comes back to its address.
	ip2 := addr4(c2.dora().dhcp.YourIPAddr)
	if ip2 == ip1 {
		t.Errorf("released %v went to the next guest while free addresses remain", ip1)
	}
	if ip := addr4(c1.dora().dhcp.YourIPAddr); ip != ip1 {
		t.Errorf("the releasing guest came back to %v, want %v", ip, ip1)
	}

	// c2 finds its address in use and declines it: c2 is offered
	// another; nobody gets the declined one.
	dec := newMsg(t, dhcpv4.MessageTypeDecline, c2.mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip2.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testGW.AsSlice())))
	c2.send(bcastFrame(c2.mac, dec))
	if ip := addr4(c2.dora().dhcp.YourIPAddr); ip == ip2 {
		t.Error("declined address offered again")
	}
	if ip := addr4(c3.dora().dhcp.YourIPAddr); ip == ip2 {
		t.Error("declined address offered to another guest")
	}
	if st := e.srv.Stats(); st.Releases != 1 || st.Declines != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestChaddrMustBeSource: leases are keyed by chaddr, but port security
// (--lock-mac, --max-macs-per-port 1) checks the Ethernet source. A guest
// naming another MAC in chaddr must not release, decline or renew that
// MAC's lease, nor take addresses for MACs it may not send from.
func TestChaddrMustBeSource(t *testing.T) {
	srv, err := New(Config{Gateway: testGateway, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	victim, rogue := porttest.MAC(1), porttest.MAC(2)
	ip := acquire(t, srv, victim)
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testGW.AsSlice()))
	forged := []*dhcpv4.DHCPv4{
		newMsg(t, dhcpv4.MessageTypeRelease, victim, sid, dhcpv4.WithClientIP(ip.AsSlice())),
		newMsg(t, dhcpv4.MessageTypeDecline, victim, sid, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice()))),
		// A renewal of an address the victim does not have.
		newMsg(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithClientIP(ip.Next().AsSlice())),
	}
	for i := 3; i < 13; i++ {
		forged = append(forged, newMsg(t, dhcpv4.MessageTypeDiscover, porttest.MAC(i)))
	}
	for _, d := range forged {
		if out := exchange(t, srv, bcastFrame(rogue, d)); len(out) != 0 {
			t.Errorf("%v naming %v sent by %v: %d replies", d.MessageType(), vswitch.MAC(d.ClientHWAddr), rogue, len(out))
		}
	}
	if ls := srv.Leases(); len(ls) != 1 || ls[0].MAC != victim || ls[0].IP != ip || ls[0].State != LeaseBound {
		t.Errorf("leases after forged messages: %+v, want only %v bound to %v", ls, victim, ip)
	}
	if st := srv.Stats(); st.ChaddrMismatch != uint64(len(forged)) || st.Dropped != uint64(len(forged)) {
		t.Errorf("chaddr_mismatch %d, dropped %d; want %d each", st.ChaddrMismatch, st.Dropped, len(forged))
	}
	// A renewal of the victim's binding may come from another MAC: a
	// guest with two interfaces on the segment sends it out of the one
	// its route picks. It was dropped, and the lease renewed only at T2.
	// It does not rename the victim's lease.
	renew := newMsg(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithClientIP(ip.AsSlice()), dhcpv4.WithOption(dhcpv4.OptHostName("renamed")))
	if out := exchange(t, srv, clientFrame(srv.MAC(), rogue, ip, testGW, renew)); len(out) != 1 {
		t.Errorf("a renewal of %v's binding from %v: %d replies, want its ACK", victim, rogue, len(out))
	}
	if ls := srv.Leases(); len(ls) != 1 || ls[0].Hostname == "renamed" {
		t.Errorf("a renewal from another MAC renamed the lease: %+v", ls)
	}
	// But not one that also names an address (which the REQUEST would
	// take instead of ciaddr, moving the victim's binding), nor one
	// broadcast, nor one naming a server: none is a renewal.
	moved := newMsg(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithClientIP(ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.Next().AsSlice())), dhcpv4.WithOption(dhcpv4.OptHostName("pwned")))
	named := newMsg(t, dhcpv4.MessageTypeRequest, victim, dhcpv4.WithClientIP(ip.AsSlice()), sid)
	for _, f := range [][]byte{
		clientFrame(srv.MAC(), rogue, ip, testGW, moved),
		clientFrame(srv.MAC(), rogue, ip, testGW, named),
		bcastFrame(rogue, renew),
	} {
		if out := exchange(t, srv, f); len(out) != 0 {
			t.Errorf("a REQUEST for %v from %v that is no plain renewal: %d replies", victim, rogue, len(out))
		}
	}
	if ls := srv.Leases(); len(ls) != 1 || ls[0].IP != ip || ls[0].Hostname == "pwned" {
		t.Errorf("leases after the forged renewals: %+v, want %v still on %v", ls, victim, ip)
	}
	// The victim itself still may.
	rel := newMsg(t, dhcpv4.MessageTypeRelease, victim, sid, dhcpv4.WithClientIP(ip.AsSlice()))
	exchange(t, srv, clientFrame(srv.MAC(), victim, ip, testGW, rel))
	if ls := srv.Leases(); len(ls) != 1 || ls[0].State != LeaseReleased {
		t.Errorf("the victim's own RELEASE: %+v", ls)
	}
}

// TestBackendCounters: the responder's counters reach ctl ports --json and
// /metrics through vswitch.BackendCounter, every one of Stats but the two
// gauges, by the same names and with the same values. (They were in
// Stats only, which nothing showed: a dropped chaddr mismatch was seen
// nowhere.)
func TestBackendCounters(t *testing.T) {
	srv, err := New(Config{Gateway: testGateway, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	acquire(t, srv, porttest.MAC(1))
	exchange(t, srv, bcastFrame(porttest.MAC(2), newMsg(t, dhcpv4.MessageTypeDiscover, porttest.MAC(3))))
	b, err := json.Marshal(srv.Stats())
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]uint64
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	delete(want, "leases_in_use")
	delete(want, "pool_size")
	if got := srv.BackendCounters(); !maps.Equal(got, want) || got["chaddr_mismatch"] != 1 {
		t.Errorf("backend counters %v, want %v (chaddr_mismatch 1)", got, want)
	}
}

// TestLeasesShowLapsedOffer: Leases shows a lapsed offer of a released
// address as released again, as the lease file has it; it went on showing
// "offered" with a past expiry until the next DISCOVER or REQUEST.
func TestLeasesShowLapsedOffer(t *testing.T) {
	clock := newClock()
	srv, err := New(Config{Gateway: testGateway, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	m := porttest.MAC(1)
	ip := acquire(t, srv, m)
	rel := newMsg(t, dhcpv4.MessageTypeRelease, m, dhcpv4.WithClientIP(ip.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testGW.AsSlice())))
	exchange(t, srv, clientFrame(srv.MAC(), m, ip, testGW, rel))
	exchange(t, srv, bcastFrame(m, newMsg(t, dhcpv4.MessageTypeDiscover, m)))
	if ls := srv.Leases(); len(ls) != 1 || ls[0].State != LeaseOffered {
		t.Fatalf("after the DISCOVER: %+v, want the address offered", ls)
	}
	clock.Add(offerHold + time.Second)
	if ls := srv.Leases(); len(ls) != 1 || ls[0].State != LeaseReleased || ls[0].IP != ip {
		t.Errorf("once the offer lapsed: %+v, want %v released again", ls, ip)
	}
}

// TestSwitchReleasedReusedWhenFull: a released address goes to another
// client once the pool has no other.
func TestSwitchReleasedReusedWhenFull(t *testing.T) {
	e := newEnv(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.10")}})
	c1, c2 := e.client(), e.client()
	ip1 := addr4(c1.dora().dhcp.YourIPAddr)
	rel := newMsg(t, dhcpv4.MessageTypeRelease, c1.mac, dhcpv4.WithClientIP(ip1.AsSlice()),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testGW.AsSlice())))
	c1.send(clientFrame(e.srv.MAC(), c1.mac, ip1, testGW, rel))
	c1.barrier()
	if ip := addr4(c2.dora().dhcp.YourIPAddr); ip != ip1 {
		t.Errorf("full pool: the next guest got %v, want the released %v", ip, ip1)
	}
}

func TestSwitchInform(t *testing.T) {
	e := newEnv(t, Config{DNS: []netip.Addr{ip4("198.18.0.53")}})
	c := e.client()
	inf := newMsg(t, dhcpv4.MessageTypeInform, c.mac, dhcpv4.WithClientIP(net.IP{198, 18, 0, 99}))
	c.send(clientFrame(broadcastMAC, c.mac, ip4("198.18.0.99"), limitedBroadcast, inf))
	ack := c.recvDHCP(dhcpv4.MessageTypeAck)
	if ack.dst != ip4("198.18.0.99") || ack.dstMAC != c.mac || len(ack.dhcp.DNS()) != 1 || ack.dhcp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Errorf("INFORM ACK to %v %v: %s", ack.dstMAC, ack.dst, ack.dhcp.Summary())
	}
	if ls := e.srv.Leases(); len(ls) != 0 {
		t.Errorf("INFORM created leases %+v", ls)
	}
}

func TestSwitchPoolExhausted(t *testing.T) {
	e := newEnv(t, Config{Range: Range{ip4("198.18.0.10"), ip4("198.18.0.10")}})
	c1, c2 := e.client(), e.client()
	c1.dora()
	c2.send(bcastFrame(c2.mac, newMsg(t, dhcpv4.MessageTypeDiscover, c2.mac)))
	for _, r := range c2.barrier() {
		if r.dhcp != nil && vswitch.MAC(r.dhcp.ClientHWAddr) == c2.mac {
			t.Errorf("offer from an exhausted pool: %v", r.dhcp)
		}
	}
	if st := e.srv.Stats(); st.PoolExhausted != 1 || st.PoolSize != 1 || st.LeasesInUse != 1 {
		t.Errorf("stats %+v", st)
	}
}

func arpRequestFrame(from vswitch.MAC, spa, tpa netip.Addr) []byte {
	return buildARP(broadcastMAC, arpPacket{op: arpRequest, sha: from, spa: spa, tpa: tpa})
}

func echoRequestFrame(dstMAC, srcMAC vswitch.MAC, src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	return icmpFrame(icmpEchoRequest, dstMAC, srcMAC, src, dst, id, seq, data)
}

func icmpFrame(typ uint8, dstMAC, srcMAC vswitch.MAC, src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	m := make([]byte, 8, 8+len(data))
	m[0] = typ
	binary.BigEndian.PutUint16(m[4:6], id)
	binary.BigEndian.PutUint16(m[6:8], seq)
	m = append(m, data...)
	binary.BigEndian.PutUint16(m[2:4], checksum(m, 0))
	f := make([]byte, 14+20+len(m))
	putEthernet(f, dstMAC, srcMAC, etherTypeIPv4)
	putIPv4(f[14:], 7, protoICMP, src, dst, len(m))
	copy(f[34:], m)
	return padFrame(f)
}

func isGatewayARPReply(r replyFrame) bool {
	return r.etherType == etherTypeARP && binary.BigEndian.Uint16(r.l4[6:8]) == arpReply
}

func isEchoReply(r replyFrame) bool {
	return r.proto == protoICMP && r.l4[0] == icmpEchoReply
}

func TestSwitchAnswerGateway(t *testing.T) {
	e := newEnv(t, Config{AnswerGateway: true})
	c := e.client()
	ip := addr4(c.dora().dhcp.YourIPAddr)

	c.send(arpRequestFrame(c.mac, ip, testGW))
	r, _ := c.recv(isGatewayARPReply)
	a, ok := parseARP(r.l4)
	if !ok || r.dstMAC != c.mac || r.srcMAC != e.srv.MAC() || a.sha != e.srv.MAC() || a.spa != testGW || a.tha != c.mac || a.tpa != ip {
		t.Errorf("ARP reply %+v in frame %v -> %v", a, r.srcMAC, r.dstMAC)
	}
	// An RFC 5227 probe for the gateway address is answered too.
	c.send(arpRequestFrame(c.mac, zeroIP, testGW))
	if r, _ := c.recv(isGatewayARPReply); r.dstMAC != c.mac {
		t.Errorf("probe answered to %v", r.dstMAC)
	}

	data := []byte("tapswitch ping payload")
	c.send(echoRequestFrame(e.srv.MAC(), c.mac, ip, testGW, 0x1234, 7, data))
	r, _ = c.recv(isEchoReply)
	if r.src != testGW || r.dst != ip || r.dstMAC != c.mac || binary.BigEndian.Uint16(r.l4[4:6]) != 0x1234 ||
		binary.BigEndian.Uint16(r.l4[6:8]) != 7 || !bytes.Equal(r.l4[8:], data) {
		t.Errorf("echo reply %v -> %v: % x", r.src, r.dst, r.l4)
	}

	// Not for the gateway: no answer.
	c.send(arpRequestFrame(c.mac, ip, ip4("198.18.0.99")))
	c.send(echoRequestFrame(e.srv.MAC(), c.mac, ip, ip4("198.18.0.99"), 1, 1, nil))
	for _, r := range c.barrier() {
		if isGatewayARPReply(r) || isEchoReply(r) {
			t.Errorf("answered for another address: %+v", r)
		}
	}
	if st := e.srv.Stats(); st.ARPReplies != 2 || st.EchoReplies != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSwitchGatewayNotAnswered(t *testing.T) {
	e := newEnv(t, Config{})
	c := e.client()
	ip := addr4(c.dora().dhcp.YourIPAddr)
	c.send(arpRequestFrame(c.mac, ip, testGW))
	c.send(echoRequestFrame(e.srv.MAC(), c.mac, ip, testGW, 1, 1, nil))
	for _, r := range c.barrier() {
		if r.dhcp == nil {
			t.Errorf("frame sent without AnswerGateway: %+v", r)
		}
	}
}

// TestSwitchAnnounce: with AnswerGateway the responder announces the
// gateway once at start, teaching the switch its MAC.
func TestSwitchAnnounce(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	p := porttest.New(porttest.Config{})
	if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Gateway: testGateway, AnswerGateway: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.AddPort(srv, vswitch.PortConfig{Kind: "dhcp", DHCPServer: true, DHCPAddr: testGateway.Addr()}); err != nil {
		t.Fatal(err)
	}
	f, ok := p.Recv(10 * time.Second)
	if !ok {
		t.Fatal("no announcement")
	}
	r, bad := checkFrame(f)
	a, _ := parseARP(r.l4)
	if bad != "" || r.etherType != etherTypeARP || r.dstMAC != broadcastMAC || a.op != arpRequest || a.sha != srv.MAC() || a.spa != testGW || a.tpa != testGW {
		t.Errorf("announcement %s %+v", bad, a)
	}
	learned := false
	for _, e := range sw.FDB() {
		learned = learned || e.MAC == srv.MAC()
	}
	if !learned {
		t.Error("the switch did not learn the responder's MAC")
	}
}

func TestServerClose(t *testing.T) {
	srv, err := New(Config{Gateway: testGateway})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 2048)}
		_, err := srv.ReadFrames(bufs, []int{0}, vswitch.Headroom)
		done <- err
	}()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errorsIsClosed(err) {
		t.Errorf("pending ReadFrames: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := srv.WriteFrames([][]byte{make([]byte, 100)}, vswitch.Headroom); !errorsIsClosed(err) {
		t.Errorf("WriteFrames after Close: %v", err)
	}
}

func errorsIsClosed(err error) bool { return errors.Is(err, net.ErrClosed) }

// TestServerDrops: frames the responder must not answer are counted as
// dropped, and as malformed if they do not parse.
func TestServerDrops(t *testing.T) {
	m1, m2, m7 := porttest.MAC(1), porttest.MAC(2), porttest.MAC(7)
	gwMAC := defaultMAC(testGW)
	msg := func(mt dhcpv4.MessageType, m vswitch.MAC, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		return newMsg(t, mt, m, mods...)
	}
	ipFrame := func(dstMAC vswitch.MAC, proto uint8, dst netip.Addr, payload []byte) []byte {
		f := make([]byte, 34+len(payload))
		putEthernet(f, dstMAC, m2, etherTypeIPv4)
		putIPv4(f[14:], 1, proto, ip4("198.18.0.11"), dst, len(payload))
		copy(f[34:], payload)
		return padFrame(f)
	}
	udp := func(dst netip.Addr, dstPort uint16, payload []byte) []byte {
		return buildUDP(gwMAC, m2, 1, ip4("198.18.0.11"), dst, portClient, dstPort, payload)
	}
	// from1 makes f come from MAC 1 (no checksum covers the Ethernet
	// header), for messages naming MAC 1 as the client.
	from1 := func(f []byte) []byte {
		f = append([]byte(nil), f...)
		copy(f[6:12], m1[:])
		return f
	}
	discover := bcastFrame(m2, msg(dhcpv4.MessageTypeDiscover, m2))
	mutate := func(f []byte, fn func(f []byte)) []byte {
		f = append([]byte(nil), f...)
		fn(f)
		return f
	}
	// fixIP recomputes the IPv4 header checksum after a mutation.
	fixIP := func(f []byte) {
		f[24], f[25] = 0, 0
		binary.BigEndian.PutUint16(f[24:26], checksum(f[14:34], 0))
	}
	dhcpPayload := func(d *dhcpv4.DHCPv4) []byte { return d.ToBytes() }
	echo := echoRequestFrame(gwMAC, m2, ip4("198.18.0.11"), testGW, 1, 1, []byte("x"))

	for _, tc := range []struct {
		name      string
		frame     []byte
		malformed bool
	}{
		{"runt", discover[:10], true},
		{"ethertype", porttest.Frame(porttest.Broadcast, m2, 0x88b5, nil), false},
		{"ip checksum", mutate(discover, func(f []byte) { f[22]-- }), true},
		{"fragment", mutate(discover, func(f []byte) { f[20] |= 0x20; fixIP(f) }), false},
		{"tcp", ipFrame(gwMAC, 6, testGW, make([]byte, 20)), false},
		{"udp not dhcp", udp(testGW, 53, make([]byte, 12)), false},
		{"udp checksum", mutate(discover, func(f []byte) { f[40]++ }), true},
		{"udp length", mutate(udp(testGW, 67, nil), func(f []byte) { f[38], f[39] = 0, 4 }), true},
		{"unicast to another server", udp(ip4("198.18.0.254"), 67, dhcpPayload(msg(dhcpv4.MessageTypeDiscover, m2))), false},
		{"not dhcp", udp(testGW, 67, []byte("hello")), true},
		{"bootreply", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDiscover, m2, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }))), true},
		{"long chaddr", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDiscover, m2, dhcpv4.WithHwAddr(make(net.HardwareAddr, 16))))), true},
		{"broadcast chaddr", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDiscover, porttest.Broadcast))), true},
		{"relayed", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDiscover, m2, dhcpv4.WithGatewayIP(net.IP{198, 19, 0, 1})))), false},
		{"request without address", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeRequest, m2))), true},
		{"release not held", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeRelease, m2, dhcpv4.WithClientIP(net.IP{198, 18, 0, 10})))), false},
		{"release other server", from1(udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeRelease, m1, dhcpv4.WithClientIP(net.IP{198, 18, 0, 10}),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{198, 18, 0, 254})))))), false},
		{"decline without address", from1(udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDecline, m1)))), false},
		{"chaddr not the source", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeRelease, m1, dhcpv4.WithClientIP(net.IP{198, 18, 0, 10})))), false},
		{"decline not held", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDecline, m2,
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{198, 18, 0, 10}))))), false},
		{"offer to port 67", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeOffer, m2))), false},
		{"no message type", udp(testGW, 67, dhcpPayload(msg(dhcpv4.MessageTypeDiscover, m2, dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType)))), false},
		{"arp short", porttest.Frame(porttest.Broadcast, m2, etherTypeARP, make([]byte, 20)), true},
		{"arp reply", buildARP(broadcastMAC, arpPacket{op: arpReply, sha: m2, spa: ip4("198.18.0.11"), tpa: testGW}), false},
		{"arp gateway claimed", arpRequestFrame(m2, testGW, testGW), false},
		{"icmp checksum", mutate(echo, func(f []byte) { f[36]++ }), true},
		{"icmp not echo", icmpFrame(13, gwMAC, m2, ip4("198.18.0.11"), testGW, 1, 1, nil), false}, // timestamp request
		{"icmp other MAC", mutate(echo, func(f []byte) { f[0] = 0x02; f[5] = 0x99 }), false},
		{"icmp other IP", echoRequestFrame(gwMAC, m2, ip4("198.18.0.11"), ip4("198.18.0.12"), 1, 1, nil), false},
	} {
		srv := fuzzServer(t)
		before := srv.Stats()
		out := exchange(t, srv, tc.frame)
		after := srv.Stats()
		if len(out) != 0 {
			t.Errorf("%s: %d replies", tc.name, len(out))
		}
		if after.Dropped != before.Dropped+1 {
			t.Errorf("%s: dropped %d -> %d", tc.name, before.Dropped, after.Dropped)
		}
		if got := after.Malformed - before.Malformed; got != map[bool]uint64{false: 0, true: 1}[tc.malformed] {
			t.Errorf("%s: malformed +%d, want malformed=%v", tc.name, got, tc.malformed)
		}
		srv.Close()
	}

	// A static client declining its address keeps it (and is logged).
	srv := fuzzServer(t)
	defer srv.Close()
	if ip := acquire(t, srv, m7); ip != ip4("198.18.0.70") {
		t.Fatalf("static client got %v", ip)
	}
	exchange(t, srv, bcastFrame(m7, msg(dhcpv4.MessageTypeDecline, m7, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{198, 18, 0, 70})))))
	if ip := acquire(t, srv, m7); ip != ip4("198.18.0.70") {
		t.Errorf("static client after DECLINE got %v", ip)
	}
}

func TestFlushAndLeasesJSON(t *testing.T) {
	path := t.TempDir() + "/leases"
	clock := newClock()
	srv := newFileServer(t, path, clock)
	defer srv.Close()
	ip := acquire(t, srv, porttest.MAC(1))
	clock.Add(10 * time.Minute)
	renew := newMsg(t, dhcpv4.MessageTypeRequest, porttest.MAC(1), dhcpv4.WithClientIP(ip.AsSlice()))
	exchange(t, srv, clientFrame(srv.MAC(), porttest.MAC(1), ip, testGW, renew))
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}
	ls, _ := ReadLeaseFile(path)
	if len(ls) != 1 || !ls[0].Expiry.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("after Flush: %+v", ls)
	}
	b, err := json.Marshal(srv.Leases())
	if err != nil || !bytes.Contains(b, []byte(`"mac":"02:00:00:00:00:01"`)) || !bytes.Contains(b, []byte(`"state":"bound"`)) {
		t.Errorf("JSON %s, %v", b, err)
	}
	if l := srv.Leases()[0]; l.State != LeaseBound || !l.Expiry.Equal(clock.Now().Add(time.Hour)) {
		t.Errorf("lease %+v, want bound for an hour", l)
	}
}

// TestReplyQueueFull: a reply the full queue refuses is counted in
// QueueFull and not among the replies; one that is queued is counted by the
// time a reader can take it.
func TestReplyQueueFull(t *testing.T) {
	srv, err := New(Config{Gateway: testGateway, QueueLen: 1, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var frames [][]byte
	for i := range 3 {
		m := porttest.MAC(i + 1)
		frames = append(frames, bcastFrame(m, newMsg(t, dhcpv4.MessageTypeDiscover, m)))
	}
	if n, err := srv.WriteFrames(frames, 0); n != 3 || err != nil {
		t.Fatalf("WriteFrames: %d, %v", n, err)
	}
	if st := srv.Stats(); st.Discovers != 3 || st.Offers != 1 || st.QueueFull != 2 {
		t.Errorf("after 3 DISCOVERs into a queue of 1: discovers %d, offers %d, queue full %d; want 3, 1, 2",
			st.Discovers, st.Offers, st.QueueFull)
	}
	bufs, sizes := [][]byte{make([]byte, 1600)}, []int{0}
	if n, err := srv.ReadFrames(bufs, sizes, 0); n != 1 || err != nil {
		t.Fatalf("ReadFrames: %d, %v", n, err)
	}
	if r, bad := checkFrame(bufs[0][:sizes[0]]); bad != "" || r.dhcp == nil || r.dhcp.MessageType() != dhcpv4.MessageTypeOffer {
		t.Errorf("queued reply: %q %v", bad, r.dhcp)
	}
}

// TestDeclineForOtherServer: a DECLINE naming another server is that
// server's business: the binding here stays, and its address is not held
// out of the pool.
func TestDeclineForOtherServer(t *testing.T) {
	srv, err := New(Config{Gateway: testGateway, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := porttest.MAC(1)
	ip := acquire(t, srv, c)
	d := newMsg(t, dhcpv4.MessageTypeDecline, c,
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{198, 18, 0, 254})),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())))
	exchange(t, srv, bcastFrame(c, d))
	if ls := srv.Leases(); len(ls) != 1 || ls[0].IP != ip || ls[0].State != LeaseBound {
		t.Errorf("leases after a DECLINE for another server: %+v, want %v still bound to %v", ls, c, ip)
	}
	if st := srv.Stats(); st.Dropped != 1 {
		t.Errorf("dropped %d, want 1", st.Dropped)
	}
}
