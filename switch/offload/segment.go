package offload

import (
	"encoding/binary"
	"fmt"
)

const (
	ethHdrLen  = 14
	vlanTagLen = 4
	ipv4MinLen = 20
	ipv6HdrLen = 40
	tcpMinLen  = 20

	etherTypeIPv4   = 0x0800
	etherTypeIPv6   = 0x86dd
	etherTypeVLAN   = 0x8100 // 802.1Q
	etherTypeQinQ   = 0x88a8 // 802.1ad service tag
	maxVLANTags     = 2      // a service tag and a customer tag (QinQ)
	protoTCP        = 6
	protoHopByHop   = 0  // IPv6 hop-by-hop options header
	protoRouting    = 43 // IPv6 routing header
	protoDstOpts    = 60 // IPv6 destination options header
	maxExtHdrs      = 8  // IPv6 extension headers followed to the TCP header
	tcpCsumOffset   = 16
	tcpFlagsOffset  = 13
	tcpFlagFIN      = 0x01
	tcpFlagPSH      = 0x08
	tcpFlagCWR      = 0x80
	ipv4FlagMF      = 0x2000
	ipv4FragOffMask = 0x1fff
	maxIPLen        = 0xffff
)

// The errors of Segment and SegmentCount, built once so that rejecting a
// frame costs no allocation.
var (
	errNotGSO       = wrap(ErrMalformed, "segment: gso type none")
	errGSOType      = wrap(ErrMalformed, "segment: unknown gso type")
	errUDPGSO       = wrap(ErrUnsupported, "segment: udp gso")
	errGSOSize      = wrap(ErrMalformed, "segment: gso_size 0")
	errHdrLen       = wrap(ErrMalformed, "segment: hdr_len beyond the frame")
	errShortEth     = wrap(ErrMalformed, "segment: frame shorter than its ethernet header")
	errVLANTags     = wrap(ErrUnsupported, "segment: more than two vlan tags")
	errEtherType    = wrap(ErrMalformed, "segment: ethertype does not match the gso type")
	errShortIP      = wrap(ErrMalformed, "segment: frame shorter than its ip header")
	errIPVersion    = wrap(ErrMalformed, "segment: ip version does not match the ethertype")
	errIPv4HdrLen   = wrap(ErrMalformed, "segment: ipv4 header length below 20")
	errIPv4Fragment = wrap(ErrMalformed, "segment: ipv4 fragment")
	errNotTCP       = wrap(ErrMalformed, "segment: ip protocol is not tcp")
	errIPv6NextHdr  = wrap(ErrUnsupported, "segment: ipv6 next header is neither tcp nor a hop-by-hop, routing or destination options header")
	errIPv6ExtHdrs  = wrap(ErrUnsupported, "segment: more ipv6 extension headers than followed")
	errShortExtHdr  = wrap(ErrMalformed, "segment: frame shorter than its ipv6 extension headers")
	errRoutingCsum  = wrap(ErrUnsupported, "segment: ipv6 routing header without a partial checksum to start from")
	errShortTCP     = wrap(ErrMalformed, "segment: frame shorter than its tcp header")
	errTCPHdrLen    = wrap(ErrMalformed, "segment: tcp data offset below 5")
	errCsumStart    = wrap(ErrMalformed, "segment: csum_start/csum_offset do not point at the tcp checksum")
	errTooLong      = wrap(ErrMalformed, "segment: segment longer than an ip packet can be")
)

func wrap(err error, detail string) error { return fmt.Errorf("%w: %s", err, detail) }

// layout locates the headers of a TCP super-frame.
type layout struct {
	ip      int // offset of the IP header
	tcp     int // offset of the TCP header
	payload int // offset of the payload, the end of the headers
	v6      bool
	// routed: an IPv6 routing header with segments left, so that the
	// pseudo-header's destination is not the IPv6 header's.
	routed bool
	n      int // number of segments
	maxLen int // length of the longest (first) segment
}

// parse checks h and the headers of frame and lays out the segmentation.
// It is the single place that validates, so Segment touches no byte it has
// not bounds-checked here.
func parse(h Hdr, frame []byte) (layout, error) {
	var l layout
	switch h.GSOType &^ GSOECN {
	case GSOTCPv4:
	case GSOTCPv6:
		l.v6 = true
	case GSONone:
		return l, errNotGSO
	case GSOUDP, GSOUDPL4:
		return l, errUDPGSO
	default:
		return l, errGSOType
	}
	if h.GSOSize == 0 {
		return l, errGSOSize
	}
	// hdr_len is only a hint (Linux reports skb_headlen there), but it
	// can never exceed the frame from an honest sender.
	if int(h.HdrLen) > len(frame) {
		return l, errHdrLen
	}

	be := binary.BigEndian
	if len(frame) < ethHdrLen {
		return l, errShortEth
	}
	l.ip = ethHdrLen
	et := be.Uint16(frame[12:])
	for tags := 0; et == etherTypeVLAN || et == etherTypeQinQ; tags++ {
		if tags == maxVLANTags {
			return l, errVLANTags
		}
		if len(frame) < l.ip+vlanTagLen {
			return l, errShortEth
		}
		et = be.Uint16(frame[l.ip+2:])
		l.ip += vlanTagLen
	}

	if !l.v6 {
		if et != etherTypeIPv4 {
			return l, errEtherType
		}
		if len(frame) < l.ip+ipv4MinLen {
			return l, errShortIP
		}
		ip := frame[l.ip:]
		if ip[0]>>4 != 4 {
			return l, errIPVersion
		}
		ihl := int(ip[0]&0x0f) * 4
		if ihl < ipv4MinLen {
			return l, errIPv4HdrLen
		}
		if len(frame) < l.ip+ihl {
			return l, errShortIP
		}
		if be.Uint16(ip[6:])&(ipv4FlagMF|ipv4FragOffMask) != 0 {
			return l, errIPv4Fragment
		}
		if ip[9] != protoTCP {
			return l, errNotTCP
		}
		l.tcp = l.ip + ihl
	} else {
		if et != etherTypeIPv6 {
			return l, errEtherType
		}
		if len(frame) < l.ip+ipv6HdrLen {
			return l, errShortIP
		}
		ip := frame[l.ip:]
		if ip[0]>>4 != 6 {
			return l, errIPVersion
		}
		// Extension headers come between the IPv6 and TCP headers when
		// the sending socket asked for them (IPV6_HOPOPTS, IPV6_DSTOPTS,
		// IPV6_RTHDR); the kernel's TSO takes them, so the super-frames
		// carry them. Each is its next header, its length in 8-byte units
		// beyond the first 8, then its data.
		next, off := ip[6], l.ip+ipv6HdrLen
		for n := 0; next != protoTCP; n++ {
			switch {
			case next != protoHopByHop && next != protoRouting && next != protoDstOpts,
				next == protoHopByHop && n > 0: // only right after the IPv6 header
				return l, errIPv6NextHdr
			case n == maxExtHdrs:
				return l, errIPv6ExtHdrs
			case len(frame) < off+8:
				return l, errShortExtHdr
			}
			if next == protoRouting && frame[off+3] != 0 {
				l.routed = true // segments left
			}
			next, off = frame[off], off+(int(frame[off+1])+1)*8
		}
		if len(frame) < off {
			return l, errShortExtHdr
		}
		l.tcp = off
	}

	if len(frame) < l.tcp+tcpMinLen {
		return l, errShortTCP
	}
	doff := int(frame[l.tcp+12]>>4) * 4
	if doff < tcpMinLen {
		return l, errTCPHdrLen
	}
	l.payload = l.tcp + doff
	if len(frame) < l.payload {
		return l, errShortTCP
	}
	if h.Flags&NeedsCsum != 0 && (int(h.CsumStart) != l.tcp || h.CsumOffset != tcpCsumOffset) {
		return l, errCsumStart
	}
	if l.routed && h.Flags&NeedsCsum == 0 {
		return l, errRoutingCsum
	}

	// Like the kernel (inet_gso_segment, ipv6_gso_segment), the payload is
	// the rest of the frame whatever the super-frame's IP length fields say.
	payload, mss := len(frame)-l.payload, int(h.GSOSize)
	l.n = (payload + mss - 1) / mss
	if l.n == 0 {
		l.n = 1 // headers only: one segment, e.g. a lone ACK or FIN
	}
	l.maxLen = l.payload + min(payload, mss)
	ipLen := l.maxLen - l.ip
	if l.v6 {
		ipLen -= ipv6HdrLen
	}
	if ipLen > maxIPLen {
		return l, errTooLong
	}
	return l, nil
}

// SegmentCount reports the number of frames Segment makes of frame and the
// length of the longest of them (every one but the last has that length),
// so that the caller can size out: len(out) >= n and cap(out[i]) >= maxLen.
// It returns the error Segment would return for the headers.
//
// n is ceil(payload/h.GSOSize), at least 1. A super-frame holds at most a
// 65535-byte IP packet, so at MSS 1448 n is at most 46; nothing here
// bounds h.GSOSize from below, so n may reach 65 000 (gso_size 1), and a
// caller sizing buffers by n bounds it first.
func SegmentCount(h Hdr, frame []byte) (n, maxLen int, err error) {
	l, err := parse(h, frame)
	if err != nil {
		return 0, 0, err
	}
	return l.n, l.maxLen, nil
}

// Segment splits frame, a TCP super-frame described by h (GSOType GSOTCPv4
// or GSOTCPv6, possibly with GSOECN), into ordinary Ethernet frames, one
// per h.GSOSize bytes of payload, as Linux's tcp_gso_segment does. frame
// is a whole Ethernet frame, untagged or with one or two 802.1Q/802.1ad
// tags, then IPv4 (options allowed, fragments not) or IPv6 (hop-by-hop,
// routing and destination options headers allowed), then TCP. Its payload
// is everything after the TCP header, as for the kernel; the IP length
// fields of frame are not trusted. h.HdrLen is a hint and is ignored
// beyond a sanity check; if h has NeedsCsum, its checksum offsets must
// point at the TCP checksum.
//
// Segment writes segment i into out[i][:len] and sets out[i] to that
// slice, so a caller that wants headroom passes out[i] = buf[off:off]. It
// needs len(out) >= n and cap(out[i]) >= the segment's length, which
// SegmentCount reports; it returns n. frame is not modified and may be
// shared with other readers; out must not overlap it.
//
// Each segment has the headers of frame with the IPv4 total length, ID
// (incremented per segment, wrapping) and header checksum, or the IPv6
// payload length, rewritten; the TCP sequence number advanced by the
// payload before it; FIN and PSH kept only on the last segment and CWR
// only on the first; and a complete TCP checksum. The segments need no
// offload: send them with a zero header.
//
// On error Segment returns 0 and has written nothing. It does not
// allocate.
func Segment(h Hdr, frame []byte, out [][]byte) (n int, err error) {
	l, err := parse(h, frame)
	if err != nil {
		return 0, err
	}
	if len(out) < l.n {
		return 0, ErrTooManySegments
	}
	mss := int(h.GSOSize)
	for i := range l.n - 1 {
		if cap(out[i]) < l.maxLen {
			return 0, ErrShortBuffer
		}
	}
	if cap(out[l.n-1]) < len(frame)-(l.n-1)*mss {
		return 0, ErrShortBuffer
	}

	be := binary.BigEndian
	hdr := frame[:l.payload]
	seq := be.Uint32(frame[l.tcp+4:])
	flags := frame[l.tcp+tcpFlagsOffset]
	var id uint16
	var pseudo uint64 // sum of the pseudo-header's addresses and protocol
	switch {
	case l.routed:
		// The pseudo-header's destination is the final one, which only
		// the routing header's type knows how to find. The sender left
		// the pseudo-header's sum, with the super-frame's TCP length, in
		// the checksum field (NeedsCsum): take that length out, as
		// tcp_gso_segment does.
		pseudo = uint64(be.Uint16(frame[l.tcp+tcpCsumOffset:])) + uint64(^uint32(len(frame)-l.tcp))
	case l.v6:
		pseudo = uint64(sum(frame[l.ip+8:l.ip+40], protoTCP))
	default:
		id = be.Uint16(frame[l.ip+4:])
		pseudo = uint64(sum(frame[l.ip+12:l.ip+20], protoTCP))
	}

	for i := range l.n {
		start := l.payload + i*mss
		end := min(start+mss, len(frame))
		seg := out[i][:l.payload+end-start]
		copy(seg, hdr)
		copy(seg[l.payload:], frame[start:end])

		if l.v6 {
			be.PutUint16(seg[l.ip+4:], uint16(len(seg)-l.ip-ipv6HdrLen))
		} else {
			ip := seg[l.ip:l.tcp]
			be.PutUint16(ip[2:], uint16(len(seg)-l.ip))
			be.PutUint16(ip[4:], id+uint16(i))
			ip[10], ip[11] = 0, 0
			be.PutUint16(ip[10:], ^sum(ip, 0))
		}

		tcp := seg[l.tcp:]
		be.PutUint32(tcp[4:], seq+uint32(i*mss))
		f := flags
		if i > 0 {
			f &^= tcpFlagCWR
		}
		if i < l.n-1 {
			f &^= tcpFlagFIN | tcpFlagPSH
		}
		tcp[tcpFlagsOffset] = f
		tcp[tcpCsumOffset], tcp[tcpCsumOffset+1] = 0, 0
		be.PutUint16(tcp[tcpCsumOffset:], ^sum(tcp, pseudo+uint64(len(tcp))))
		out[i] = seg
	}
	return l.n, nil
}
