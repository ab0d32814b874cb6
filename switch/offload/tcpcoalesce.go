package offload

import "encoding/binary"

const (
	tcpFlagACK = 0x10
	ipv4FlagDF = 0x4000
)

// TCPCoalescer merges consecutive TCP segments of one flow into one TCP
// super-frame (GSOTCPv4 or GSOTCPv6): the receive side of TSO, as Linux's
// TCP GRO does it. A port that takes super-frames (a tap with offloads)
// then costs one write and one pass of its kernel's IP and TCP layers for
// the whole run instead of one per segment. This is what lets a VM whose
// transport carries no virtio-net header (QEMU's stream and datagram
// netdevs send one MTU-sized frame at a time) reach a tap at more than
// the rate its kernel takes single frames.
//
// The segments of a super-frame must be untagged IPv4 or IPv6 TCP segments
// (no IPv4 fragment, no IPv6 extension header) that carry data, have ACK
// set and no other flag but PSH, and whose Ethernet, IP and TCP headers
// are the same but for the lengths, the IPv4 identification and header
// checksum, the sequence number, PSH and the TCP checksum. Each sequence
// number must follow on from the data before it; the payloads must all be
// as long as the first's (the gso_size) but for the last, which may be
// shorter; PSH ends a super-frame and is kept on it. An IPv4 segment
// without DF must carry the first's identification plus its place in the
// run, as the receiving kernel numbers the segments it splits off again;
// with DF the identification means nothing (RFC 6864) and any is taken.
//
// The super-frame's checksum is partial (NeedsCsum), which the receiving
// kernel takes as verified, so every segment's checksum is checked before
// it joins: one with NeedsCsum must hold the pseudo-header sum in its
// checksum field (the form a sender's stack leaves on a tap with checksum
// offload), one with DataValid was checked by the kernel it came from, and
// any other must carry a correct TCP checksum, computed here. An IPv4
// header checksum is always checked. A segment that fails goes on alone,
// and its receiver drops it as it would have without coalescing.
//
// Use: Start with the first segment, Add the following ones while it
// returns true, then Finish if Merged is at least 2. A TCPCoalescer is
// reusable and not safe for concurrent use.
type TCPCoalescer struct {
	buf   []byte // the super-frame from buf[0], once a second segment joined
	first []byte // the first segment, until then
	n     int    // segments merged
	size  int    // length of the super-frame in buf
	l4    int    // offset of the TCP header
	data  int    // offset of the payload
	v6    bool
	df    bool   // IPv4 with DF set: identifications are not checked
	seg   int    // payload length of the first segment (the gso_size)
	id    uint16 // IPv4 identification of the first segment
	seq   uint32 // the sequence number the next segment must carry
	last  bool   // the last segment was short or had PSH: none may follow
}

// NewTCPCoalescer returns a TCPCoalescer that builds super-frames in buf,
// which must have room for the longest: an Ethernet header and 65535 bytes
// of IP.
func NewTCPCoalescer(buf []byte) *TCPCoalescer { return &TCPCoalescer{buf: buf} }

// Start begins a super-frame with the segment frame, whose virtio-net
// header is h, keeping a reference to frame until the next Add. It reports
// whether frame can begin one.
func (c *TCPCoalescer) Start(h Hdr, frame []byte) bool {
	c.n, c.first = 0, nil
	l4, data, v6, ok := tcpLayout(h, frame)
	if !ok || frame[l4+tcpFlagsOffset]&tcpFlagPSH != 0 {
		return false
	}
	be := binary.BigEndian
	c.l4, c.data, c.v6 = l4, data, v6
	c.seg = len(frame) - data
	c.df = !v6 && be.Uint16(frame[ethHdrLen+6:])&ipv4FlagDF != 0
	if !v6 {
		c.id = be.Uint16(frame[ethHdrLen+4:])
	}
	c.seq = be.Uint32(frame[l4+4:]) + uint32(c.seg)
	c.first, c.n, c.size, c.last = frame, 1, len(frame), false
	return true
}

// Merged is the number of segments in the super-frame so far.
func (c *TCPCoalescer) Merged() int { return c.n }

// Add appends the segment frame, whose header is h, to the super-frame if
// it continues the flow (see TCPCoalescer) and the super-frame has room.
func (c *TCPCoalescer) Add(h Hdr, frame []byte) bool {
	if c.n == 0 || c.last || c.n == MaxCoalesced {
		return false
	}
	l4, data, v6, ok := tcpLayout(h, frame)
	if !ok || l4 != c.l4 || data != c.data || v6 != c.v6 {
		return false
	}
	payload := len(frame) - data
	if payload > c.seg || c.size+payload-ethHdrLen > maxIPLen {
		return false
	}
	be := binary.BigEndian
	if be.Uint32(frame[l4+4:]) != c.seq {
		return false
	}
	first := c.first
	if c.n > 1 {
		first = c.buf
	}
	if !sameTCPFlow(first, frame, l4, data, v6) {
		return false
	}
	if !v6 && !c.df && be.Uint16(frame[ethHdrLen+4:]) != c.id+uint16(c.n) {
		return false
	}
	if c.n == 1 {
		copy(c.buf, c.first)
		c.first = nil
	}
	c.size += copy(c.buf[c.size:], frame[data:])
	c.n++
	c.seq += uint32(payload)
	psh := frame[l4+tcpFlagsOffset] & tcpFlagPSH
	c.buf[l4+tcpFlagsOffset] |= psh
	c.last = payload < c.seg || psh != 0
	return true
}

// Finish completes the super-frame of at least two segments: the IP length
// covers every payload, the IPv4 header checksum is recomputed, and the
// TCP checksum field holds the pseudo-header sum for the whole length, as
// NeedsCsum asks. It returns the virtio-net header and the super-frame,
// which lives in the TCPCoalescer's buffer until the next Start.
func (c *TCPCoalescer) Finish() (Hdr, []byte) {
	be := binary.BigEndian
	f := c.buf[:c.size]
	ip := f[ethHdrLen:c.l4]
	tcpLen := uint64(c.size - c.l4)
	var pseudo uint16
	gso := GSOTCPv4
	if c.v6 {
		be.PutUint16(ip[4:], uint16(tcpLen))
		pseudo = sum(ip[8:40], protoTCP+tcpLen)
		gso = GSOTCPv6
	} else {
		be.PutUint16(ip[2:], uint16(c.size-ethHdrLen))
		ip[10], ip[11] = 0, 0
		be.PutUint16(ip[10:], ^sum(ip, 0))
		pseudo = sum(ip[12:20], protoTCP+tcpLen)
	}
	be.PutUint16(f[c.l4+tcpCsumOffset:], pseudo)
	h := Hdr{
		Flags:      NeedsCsum,
		GSOType:    gso,
		HdrLen:     uint16(c.data),
		GSOSize:    uint16(c.seg),
		CsumStart:  uint16(c.l4),
		CsumOffset: tcpCsumOffset,
	}
	return h, f
}

// tcpLayout checks that frame is a segment a super-frame can carry (see
// TCPCoalescer), its checksums included, and returns the offsets of its
// TCP header and of its payload.
func tcpLayout(h Hdr, frame []byte) (l4, data int, v6 bool, ok bool) {
	if h.GSOType != GSONone || len(frame) < ethHdrLen+ipv4MinLen+tcpMinLen {
		return 0, 0, false, false
	}
	be := binary.BigEndian
	l4, v6, pseudo, ok := ipLayout(frame, protoTCP)
	if !ok {
		return 0, 0, false, false
	}
	tcp := frame[l4:]
	if len(tcp) < tcpMinLen {
		return 0, 0, false, false
	}
	thl := int(tcp[12]>>4) * 4
	if thl < tcpMinLen || len(tcp) <= thl || tcp[tcpFlagsOffset]&^tcpFlagPSH != tcpFlagACK {
		return 0, 0, false, false
	}
	ps := sum(pseudo, protoTCP+uint64(len(tcp)))
	switch {
	case h.Flags&NeedsCsum != 0:
		if int(h.CsumStart) != l4 || h.CsumOffset != tcpCsumOffset || be.Uint16(tcp[tcpCsumOffset:]) != ps {
			return 0, 0, false, false
		}
	case h.Flags&DataValid != 0:
	default:
		if sum(tcp, uint64(ps)) != 0xffff {
			return 0, 0, false, false
		}
	}
	return l4, l4 + thl, v6, true
}

// sameTCPFlow reports whether the segments a and b, both laid out by
// tcpLayout with their TCP header at l4 and their payload at data, have
// the same Ethernet, IP and TCP headers but for the fields a super-frame
// may change.
func sameTCPFlow(a, b []byte, l4, data int, v6 bool) bool {
	if string(a[:ethHdrLen]) != string(b[:ethHdrLen]) {
		return false
	}
	ipa, ipb := a[ethHdrLen:l4], b[ethHdrLen:l4]
	if v6 {
		// version, traffic class, flow label; next header, hop limit,
		// addresses: all but the payload length.
		if string(ipa[:4]) != string(ipb[:4]) || string(ipa[6:]) != string(ipb[6:]) {
			return false
		}
	} else if string(ipa[:2]) != string(ipb[:2]) || string(ipa[6:10]) != string(ipb[6:10]) ||
		string(ipa[12:]) != string(ipb[12:]) {
		// version, header length, TOS; flags and fragment offset, TTL,
		// protocol; addresses and options: all but the total length, the
		// identification and the header checksum.
		return false
	}
	ta, tb := a[l4:data], b[l4:data]
	// ports; acknowledgment number, data offset; window, urgent pointer,
	// options: all but the sequence number, PSH and the checksum.
	return string(ta[:4]) == string(tb[:4]) && string(ta[8:13]) == string(tb[8:13]) &&
		ta[tcpFlagsOffset]&^tcpFlagPSH == tb[tcpFlagsOffset]&^tcpFlagPSH &&
		string(ta[14:16]) == string(tb[14:16]) && string(ta[18:]) == string(tb[18:])
}
