package offload

import "encoding/binary"

const (
	protoUDP      = 17
	udpHdrLen     = 8
	udpCsumOffset = 6

	// MaxCoalesced is the most datagrams a Coalescer merges into one
	// super-frame; Linux refuses UDP super-frames of more than
	// UDP_MAX_SEGMENTS (128) from a tap.
	MaxCoalesced = 64
)

// Coalescer merges consecutive UDP datagrams of one flow, each a frame
// with a partial checksum, into one UDP segmentation super-frame
// (GSOUDPL4): the receive side of GSO, as Linux's UDP GRO does it. A port
// that takes such super-frames (a tap, whose kernel splits them again
// where the datagrams are delivered) then costs one write and one pass of
// its kernel's IP layer for the whole run instead of one per datagram.
//
// The datagrams of a super-frame must be untagged IPv4 or IPv6 UDP
// datagrams (no IPv4 fragment, no IPv6 extension header) whose Ethernet,
// IP and UDP headers are the same but for the lengths, the IPv4
// identification and header checksum, and whose payloads are all as long
// as the first's, but for the last, which may be shorter. IPv4
// identifications must follow each other (the first's plus one, plus
// two...), since that is what the receiving kernel gives the datagrams
// it splits off. Every datagram must carry NeedsCsum with its checksum
// field at the UDP checksum, as a sender's stack leaves it on a tap with
// checksum offload (its field holding the pseudo-header sum), and an IPv4
// datagram a valid header checksum: the super-frame's checksum is partial
// too, so no checksum is trusted that was not already left to the
// receiver, and every datagram split off it is the one that was merged.
//
// Use: Start with the first datagram, Add the following ones while it
// returns true, then Finish if Merged is at least 2. A Coalescer is
// reusable and not safe for concurrent use.
type Coalescer struct {
	buf   []byte // the super-frame from buf[0], once a second datagram joined
	first []byte // the first datagram, until then
	n     int    // datagrams merged
	size  int    // length of the super-frame in buf
	l4    int    // offset of the UDP header
	v6    bool
	seg   int    // payload length of the first datagram (the gso_size)
	id    uint16 // IPv4 identification of the first datagram
	short bool   // the last datagram was shorter than seg: none may follow
}

// NewCoalescer returns a Coalescer that builds super-frames in buf, which
// must have room for the longest: an Ethernet header and 65535 bytes of IP.
func NewCoalescer(buf []byte) *Coalescer { return &Coalescer{buf: buf} }

// Start begins a super-frame with the datagram frame, whose virtio-net
// header is h, keeping a reference to frame until the next Add. It reports
// whether frame can begin one.
func (c *Coalescer) Start(h Hdr, frame []byte) bool {
	c.n, c.first = 0, nil
	l4, v6, ok := udpLayout(h, frame)
	if !ok {
		return false
	}
	c.l4, c.v6 = l4, v6
	c.seg = len(frame) - l4 - udpHdrLen
	if !v6 {
		c.id = binary.BigEndian.Uint16(frame[ethHdrLen+4:])
	}
	c.first, c.n, c.size, c.short = frame, 1, len(frame), false
	return true
}

// Merged is the number of datagrams in the super-frame so far.
func (c *Coalescer) Merged() int { return c.n }

// Add appends the datagram frame, whose header is h, to the super-frame if
// it continues the flow (see Coalescer) and the super-frame has room.
func (c *Coalescer) Add(h Hdr, frame []byte) bool {
	if c.n == 0 || c.short || c.n == MaxCoalesced {
		return false
	}
	l4, v6, ok := udpLayout(h, frame)
	if !ok || l4 != c.l4 || v6 != c.v6 {
		return false
	}
	payload := len(frame) - l4 - udpHdrLen
	if payload > c.seg || c.size+payload-ethHdrLen > maxIPLen {
		return false
	}
	first := c.first
	if c.n > 1 {
		first = c.buf
	}
	if !sameFlow(first, frame, l4, v6) {
		return false
	}
	if !v6 && binary.BigEndian.Uint16(frame[ethHdrLen+4:]) != c.id+uint16(c.n) {
		return false
	}
	if c.n == 1 {
		copy(c.buf, c.first)
		c.first = nil
	}
	c.size += copy(c.buf[c.size:], frame[l4+udpHdrLen:])
	c.n++
	c.short = payload < c.seg
	return true
}

// Finish completes the super-frame of at least two datagrams: the IP and
// UDP lengths cover every payload, the IPv4 header checksum is
// recomputed, and the UDP checksum field holds the pseudo-header sum for
// the whole length, as NeedsCsum asks. It returns the virtio-net header
// and the super-frame, which lives in the Coalescer's buffer until the
// next Start.
func (c *Coalescer) Finish() (Hdr, []byte) {
	be := binary.BigEndian
	f := c.buf[:c.size]
	ip := f[ethHdrLen:c.l4]
	udpLen := c.size - c.l4
	var pseudo uint16
	if c.v6 {
		be.PutUint16(ip[4:], uint16(udpLen))
		pseudo = sum(ip[8:40], protoUDP+uint64(udpLen))
	} else {
		be.PutUint16(ip[2:], uint16(c.size-ethHdrLen))
		ip[10], ip[11] = 0, 0
		be.PutUint16(ip[10:], ^sum(ip, 0))
		pseudo = sum(ip[12:20], protoUDP+uint64(udpLen))
	}
	udp := f[c.l4:]
	be.PutUint16(udp[4:], uint16(udpLen))
	be.PutUint16(udp[udpCsumOffset:], pseudo)
	h := Hdr{
		Flags:      NeedsCsum,
		GSOType:    GSOUDPL4,
		HdrLen:     uint16(c.l4 + udpHdrLen),
		GSOSize:    uint16(c.seg),
		CsumStart:  uint16(c.l4),
		CsumOffset: udpCsumOffset,
	}
	return h, f
}

// udpLayout checks that frame is a datagram a super-frame can carry (see
// Coalescer) and returns the offset of its UDP header.
func udpLayout(h Hdr, frame []byte) (l4 int, v6 bool, ok bool) {
	if h.Flags != NeedsCsum || h.GSOType != GSONone || h.CsumOffset != udpCsumOffset {
		return 0, false, false
	}
	be := binary.BigEndian
	if len(frame) < ethHdrLen+ipv4MinLen+udpHdrLen {
		return 0, false, false
	}
	l4, v6, pseudo, ok := ipLayout(frame, protoUDP)
	if !ok {
		return 0, false, false
	}
	if int(h.CsumStart) != l4 || len(frame) <= l4+udpHdrLen {
		return 0, false, false
	}
	udpLen := len(frame) - l4
	if int(be.Uint16(frame[l4+4:])) != udpLen ||
		be.Uint16(frame[l4+udpCsumOffset:]) != sum(pseudo, protoUDP+uint64(udpLen)) {
		return 0, false, false
	}
	return l4, v6, true
}

// ipLayout checks that frame is an untagged IPv4 or IPv6 packet of protocol
// proto that a super-frame can carry: no IPv4 fragment, no IPv6 extension
// header, IP lengths that end where the frame does (no Ethernet padding),
// a valid IPv4 header checksum. It returns the offset of the L4 header and
// the addresses of the pseudo-header. frame must hold an Ethernet header
// and 20 bytes more.
func ipLayout(frame []byte, proto uint8) (l4 int, v6 bool, pseudo []byte, ok bool) {
	be := binary.BigEndian
	ip := frame[ethHdrLen:]
	switch be.Uint16(frame[12:]) {
	case etherTypeIPv4:
		ihl := int(ip[0]&0x0f) * 4
		if ip[0]>>4 != 4 || ihl < ipv4MinLen || len(ip) < ihl || ip[9] != proto ||
			be.Uint16(ip[6:])&(ipv4FlagMF|ipv4FragOffMask) != 0 ||
			int(be.Uint16(ip[2:])) != len(ip) || sum(ip[:ihl], 0) != 0xffff {
			return 0, false, nil, false
		}
		return ethHdrLen + ihl, false, ip[12:20], true
	case etherTypeIPv6:
		if len(ip) < ipv6HdrLen || ip[0]>>4 != 6 || ip[6] != proto ||
			int(be.Uint16(ip[4:])) != len(ip)-ipv6HdrLen {
			return 0, false, nil, false
		}
		return ethHdrLen + ipv6HdrLen, true, ip[8:40], true
	}
	return 0, false, nil, false
}

// sameFlow reports whether the datagrams a and b, both laid out by
// udpLayout with their UDP header at l4, have the same Ethernet, IP and
// UDP headers but for the fields a super-frame may change.
func sameFlow(a, b []byte, l4 int, v6 bool) bool {
	if string(a[:ethHdrLen]) != string(b[:ethHdrLen]) ||
		string(a[l4:l4+4]) != string(b[l4:l4+4]) { // the UDP ports
		return false
	}
	ipa, ipb := a[ethHdrLen:l4], b[ethHdrLen:l4]
	if v6 {
		// version, traffic class, flow label; next header, hop limit,
		// addresses: all but the payload length.
		return string(ipa[:4]) == string(ipb[:4]) && string(ipa[6:]) == string(ipb[6:])
	}
	// version, header length, TOS; flags and fragment offset, TTL,
	// protocol; addresses and options: all but the total length, the
	// identification and the header checksum.
	return string(ipa[:2]) == string(ipb[:2]) && string(ipa[6:10]) == string(ipb[6:10]) &&
		string(ipa[12:]) == string(ipb[12:])
}
