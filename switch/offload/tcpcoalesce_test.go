package offload_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// More TCP flags (helpers_test.go has the others).
const (
	rst = 0x04
	urg = 0x20
)

// cut builds the TCP super-frame s (s.mss set) and cuts it with Segment:
// the super-frame's header, the super-frame, and its segments, complete
// frames to be sent with a zero header.
func cut(t testing.TB, s spec) (offload.Hdr, []byte, [][]byte) {
	t.Helper()
	h, f := build(s)
	n, maxLen, err := offload.SegmentCount(h, f)
	if err != nil {
		t.Fatalf("SegmentCount: %v", err)
	}
	out := outBufs(n, maxLen)
	if _, err := offload.Segment(h, f, out); err != nil {
		t.Fatalf("Segment: %v", err)
	}
	return h, f, out[:n]
}

// resegment cuts the super-frame sf, whose header is h, with Segment.
func resegment(h offload.Hdr, sf []byte) ([][]byte, error) {
	n, maxLen, err := offload.SegmentCount(h, sf)
	if err != nil {
		return nil, err
	}
	out := outBufs(n, maxLen)
	if _, err := offload.Segment(h, sf, out); err != nil {
		return nil, err
	}
	return out[:n], nil
}

// layoutOf returns the offsets of the IP and TCP headers of the frame f,
// parsed by hand whatever its checksums say.
func layoutOf(f []byte) (ipOff, l4 int, v6 bool) {
	ipOff = ipOffset(f)
	if f[ipOff]>>4 == 6 {
		_, upper, _ := ipv6Upper(f[ipOff:])
		return ipOff, ipOff + upper, true
	}
	return ipOff, ipOff + int(f[ipOff]&15)*4, false
}

// tcpAt returns the offset of the TCP header of f.
func tcpAt(f []byte) int {
	_, l4, _ := layoutOf(f)
	return l4
}

// fix makes the TCP segment f consistent after an edit: IP lengths for
// the whole frame, a valid IPv4 header checksum and a complete TCP
// checksum.
func fix(f []byte) []byte {
	ipOff, l4, v6 := layoutOf(f)
	ip := f[ipOff:]
	if v6 {
		be.PutUint16(ip[4:], uint16(len(ip)-40))
	} else {
		be.PutUint16(ip[2:], uint16(len(ip)))
		ip[10], ip[11] = 0, 0
		be.PutUint16(ip[10:], ^refSum(ip[:l4-ipOff]))
	}
	tcp := f[l4:]
	tcp[16], tcp[17] = 0, 0
	be.PutUint16(tcp[16:], ^refSum(pseudoHdr(ip, 6, len(tcp)), tcp))
	return f
}

// toPartial turns the complete segment f, in place, into the form a tap
// with checksum offload hands out: the TCP checksum field holding the
// pseudo-header sum for the segment's length, the header NeedsCsum.
func toPartial(f []byte) offload.Hdr {
	ipOff, l4, _ := layoutOf(f)
	be.PutUint16(f[l4+16:], refSum(pseudoHdr(f[ipOff:], 6, len(f)-l4)))
	return offload.Hdr{Flags: offload.NeedsCsum, CsumStart: uint16(l4), CsumOffset: 16}
}

// form is how a segment comes to the TCPCoalescer.
type form int

const (
	complete  form = iota // a complete checksum, a zero header
	partial               // NeedsCsum, as toPartial makes it
	dataValid             // a complete checksum, the header DataValid
	mixed                 // for a run: the three in turn
)

func (fm form) String() string {
	return [...]string{"complete", "partial", "data valid", "mixed"}[fm]
}

// inForm returns copies of segs, complete segments, in the form fm, and
// their headers.
func inForm(fm form, segs [][]byte) ([]offload.Hdr, [][]byte) {
	hs := make([]offload.Hdr, len(segs))
	fs := make([][]byte, len(segs))
	for i, s := range segs {
		fs[i] = bytes.Clone(s)
		f := fm
		if f == mixed {
			f = form(i % 3)
		}
		switch f {
		case partial:
			hs[i] = toPartial(fs[i])
		case dataValid:
			hs[i] = offload.Hdr{Flags: offload.DataValid}
		}
	}
	return hs, fs
}

// coalesceTCP runs c over the segments fs, whose headers are hs: Start
// with the first, Add the following ones while it takes them. It returns
// how many were merged, and the header and a copy of the super-frame
// from Finish if that is at least two.
func coalesceTCP(c *offload.TCPCoalescer, hs []offload.Hdr, fs [][]byte) (int, offload.Hdr, []byte) {
	if !c.Start(hs[0], fs[0]) {
		return c.Merged(), offload.Hdr{}, nil
	}
	for i := 1; i < len(fs) && c.Add(hs[i], fs[i]); i++ {
	}
	if c.Merged() < 2 {
		return c.Merged(), offload.Hdr{}, nil
	}
	h, sf := c.Finish()
	return c.Merged(), h, bytes.Clone(sf)
}

func newTCPCoalescer() *offload.TCPCoalescer {
	return offload.NewTCPCoalescer(make([]byte, 14+65535))
}

// sameSegments checks the super-frame sf with header h that a
// TCPCoalescer made of the segments fs, whose headers were hs: it is a
// super-frame as a tap hands one out (NeedsCsum, the pseudo-header sum
// for its whole length, the IP lengths and IPv4 header checksum right),
// and Segment cuts it into exactly fs, each with valid checksums.
//
// What is compared is precisely what TCP GRO guarantees. Checksums are
// compared by their validity, not their bits: a segment's checksum may
// have been partial (NeedsCsum) or unchecked (DataValid), and a valid one
// has two forms when the rest sums to 0xffff (0 and 0xffff), while Segment
// always writes the first. PSH needs no exception: Segment keeps it on the
// last segment only, and a segment with PSH ends a run. The IPv4
// identification needs one: with DF set the TCPCoalescer takes any, and
// Segment numbers the segments from the first's.
func sameSegments(hs []offload.Hdr, fs [][]byte, h offload.Hdr, sf []byte) error {
	ipOff, l4, v6 := layoutOf(fs[0])
	hdrEnd := l4 + int(fs[0][l4+12]>>4)*4
	wantH := offload.Hdr{Flags: offload.NeedsCsum, GSOType: offload.GSOTCPv4, HdrLen: uint16(hdrEnd),
		GSOSize: uint16(len(fs[0]) - hdrEnd), CsumStart: uint16(l4), CsumOffset: 16}
	if v6 {
		wantH.GSOType = offload.GSOTCPv6
	}
	if h != wantH {
		return fmt.Errorf("header %+v, want %+v", h, wantH)
	}
	if len(sf) < hdrEnd {
		return fmt.Errorf("super-frame of %d bytes", len(sf))
	}
	ip := sf[ipOff:]
	if v6 {
		if got := int(be.Uint16(ip[4:])); got != len(ip)-40 {
			return fmt.Errorf("super-frame's ipv6 payload length %d, want %d", got, len(ip)-40)
		}
	} else {
		if got := int(be.Uint16(ip[2:])); got != len(ip) {
			return fmt.Errorf("super-frame's ipv4 total length %d, want %d", got, len(ip))
		}
		if refSum(ip[:l4-ipOff]) != 0xffff {
			return fmt.Errorf("super-frame's ipv4 header checksum wrong")
		}
	}
	if got, want := be.Uint16(sf[l4+16:]), refSum(pseudoHdr(ip, 6, len(sf)-l4)); got != want {
		return fmt.Errorf("super-frame's checksum field %#04x, want the pseudo-header sum %#04x", got, want)
	}

	segs, err := resegment(h, sf)
	if err != nil {
		return fmt.Errorf("Segment: %v", err)
	}
	if len(segs) != len(fs) {
		return fmt.Errorf("cut into %d segments, %d were merged", len(segs), len(fs))
	}
	firstID := be.Uint16(fs[0][ipOff+4:])
	for i, in := range fs {
		p, err := verify(segs[i])
		if err != nil {
			return fmt.Errorf("segment %d cut off: %v", i, err)
		}
		if len(in) != len(segs[i]) || p.l4Off != l4 {
			return fmt.Errorf("segment %d: %d bytes cut off, %d merged", i, len(segs[i]), len(in))
		}
		// What the TCPCoalescer must have checked of in.
		field := be.Uint16(in[l4+16:])
		switch {
		case hs[i].Flags&offload.NeedsCsum != 0:
			if want := refSum(pseudoHdr(in[ipOff:], 6, len(in)-l4)); field != want {
				return fmt.Errorf("segment %d merged with NeedsCsum and %#04x in its checksum field, not the pseudo-header sum %#04x", i, field, want)
			}
		case hs[i].Flags&offload.DataValid != 0:
		default:
			if _, err := verify(in); err != nil {
				return fmt.Errorf("segment %d merged without offload flags: %v", i, err)
			}
		}
		if !v6 && refSum(in[ipOff:l4]) != 0xffff {
			return fmt.Errorf("segment %d merged with a wrong ipv4 header checksum", i)
		}

		want, got := bytes.Clone(in), bytes.Clone(segs[i])
		for _, b := range [][]byte{want, got} {
			b[l4+16], b[l4+17] = 0, 0
			if !v6 {
				b[ipOff+10], b[ipOff+11] = 0, 0
			}
		}
		if !v6 && p.id != be.Uint16(in[ipOff+4:]) {
			if in[ipOff+6]&0x40 == 0 {
				return fmt.Errorf("segment %d without DF merged with ipv4 id %d, cut off with %d", i, be.Uint16(in[ipOff+4:]), p.id)
			}
			if p.id != firstID+uint16(i) {
				return fmt.Errorf("segment %d cut off with ipv4 id %d, want the first's %d plus %d", i, p.id, firstID, i)
			}
			be.PutUint16(want[ipOff+4:], p.id)
		}
		if !bytes.Equal(got, want) {
			return fmt.Errorf("segment %d cut off differs from the one merged:\n got %x\nwant %x", i, got, want)
		}
	}
	return nil
}

// TestTCPCoalesceRoundTrip cuts TSO super-frames as a tap hands them out
// with Segment and merges the segments again, complete, partial (as a tap
// with checksum offload hands out small segments), DataValid or a mix:
// all must join, Finish's header must be the tap's and its super-frame
// the original byte for byte (the original holds the pseudo-header sum in
// its checksum field and the first segment's IPv4 identification), and
// cutting it again gives the same segments.
func TestTCPCoalesceRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    spec
	}{
		{"ipv4", spec{payload: 10 * 1460, mss: 1460, flags: ack}},
		{"ipv4 timestamps last short psh", spec{tcpOpts: 12, payload: 7*1448 + 700, mss: 1448, flags: ack | psh, seq: 1000, id: 7}},
		{"ipv4 timestamps psh", spec{tcpOpts: 12, payload: 3 * 1448, mss: 1448, flags: ack | psh}},
		{"ipv4 options", spec{ipOpts: 8, payload: 4*536 + 1, mss: 536, flags: ack}},
		{"ipv4 options timestamps id wraps", spec{ipOpts: 8, tcpOpts: 12, payload: 5 * 536, mss: 536, flags: ack | psh, id: 0xfffe}},
		{"ipv4 seq wraps", spec{payload: 4 * 536, mss: 536, flags: ack, seq: 0xffffffff - 1000}},
		{"ipv4 ect", spec{ecn: true, tcpOpts: 12, payload: 3*1448 + 5, mss: 1448, flags: ack}},
		{"ipv4 64k", spec{tcpOpts: 12, payload: 45 * 1448, mss: 1448, flags: ack | psh}},
		{"ipv4 mss 1", spec{payload: 9, mss: 1, flags: ack | psh}},
		{"ipv6", spec{v6: true, payload: 10 * 1440, mss: 1440, flags: ack}},
		{"ipv6 timestamps last short psh", spec{v6: true, tcpOpts: 12, payload: 5*1428 + 3, mss: 1428, flags: ack | psh, seq: 77}},
		{"ipv6 mss 536", spec{v6: true, tcpOpts: 12, payload: 6 * 536, mss: 536, flags: ack}},
		{"ipv6 64k", spec{v6: true, tcpOpts: 12, payload: 45 * 1428, mss: 1428, flags: ack | psh}},
	} {
		origH, orig, segs := cut(t, tc.s)
		wantH := origH
		wantH.GSOType &^= offload.GSOECN // set by build for ECT, meant for CWR
		for _, fm := range []form{complete, partial, dataValid, mixed} {
			t.Run(tc.name+"/"+fm.String(), func(t *testing.T) {
				hs, fs := inForm(fm, segs)
				kept := make([][]byte, len(fs))
				for i, f := range fs {
					kept[i] = bytes.Clone(f)
				}
				n, h, sf := coalesceTCP(newTCPCoalescer(), hs, fs)
				if n != len(fs) {
					t.Fatalf("merged %d of %d segments", n, len(fs))
				}
				for i := range fs {
					if !bytes.Equal(fs[i], kept[i]) {
						t.Fatalf("segment %d modified", i)
					}
				}
				if h != wantH {
					t.Errorf("header %+v, want %+v", h, wantH)
				}
				if !bytes.Equal(sf, orig) {
					t.Errorf("super-frame differs from the original:\n got %x\nwant %x", sf, orig)
				}
				again, err := resegment(h, sf)
				if err != nil {
					t.Fatalf("Segment: %v", err)
				}
				if len(again) != len(segs) {
					t.Fatalf("cut again into %d segments, want %d", len(again), len(segs))
				}
				for i := range segs {
					if !bytes.Equal(again[i], segs[i]) {
						t.Errorf("segment %d cut again differs:\n got %x\nwant %x", i, again[i], segs[i])
					}
				}
				if err := sameSegments(hs, fs, h, sf); err != nil {
					t.Error(err)
				}
			})
		}
	}
}

// on returns an edit of segment i of a run.
func on(i int, edit func(h *offload.Hdr, f []byte) []byte) func([]offload.Hdr, [][]byte) {
	return func(hs []offload.Hdr, fs [][]byte) { fs[i] = edit(&hs[i], fs[i]) }
}

// onAll returns an edit of every segment of a run.
func onAll(edit func(h *offload.Hdr, f []byte) []byte) func([]offload.Hdr, [][]byte) {
	return func(hs []offload.Hdr, fs [][]byte) {
		for i := range fs {
			fs[i] = edit(&hs[i], fs[i])
		}
	}
}

// TestTCPCoalesceRefuses edits the complete segments of a TSO super-frame
// (four of 100 bytes, IPv4 with DF and timestamps unless said otherwise)
// and checks where the run stops: Merged after Start and Add while it
// takes them, 0 when Start refuses the first. Each edit leaves the
// checksums right unless it is about them, so the refusal has its own
// reason. When two or more merge, the super-frame must cut back into them.
func TestTCPCoalesceRefuses(t *testing.T) {
	base := spec{tcpOpts: 12, payload: 400, mss: 100, flags: ack, seq: 1000, id: 0x1234}
	v6 := spec{v6: true, tcpOpts: 12, payload: 400, mss: 100, flags: ack, seq: 1000}
	ipOpts := base
	ipOpts.ipOpts = 4
	ext := v6
	ext.ext = []extHdr{dstOpts}
	idWraps := base
	idWraps.id = 0xfffe

	field := func(off int, delta byte) func(*offload.Hdr, []byte) []byte { // a byte of the TCP header, checksums fixed
		return func(_ *offload.Hdr, f []byte) []byte { f[tcpAt(f)+off] += delta; return fix(f) }
	}
	ipField := func(off int, delta byte) func(*offload.Hdr, []byte) []byte { // a byte from the IP header on, checksums fixed
		return func(_ *offload.Hdr, f []byte) []byte { f[ipOffset(f)+off] += delta; return fix(f) }
	}
	raw := func(off int, delta byte) func(*offload.Hdr, []byte) []byte { // a byte of the frame, nothing fixed
		return func(_ *offload.Hdr, f []byte) []byte { f[off] += delta; return f }
	}
	seq := func(delta uint32) func(*offload.Hdr, []byte) []byte {
		return func(_ *offload.Hdr, f []byte) []byte {
			l4 := tcpAt(f)
			be.PutUint32(f[l4+4:], be.Uint32(f[l4+4:])+delta)
			return fix(f)
		}
	}
	id := func(v uint16) func(*offload.Hdr, []byte) []byte {
		return func(_ *offload.Hdr, f []byte) []byte { be.PutUint16(f[18:], v); return fix(f) }
	}
	flags := func(v uint8) func(*offload.Hdr, []byte) []byte {
		return func(_ *offload.Hdr, f []byte) []byte { f[tcpAt(f)+13] = v; return fix(f) }
	}
	noDF := func(_ *offload.Hdr, f []byte) []byte { f[20] &^= 0x40; return fix(f) }
	toPartialEdit := func(h *offload.Hdr, f []byte) []byte { *h = toPartial(f); return f }
	dropBytes := func(n int) func(*offload.Hdr, []byte) []byte {
		return func(_ *offload.Hdr, f []byte) []byte { return fix(f[:len(f)-n]) }
	}
	both := func(edits ...func([]offload.Hdr, [][]byte)) func([]offload.Hdr, [][]byte) {
		return func(hs []offload.Hdr, fs [][]byte) {
			for _, e := range edits {
				e(hs, fs)
			}
		}
	}
	_, udpFrame := build(spec{udp: true, payload: 100})

	type refusal struct {
		name string
		s    *spec // base if nil
		edit func([]offload.Hdr, [][]byte)
		want int
	}
	cases := []refusal{
		{name: "unchanged", edit: func([]offload.Hdr, [][]byte) {}, want: 4},
		{name: "ipv6 unchanged", s: &v6, edit: func([]offload.Hdr, [][]byte) {}, want: 4},

		// Checksums.
		{name: "wrong tcp checksum", edit: on(1, raw(34+17, 1)), want: 1},
		{name: "wrong tcp checksum first", edit: on(0, raw(34+17, 1)), want: 0},
		{name: "corrupted payload", edit: on(2, func(_ *offload.Hdr, f []byte) []byte { f[len(f)-1] ^= 0x5a; return f }), want: 2},
		{name: "ipv6 wrong tcp checksum", s: &v6, edit: on(1, raw(54+16, 1)), want: 1},
		{name: "wrong tcp checksum data valid", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			f[34+17]++
			return f
		}), want: 4},
		{name: "wrong tcp checksum data valid first", edit: on(0, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			f[34+16]++
			return f
		}), want: 4},
		{name: "wrong ipv4 header checksum", edit: on(1, raw(24, 1)), want: 1},
		{name: "wrong ipv4 header checksum first", edit: on(0, raw(25, 1)), want: 0},
		{name: "wrong ipv4 header checksum data valid", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			f[24]++
			return f
		}), want: 1},
		{name: "partial", edit: on(1, toPartialEdit), want: 4},
		{name: "partial first", edit: on(0, toPartialEdit), want: 4},
		{name: "partial wrong pseudo-header sum", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			*h = toPartial(f)
			f[34+17]++
			return f
		}), want: 1},
		{name: "partial sum for another length", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			*h = toPartial(f)
			be.PutUint16(f[34+16:], refSum(pseudoHdr(f[14:], 6, len(f)-34+1)))
			return f
		}), want: 1},
		{name: "partial sum first wrong", edit: on(0, func(h *offload.Hdr, f []byte) []byte {
			*h = toPartial(f)
			f[34+16]--
			return f
		}), want: 0},
		{name: "needs csum with a complete checksum", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			*h = offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 34, CsumOffset: 16}
			return f
		}), want: 1},
		{name: "pseudo-header sum without needs csum", edit: on(1, func(_ *offload.Hdr, f []byte) []byte {
			toPartial(f)
			return f
		}), want: 1},
		{name: "partial csum_start elsewhere", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			*h = toPartial(f)
			h.CsumStart, h.CsumOffset = 32, 18 // the same field, summed from 2 bytes earlier
			return f
		}), want: 1},
		{name: "partial csum_offset elsewhere", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			*h = toPartial(f)
			h.CsumOffset = 6
			return f
		}), want: 1},

		// The sequence.
		{name: "sequence gap", edit: on(2, seq(1)), want: 2},
		{name: "sequence overlap", edit: on(2, seq(^uint32(0))), want: 2},
		{name: "segment repeated", edit: func(hs []offload.Hdr, fs [][]byte) { fs[2] = bytes.Clone(fs[1]) }, want: 2},
		{name: "segments swapped", edit: func(hs []offload.Hdr, fs [][]byte) { fs[1], fs[2] = fs[2], fs[1] }, want: 1},

		// Headers that must be the same.
		{name: "other ack", edit: on(1, field(11, 1)), want: 1},
		{name: "other window", edit: on(1, field(15, 1)), want: 1},
		{name: "other urgent pointer", edit: on(1, field(19, 1)), want: 1},
		{name: "other tsval", edit: on(1, field(27, 1)), want: 1},
		{name: "other tsecr", edit: on(2, field(31, 1)), want: 2},
		{name: "other tcp option", edit: on(1, field(20, 0xff)), want: 1}, // NOP to EOL
		{name: "other tcp reserved bits", edit: on(1, field(12, 1)), want: 1},
		{name: "other tcp header length", edit: on(1, func(_ *offload.Hdr, f []byte) []byte {
			g := append(bytes.Clone(f[:34+32]), 1, 1, 1, 1) // 4 more NOPs
			g = append(g, f[34+32:]...)
			g[34+12] = 9 << 4
			return fix(g)
		}), want: 1},
		{name: "other source port", edit: on(1, field(1, 1)), want: 1},
		{name: "other destination port", edit: on(1, field(3, 1)), want: 1},
		{name: "other destination mac", edit: on(1, raw(5, 1)), want: 1},
		{name: "other source mac", edit: on(3, raw(11, 1)), want: 3},
		{name: "other ttl", edit: on(1, ipField(8, 0xff)), want: 1},
		{name: "other tos", edit: on(1, ipField(1, 4)), want: 1},
		{name: "other ecn", edit: on(1, ipField(1, 3)), want: 1}, // CE
		{name: "other source address", edit: on(1, ipField(15, 1)), want: 1},
		{name: "other destination address", edit: on(1, ipField(19, 1)), want: 1},
		{name: "other ipv4 options", s: &ipOpts, edit: on(1, ipField(20, 0xff)), want: 1}, // NOP to EOL
		{name: "df only on the first", edit: on(1, noDF), want: 1},
		{name: "ipv6 other flow label", s: &v6, edit: on(1, ipField(3, 1)), want: 1},
		{name: "ipv6 other traffic class", s: &v6, edit: on(1, ipField(1, 0x10)), want: 1},
		{name: "ipv6 other hop limit", s: &v6, edit: on(1, ipField(7, 0xff)), want: 1},
		{name: "ipv6 other source address", s: &v6, edit: on(2, ipField(23, 1)), want: 2},
		{name: "ipv6 other destination address", s: &v6, edit: on(1, ipField(39, 1)), want: 1},

		// Flags. PSH ends a run and joins it; others are listed below.
		{name: "psh", edit: on(1, field(13, psh)), want: 2},
		{name: "psh on the last", edit: on(3, field(13, psh)), want: 4},
		{name: "psh first", edit: on(0, field(13, psh)), want: 0},
		{name: "ipv6 psh", s: &v6, edit: on(2, field(13, psh)), want: 3},
		{name: "no flags", edit: on(1, flags(0)), want: 1},
		{name: "psh without ack", edit: on(2, flags(psh)), want: 2},
		{name: "no flags first", edit: on(0, flags(0)), want: 0},

		// Segments that cannot join anything.
		{name: "pure ack", edit: on(1, func(_ *offload.Hdr, f []byte) []byte { return fix(f[:34+32]) }), want: 1},
		{name: "pure ack first", edit: on(0, func(_ *offload.Hdr, f []byte) []byte { return fix(f[:34+32]) }), want: 0},
		{name: "ethernet padding", edit: on(1, func(_ *offload.Hdr, f []byte) []byte { return append(f, 0, 0) }), want: 1},
		{name: "ethernet padding first", edit: on(0, func(_ *offload.Hdr, f []byte) []byte { return append(f, 0) }), want: 0},
		{name: "ipv6 ethernet padding", s: &v6, edit: on(1, func(_ *offload.Hdr, f []byte) []byte { return append(f, 0) }), want: 1},
		{name: "ip length beyond the frame", edit: on(1, func(_ *offload.Hdr, f []byte) []byte { return f[:len(f)-1] }), want: 1},
		// DataValid spares the TCP checksum, which the cases above fail as
		// well: the lengths are checked for themselves.
		{name: "ethernet padding data valid", edit: on(0, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			return append(f, 0, 0)
		}), want: 0},
		{name: "ipv6 ethernet padding data valid", s: &v6, edit: on(0, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			return append(f, 0, 0, 0, 0, 0, 0)
		}), want: 0},
		{name: "ip length beyond the frame data valid", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			return f[:len(f)-1]
		}), want: 1},
		{name: "ipv6 length beyond the frame data valid", s: &v6, edit: on(2, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			return f[:len(f)-1]
		}), want: 2},
		{name: "not tcp data valid", edit: on(0, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			return ipField(9, 17-6)(h, f)
		}), want: 0},
		{name: "ipv6 not tcp data valid", s: &v6, edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			h.Flags = offload.DataValid
			f[20] = 17
			return f
		}), want: 1},
		{name: "ipv4 header length 16", edit: on(0, func(_ *offload.Hdr, f []byte) []byte {
			g := append(bytes.Clone(f[:30]), f[34:]...) // no destination address
			g[14] = 0x44
			return fix(g)
		}), want: 0},
		{name: "vlan tag", edit: onAll(func(_ *offload.Hdr, f []byte) []byte {
			return append(append(bytes.Clone(f[:12]), 0x81, 0, 0, 5), f[12:]...)
		}), want: 0},
		{name: "vlan tag second", edit: on(1, func(_ *offload.Hdr, f []byte) []byte {
			return append(append(bytes.Clone(f[:12]), 0x81, 0, 0, 5), f[12:]...)
		}), want: 1},
		{name: "ipv6 extension header", s: &ext, edit: func([]offload.Hdr, [][]byte) {}, want: 0},
		{name: "udp", edit: func(hs []offload.Hdr, fs [][]byte) {
			hs[0], fs[0] = offload.Hdr{}, completeUDP(bytes.Clone(udpFrame))
		}, want: 0},
		{name: "udp second", edit: func(hs []offload.Hdr, fs [][]byte) {
			hs[1], fs[1] = offload.Hdr{}, completeUDP(bytes.Clone(udpFrame))
		}, want: 1},
		{name: "ipv4 more fragments first", edit: on(0, ipField(6, 0x20)), want: 0},
		{name: "ipv4 fragment offset", edit: on(1, ipField(7, 1)), want: 1},
		{name: "truncated", edit: on(0, func(_ *offload.Hdr, f []byte) []byte { return f[:40] }), want: 0},
		{name: "ipv6 truncated", s: &v6, edit: on(1, func(_ *offload.Hdr, f []byte) []byte { return f[:60] }), want: 1},
		{name: "gso header", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			h.GSOType, h.GSOSize = offload.GSOTCPv4, 100
			return f
		}), want: 1},
		{name: "gso header first", edit: on(0, func(h *offload.Hdr, f []byte) []byte {
			h.GSOType, h.GSOSize, h.HdrLen = offload.GSOTCPv4, 100, 66
			return f
		}), want: 0},
		{name: "gso header ecn", edit: on(1, func(h *offload.Hdr, f []byte) []byte {
			h.GSOType = offload.GSOECN
			return f
		}), want: 1},

		// Lengths: the first's payload is the gso_size.
		{name: "longer", edit: on(1, func(_ *offload.Hdr, f []byte) []byte { return fix(append(f, 0xee)) }), want: 1},
		{name: "shorter then more", edit: both(on(1, dropBytes(1)), on(2, seq(^uint32(0))), on(3, seq(^uint32(0)))), want: 2},
		{name: "shorter then shorter", edit: both(on(1, dropBytes(50)), on(2, dropBytes(60)), on(2, seq(^uint32(49)))), want: 2},
		{name: "shorter last", edit: on(3, dropBytes(99)), want: 4},

		// IPv4 identifications.
		{name: "no df counting", edit: onAll(noDF), want: 4},
		{name: "no df counting wraps", s: &idWraps, edit: onAll(noDF), want: 4},
		{name: "no df id skipped", edit: both(onAll(noDF), on(2, id(0x1234+3))), want: 2},
		{name: "no df id fixed", edit: both(onAll(noDF), onAll(id(0x1234))), want: 1},
		{name: "no df id counting down", edit: both(onAll(noDF), on(1, id(0x1233))), want: 1},
		{name: "df any id", edit: both(on(1, id(0)), on(2, id(0xbeef)), on(3, id(0x1234))), want: 4},
		{name: "df fixed id", edit: onAll(id(0x1234)), want: 4},
	}
	for _, f := range []struct {
		name string
		bit  uint8
	}{{"syn", syn}, {"fin", fin}, {"rst", rst}, {"urg", urg}, {"ece", ece}, {"cwr", cwr}} {
		cases = append(cases,
			refusal{name: f.name, edit: on(1, field(13, f.bit)), want: 1},
			refusal{name: f.name + " first", edit: on(0, field(13, f.bit)), want: 0},
			refusal{name: f.name + " last", edit: on(3, field(13, f.bit)), want: 3},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			if tc.s != nil {
				s = *tc.s
			}
			_, _, segs := cut(t, s)
			if len(segs) != 4 {
				t.Fatalf("%d segments to start with", len(segs))
			}
			hs, fs := inForm(complete, segs)
			tc.edit(hs, fs)
			c := newTCPCoalescer()
			if c.Start(hs[0], fs[0]) != (tc.want > 0) {
				t.Fatalf("Start = %v, want %v", !(tc.want > 0), tc.want > 0)
			}
			n, h, sf := coalesceTCP(c, hs, fs)
			if n != tc.want || c.Merged() != n {
				t.Fatalf("merged %d (Merged %d), want %d", n, c.Merged(), tc.want)
			}
			if n >= 2 {
				if err := sameSegments(hs[:n], fs[:n], h, sf); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// completeUDP gives the UDP datagram f from build a complete checksum, to be
// sent with a zero header.
func completeUDP(f []byte) []byte {
	udp := f[34:]
	udp[6], udp[7] = 0, 0
	be.PutUint16(udp[6:], ^refSum(pseudoHdr(f[14:], 17, len(udp)), udp))
	return f
}

// TestTCPCoalesceLimits checks the bounds of a super-frame: at most
// MaxCoalesced segments, and an IP packet of at most 65535 bytes, which
// a run reaches exactly but does not pass by a byte. The segments left
// over begin the next super-frame.
func TestTCPCoalesceLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		s     spec
		want  []int // the segments in each super-frame in turn
		ipLen int   // of the first super-frame, if not 0
	}{
		{"max coalesced", spec{payload: 70 * 10, mss: 10, flags: ack}, []int{offload.MaxCoalesced, 70 - offload.MaxCoalesced}, 0},
		{"ipv6 max coalesced", spec{v6: true, tcpOpts: 12, payload: 130*100 + 1, mss: 100, flags: ack | psh}, []int{64, 64, 3}, 0},
		{"65535 bytes", spec{payload: 4*13100 + 13095, mss: 13100, flags: ack}, []int{5}, 65535},
		{"65536 bytes", spec{payload: 4*13100 + 13096, mss: 13100, flags: ack}, []int{4, 1}, 20 + 20 + 4*13100},
		{"ipv4 mss 1448", spec{tcpOpts: 12, payload: 50 * 1448, mss: 1448, flags: ack}, []int{45, 5}, 20 + 32 + 45*1448},
		{"ipv6 mss 1448", spec{v6: true, payload: 50 * 1448, mss: 1448, flags: ack}, []int{45, 5}, 40 + 20 + 45*1448},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, segs := cut(t, tc.s)
			hs, fs := inForm(partial, segs)
			c := newTCPCoalescer()
			for k, want := range tc.want {
				n, h, sf := coalesceTCP(c, hs, fs)
				if n != want {
					t.Fatalf("super-frame %d: merged %d, want %d", k, n, want)
				}
				if n >= 2 {
					if k == 0 && tc.ipLen != 0 && len(sf)-14 != tc.ipLen {
						t.Errorf("IP packet of %d bytes, want %d", len(sf)-14, tc.ipLen)
					}
					if err := sameSegments(hs[:n], fs[:n], h, sf); err != nil {
						t.Fatalf("super-frame %d: %v", k, err)
					}
				}
				hs, fs = hs[n:], fs[n:]
			}
			if len(fs) != 0 {
				t.Fatalf("%d segments left", len(fs))
			}
		})
	}
}

// TestTCPCoalesceReuse runs one TCPCoalescer over runs of different
// kinds, one after another in both orders, and checks each gives what a
// fresh one gives: nothing of a run (its end by PSH or a short segment,
// its sequence, identification, DF, offsets or gso_size) carries over. A
// Start that fails leaves nothing merged, and Add takes nothing after it,
// not even the segment that continues the run before.
func TestTCPCoalesceReuse(t *testing.T) {
	nonDF := func(segs [][]byte) [][]byte {
		for _, f := range segs {
			f[20] &^= 0x40
			fix(f)
		}
		return segs
	}
	type run struct {
		name string
		hs   []offload.Hdr
		fs   [][]byte
	}
	var runs []run
	add := func(name string, fm form, segs [][]byte) {
		hs, fs := inForm(fm, segs)
		runs = append(runs, run{name, hs, fs})
	}
	_, _, segs := cut(t, spec{v6: true, tcpOpts: 12, payload: 4*700 + 5, mss: 700, flags: ack | psh, seq: 5})
	add("ipv6 psh", partial, segs)
	_, _, segs = cut(t, spec{ipOpts: 8, payload: 6 * 300, mss: 300, flags: ack, id: 0xffff, seq: 0xfffffff0})
	add("ipv4 options no df", complete, nonDF(segs))
	_, _, segs = cut(t, spec{tcpOpts: 12, payload: 3*1448 + 1, mss: 1448, flags: ack})
	add("ipv4 timestamps", mixed, segs)
	_, _, segs = cut(t, spec{payload: 20, mss: 10, flags: ack, id: 3})
	add("ipv4 tiny", dataValid, segs)

	want := make([]struct {
		n  int
		h  offload.Hdr
		sf []byte
	}, len(runs))
	for i, r := range runs {
		want[i].n, want[i].h, want[i].sf = coalesceTCP(newTCPCoalescer(), r.hs, r.fs)
		if want[i].n != len(r.fs) {
			t.Fatalf("%s: a fresh TCPCoalescer merged %d of %d", r.name, want[i].n, len(r.fs))
		}
	}
	c := newTCPCoalescer()
	for _, order := range [][]int{{0, 1, 2, 3, 0, 2, 1, 3, 3, 0}, {3, 2, 1, 0}} {
		for _, i := range order {
			r := runs[i]
			n, h, sf := coalesceTCP(c, r.hs, r.fs)
			if n != want[i].n || h != want[i].h || !bytes.Equal(sf, want[i].sf) {
				t.Fatalf("%s after other runs: merged %d into %+v %x, a fresh TCPCoalescer %d into %+v %x",
					r.name, n, h, sf, want[i].n, want[i].h, want[i].sf)
			}
		}
	}

	// A failed Start, after a finished run and in the middle of one.
	r := runs[2]
	bad := bytes.Clone(r.fs[0])
	bad[34+13] |= syn
	fix(bad)
	if n, _, _ := coalesceTCP(c, r.hs, r.fs); n != len(r.fs) {
		t.Fatalf("merged %d of %d", n, len(r.fs))
	}
	if c.Start(offload.Hdr{}, bad) || c.Merged() != 0 {
		t.Errorf("Start of a SYN after a finished run: Merged = %d, want 0", c.Merged())
	}
	if !c.Start(r.hs[0], r.fs[0]) || !c.Add(r.hs[1], r.fs[1]) {
		t.Fatal("run refused")
	}
	if c.Start(offload.Hdr{}, bad) || c.Merged() != 0 {
		t.Errorf("Start of a SYN in the middle of a run: Merged = %d, want 0", c.Merged())
	}
	if c.Add(r.hs[2], r.fs[2]) || c.Merged() != 0 {
		t.Errorf("Add after a failed Start took the segment that continued the run before it (Merged %d)", c.Merged())
	}
	if c.Add(r.hs[1], r.fs[1]) {
		t.Error("Add without Start took a segment")
	}
	if n, h, sf := coalesceTCP(c, r.hs, r.fs); n != want[2].n || h != want[2].h || !bytes.Equal(sf, want[2].sf) {
		t.Errorf("after a failed Start: merged %d into %+v %x, want %d", n, h, sf, want[2].n)
	}
}

// TestTCPCoalesceNoAllocs checks that Start, Add and Finish allocate
// nothing.
func TestTCPCoalesceNoAllocs(t *testing.T) {
	_, _, segs := cut(t, spec{tcpOpts: 12, payload: 45 * 1448, mss: 1448, flags: ack | psh})
	hs, fs := inForm(mixed, segs)
	c := newTCPCoalescer()
	merged := 0
	allocs := testing.AllocsPerRun(20, func() {
		if !c.Start(hs[0], fs[0]) {
			return
		}
		for i := 1; i < len(fs) && c.Add(hs[i], fs[i]); i++ {
		}
		merged = c.Merged()
		c.Finish()
	})
	if merged != len(fs) {
		t.Fatalf("merged %d of %d", merged, len(fs))
	}
	if allocs != 0 {
		t.Errorf("%v allocations per run, want 0", allocs)
	}
}

// FuzzTCPCoalesce offers three arbitrary segments to a TCPCoalescer, each
// with a header whose flags modes picks (two bits a segment: none,
// NeedsCsum at csumStart/csumOffset, DataValid, or both): nothing may
// panic or modify the segments, a second run of the same TCPCoalescer
// gives the same result, and when two or more merge, the super-frame is
// as a tap hands it out and Segment cuts it into exactly the segments
// merged (see sameSegments for what "exactly" allows), with valid
// checksums.
func FuzzTCPCoalesce(f *testing.F) {
	seed := func(s spec, modes uint8, edit func(i int, f []byte)) {
		_, _, segs := cut(f, s)
		fs := make([][]byte, 3)
		var csumStart uint16
		for i := range fs {
			fs[i] = bytes.Clone(segs[min(i, len(segs)-1)])
			if edit != nil {
				edit(i, fs[i])
			}
			if (modes>>(2*i))&1 != 0 {
				csumStart = toPartial(fs[i]).CsumStart
			}
		}
		f.Add(modes, csumStart, uint16(16), fs[0], fs[1], fs[2])
	}
	const allPartial, allValid, mix = 0b010101, 0b101010, 0b100100
	// Three full segments, each form.
	seed(spec{payload: 300, mss: 100, flags: ack}, 0, nil)
	seed(spec{tcpOpts: 12, payload: 300, mss: 100, flags: ack}, allPartial, nil)
	seed(spec{v6: true, tcpOpts: 12, payload: 300, mss: 100, flags: ack}, allValid, nil)
	seed(spec{ipOpts: 8, tcpOpts: 12, payload: 300, mss: 100, flags: ack, id: 0xffff}, mix, nil)
	seed(spec{v6: true, payload: 300, mss: 100, flags: ack}, 0b111111, nil)
	// The last short, with PSH; PSH in the middle: two merge.
	seed(spec{v6: true, payload: 2*500 + 7, mss: 500, flags: ack | psh}, allPartial, nil)
	seed(spec{payload: 3 * 64, mss: 64, flags: ack}, 0, func(i int, f []byte) {
		if i == 1 {
			f[34+13] |= psh
			fix(f)
		}
	})
	// IPv4 with DF and one identification, renumbered by Segment; without
	// DF, counting up.
	seed(spec{tcpOpts: 12, payload: 300, mss: 100, flags: ack, id: 9}, 0, func(_ int, f []byte) {
		be.PutUint16(f[18:], 9)
		fix(f)
	})
	seed(spec{payload: 30, mss: 10, flags: ack, id: 0xfffe}, allPartial, func(_ int, f []byte) {
		f[20] &^= 0x40
		fix(f)
	})
	// A wrong checksum DataValid lets through.
	seed(spec{payload: 300, mss: 100, flags: ack}, 0b001000, func(i int, f []byte) {
		if i == 1 {
			f[34+16]++
		}
	})

	f.Fuzz(func(t *testing.T, modes uint8, csumStart, csumOffset uint16, a, b, c []byte) {
		fs := [][]byte{a, b, c}
		hs := make([]offload.Hdr, 3)
		for i := range hs {
			switch (modes >> (2 * i)) & 3 {
			case 1:
				hs[i] = offload.Hdr{Flags: offload.NeedsCsum, CsumStart: csumStart, CsumOffset: csumOffset}
			case 2:
				hs[i] = offload.Hdr{Flags: offload.DataValid}
			case 3:
				hs[i] = offload.Hdr{Flags: offload.NeedsCsum | offload.DataValid, CsumStart: csumStart, CsumOffset: csumOffset}
			}
		}
		kept := [][]byte{bytes.Clone(a), bytes.Clone(b), bytes.Clone(c)}
		co := newTCPCoalescer()
		n, h, sf := coalesceTCP(co, hs, fs)
		for i := range fs {
			if !bytes.Equal(fs[i], kept[i]) {
				t.Fatalf("segment %d modified", i)
			}
		}
		if n2, h2, sf2 := coalesceTCP(co, hs, fs); n2 != n || h2 != h || !bytes.Equal(sf2, sf) {
			t.Fatalf("a second run merged %d into %+v %x, the first %d into %+v %x", n2, h2, sf2, n, h, sf)
		}
		if n < 2 {
			return
		}
		if err := sameSegments(hs[:n], fs[:n], h, sf); err != nil {
			t.Fatalf("merged %d of %+v %x: %v", n, hs, fs, err)
		}
	})
}
