package offload_test

import (
	"bytes"
	"testing"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// datagram builds the i-th UDP datagram of a flow as a Linux tap with
// checksum offload hands it out: IPv4 identification id+i, a payload of
// n bytes that differs from every other datagram's.
func datagram(v6 bool, ipOpts, n int, id uint16, i int) (offload.Hdr, []byte) {
	h, f := build(spec{udp: true, v6: v6, ipOpts: ipOpts, payload: n, id: id + uint16(i)})
	for j := len(f) - n; j < len(f); j++ {
		f[j] = byte(i*7 + j)
	}
	return h, f
}

// refSplit splits a UDP super-frame as Linux does where it is delivered
// (__udp_gso_segment, inet_gso_segment): the headers copied in front of
// every gso_size bytes of payload, the lengths and the IPv4 header checksum
// recomputed, IPv4 identifications counting up from the super-frame's, and
// each checksum field left partial (the pseudo-header sum) for its length.
func refSplit(h offload.Hdr, f []byte) [][]byte {
	l4, seg := int(h.CsumStart), int(h.GSOSize)
	v6 := be.Uint16(f[12:]) == 0x86dd
	payload := f[l4+8:]
	var out [][]byte
	for k := 0; len(payload) > 0; k++ {
		n := min(seg, len(payload))
		s := append(bytes.Clone(f[:l4+8]), payload[:n]...)
		payload = payload[n:]
		ip := s[14:l4]
		if v6 {
			be.PutUint16(ip[4:], uint16(8+n))
		} else {
			be.PutUint16(ip[2:], uint16(len(s)-14))
			be.PutUint16(ip[4:], be.Uint16(f[18:])+uint16(k))
			ip[10], ip[11] = 0, 0
			be.PutUint16(ip[10:], ^refSum(ip))
		}
		be.PutUint16(s[l4+4:], uint16(8+n))
		be.PutUint16(s[l4+6:], refSum(pseudoHdr(ip, 17, 8+n)))
		out = append(out, s)
	}
	return out
}

// coalesce merges frames with a fresh Coalescer and returns how many
// joined, the header and the super-frame (nil if fewer than two joined).
func coalesce(hs []offload.Hdr, frames [][]byte) (int, offload.Hdr, []byte) {
	c := offload.NewCoalescer(make([]byte, 14+65535))
	if !c.Start(hs[0], frames[0]) {
		return 0, offload.Hdr{}, nil
	}
	for i := 1; i < len(frames) && c.Add(hs[i], frames[i]); i++ {
	}
	if c.Merged() < 2 {
		return c.Merged(), offload.Hdr{}, nil
	}
	h, f := c.Finish()
	return c.Merged(), h, bytes.Clone(f)
}

func TestCoalesceRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v6      bool
		ipOpts  int
		sizes   []int
		id      uint16
		hdrLen  int
		gsoSize int
	}{
		{name: "ipv4 8x64", sizes: []int{64, 64, 64, 64, 64, 64, 64, 64}, id: 100, hdrLen: 42, gsoSize: 64},
		{name: "ipv4 last short", sizes: []int{1400, 1400, 3}, id: 7, hdrLen: 42, gsoSize: 1400},
		{name: "ipv4 identification wraps", sizes: []int{10, 10, 10}, id: 0xffff, hdrLen: 42, gsoSize: 10},
		{name: "ipv4 options", ipOpts: 8, sizes: []int{33, 33}, hdrLen: 50, gsoSize: 33},
		{name: "ipv6", v6: true, sizes: []int{100, 100, 100, 99}, hdrLen: 62, gsoSize: 100},
		{name: "one byte", sizes: []int{1, 1, 1, 1}, hdrLen: 42, gsoSize: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hs []offload.Hdr
			var frames [][]byte
			for i, n := range tc.sizes {
				h, f := datagram(tc.v6, tc.ipOpts, n, tc.id, i)
				hs, frames = append(hs, h), append(frames, f)
			}
			orig := make([][]byte, len(frames))
			for i, f := range frames {
				orig[i] = bytes.Clone(f)
			}
			n, h, sf := coalesce(hs, frames)
			if n != len(frames) {
				t.Fatalf("merged %d of %d", n, len(frames))
			}
			for i := range frames {
				if !bytes.Equal(frames[i], orig[i]) {
					t.Fatalf("datagram %d modified", i)
				}
			}
			want := offload.Hdr{Flags: offload.NeedsCsum, GSOType: offload.GSOUDPL4, HdrLen: uint16(tc.hdrLen),
				GSOSize: uint16(tc.gsoSize), CsumStart: uint16(tc.hdrLen - 8), CsumOffset: 6}
			if h != want {
				t.Fatalf("header %+v, want %+v", h, want)
			}
			total := tc.hdrLen
			for _, n := range tc.sizes {
				total += n
			}
			if len(sf) != total {
				t.Fatalf("super-frame of %d bytes, want %d", len(sf), total)
			}
			if !tc.v6 && refSum(sf[14:tc.hdrLen-8]) != 0xffff {
				t.Errorf("super-frame's IPv4 header checksum is wrong")
			}
			segs := refSplit(h, sf)
			if len(segs) != len(orig) {
				t.Fatalf("split into %d datagrams, want %d", len(segs), len(orig))
			}
			for i := range segs {
				if !bytes.Equal(segs[i], orig[i]) {
					t.Errorf("datagram %d split off differs:\n got %x\nwant %x", i, segs[i], orig[i])
				}
			}
		})
	}
}

func TestCoalesceRefuses(t *testing.T) {
	// Each case changes the second of two 64-byte IPv4 datagrams (or the
	// first, for start) so that they must not merge.
	fixIP := func(f []byte) { // recompute the IPv4 header checksum
		f[24], f[25] = 0, 0
		be.PutUint16(f[24:], ^refSum(f[14:34]))
	}
	fixUDP := func(f []byte) { // recompute the partial UDP checksum
		be.PutUint16(f[40:], refSum(pseudoHdr(f[14:], 17, len(f)-34)))
	}
	for _, tc := range []struct {
		name  string
		start bool // the change is to the first datagram: Start must refuse
		edit  func(h *offload.Hdr, f []byte) []byte
	}{
		{name: "other destination MAC", edit: func(_ *offload.Hdr, f []byte) []byte { f[5]++; return f }},
		{name: "other source port", edit: func(_ *offload.Hdr, f []byte) []byte { f[35]++; fixUDP(f); return f }},
		{name: "other destination address", edit: func(_ *offload.Hdr, f []byte) []byte { f[33]++; fixIP(f); fixUDP(f); return f }},
		{name: "other TTL", edit: func(_ *offload.Hdr, f []byte) []byte { f[22]--; fixIP(f); return f }},
		{name: "other TOS", edit: func(_ *offload.Hdr, f []byte) []byte { f[15] = 4; fixIP(f); return f }},
		{name: "identification not next", edit: func(_ *offload.Hdr, f []byte) []byte { f[19]++; fixIP(f); return f }},
		{name: "bad IPv4 header checksum", edit: func(_ *offload.Hdr, f []byte) []byte { f[24]++; return f }},
		{name: "bad partial checksum", edit: func(_ *offload.Hdr, f []byte) []byte { f[41]++; return f }},
		{name: "longer payload", edit: func(_ *offload.Hdr, f []byte) []byte {
			f = append(f, 0)
			be.PutUint16(f[16:], uint16(len(f)-14))
			be.PutUint16(f[38:], uint16(len(f)-34))
			fixIP(f)
			fixUDP(f)
			return f
		}},
		{name: "ethernet padding", edit: func(_ *offload.Hdr, f []byte) []byte { return append(f, 0) }},
		{name: "fragment", edit: func(_ *offload.Hdr, f []byte) []byte { f[20] |= 0x20; fixIP(f); return f }},
		{name: "no partial checksum", edit: func(h *offload.Hdr, f []byte) []byte { h.Flags = 0; return f }},
		{name: "checksum verified", edit: func(h *offload.Hdr, f []byte) []byte { h.Flags |= offload.DataValid; return f }},
		{name: "csum_start elsewhere", edit: func(h *offload.Hdr, f []byte) []byte { h.CsumStart += 2; return f }},
		{name: "gso frame", edit: func(h *offload.Hdr, f []byte) []byte { h.GSOType, h.GSOSize = offload.GSOUDPL4, 32; return f }},
		{name: "not udp", start: true, edit: func(_ *offload.Hdr, f []byte) []byte { f[23] = 6; fixIP(f); return f }},
		{name: "no payload", start: true, edit: func(_ *offload.Hdr, f []byte) []byte {
			f = f[:42]
			be.PutUint16(f[16:], 28)
			be.PutUint16(f[38:], 8)
			fixIP(f)
			fixUDP(f)
			return f
		}},
		{name: "vlan tag", start: true, edit: func(h *offload.Hdr, f []byte) []byte {
			h.CsumStart += 4
			return append(append(bytes.Clone(f[:12]), 0x81, 0, 0, 5), f[12:]...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h0, f0 := datagram(false, 0, 64, 1, 0)
			h1, f1 := datagram(false, 0, 64, 1, 1)
			if tc.start {
				f0 = tc.edit(&h0, f0)
			} else {
				f1 = tc.edit(&h1, f1)
			}
			c := offload.NewCoalescer(make([]byte, 14+65535))
			started := c.Start(h0, f0)
			if tc.start {
				if started {
					t.Fatal("Start took the datagram")
				}
				return
			}
			if !started {
				t.Fatal("Start refused an ordinary datagram")
			}
			if c.Add(h1, f1) {
				t.Fatal("Add took the datagram")
			}
			if c.Merged() != 1 {
				t.Fatalf("Merged = %d", c.Merged())
			}
		})
	}
}

func TestCoalesceStops(t *testing.T) {
	var hs []offload.Hdr
	var frames [][]byte
	for i, n := range []int{64, 20, 20} { // nothing may follow a short datagram
		h, f := datagram(false, 0, n, 9, i)
		hs, frames = append(hs, h), append(frames, f)
	}
	if n, _, _ := coalesce(hs, frames); n != 2 {
		t.Errorf("merged %d after a short datagram, want 2", n)
	}
	// An IPv4 packet holds at most 65535 bytes: 1472-byte payloads
	// (1500-byte packets) fit 44 to a super-frame.
	hs, frames = nil, nil
	for i := range 50 {
		h, f := datagram(false, 0, 1472, 0, i)
		hs, frames = append(hs, h), append(frames, f)
	}
	n, h, sf := coalesce(hs, frames)
	if n != 44 || len(sf)-14 > 65535 {
		t.Errorf("merged %d datagrams into %d bytes of IP, want 44 in at most 65535", n, len(sf)-14)
	}
	if segs := refSplit(h, sf); len(segs) != n || !bytes.Equal(segs[n-1], frames[n-1]) {
		t.Errorf("the largest super-frame does not split back")
	}
	hs, frames = nil, nil
	for i := range offload.MaxCoalesced + 5 {
		h, f := datagram(true, 0, 1, 0, i)
		hs, frames = append(hs, h), append(frames, f)
	}
	if n, _, _ := coalesce(hs, frames); n != offload.MaxCoalesced {
		t.Errorf("merged %d tiny datagrams, want MaxCoalesced = %d", n, offload.MaxCoalesced)
	}
}

// FuzzCoalesce offers two arbitrary frames (with a partial-checksum header
// at the given csum_start) to a Coalescer: nothing may panic, and when
// they merge, the super-frame must split back into exactly the two.
func FuzzCoalesce(f *testing.F) {
	for _, v6 := range []bool{false, true} {
		h0, f0 := datagram(v6, 0, 64, 5, 0)
		_, f1 := datagram(v6, 0, 64, 5, 1)
		f.Add(h0.CsumStart, f0, f1)
		_, f1 = datagram(v6, 0, 10, 5, 1)
		f.Add(h0.CsumStart, f0, f1)
	}
	h0, f0 := datagram(false, 4, 300, 0xfffe, 0)
	_, f1 := datagram(false, 4, 300, 0xfffe, 1)
	f.Add(h0.CsumStart, f0, f1)
	f.Fuzz(func(t *testing.T, csumStart uint16, a, b []byte) {
		h := offload.Hdr{Flags: offload.NeedsCsum, CsumStart: csumStart, CsumOffset: 6}
		origA, origB := bytes.Clone(a), bytes.Clone(b)
		c := offload.NewCoalescer(make([]byte, 14+65535))
		if !c.Start(h, a) || !c.Add(h, b) {
			return
		}
		sh, sf := c.Finish()
		if !bytes.Equal(a, origA) || !bytes.Equal(b, origB) {
			t.Fatal("input modified")
		}
		segs := refSplit(sh, sf)
		if len(segs) != 2 || !bytes.Equal(segs[0], a) || !bytes.Equal(segs[1], b) {
			t.Fatalf("merged %x and %x into %x (%+v), which splits into %x", a, b, sf, sh, segs)
		}
	})
}
