package dhcp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// fuzzServer returns a responder in a state that reaches most paths: a
// tiny pool (exhaustion), a static lease, AnswerGateway, and MAC 1 bound to
// 198.18.0.10.
func fuzzServer(t testing.TB) *Server {
	srv, err := New(Config{
		Gateway:       testGateway,
		Range:         Range{ip4("198.18.0.10"), ip4("198.18.0.12")},
		Static:        []StaticLease{{MAC: porttest.MAC(7), IP: ip4("198.18.0.70")}},
		DNS:           []netip.Addr{ip4("198.18.0.53")},
		Search:        []string{"vm.example"},
		MTU:           1500,
		AnswerGateway: true,
		Now:           newClock().Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	<-srv.out // the gateway announcement
	if ip := acquire(t, srv, porttest.MAC(1)); ip != ip4("198.18.0.10") {
		t.Fatalf("setup: MAC 1 got %v", ip)
	}
	return srv
}

// FuzzServer feeds arbitrary frames to WriteFrames: nothing may panic, and
// every reply must be a well-formed Ethernet/IPv4/UDP DHCP reply, ARP
// reply or ICMP echo reply (checkFrame verifies checksums independently).
func FuzzServer(f *testing.F) {
	m1, m2, m7 := porttest.MAC(1), porttest.MAC(2), porttest.MAC(7)
	gwMAC := defaultMAC(testGW)
	msg := func(mt dhcpv4.MessageType, m vswitch.MAC, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		return newMsg(f, mt, m, mods...)
	}
	reqIP := func(ip string) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip4(ip).AsSlice()))
	}
	sid := dhcpv4.WithOption(dhcpv4.OptServerIdentifier(testGW.AsSlice()))
	discover := bcastFrame(m2, msg(dhcpv4.MessageTypeDiscover, m2))

	// DISCOVER from a new client, broadcast: OFFER of 198.18.0.11.
	f.Add(discover)
	// DISCOVER with the broadcast flag, a dhcpcd-style client identifier
	// and a requested address: broadcast OFFER.
	f.Add(bcastFrame(m2, msg(dhcpv4.MessageTypeDiscover, m2, dhcpv4.WithBroadcast(true),
		dhcpv4.WithOption(dhcpv4.OptClientIdentifier([]byte{0xff, 0, 0, 0, 1, 0, 1})), reqIP("198.18.0.12"))))
	// DISCOVER from the static MAC: OFFER of its static address.
	f.Add(bcastFrame(m7, msg(dhcpv4.MessageTypeDiscover, m7)))
	// REQUEST, SELECTING: server identifier and requested address.
	f.Add(bcastFrame(m2, msg(dhcpv4.MessageTypeRequest, m2, sid, reqIP("198.18.0.11"), dhcpv4.WithOption(dhcpv4.OptHostName("vm two")))))
	// REQUEST, RENEWING: unicast to the responder, ciaddr set: ACK.
	f.Add(clientFrame(gwMAC, m1, ip4("198.18.0.10"), testGW, msg(dhcpv4.MessageTypeRequest, m1, dhcpv4.WithClientIP(net.IP{198, 18, 0, 10}))))
	// REQUEST, INIT-REBOOT for another network: NAK.
	f.Add(bcastFrame(m2, msg(dhcpv4.MessageTypeRequest, m2, reqIP("10.0.0.5"))))
	// REQUEST naming another server: silence.
	f.Add(bcastFrame(m2, msg(dhcpv4.MessageTypeRequest, m2, reqIP("198.18.0.11"),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IP{198, 18, 0, 254})))))
	// RELEASE of MAC 1's address.
	f.Add(clientFrame(gwMAC, m1, ip4("198.18.0.10"), testGW, msg(dhcpv4.MessageTypeRelease, m1, sid, dhcpv4.WithClientIP(net.IP{198, 18, 0, 10}))))
	// RELEASE of MAC 1's address sent by MAC 2: dropped.
	f.Add(clientFrame(gwMAC, m2, ip4("198.18.0.10"), testGW, msg(dhcpv4.MessageTypeRelease, m1, sid, dhcpv4.WithClientIP(net.IP{198, 18, 0, 10}))))
	// DECLINE of MAC 1's address.
	f.Add(bcastFrame(m1, msg(dhcpv4.MessageTypeDecline, m1, sid, reqIP("198.18.0.10"))))
	// INFORM: ACK without lease, unicast to ciaddr.
	f.Add(clientFrame(gwMAC, m2, ip4("198.18.0.99"), testGW, msg(dhcpv4.MessageTypeInform, m2, dhcpv4.WithClientIP(net.IP{198, 18, 0, 99}))))
	// ARP request for the gateway: ARP reply.
	f.Add(arpRequestFrame(m2, ip4("198.18.0.11"), testGW))
	// ICMP echo request to the gateway: echo reply.
	f.Add(echoRequestFrame(gwMAC, m1, ip4("198.18.0.10"), testGW, 1, 2, []byte("ping")))
	// DISCOVER without UDP checksum (zero is allowed over IPv4).
	noSum := append([]byte(nil), discover...)
	noSum[etherHeaderLen+ipv4HeaderLen+6], noSum[etherHeaderLen+ipv4HeaderLen+7] = 0, 0
	f.Add(noSum)
	// DISCOVER whose DHCP message is cut in the middle of its options
	// (headers consistent): dropped as malformed.
	cut := msg(dhcpv4.MessageTypeDiscover, m2).ToBytes()[:240+3]
	f.Add(buildUDP(broadcastMAC, m2, 1, zeroIP, limitedBroadcast, portClient, portServer, cut))
	// DISCOVER with the more-fragments flag (header checksum fixed): not
	// reassembled, dropped.
	frag := append([]byte(nil), discover...)
	frag[etherHeaderLen+6] |= 0x20
	frag[etherHeaderLen+10], frag[etherHeaderLen+11] = 0, 0
	binary.BigEndian.PutUint16(frag[etherHeaderLen+10:], checksum(frag[etherHeaderLen:etherHeaderLen+ipv4HeaderLen], 0))
	f.Add(frag)
	// VLAN-tagged frame and a bare Ethernet header: dropped.
	f.Add(append(append(append([]byte(nil), discover[:12]...), 0x81, 0x00, 0x00, 0x05), discover[12:]...))
	f.Add(discover[:etherHeaderLen])

	f.Fuzz(func(t *testing.T, frame []byte) {
		srv := fuzzServer(t)
		defer srv.Close()
		for _, out := range exchange(t, srv, frame) {
			if _, bad := checkFrame(out); bad != "" {
				t.Fatalf("malformed reply (%s): % x", bad, out)
			}
		}
		// The server still works after whatever it was fed.
		if out := replies(t, exchange(t, srv, discover)); len(out) > 1 {
			t.Fatalf("%d replies to one DISCOVER", len(out))
		}
	})
}
