package dhcp

import (
	"encoding/binary"
	"net/netip"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Wire constants for the few protocols the responder speaks. Every parser
// below checks lengths before it reads a field; a frame that fails a check
// is counted by the caller, never a panic.
const (
	etherHeaderLen = 14
	// minFrameLen is the shortest Ethernet frame without FCS (64 - 4);
	// replies are padded to it, as a NIC would.
	minFrameLen = 60

	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806

	ipv4HeaderLen = 20
	protoICMP     = 1
	protoUDP      = 17
	// replyTTL is the TTL of every IPv4 packet the responder sends.
	replyTTL = 64

	udpHeaderLen = 8
	// portServer and portClient are the BOOTP/DHCP ports (RFC 2131 §4.1).
	portServer = 67
	portClient = 68

	// arpLen is the length of an Ethernet/IPv4 ARP packet (RFC 826).
	arpLen        = 28
	arpRequest    = 1
	arpReply      = 2
	arpHWEthernet = 1

	icmpEchoReply   = 0
	icmpEchoRequest = 8
)

var broadcastMAC = vswitch.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// ipv4Packet is a parsed IPv4 packet; payload aliases the frame.
type ipv4Packet struct {
	src, dst netip.Addr
	proto    uint8
	payload  []byte
}

// parseIPv4 parses the IPv4 packet in b (the Ethernet payload). ok is false
// for a packet that is malformed (bad version, length or header checksum).
// frag is true for a fragment, which the responder never reassembles.
func parseIPv4(b []byte) (p ipv4Packet, frag, ok bool) {
	if len(b) < ipv4HeaderLen || b[0]>>4 != 4 {
		return p, false, false
	}
	ihl := int(b[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if ihl < ipv4HeaderLen || total < ihl || total > len(b) {
		return p, false, false
	}
	if checksum(b[:ihl], 0) != 0 {
		return p, false, false
	}
	// More-fragments set, or a non-zero fragment offset.
	frag = b[6]&0x20 != 0 || binary.BigEndian.Uint16(b[6:8])&0x1fff != 0
	p.src = netip.AddrFrom4([4]byte(b[12:16]))
	p.dst = netip.AddrFrom4([4]byte(b[16:20]))
	p.proto = b[9]
	p.payload = b[ihl:total] // Ethernet padding after total is dropped here
	return p, frag, true
}

// parseUDP parses the UDP datagram in p.payload, verifying its checksum
// when the sender computed one (zero means none, RFC 768).
func parseUDP(p ipv4Packet) (srcPort, dstPort uint16, payload []byte, ok bool) {
	b := p.payload
	if len(b) < udpHeaderLen {
		return 0, 0, nil, false
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n < udpHeaderLen || n > len(b) {
		return 0, 0, nil, false
	}
	if binary.BigEndian.Uint16(b[6:8]) != 0 && checksum(b[:n], pseudoHeaderSum(p.src, p.dst, protoUDP, n)) != 0 {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4]), b[udpHeaderLen:n], true
}

// checksum returns the Internet checksum (RFC 1071) of b, starting from the
// partial sum initial. Over data that carries its own correct checksum the
// result is 0.
func checksum(b []byte, initial uint32) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// pseudoHeaderSum is the partial checksum of the IPv4 pseudo-header that
// UDP and TCP checksums cover.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	s, d := src.As4(), dst.As4()
	return uint32(s[0])<<8 + uint32(s[1]) + uint32(s[2])<<8 + uint32(s[3]) +
		uint32(d[0])<<8 + uint32(d[1]) + uint32(d[2])<<8 + uint32(d[3]) +
		uint32(proto) + uint32(length)
}

// putEthernet writes an Ethernet header into b[:14].
func putEthernet(b []byte, dst, src vswitch.MAC, etherType uint16) {
	copy(b[0:6], dst[:])
	copy(b[6:12], src[:])
	binary.BigEndian.PutUint16(b[12:14], etherType)
}

// putIPv4 writes a 20-byte IPv4 header, checksum included, into b[:20] for
// a packet whose payload is payloadLen bytes.
func putIPv4(b []byte, id uint16, proto uint8, src, dst netip.Addr, payloadLen int) {
	b[0] = 0x45 // version 4, 5 words, no options
	b[1] = 0
	binary.BigEndian.PutUint16(b[2:4], uint16(ipv4HeaderLen+payloadLen))
	binary.BigEndian.PutUint16(b[4:6], id)
	b[6], b[7] = 0, 0 // may fragment, offset 0
	b[8] = replyTTL
	b[9] = proto
	b[10], b[11] = 0, 0
	s, d := src.As4(), dst.As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], checksum(b[:ipv4HeaderLen], 0))
}

// padFrame extends f with zeros to the Ethernet minimum.
func padFrame(f []byte) []byte {
	for len(f) < minFrameLen {
		f = append(f, 0)
	}
	return f
}

// buildUDP returns a whole Ethernet/IPv4/UDP frame carrying payload, with
// both the IPv4 header checksum and the UDP checksum computed (busybox
// udhcpc verifies the latter when it is non-zero).
func buildUDP(dstMAC, srcMAC vswitch.MAC, id uint16, src, dst netip.Addr, srcPort, dstPort uint16, payload []byte) []byte {
	n := udpHeaderLen + len(payload)
	f := make([]byte, etherHeaderLen+ipv4HeaderLen+n, max(minFrameLen, etherHeaderLen+ipv4HeaderLen+n))
	putEthernet(f, dstMAC, srcMAC, etherTypeIPv4)
	putIPv4(f[etherHeaderLen:], id, protoUDP, src, dst, n)
	u := f[etherHeaderLen+ipv4HeaderLen:]
	binary.BigEndian.PutUint16(u[0:2], srcPort)
	binary.BigEndian.PutUint16(u[2:4], dstPort)
	binary.BigEndian.PutUint16(u[4:6], uint16(n))
	copy(u[udpHeaderLen:], payload)
	c := checksum(u, pseudoHeaderSum(src, dst, protoUDP, n))
	if c == 0 {
		c = 0xffff // RFC 768: a computed zero is sent as all ones
	}
	binary.BigEndian.PutUint16(u[6:8], c)
	return padFrame(f)
}

// arpPacket is a parsed Ethernet/IPv4 ARP packet.
type arpPacket struct {
	op       uint16
	sha, tha vswitch.MAC
	spa, tpa netip.Addr
}

// parseARP parses the Ethernet/IPv4 ARP packet in b (the Ethernet payload).
func parseARP(b []byte) (a arpPacket, ok bool) {
	if len(b) < arpLen ||
		binary.BigEndian.Uint16(b[0:2]) != arpHWEthernet ||
		binary.BigEndian.Uint16(b[2:4]) != etherTypeIPv4 ||
		b[4] != 6 || b[5] != 4 {
		return a, false
	}
	a.op = binary.BigEndian.Uint16(b[6:8])
	a.sha = vswitch.MAC(b[8:14])
	a.spa = netip.AddrFrom4([4]byte(b[14:18]))
	a.tha = vswitch.MAC(b[18:24])
	a.tpa = netip.AddrFrom4([4]byte(b[24:28]))
	return a, true
}

// buildARP returns an Ethernet frame carrying one ARP packet.
func buildARP(dst vswitch.MAC, a arpPacket) []byte {
	f := make([]byte, etherHeaderLen+arpLen, minFrameLen)
	putEthernet(f, dst, a.sha, etherTypeARP)
	b := f[etherHeaderLen:]
	binary.BigEndian.PutUint16(b[0:2], arpHWEthernet)
	binary.BigEndian.PutUint16(b[2:4], etherTypeIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:8], a.op)
	copy(b[8:14], a.sha[:])
	spa, tpa := a.spa.As4(), a.tpa.As4()
	copy(b[14:18], spa[:])
	copy(b[18:24], a.tha[:])
	copy(b[24:28], tpa[:])
	return padFrame(f)
}

// buildEchoReply returns the ICMP echo reply to the echo request icmp (the
// whole ICMP message, already checksum-verified), from src to dst.
func buildEchoReply(dstMAC, srcMAC vswitch.MAC, id uint16, src, dst netip.Addr, icmp []byte) []byte {
	n := len(icmp)
	f := make([]byte, etherHeaderLen+ipv4HeaderLen+n, max(minFrameLen, etherHeaderLen+ipv4HeaderLen+n))
	putEthernet(f, dstMAC, srcMAC, etherTypeIPv4)
	putIPv4(f[etherHeaderLen:], id, protoICMP, src, dst, n)
	m := f[etherHeaderLen+ipv4HeaderLen:]
	copy(m, icmp)
	m[0], m[1] = icmpEchoReply, 0
	m[2], m[3] = 0, 0
	binary.BigEndian.PutUint16(m[2:4], checksum(m, 0))
	return padFrame(f)
}
