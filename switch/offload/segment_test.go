package offload_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tapswitch/tapswitch/switch/offload"
)

func TestHdrRoundTrip(t *testing.T) {
	h := offload.Hdr{Flags: offload.NeedsCsum, GSOType: offload.GSOTCPv6 | offload.GSOECN,
		HdrLen: 0x0102, GSOSize: 0x0304, CsumStart: 0x0506, CsumOffset: 0x0708}
	b := make([]byte, offload.HdrLen)
	h.Encode(b)
	if got := offload.DecodeHdr(b); got != h {
		t.Fatalf("DecodeHdr(Encode(%+v)) = %+v", h, got)
	}
	// The tap's header is in native order; flags and type are bytes.
	if b[0] != 1 || b[1] != 0x84 {
		t.Fatalf("flags/type bytes %#x %#x", b[0], b[1])
	}
	if offload.DecodeHdr(make([]byte, offload.HdrLen)) != (offload.Hdr{}) {
		t.Fatal("zero header not zero")
	}
}

func TestSegment(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    spec
	}{
		{"ipv4", spec{payload: 10 * 1460, mss: 1460, flags: ack}},
		{"ipv4 timestamps tail", spec{tcpOpts: 12, payload: 5*1448 + 700, mss: 1448, flags: ack | psh, seq: 1000}},
		{"ipv4 options", spec{ipOpts: 8, tcpOpts: 20, payload: 4000, mss: 1000, flags: ack | psh | fin}},
		{"ipv4 max options", spec{ipOpts: 40, tcpOpts: 40, payload: 3001, mss: 1000, flags: ack}},
		{"ipv4 ecn cwr", spec{ecn: true, payload: 3 * 1460, mss: 1460, flags: ack | cwr | ece | psh}},
		{"ipv4 seq wraps", spec{payload: 4 * 1460, mss: 1460, flags: ack, seq: 0xffffffff - 3000}},
		{"ipv4 id wraps", spec{payload: 4 * 1460, mss: 1460, flags: ack, id: 0xfffe}},
		{"ipv4 one segment", spec{tcpOpts: 12, payload: 1448, mss: 1448, flags: ack | psh | fin}},
		{"ipv4 less than one segment", spec{payload: 17, mss: 1448, flags: ack | psh}},
		{"ipv4 headers only", spec{payload: 0, mss: 1448, flags: ack | fin}},
		{"ipv4 mss 1", spec{payload: 9, mss: 1, flags: ack | psh | fin | cwr}},
		{"ipv4 vlan", spec{vlan: true, tcpOpts: 12, payload: 3*1444 + 1, mss: 1444, flags: ack | psh}},
		{"ipv4 64k", spec{tcpOpts: 12, payload: 65535 - 20 - 32, mss: 1448, flags: ack | psh}},
		{"ipv6", spec{v6: true, payload: 10 * 1440, mss: 1440, flags: ack}},
		{"ipv6 timestamps tail", spec{v6: true, tcpOpts: 12, payload: 7*1428 + 3, mss: 1428, flags: ack | psh | fin}},
		{"ipv6 ecn cwr", spec{v6: true, ecn: true, payload: 2*1440 + 20, mss: 1440, flags: ack | cwr | psh}},
		{"ipv6 one segment", spec{v6: true, payload: 1000, mss: 1440, flags: ack | psh | fin}},
		{"ipv6 vlan", spec{v6: true, vlan: true, tcpOpts: 12, payload: 50000, mss: 8948, flags: ack}},
		{"ipv6 64k", spec{v6: true, tcpOpts: 12, payload: 65535 - 32, mss: 1428, flags: ack | psh}},
		// Extension headers were refused (a socket with IPV6_DSTOPTS sent
		// nothing but retransmits through the switch), and so was QinQ.
		{"ipv6 destination options", spec{v6: true, ext: []extHdr{dstOpts}, tcpOpts: 12, payload: 5*1420 + 9, mss: 1420, flags: ack | psh}},
		{"ipv6 three extension headers", spec{v6: true, ext: []extHdr{hopByHop, dstOpts, routingType2}, payload: 4 * 1400, mss: 1400, flags: ack | fin}},
		{"ipv6 routing header", spec{v6: true, ext: []extHdr{routingType2}, ecn: true, payload: 3*1400 + 1, mss: 1400, flags: ack | cwr | psh}},
		{"ipv4 qinq", spec{qinq: true, vlan: true, payload: 3000, mss: 1000, flags: ack}},
		{"ipv6 qinq extension headers", spec{v6: true, qinq: true, vlan: true, ext: []extHdr{hopByHop}, payload: 3000, mss: 1000, flags: ack}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, f := build(tc.s)
			orig := bytes.Clone(f)
			n, maxLen, err := offload.SegmentCount(h, f)
			if err != nil {
				t.Fatalf("SegmentCount: %v", err)
			}
			out := outBufs(n, maxLen)
			got, err := offload.Segment(h, f, out)
			if err != nil {
				t.Fatalf("Segment: %v", err)
			}
			if got != n {
				t.Fatalf("Segment made %d segments, SegmentCount said %d", got, n)
			}
			if len(out[0]) != maxLen {
				t.Errorf("first segment %d bytes, SegmentCount said %d", len(out[0]), maxLen)
			}
			if !bytes.Equal(f, orig) {
				t.Error("Segment modified its input")
			}
			if err := checkSegments(f, int(tc.s.mss), out[:n]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSegmentHeadroom checks that segments land where the caller's slices
// start, leaving the bytes before them alone.
func TestSegmentHeadroom(t *testing.T) {
	h, f := build(spec{tcpOpts: 12, payload: 3000, mss: 1448, flags: ack})
	const room = offload.HdrLen
	bufs := make([][]byte, 3)
	out := make([][]byte, 3)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{0xee}, 2048)
		out[i] = bufs[i][room:room]
	}
	n, err := offload.Segment(h, f, out)
	if err != nil || n != 3 {
		t.Fatalf("Segment = %d, %v", n, err)
	}
	for i := range n {
		if !bytes.Equal(bufs[i][:room], bytes.Repeat([]byte{0xee}, room)) {
			t.Errorf("segment %d: headroom overwritten", i)
		}
		if &out[i][0] != &bufs[i][room] {
			t.Errorf("segment %d not at the start of its buffer", i)
		}
	}
	if err := checkSegments(f, 1448, out[:n]); err != nil {
		t.Fatal(err)
	}
}

// TestSegmentHdrLenHint checks that hdr_len is not trusted: Linux reports
// the linear part of the skb there, which can reach into the payload, and
// other senders may leave it 0.
func TestSegmentHdrLenHint(t *testing.T) {
	for _, hl := range []uint16{0, 54, 1600} {
		h, f := build(spec{payload: 3000, mss: 1460, flags: ack})
		h.HdrLen = hl
		out := outBufs(3, 1514)
		n, err := offload.Segment(h, f, out)
		if err != nil {
			t.Fatalf("hdr_len %d: %v", hl, err)
		}
		if err := checkSegments(f, 1460, out[:n]); err != nil {
			t.Fatalf("hdr_len %d: %v", hl, err)
		}
	}
}

// TestSegmentWithoutNeedsCsum checks a super-frame whose header has no
// checksum offsets (virtio allows GSO without NEEDS_CSUM) and whose TCP
// checksum field holds garbage: Segment computes every checksum anyway.
func TestSegmentWithoutNeedsCsum(t *testing.T) {
	h, f := build(spec{v6: true, payload: 3000, mss: 1440, flags: ack})
	h.Flags, h.CsumStart, h.CsumOffset = 0, 0, 0
	f[14+40+16], f[14+40+17] = 0xde, 0xad
	out := outBufs(3, 1514)
	n, err := offload.Segment(h, f, out)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSegments(f, 1440, out[:n]); err != nil {
		t.Fatal(err)
	}
}

func TestSegmentMalformed(t *testing.T) {
	type mod func(h *offload.Hdr, f []byte) []byte
	const ip, tcp, tcp6 = 14, 34, 54 // untagged IPv4 without options, IPv6
	for _, tc := range []struct {
		name string
		v6   bool
		mod  mod
		want error
	}{
		{"gso none", false, func(h *offload.Hdr, f []byte) []byte { h.GSOType = offload.GSONone; return f }, offload.ErrMalformed},
		{"gso udp", false, func(h *offload.Hdr, f []byte) []byte { h.GSOType = offload.GSOUDP; return f }, offload.ErrUnsupported},
		{"gso udp l4", false, func(h *offload.Hdr, f []byte) []byte { h.GSOType = offload.GSOUDPL4; return f }, offload.ErrUnsupported},
		{"gso unknown", false, func(h *offload.Hdr, f []byte) []byte { h.GSOType = 2; return f }, offload.ErrMalformed},
		{"gso only ecn", false, func(h *offload.Hdr, f []byte) []byte { h.GSOType = offload.GSOECN; return f }, offload.ErrMalformed},
		{"gso_size 0", false, func(h *offload.Hdr, f []byte) []byte { h.GSOSize = 0; return f }, offload.ErrMalformed},
		{"hdr_len beyond frame", false, func(h *offload.Hdr, f []byte) []byte { h.HdrLen = uint16(len(f) + 1); return f }, offload.ErrMalformed},
		{"empty frame", false, func(h *offload.Hdr, f []byte) []byte { h.HdrLen = 0; return nil }, offload.ErrMalformed},
		{"truncated ethernet", false, func(h *offload.Hdr, f []byte) []byte { h.HdrLen = 0; return f[:13] }, offload.ErrMalformed},
		{"truncated vlan tag", false, func(h *offload.Hdr, f []byte) []byte {
			h.HdrLen = 0
			f[12], f[13] = 0x81, 0x00
			return f[:17]
		}, offload.ErrMalformed},
		{"three vlan tags", false, func(h *offload.Hdr, f []byte) []byte {
			g := append([]byte(nil), f[:12]...)
			g = append(g, 0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3)
			h.CsumStart += 12
			return append(g, f[12:]...)
		}, offload.ErrUnsupported},
		{"arp ethertype", false, func(h *offload.Hdr, f []byte) []byte { f[12], f[13] = 0x08, 0x06; return f }, offload.ErrMalformed},
		{"tcpv4 type on ipv6", true, func(h *offload.Hdr, f []byte) []byte { h.GSOType = offload.GSOTCPv4; return f }, offload.ErrMalformed},
		{"tcpv6 type on ipv4", false, func(h *offload.Hdr, f []byte) []byte { h.GSOType = offload.GSOTCPv6; return f }, offload.ErrMalformed},
		{"ipv4 version 6", false, func(h *offload.Hdr, f []byte) []byte { f[ip] = 0x65; return f }, offload.ErrMalformed},
		{"ipv6 version 4", true, func(h *offload.Hdr, f []byte) []byte { f[ip] = 0x40; return f }, offload.ErrMalformed},
		{"ipv4 ihl 4", false, func(h *offload.Hdr, f []byte) []byte { f[ip] = 0x44; return f }, offload.ErrMalformed},
		{"ipv4 ihl beyond frame", false, func(h *offload.Hdr, f []byte) []byte { f[ip] = 0x4f; h.HdrLen = 0; return f[:ip+50] }, offload.ErrMalformed},
		{"truncated ipv4", false, func(h *offload.Hdr, f []byte) []byte { h.HdrLen = 0; return f[:ip+19] }, offload.ErrMalformed},
		{"truncated ipv6", true, func(h *offload.Hdr, f []byte) []byte { h.HdrLen = 0; return f[:ip+39] }, offload.ErrMalformed},
		{"ipv4 more fragments", false, func(h *offload.Hdr, f []byte) []byte { f[ip+6] = 0x20; return f }, offload.ErrMalformed},
		{"ipv4 fragment offset", false, func(h *offload.Hdr, f []byte) []byte { f[ip+7] = 0x01; return f }, offload.ErrMalformed},
		{"ipv4 udp", false, func(h *offload.Hdr, f []byte) []byte { f[ip+9] = 17; return f }, offload.ErrMalformed},
		{"ipv6 udp", true, func(h *offload.Hdr, f []byte) []byte { f[ip+6] = 17; return f }, offload.ErrUnsupported},
		{"ipv6 fragment header", true, func(h *offload.Hdr, f []byte) []byte { f[ip+6] = 44; return f }, offload.ErrUnsupported},
		{"ipv6 hop-by-hop not first", true, func(h *offload.Hdr, f []byte) []byte {
			f[ip+6] = 60 // the TCP header read as destination options: next header 0x9c
			f[tcp6] = 0
			return f
		}, offload.ErrUnsupported},
		{"ipv6 extension header beyond frame", true, func(h *offload.Hdr, f []byte) []byte {
			f[ip+6], f[tcp6], f[tcp6+1] = 60, 6, 0xff // 2 KiB long
			h.HdrLen = 0
			return f[:tcp6+100]
		}, offload.ErrMalformed},
		{"ipv6 extension header cut", true, func(h *offload.Hdr, f []byte) []byte { f[ip+6] = 60; h.HdrLen = 0; return f[:tcp6+7] }, offload.ErrMalformed},
		{"ipv6 too many extension headers", true, func(h *offload.Hdr, f []byte) []byte {
			g := append([]byte(nil), f[:tcp6]...)
			g[ip+6] = 60
			for range 9 {
				g = append(g, 60, 0, 1, 4, 0, 0, 0, 0)
			}
			g[len(g)-8] = 6
			h.CsumStart += 72
			return append(g, f[tcp6:]...)
		}, offload.ErrUnsupported},
		{"ipv6 routing header without partial checksum", true, func(h *offload.Hdr, f []byte) []byte {
			g := append([]byte(nil), f[:tcp6]...)
			g[ip+6] = 43
			g = append(g, routingType2.b...)
			g[tcp6] = 6 // next header
			h.Flags = 0
			return append(g, f[tcp6:]...)
		}, offload.ErrUnsupported},
		{"tcp data offset 4", false, func(h *offload.Hdr, f []byte) []byte { f[tcp+12] = 0x40; return f }, offload.ErrMalformed},
		{"tcp header beyond frame", false, func(h *offload.Hdr, f []byte) []byte { f[tcp+12] = 0xf0; h.HdrLen = 0; return f[:tcp+40] }, offload.ErrMalformed},
		{"truncated tcp", false, func(h *offload.Hdr, f []byte) []byte { h.HdrLen = 0; return f[:tcp+19] }, offload.ErrMalformed},
		{"csum_start off", false, func(h *offload.Hdr, f []byte) []byte { h.CsumStart = ip; return f }, offload.ErrMalformed},
		{"csum_offset udp", false, func(h *offload.Hdr, f []byte) []byte { h.CsumOffset = 6; return f }, offload.ErrMalformed},
		{"segment over 64k", false, func(h *offload.Hdr, f []byte) []byte {
			h.GSOSize = 0xffff
			return append(f, make([]byte, 65500-(len(f)-tcp-20))...)
		}, offload.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, f := build(spec{v6: tc.v6, payload: 3000, mss: 1000, flags: ack})
			f = tc.mod(&h, f)
			orig := bytes.Clone(f)
			if _, _, err := offload.SegmentCount(h, f); !errors.Is(err, tc.want) {
				t.Errorf("SegmentCount error %v, want %v", err, tc.want)
			}
			out := outBufs(80, 65536)
			n, err := offload.Segment(h, f, out)
			if !errors.Is(err, tc.want) || n != 0 {
				t.Errorf("Segment = %d, %v, want 0, %v", n, err, tc.want)
			}
			if !bytes.Equal(f, orig) {
				t.Error("Segment modified its input")
			}
			for i := range out {
				if len(out[i]) != 0 {
					t.Fatalf("out[%d] written on error", i)
				}
			}
		})
	}
}

// TestSegmentTruncated cuts a valid super-frame at every length inside its
// headers: each must be refused, none may panic.
func TestSegmentTruncated(t *testing.T) {
	for _, s := range []spec{{payload: 100, mss: 10, tcpOpts: 12, ipOpts: 4}, {v6: true, vlan: true, payload: 100, mss: 10, tcpOpts: 12}} {
		h, f := build(s)
		h.HdrLen = 0
		hdrEnd := len(f) - s.payload
		for cut := range hdrEnd {
			if _, err := offload.Segment(h, f[:cut], outBufs(20, 200)); !errors.Is(err, offload.ErrMalformed) {
				t.Errorf("%+v cut at %d: err %v, want ErrMalformed", s, cut, err)
			}
		}
	}
}

func TestSegmentBuffers(t *testing.T) {
	h, f := build(spec{payload: 3*1460 + 10, mss: 1460, flags: ack})
	n, maxLen, err := offload.SegmentCount(h, f)
	if err != nil || n != 4 || maxLen != 1514 {
		t.Fatalf("SegmentCount = %d, %d, %v; want 4, 1514, nil", n, maxLen, err)
	}
	for _, tc := range []struct {
		name string
		out  [][]byte
		want error
	}{
		{"too few", outBufs(3, maxLen), offload.ErrTooManySegments},
		{"none", nil, offload.ErrTooManySegments},
		{"one short", append(outBufs(3, maxLen), make([]byte, 0, 14+20+20+9)), offload.ErrShortBuffer},
		{"first short", append([][]byte{make([]byte, 0, maxLen-1)}, outBufs(3, maxLen)...), offload.ErrShortBuffer},
		{"tail exact", append(outBufs(3, maxLen), make([]byte, 0, 14+20+20+10)), nil},
		{"spare", outBufs(10, 9000), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := offload.Segment(h, f, tc.out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Segment error %v, want %v", err, tc.want)
			}
			if err != nil {
				if got != 0 {
					t.Fatalf("Segment = %d on error", got)
				}
				for i := range tc.out {
					if len(tc.out[i]) != 0 {
						t.Fatalf("out[%d] written on error", i)
					}
				}
				return
			}
			if err := checkSegments(f, 1460, tc.out[:got]); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestErrorsWrap(t *testing.T) {
	_, err := offload.Segment(offload.Hdr{GSOType: offload.GSOUDP, GSOSize: 1}, nil, nil)
	if !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("%v does not wrap errors.ErrUnsupported", err)
	}
}
