package offload_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// This file holds a frame builder and a verifier written independently of
// the package: a plain 16-bit-word checksum, its own header parsing.

var be = binary.BigEndian

// refSum is the textbook RFC 1071 sum of the concatenation of parts, one
// big-endian word at a time, folded but not complemented.
func refSum(parts ...[]byte) uint16 {
	var all []byte
	for _, p := range parts {
		all = append(all, p...)
	}
	var s uint32
	for i := 0; i+1 < len(all); i += 2 {
		s += uint32(all[i])<<8 | uint32(all[i+1])
	}
	if len(all)%2 == 1 {
		s += uint32(all[len(all)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudoHdr returns the TCP/UDP pseudo-header for an IP packet starting at
// ip with the given L4 length.
func pseudoHdr(ip []byte, proto uint8, l4Len int) []byte {
	if ip[0]>>4 == 4 {
		p := append([]byte(nil), ip[12:20]...)
		return append(p, 0, proto, byte(l4Len>>8), byte(l4Len))
	}
	_, _, dst := ipv6Upper(ip)
	p := append([]byte(nil), ip[8:24]...)
	p = append(p, dst...)
	return append(p, 0, 0, byte(l4Len>>8), byte(l4Len), 0, 0, 0, proto)
}

// ipv6Upper walks the extension headers of the IPv6 packet ip and returns
// the upper-layer protocol, its offset in ip, and the final destination:
// the IPv6 header's, or the address a type 2 routing header with
// segments left carries (RFC 8200 8.1).
func ipv6Upper(ip []byte) (proto uint8, off int, dst []byte) {
	proto, off, dst = ip[6], 40, ip[24:40]
	for proto == 0 || proto == 43 || proto == 60 {
		if proto == 43 && ip[off+2] == 2 && ip[off+3] != 0 {
			dst = ip[off+8 : off+24]
		}
		proto, off = ip[off], off+(int(ip[off+1])+1)*8
	}
	return proto, off, dst
}

// extHdr is an IPv6 extension header for spec.ext: its protocol number
// and its bytes, whose next header field build sets.
type extHdr struct {
	proto uint8
	b     []byte
}

var (
	hopByHop     = extHdr{0, []byte{0, 0, 1, 4, 0, 0, 0, 0}}                                // PadN
	dstOpts      = extHdr{60, []byte{0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}      // PadN, 16 bytes
	routingType2 = extHdr{43, []byte{0, 2, 2, 1, 0, 0, 0, 0, 0x20, 1, 0xd, 0xb8, 23: 0x99}} // to 2001:db8::99, segments left 1
)

// TCP flags.
const (
	fin = 0x01
	syn = 0x02
	psh = 0x08
	ack = 0x10
	ece = 0x40
	cwr = 0x80
)

// spec describes a frame for build.
type spec struct {
	v6      bool
	vlan    bool
	qinq    bool // a service tag in front of the vlan tag
	ipOpts  int  // bytes of IPv4 options, a multiple of 4
	tcpOpts int  // bytes of TCP options, a multiple of 4; 12 is a timestamp
	flags   uint8
	payload int
	mss     uint16 // 0 builds an ordinary frame (no GSO)
	ecn     bool
	seq     uint32
	id      uint16
	udp     bool     // a UDP datagram instead (ordinary frames only)
	ext     []extHdr // IPv6 extension headers, in order
}

// build returns a frame as a Linux tap hands it out with offloads on: IP
// lengths and IPv4 header checksum covering the whole frame, the L4
// checksum field holding the folded pseudo-header sum, and a header with
// NeedsCsum (and the GSO fields if s.mss != 0).
func build(s spec) (offload.Hdr, []byte) {
	rng := rand.New(rand.NewPCG(uint64(s.payload), uint64(s.mss)))
	f := []byte{0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1}
	if s.qinq {
		f = append(f, 0x88, 0xa8, 0x00, 0x0a) // VID 10
	}
	if s.vlan {
		f = append(f, 0x81, 0x00, 0x00, 0x64) // VID 100
	}
	ipOff := len(f) + 2
	l4Len := 20 + s.tcpOpts + s.payload
	proto := uint8(6)
	if s.udp {
		l4Len, proto = 8+s.payload, 17
	}
	tos := uint8(0)
	if s.ecn {
		tos = 0x02 // ECT(0)
	}
	if s.v6 {
		extLen, first := 0, proto
		if len(s.ext) > 0 {
			first = s.ext[0].proto
		}
		for _, e := range s.ext {
			extLen += len(e.b)
		}
		f = append(f, 0x86, 0xdd)
		f = append(f, 0x60|tos>>4, tos<<4, 0x12, 0x34, byte((l4Len+extLen)>>8), byte(l4Len+extLen), first, 64)
		f = append(f, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)
		f = append(f, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2)
		for i, e := range s.ext {
			next := proto
			if i+1 < len(s.ext) {
				next = s.ext[i+1].proto
			}
			f = append(f, next)
			f = append(f, e.b[1:]...)
		}
	} else {
		ihl := 20 + s.ipOpts
		tot := ihl + l4Len
		f = append(f, 0x08, 0x00)
		f = append(f, 0x40|byte(ihl/4), tos, byte(tot>>8), byte(tot), byte(s.id>>8), byte(s.id), 0x40, 0, 64, proto, 0, 0)
		f = append(f, 192, 0, 2, 1, 198, 51, 100, 2)
		for range s.ipOpts {
			f = append(f, 1) // NOP
		}
		be.PutUint16(f[ipOff+10:], ^refSum(f[ipOff:]))
	}
	l4Off := len(f)
	if s.udp {
		f = append(f, 0x30, 0x39, 0x00, 0x35, byte(l4Len>>8), byte(l4Len), 0, 0)
	} else {
		f = be.AppendUint16(f, 40000)
		f = be.AppendUint16(f, 443)
		f = be.AppendUint32(f, s.seq)
		f = be.AppendUint32(f, 0x01020304) // ack
		f = append(f, byte((20+s.tcpOpts)/4)<<4, s.flags)
		f = be.AppendUint16(f, 502) // window
		f = append(f, 0, 0, 0, 0)   // checksum, urgent pointer
		opts := s.tcpOpts
		if opts >= 12 {
			f = append(f, 1, 1, 8, 10)
			f = be.AppendUint32(f, 0xaabbccdd)
			f = be.AppendUint32(f, 0x11223344)
			opts -= 12
		}
		for range opts {
			f = append(f, 1)
		}
	}
	hdrEnd := len(f)
	for range s.payload {
		f = append(f, byte(rng.Uint32()))
	}
	ip := f[ipOff:]
	csumOff := 16
	if s.udp {
		csumOff = 6
	}
	be.PutUint16(f[l4Off+csumOff:], refSum(pseudoHdr(ip, proto, l4Len)))
	h := offload.Hdr{Flags: offload.NeedsCsum, CsumStart: uint16(l4Off), CsumOffset: uint16(csumOff)}
	if s.mss != 0 {
		h.GSOType, h.GSOSize, h.HdrLen = offload.GSOTCPv4, s.mss, uint16(hdrEnd)
		if s.v6 {
			h.GSOType = offload.GSOTCPv6
		}
		if s.ecn {
			h.GSOType |= offload.GSOECN
		}
	}
	return h, f
}

// ipOffset returns the offset of the IP header of the Ethernet frame f,
// after any VLAN tags.
func ipOffset(f []byte) int {
	off := 14
	for len(f) >= off+4 && (be.Uint16(f[off-2:]) == 0x8100 || be.Uint16(f[off-2:]) == 0x88a8) {
		off += 4
	}
	return off
}

// parsed is what verify learned of one segment.
type parsed struct {
	ipOff, l4Off, hdrEnd int
	v6                   bool
	id                   uint16
	seq                  uint32
	flags                uint8
	payload              []byte
}

// verify parses a frame that should be a complete, ordinary TCP frame and
// checks its lengths and checksums.
func verify(f []byte) (parsed, error) {
	var p parsed
	if len(f) < 14 {
		return p, fmt.Errorf("frame of %d bytes", len(f))
	}
	p.ipOff = ipOffset(f)
	et := be.Uint16(f[p.ipOff-2:])
	switch et {
	case 0x0800:
		if len(f) < p.ipOff+20 {
			return p, fmt.Errorf("short ipv4 header")
		}
		ip := f[p.ipOff:]
		ihl := int(ip[0]&15) * 4
		if ip[0]>>4 != 4 || ihl < 20 || len(ip) < ihl {
			return p, fmt.Errorf("bad ipv4 version/ihl %#x", ip[0])
		}
		if got := int(be.Uint16(ip[2:])); got != len(ip) {
			return p, fmt.Errorf("ipv4 total length %d, packet is %d", got, len(ip))
		}
		if s := refSum(ip[:ihl]); s != 0xffff {
			return p, fmt.Errorf("ipv4 header checksum wrong (sum %#x)", s)
		}
		if ip[9] != 6 {
			return p, fmt.Errorf("ipv4 protocol %d", ip[9])
		}
		p.id = be.Uint16(ip[4:])
		p.l4Off = p.ipOff + ihl
	case 0x86dd:
		if len(f) < p.ipOff+40 {
			return p, fmt.Errorf("short ipv6 header")
		}
		ip := f[p.ipOff:]
		if ip[0]>>4 != 6 {
			return p, fmt.Errorf("ipv6 version %d", ip[0]>>4)
		}
		if got := int(be.Uint16(ip[4:])); got != len(ip)-40 {
			return p, fmt.Errorf("ipv6 payload length %d, payload is %d", got, len(ip)-40)
		}
		proto, upper, _ := ipv6Upper(ip)
		if proto != 6 {
			return p, fmt.Errorf("ipv6 upper-layer protocol %d", proto)
		}
		p.v6 = true
		p.l4Off = p.ipOff + upper
	default:
		return p, fmt.Errorf("ethertype %#x", et)
	}
	tcp := f[p.l4Off:]
	if len(tcp) < 20 || int(tcp[12]>>4)*4 < 20 || len(tcp) < int(tcp[12]>>4)*4 {
		return p, fmt.Errorf("bad tcp header")
	}
	if s := refSum(pseudoHdr(f[p.ipOff:], 6, len(tcp)), tcp); s != 0xffff {
		return p, fmt.Errorf("tcp checksum wrong (sum %#x)", s)
	}
	p.hdrEnd = p.l4Off + int(tcp[12]>>4)*4
	p.seq = be.Uint32(tcp[4:])
	p.flags = tcp[13]
	p.payload = f[p.hdrEnd:]
	return p, nil
}

// masked returns a copy of the headers of f with the fields Segment may
// change zeroed.
func masked(f []byte, p parsed) []byte {
	m := bytes.Clone(f[:p.hdrEnd])
	if p.v6 {
		clear(m[p.ipOff+4 : p.ipOff+6])
	} else {
		clear(m[p.ipOff+2 : p.ipOff+6])
		clear(m[p.ipOff+10 : p.ipOff+12])
	}
	clear(m[p.l4Off+4 : p.l4Off+8])
	m[p.l4Off+13] = 0
	clear(m[p.l4Off+16 : p.l4Off+18])
	return m
}

// checkSegments verifies segs, the output of Segment for the super-frame
// orig with GSO size mss: each a valid frame, headers those of orig but
// for the fields that must change, sequence numbers, IDs and flags as the
// kernel sets them, and payloads that concatenate back to orig's.
func checkSegments(orig []byte, mss int, segs [][]byte) error {
	// orig's checksums are partial: parse its layout by hand.
	var o parsed
	o.ipOff = ipOffset(orig)
	if orig[o.ipOff]>>4 == 6 {
		_, upper, _ := ipv6Upper(orig[o.ipOff:])
		o.v6, o.l4Off = true, o.ipOff+upper
	} else {
		o.l4Off = o.ipOff + int(orig[o.ipOff]&15)*4
		o.id = be.Uint16(orig[o.ipOff+4:])
	}
	o.hdrEnd = o.l4Off + int(orig[o.l4Off+12]>>4)*4
	o.seq = be.Uint32(orig[o.l4Off+4:])
	o.flags = orig[o.l4Off+13]
	want := masked(orig, o)
	payload := orig[o.hdrEnd:]

	if n := max(1, (len(payload)+mss-1)/mss); len(segs) != n {
		return fmt.Errorf("%d segments, want %d", len(segs), n)
	}
	var got []byte
	for i, s := range segs {
		p, err := verify(s)
		if err != nil {
			return fmt.Errorf("segment %d: %w", i, err)
		}
		if p.hdrEnd != o.hdrEnd || !bytes.Equal(masked(s, p), want) {
			return fmt.Errorf("segment %d: headers differ from the super-frame's", i)
		}
		if wantLen := min(mss, len(payload)-i*mss); len(p.payload) != wantLen {
			return fmt.Errorf("segment %d: %d bytes of payload, want %d", i, len(p.payload), wantLen)
		}
		if wantSeq := o.seq + uint32(len(got)); p.seq != wantSeq {
			return fmt.Errorf("segment %d: seq %d, want %d", i, p.seq, wantSeq)
		}
		if !o.v6 && p.id != o.id+uint16(i) {
			return fmt.Errorf("segment %d: ipv4 id %d, want %d", i, p.id, o.id+uint16(i))
		}
		wantFlags := o.flags
		if i > 0 {
			wantFlags &^= cwr
		}
		if i < len(segs)-1 {
			wantFlags &^= fin | psh
		}
		if p.flags != wantFlags {
			return fmt.Errorf("segment %d: tcp flags %#x, want %#x", i, p.flags, wantFlags)
		}
		got = append(got, p.payload...)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("payloads do not concatenate to the super-frame's")
	}
	return nil
}

// outBufs returns n empty buffers of capacity size each.
func outBufs(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = make([]byte, 0, size)
	}
	return out
}
