package offload_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// FuzzSegment feeds arbitrary headers and frames to Segment: nothing may
// panic or write outside the buffers SegmentCount asked for, the input is
// never modified, Segment and SegmentCount agree, and when Segment succeeds
// every segment is a valid frame (checkSegments verifies checksums, lengths,
// sequence numbers, flags and payload independently).
func FuzzSegment(f *testing.F) {
	add := func(h offload.Hdr, frame []byte) {
		f.Add(h.Flags, h.GSOType, h.HdrLen, h.GSOSize, h.CsumStart, h.CsumOffset, frame)
	}
	// IPv4 super-frame as Linux hands it out: 3 segments, the last short.
	add(build(spec{payload: 2*536 + 100, mss: 536, flags: ack | psh}))
	// IPv4 with options on both layers, FIN on the tail, CWR on the head.
	add(build(spec{ipOpts: 8, tcpOpts: 12, payload: 300, mss: 100, flags: ack | fin | cwr | ece, ecn: true}))
	// IPv6 behind an 802.1Q tag, payload a multiple of the MSS.
	add(build(spec{v6: true, vlan: true, tcpOpts: 12, payload: 400, mss: 200, flags: ack}))
	// Exactly one segment, and headers only (a lone FIN).
	add(build(spec{payload: 64, mss: 64, flags: ack | psh | fin}))
	add(build(spec{v6: true, mss: 1440, flags: ack | fin}))
	// MSS 1: one segment per payload byte.
	add(build(spec{payload: 7, mss: 1, flags: ack | psh}))
	// hdr_len as Linux may report it, the whole linear part.
	h, fr := build(spec{payload: 300, mss: 120, flags: ack})
	h.HdrLen = uint16(len(fr))
	add(h, fr)
	// GSO without NEEDS_CSUM, checksum offsets zero.
	h, fr = build(spec{v6: true, payload: 300, mss: 120, flags: ack})
	h.Flags, h.CsumStart, h.CsumOffset = 0, 0, 0
	add(h, fr)
	// Rejected: an IPv4 fragment.
	h, fr = build(spec{payload: 200, mss: 100, flags: ack})
	fr[14+6] = 0x20
	add(h, fr)
	// IPv6 extension headers, a routing header among them, behind QinQ.
	add(build(spec{v6: true, ext: []extHdr{hopByHop, dstOpts}, payload: 300, mss: 120, flags: ack}))
	add(build(spec{v6: true, qinq: true, vlan: true, ext: []extHdr{routingType2}, payload: 300, mss: 120, flags: ack | psh}))
	// Rejected: an IPv6 fragment header.
	h, fr = build(spec{v6: true, payload: 200, mss: 100, flags: ack})
	fr[14+6] = 44
	add(h, fr)
	// Rejected: UDP GSO, and gso_size 0.
	_, fr = build(spec{payload: 200, mss: 100, flags: ack})
	add(offload.Hdr{GSOType: offload.GSOUDPL4, GSOSize: 100}, fr)
	add(offload.Hdr{GSOType: offload.GSOTCPv4}, fr)
	// Rejected: a TCP data offset past the frame.
	h, fr = build(spec{payload: 0, mss: 100, flags: ack})
	fr[34+12] = 0xf0
	add(h, fr)
	// Rejected: nothing at all.
	add(offload.Hdr{GSOType: offload.GSOTCPv6, GSOSize: 1}, nil)

	f.Fuzz(func(t *testing.T, flags, gsoType uint8, hdrLen, gsoSize, csumStart, csumOffset uint16, frame []byte) {
		h := offload.Hdr{Flags: flags, GSOType: gsoType, HdrLen: hdrLen, GSOSize: gsoSize, CsumStart: csumStart, CsumOffset: csumOffset}
		n, maxLen, cerr := offload.SegmentCount(h, frame)
		if cerr == nil {
			honestSeed(h, frame)
		}
		orig := bytes.Clone(frame)
		if cerr != nil {
			out := outBufs(4, 256)
			if got, err := offload.Segment(h, frame, out); got != 0 || err != cerr {
				t.Fatalf("Segment = %d, %v; SegmentCount said %v", got, err, cerr)
			}
			if !errors.Is(cerr, offload.ErrMalformed) && !errors.Is(cerr, offload.ErrUnsupported) {
				t.Fatalf("SegmentCount error %v is neither ErrMalformed nor ErrUnsupported", cerr)
			}
			return
		}
		if n > 1 {
			// One buffer short: refused, nothing written.
			out := outBufs(n-1, maxLen)
			if got, err := offload.Segment(h, frame, out); got != 0 || !errors.Is(err, offload.ErrTooManySegments) {
				t.Fatalf("Segment with %d of %d buffers = %d, %v", n-1, n, got, err)
			}
		}
		// Buffers exactly as large as SegmentCount says: Segment panics if
		// it needs more.
		out := outBufs(n, maxLen)
		got, err := offload.Segment(h, frame, out)
		if err != nil || got != n {
			t.Fatalf("Segment = %d, %v; SegmentCount said %d", got, err, n)
		}
		if !bytes.Equal(frame, orig) {
			t.Fatal("Segment modified its input")
		}
		if err := checkSegments(frame, int(gsoSize), out[:n]); err != nil {
			t.Fatal(err)
		}
	})
}

// honestSeed puts in the TCP checksum field of frame, an IPv6 super-frame
// that SegmentCount accepted, the pseudo-header sum a sender leaves there.
// Behind a routing header Segment starts from that sum (only the sender
// knows the final destination), so its segments are only as right as the
// sum is; elsewhere Segment does not read it.
func honestSeed(h offload.Hdr, frame []byte) {
	ipOff := ipOffset(frame)
	if h.Flags&offload.NeedsCsum == 0 || frame[ipOff]>>4 != 6 {
		return
	}
	ip := frame[ipOff:]
	_, upper, _ := ipv6Upper(ip)
	be.PutUint16(ip[upper+16:], refSum(pseudoHdr(ip, 6, len(ip)-upper)))
}

// FuzzChecksum feeds arbitrary headers and frames to Checksum: nothing may
// panic, an error leaves the frame alone, and a completed checksum at an
// even offset verifies: the sum of the pseudo-header sum the field held and
// the checksummed data is 0xffff.
func FuzzChecksum(f *testing.F) {
	add := func(h offload.Hdr, frame []byte) {
		f.Add(h.Flags, h.GSOType, h.CsumStart, h.CsumOffset, frame)
	}
	// TCP over IPv4 and IPv6, UDP over IPv4, odd lengths.
	add(build(spec{payload: 101, flags: ack}))
	add(build(spec{v6: true, vlan: true, tcpOpts: 12, payload: 1000, flags: ack | psh}))
	add(build(spec{udp: true, payload: 33}))
	// The field in the last two bytes; offsets past the end.
	add(offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 1, CsumOffset: 1}, []byte{1, 2, 3, 4})
	add(offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 3, CsumOffset: 0}, []byte{1, 2, 3, 4})
	// No NEEDS_CSUM: nothing to do.
	add(offload.Hdr{Flags: offload.DataValid}, []byte{1, 2, 3})

	f.Fuzz(func(t *testing.T, flags, gsoType uint8, csumStart, csumOffset uint16, frame []byte) {
		h := offload.Hdr{Flags: flags, GSOType: gsoType, CsumStart: csumStart, CsumOffset: csumOffset}
		orig := bytes.Clone(frame)
		err := offload.Checksum(h, frame)
		if err != nil || flags&offload.NeedsCsum == 0 {
			if !bytes.Equal(frame, orig) {
				t.Fatalf("frame modified (err %v)", err)
			}
			return
		}
		at := int(csumStart) + int(csumOffset)
		if csumOffset%2 == 0 {
			if s := refSum(orig[at:at+2], frame[csumStart:]); s != 0xffff {
				t.Fatalf("sum after Checksum %#x, want 0xffff", s)
			}
		}
		if be.Uint16(frame[at:]) == 0 {
			t.Fatal("checksum stored as 0")
		}
		frame[at], frame[at+1] = orig[at], orig[at+1]
		if !bytes.Equal(frame, orig) {
			t.Fatal("Checksum wrote outside its field")
		}
	})
}
