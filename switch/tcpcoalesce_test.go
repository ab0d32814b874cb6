package vswitch_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/offload"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

const (
	// tcpHdrLen is the TCP header of the tests' segments: 20 bytes and
	// the timestamps option, as Linux sends them.
	tcpHdrLen = 32
	// mss4 and mss6 are the payloads of MTU-sized (1514-byte) segments.
	mss4 = 1500 - 20 - tcpHdrLen
	mss6 = 1500 - 40 - tcpHdrLen
)

var (
	tcpSrc6 = netip.MustParseAddr("2001:db8::1").As16()
	tcpDst6 = netip.MustParseAddr("2001:db8::2").As16()
)

// tcpSpec describes one segment of the tests' TCP flows, from MAC(1) port
// 40000 (or sport) to port 5201.
type tcpSpec struct {
	dst     vswitch.MAC
	v6      bool
	sport   uint16 // another flow's source port; 0 is 40000
	id      uint16 // IPv4 identification
	noDF    bool   // IPv4 without DF
	seq     uint32
	psh     bool // ACK|PSH rather than ACK
	payload int  // payload length: the flow's bytes from seq on
}

// streamBytes returns n bytes of the tests' TCP byte stream, from
// sequence number seq on.
func streamBytes(seq uint32, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := seq + uint32(i)
		b[i] = byte(x ^ x>>8 ^ x>>16)
	}
	return b
}

// tcpSegment builds the segment s with complete checksums, as a peer
// without offloads (a QEMU stream netdev) sends it.
func tcpSegment(s tcpSpec) []byte {
	be := binary.BigEndian
	l3 := 20
	if s.v6 {
		l3 = 40
	}
	f := make([]byte, 14+l3+tcpHdrLen+s.payload)
	src := porttest.MAC(1)
	copy(f[0:6], s.dst[:])
	copy(f[6:12], src[:])
	ip := f[14:]
	var pseudo uint32
	if s.v6 {
		f[12], f[13] = 0x86, 0xdd
		ip[0], ip[1], ip[2], ip[3] = 0x60, 0x01, 0x23, 0x45 // a flow label
		be.PutUint16(ip[4:], uint16(tcpHdrLen+s.payload))
		ip[6], ip[7] = 6, 64
		copy(ip[8:24], tcpSrc6[:])
		copy(ip[24:40], tcpDst6[:])
		pseudo = csumAdd(0, ip[8:40])
	} else {
		f[12], f[13] = 0x08, 0x00
		ip[0], ip[8], ip[9] = 0x45, 64, 6
		be.PutUint16(ip[2:], uint16(20+tcpHdrLen+s.payload))
		be.PutUint16(ip[4:], s.id)
		if !s.noDF {
			ip[6] = 0x40
		}
		copy(ip[12:16], []byte{198, 18, 0, 1})
		copy(ip[16:20], []byte{198, 18, 0, 2})
		be.PutUint16(ip[10:], ^fold(csumAdd(0, ip[:20])))
		pseudo = csumAdd(0, ip[12:20])
	}
	tcp := ip[l3:]
	sport := s.sport
	if sport == 0 {
		sport = 40000
	}
	be.PutUint16(tcp[0:], sport)
	be.PutUint16(tcp[2:], 5201)
	be.PutUint32(tcp[4:], s.seq)
	be.PutUint32(tcp[8:], 777) // acknowledgment
	tcp[12], tcp[13] = tcpHdrLen/4<<4, 0x10
	if s.psh {
		tcp[13] |= 0x08
	}
	be.PutUint16(tcp[14:], 502) // window
	copy(tcp[20:], []byte{1, 1, 8, 10, 0, 0, 0x12, 0x34, 0, 0, 0x56, 0x78})
	copy(tcp[tcpHdrLen:], streamBytes(s.seq, s.payload))
	be.PutUint16(tcp[16:], ^fold(csumAdd(pseudo+6+uint32(len(tcp)), tcp)))
	return f
}

// tcpRun returns n MTU-sized segments of the main flow to dst, from
// sequence number seq and IPv4 identification id on, counting up.
func tcpRun(dst vswitch.MAC, v6 bool, n int, seq uint32, id uint16) [][]byte {
	mss := mss4
	if v6 {
		mss = mss6
	}
	segs := make([][]byte, n)
	for i := range segs {
		segs[i] = tcpSegment(tcpSpec{dst: dst, v6: v6, id: id + uint16(i), seq: seq + uint32(i*mss), payload: mss})
	}
	return segs
}

// tcpL4 returns the offset of the TCP header of the tests' segment f.
func tcpL4(f []byte) int {
	if f[12] == 0x86 {
		return 14 + 40
	}
	return 14 + 20
}

// tcpChecksumOK reports whether the IPv4 or IPv6 TCP segment f (of the
// length its IP header gives) has a correct TCP checksum.
func tcpChecksumOK(f []byte) bool {
	if f[12] == 0x08 {
		return tcpValid(f)
	}
	ip := f[14:]
	l := int(binary.BigEndian.Uint16(ip[4:]))
	return fold(csumAdd(csumAdd(0, ip[8:40])+6+uint32(l), ip[40:40+l])) == 0xffff
}

// partialCsum returns a copy of the segment f as a Linux tap with checksum
// offload hands it out: the TCP checksum field holds the pseudo-header
// sum, and the header says NeedsCsum.
func partialCsum(f []byte) (offload.Hdr, []byte) {
	f = bytes.Clone(f)
	l4 := tcpL4(f)
	var pseudo uint32
	if l4 == 34 {
		pseudo = csumAdd(0, f[14+12:14+20])
	} else {
		pseudo = csumAdd(0, f[14+8:14+40])
	}
	binary.BigEndian.PutUint16(f[l4+16:], fold(pseudo+6+uint32(len(f)-l4)))
	return offload.Hdr{Flags: offload.NeedsCsum, HdrLen: uint16(l4 + tcpHdrLen), CsumStart: uint16(l4), CsumOffset: 16}, f
}

// junkHdr is what a port without offloads has in front of its frames:
// whatever was there. All ones, it is a header no segment could merge
// under (GSO type 0xff), were it read.
var junkHdr = offload.Hdr{Flags: 0xff, GSOType: 0xff, HdrLen: 0xffff, GSOSize: 0xffff, CsumStart: 0xffff, CsumOffset: 0xffff}

// plainBatch lays frames out as a port without offloads receives them:
// frame i at Headroom of bufs[i], junk in front of it (junkHdr, or
// junk[i] where given), none of it a header to read.
func plainBatch(frames [][]byte, junk map[int]offload.Hdr) ([][]byte, []int) {
	bufs := make([][]byte, len(frames))
	sizes := make([]int, len(frames))
	for i, f := range frames {
		bufs[i] = make([]byte, vswitch.Headroom+len(f))
		for j := range vswitch.Headroom {
			bufs[i][j] = 0xa5
		}
		h, ok := junk[i]
		if !ok {
			h = junkHdr
		}
		h.Encode(bufs[i][vswitch.Headroom-offload.HdrLen:])
		sizes[i] = copy(bufs[i][vswitch.Headroom:], f)
	}
	return bufs, sizes
}

// tcpRig is a switch with a source port "in" that tests feed with Input
// (NoReader, with or without offloads), an offload port "off" (MAC(2); one
// that also takes UDP super-frames if udpSegments) and a port without
// offloads "plain" (MAC(3)), both MACs learned.
type tcpRig struct {
	sw          *vswitch.Switch
	in          *vswitch.Attachment
	off, plain  *porttest.Port
	offa, plana *vswitch.Attachment
	fences      int
}

func newTCPRig(t *testing.T, srcOffload, udpSegments bool) *tcpRig {
	t.Helper()
	r := &tcpRig{sw: vswitch.New(vswitch.Config{})}
	t.Cleanup(func() { r.sw.Close() })
	r.off = porttest.New(porttest.Config{Name: "off", Offload: true, UDPSegments: udpSegments})
	r.plain = porttest.New(porttest.Config{Name: "plain"})
	var err error
	r.in, err = r.sw.AddPort(porttest.New(porttest.Config{Name: "in", Offload: srcOffload, Discard: true}), vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.offa, err = r.sw.AddPort(r.off, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	if r.plana, err = r.sw.AddPort(r.plain, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	if err := r.off.Send(append(make([]byte, offload.HdrLen), porttest.Frame(porttest.Broadcast, porttest.MAC(2), 0x88b5, nil)...)); err != nil {
		t.Fatal(err)
	}
	if err := r.plain.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(3), 0x88b5, nil)); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "both MACs learned", func() bool { return len(r.sw.FDB()) == 2 })
	// Each gets the other's broadcast.
	if _, _, ok := r.off.RecvOffload(wait); !ok {
		t.Fatal("off: broadcast missing")
	}
	if _, ok := r.plain.Recv(wait); !ok {
		t.Fatal("plain: broadcast missing")
	}
	return r
}

// input hands frames to the switch as received on r.in, with the headers
// hs when r.in has offloads (zero ones if hs is nil), else with junk in
// front of every frame.
func (r *tcpRig) input(hs []offload.Hdr, frames [][]byte) {
	var bufs [][]byte
	var sizes []int
	if r.in.Port().(*porttest.Port).Offload() {
		if hs == nil {
			hs = make([]offload.Hdr, len(frames))
		}
		bufs, sizes = batch(hs, frames)
	} else {
		bufs, sizes = plainBatch(frames, nil)
	}
	r.in.Input(bufs, sizes, vswitch.Headroom)
}

// recv returns the next frame p receives and its virtio-net header (zero
// for a port without offloads).
func (r *tcpRig) recv(t *testing.T, p *porttest.Port, what string) (offload.Hdr, []byte) {
	t.Helper()
	if p == r.off {
		hb, f, ok := p.RecvOffload(wait)
		if !ok {
			t.Fatalf("%s: nothing received", what)
		}
		return offload.DecodeHdr(hb), f
	}
	f, ok := p.Recv(wait)
	if !ok {
		t.Fatalf("%s: nothing received", what)
	}
	return offload.Hdr{}, f
}

// fence sends a marker frame from r.in to p (at mac) and checks that it is
// the next frame p receives: p got nothing more from what r.in sent
// before, whose frames are queued to p in order before it. It counts one
// frame in the ports' counters and in Forwarded.
func (r *tcpRig) fence(t *testing.T, p *porttest.Port, mac vswitch.MAC) {
	t.Helper()
	r.fences++
	marker := porttest.Frame(mac, porttest.MAC(1), 0x88b5, fmt.Appendf(nil, "fence %d", r.fences))
	r.input(nil, [][]byte{marker})
	h, f := r.recv(t, p, fmt.Sprintf("%s: fence %d", p, r.fences))
	if !bytes.Equal(f, marker) {
		t.Fatalf("%s: got a %d-byte frame (header %+v) where the fence was expected: more than the test sent", p, len(f), h)
	}
}

// checkSuper checks that h and f are the TCP super-frame of segs: its
// virtio-net header, its IP length and header checksum, a checksum field
// holding the pseudo-header sum (the super-frame's checksum is valid once
// completed), its payload the segments' in order, and, cut again, the
// segments byte for byte.
func checkSuper(t *testing.T, what string, h offload.Hdr, f []byte, segs [][]byte) {
	t.Helper()
	be := binary.BigEndian
	first := segs[0]
	l4 := tcpL4(first)
	gso := offload.GSOTCPv4
	if l4 != 34 {
		gso = offload.GSOTCPv6
	}
	data := l4 + tcpHdrLen
	want := offload.Hdr{Flags: offload.NeedsCsum, GSOType: gso, HdrLen: uint16(data), GSOSize: uint16(len(first) - data), CsumStart: uint16(l4), CsumOffset: 16}
	if h != want {
		t.Fatalf("%s: header %+v, want %+v (a super-frame of %d segments)", what, h, want, len(segs))
	}
	var payload []byte
	for _, s := range segs {
		payload = append(payload, s[data:]...)
	}
	if len(f) != data+len(payload) || !bytes.Equal(f[data:], payload) {
		t.Fatalf("%s: %d bytes, want the %d of %d segments' headers and payloads", what, len(f), data+len(payload), len(segs))
	}
	if l4 == 34 {
		if n := int(be.Uint16(f[14+2:])); n != len(f)-14 {
			t.Errorf("%s: IPv4 total length %d, want %d", what, n, len(f)-14)
		}
		if fold(csumAdd(0, f[14:34])) != 0xffff {
			t.Errorf("%s: IPv4 header checksum wrong", what)
		}
	} else if n := int(be.Uint16(f[14+4:])); n != len(f)-54 {
		t.Errorf("%s: IPv6 payload length %d, want %d", what, n, len(f)-54)
	}
	completed := bytes.Clone(f)
	if err := offload.Checksum(offload.Hdr{Flags: offload.NeedsCsum, CsumStart: h.CsumStart, CsumOffset: h.CsumOffset}, completed); err != nil || !tcpChecksumOK(completed) {
		t.Errorf("%s: the checksum field does not hold the pseudo-header sum (%v)", what, err)
	}
	out := make([][]byte, len(segs)+1)
	for i := range out {
		out[i] = make([]byte, 0, len(first))
	}
	n, err := offload.Segment(h, f, out)
	if err != nil || n != len(segs) {
		t.Fatalf("%s: cut into %d segments (%v), want %d", what, n, err, len(segs))
	}
	for i := range segs {
		if !bytes.Equal(out[i], segs[i]) {
			t.Errorf("%s: segment %d cut from the super-frame differs from the one sent", what, i)
		}
	}
}

// expect checks that p receives runs in order, and then nothing more (see
// fence): a run of two or more segments as one super-frame, a run of one
// frame as it was sent, with a zero header.
func (r *tcpRig) expect(t *testing.T, p *porttest.Port, mac vswitch.MAC, runs ...[][]byte) {
	t.Helper()
	for i, run := range runs {
		what := fmt.Sprintf("%s: frame %d", p, i)
		h, f := r.recv(t, p, what)
		if len(run) > 1 {
			checkSuper(t, what, h, f, run)
			continue
		}
		if h != (offload.Hdr{}) || !bytes.Equal(f, run[0]) {
			t.Fatalf("%s: header %+v, %d bytes; want the %d-byte frame sent, unchanged, with a zero header", what, h, len(f), len(run[0]))
		}
	}
	r.fence(t, p, mac)
}

// TestTCPCoalescing: a batch of consecutive MTU-sized TCP segments of one
// flow from a port without offloads (a QEMU stream peer, whose frames
// carry no virtio-net header: the bytes in front of them are junk, never
// read) goes to an offload port as one TCP super-frame, which cuts back
// into the segments sent, counted as the segments it carries; to a port
// without offloads it goes as the segments, unchanged and not counted
// coalesced. IPv4 and IPv6.
func TestTCPCoalescing(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(map[bool]string{false: "IPv4", true: "IPv6"}[v6], func(t *testing.T) {
			r := newTCPRig(t, false, false)
			fw, rx, off := r.sw.Stats().Forwarded, r.in.Stats().RxFrames, r.offa.Stats()

			segs := tcpRun(porttest.MAC(2), v6, 10, 1_000_000, 100)
			r.input(nil, segs)
			h, f := r.recv(t, r.off, "off")
			checkSuper(t, "off", h, f, segs)
			porttest.WaitFor(t, "off: tx counters", func() bool { return r.offa.Stats().TxFrames == off.TxFrames+10 })
			if st := r.offa.Stats(); st.TxCoalesced != off.TxCoalesced+10 || st.TxBytes != off.TxBytes+uint64(len(f)) {
				t.Errorf("off: tx_coalesced +%d, tx_bytes +%d; want +10, +%d (the super-frame)", st.TxCoalesced-off.TxCoalesced, st.TxBytes-off.TxBytes, len(f))
			}
			if st := r.in.Stats(); st.RxFrames != rx+10 {
				t.Errorf("in: rx_frames +%d, want +10", st.RxFrames-rx)
			}
			if n := r.sw.Stats().Forwarded; n != fw+10 {
				t.Errorf("forwarded +%d, want +10", n-fw)
			}
			r.fence(t, r.off, porttest.MAC(2))

			pl := r.plana.Stats()
			segs = tcpRun(porttest.MAC(3), v6, 10, 1_000_000, 100)
			r.input(nil, segs)
			for i := range segs {
				if f, ok := r.plain.Recv(wait); !ok || !bytes.Equal(f, segs[i]) {
					t.Fatalf("plain: segment %d missing or changed", i)
				}
			}
			r.fence(t, r.plain, porttest.MAC(3))
			porttest.WaitFor(t, "plain: tx counters", func() bool { return r.plana.Stats().TxFrames == pl.TxFrames+10+1 })
			if st := r.plana.Stats(); st.TxCoalesced != 0 {
				t.Errorf("plain: tx_coalesced %d, want 0", st.TxCoalesced)
			}
			if n := r.sw.Stats().Forwarded; n != fw+10+1+10+1 {
				t.Errorf("forwarded +%d, want +22 (two batches of 10, two fences)", n-fw)
			}
		})
	}
}

// TestTCPCoalescingBreaks: segments that cannot join a super-frame end it
// and go on their own, in the order they came. A segment with a bad TCP
// checksum is delivered unchanged, alone (its receiver drops it), even
// with junk in front of it that would read as DataValid; so is a frame of
// another protocol. Without DF, IPv4 identifications must count up.
func TestTCPCoalescingBreaks(t *testing.T) {
	r := newTCPRig(t, false, false)
	dst := porttest.MAC(2)
	mss := uint32(mss4)
	x := tcpRun(dst, false, 9, 5000, 10)
	x[4][14+20+16] ^= 0x5a // segment 5: bad checksum
	x[7] = tcpSegment(tcpSpec{dst: dst, id: 17, seq: 5000 + 7*mss, psh: true, payload: mss4})
	arp := porttest.Frame(dst, porttest.MAC(1), 0x0806, make([]byte, 28))
	y := [][]byte{
		tcpSegment(tcpSpec{dst: dst, sport: 40001, id: 500, seq: 90000, payload: mss4}),
		tcpSegment(tcpSpec{dst: dst, sport: 40001, id: 501, seq: 90000 + mss, payload: 100}), // short: the last
	}
	// Segments 1-4, 5 (bad), 6-8 (PSH on 8), the ARP, flow Y's two (the
	// second short), then X's segment 9, alone: it cannot join Y's.
	frames := append(append(append(append([][]byte{}, x[:8]...), arp), y...), x[8])
	bufs, sizes := plainBatch(frames, map[int]offload.Hdr{4: {Flags: offload.DataValid, HdrLen: 0xa5a5, GSOSize: 0xa5a5, CsumStart: 0xa5a5, CsumOffset: 0xa5a5}})
	off := r.offa.Stats()
	r.in.Input(bufs, sizes, vswitch.Headroom)
	r.expect(t, r.off, dst, x[:4], x[4:5], x[5:8], [][]byte{arp}, y, x[8:9])
	porttest.WaitFor(t, "off: tx counters", func() bool { return r.offa.Stats().TxFrames == off.TxFrames+12+1 })
	if st := r.offa.Stats(); st.TxCoalesced != off.TxCoalesced+4+3+2 {
		t.Errorf("off: tx_coalesced +%d, want +9", st.TxCoalesced-off.TxCoalesced)
	}

	// Without DF, a skipped identification ends the super-frame.
	var z [][]byte
	for i, id := range []uint16{200, 201, 203, 204} {
		z = append(z, tcpSegment(tcpSpec{dst: dst, id: id, noDF: true, seq: 7000 + uint32(i)*mss, payload: mss4}))
	}
	r.input(nil, z)
	r.expect(t, r.off, dst, z[:2], z[2:])

	// Nor does a segment of another flow that would follow on, or one of
	// the flow that does not (a gap, a retransmission).
	g := tcpRun(dst, false, 6, 20000, 40)
	other := tcpSegment(tcpSpec{dst: dst, sport: 40001, id: 42, seq: 20000 + 2*mss, payload: mss4})
	frames = [][]byte{g[0], g[1], other, g[3], g[4], g[4], g[5]}
	r.input(nil, frames)
	r.expect(t, r.off, dst, frames[0:2], frames[2:3], frames[3:5], frames[5:7])
}

// TestTCPCoalescingPartialChecksums: segments from a port with offloads
// (a tap handing out single segments) whose checksums are partial
// (NeedsCsum) merge for an offload port, as do DataValid ones; one whose
// checksum field does not hold the pseudo-header sum goes alone, with its
// header. For a port without offloads each is completed, not merged. The
// offload port may take UDP super-frames too (UDPSegmentPort): the
// segments are not taken for datagrams.
func TestTCPCoalescingPartialChecksums(t *testing.T) {
	for _, uso := range []bool{false, true} {
		t.Run(map[bool]string{false: "TSO", true: "TSO+USO"}[uso], func(t *testing.T) { testTCPPartialChecksums(t, uso) })
	}
}

// testTCPPartialChecksums is TestTCPCoalescingPartialChecksums with an
// offload port that takes UDP super-frames too if uso.
func testTCPPartialChecksums(t *testing.T, uso bool) {
	r := newTCPRig(t, true, uso)
	full := tcpRun(porttest.MAC(2), false, 6, 3000, 70)
	send := func(dst vswitch.MAC) ([]offload.Hdr, [][]byte) {
		hs, frames := make([]offload.Hdr, 6), make([][]byte, 6)
		for i, f := range full {
			f = bytes.Clone(f)
			copy(f[0:6], dst[:])
			full[i] = f
			if i < 4 {
				hs[i], frames[i] = partialCsum(f)
			} else {
				hs[i], frames[i] = offload.Hdr{Flags: offload.DataValid}, bytes.Clone(f)
			}
		}
		binary.BigEndian.PutUint16(frames[3][34+16:], 0x1234) // not the pseudo-header sum
		r.input(hs, frames)
		return hs, frames
	}
	hs, frames := send(porttest.MAC(2))
	h, f := r.recv(t, r.off, "off: segments 1-3")
	checkSuper(t, "off: segments 1-3", h, f, full[:3])
	if h, f := r.recv(t, r.off, "off: segment 4"); h != hs[3] || !bytes.Equal(f, frames[3]) {
		t.Fatalf("off: segment 4 with header %+v, changed %t; want it alone, as it came, header %+v", h, !bytes.Equal(f, frames[3]), hs[3])
	}
	h, f = r.recv(t, r.off, "off: segments 5-6")
	checkSuper(t, "off: segments 5-6", h, f, full[4:])
	r.fence(t, r.off, porttest.MAC(2))

	pl := r.plana.Stats()
	_, frames = send(porttest.MAC(3))
	for i := range frames {
		f, ok := r.plain.Recv(wait)
		if !ok {
			t.Fatalf("plain: segment %d missing", i)
		}
		if i != 3 && !bytes.Equal(f, full[i]) {
			t.Fatalf("plain: segment %d is not the segment with its checksum completed (valid: %t)", i, tcpChecksumOK(f))
		}
	}
	r.fence(t, r.plain, porttest.MAC(3))
	porttest.WaitFor(t, "plain: tx counters", func() bool { return r.plana.Stats().TxFrames == pl.TxFrames+6+1 })
	if st := r.plana.Stats(); st.TxCoalesced != 0 {
		t.Errorf("plain: tx_coalesced %d, want 0", st.TxCoalesced)
	}
}

// TestTCPCoalescingCapture: a capture, of the ingress port or of the
// egress one, records every segment of a merged run as it was received,
// not the super-frame.
func TestTCPCoalescingCapture(t *testing.T) {
	r := newTCPRig(t, false, false)
	ofIn := r.sw.StartCapture(vswitch.CaptureConfig{Port: r.in.ID()})
	defer ofIn.Close()
	ofOff := r.sw.StartCapture(vswitch.CaptureConfig{Port: r.offa.ID()})
	defer ofOff.Close()
	segs := tcpRun(porttest.MAC(2), false, 10, 1, 1)
	r.input(nil, segs)
	h, f := r.recv(t, r.off, "off")
	checkSuper(t, "off", h, f, segs)
	// Input offers frames to captures before it returns: all are in.
	for _, c := range []*vswitch.Capture{ofIn, ofOff} {
		for i := range segs {
			select {
			case cf := <-c.C():
				if cf.In != r.in.ID() || !bytes.Equal(cf.Data, segs[i]) {
					t.Fatalf("capture: frame %d is not segment %d as received (%d bytes, port %d)", i, i, len(cf.Data), cf.In)
				}
			default:
				t.Fatalf("capture: %d frames, want %d", i, len(segs))
			}
		}
		select {
		case cf := <-c.C():
			t.Fatalf("capture: an extra %d-byte frame", len(cf.Data))
		default:
		}
		if d := c.Dropped(); d != 0 {
			t.Errorf("capture: %d frames dropped", d)
		}
	}
}

// TestTCPCoalescingNoAllocs: merging a batch of segments from a port
// without offloads and writing the super-frame allocates nothing once the
// port's super-frame buffer exists.
func TestTCPCoalescingNoAllocs(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in"})
	off := &directPort{Port: porttest.New(porttest.Config{Name: "off", Offload: true, Discard: true})}
	ina, err := sw.AddPort(in, vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	offa, err := sw.AddPort(off, vswitch.PortConfig{Kind: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	if err := off.Send(append(make([]byte, offload.HdrLen), porttest.Frame(porttest.Broadcast, porttest.MAC(2), 0x88b5, nil)...)); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the MAC learned", func() bool { return len(sw.FDB()) == 1 })
	bufs, sizes := plainBatch(tcpRun(porttest.MAC(2), false, 8, 1, 1), nil)
	ina.Input(bufs, sizes, vswitch.Headroom) // allocates the super-frame buffer
	const runs = 200
	allocs := testing.AllocsPerRun(runs, func() { ina.Input(bufs, sizes, vswitch.Headroom) })
	if allocs != 0 {
		t.Errorf("%.2f allocations per batch of 8 segments", allocs)
	}
	// Every batch went out as one super-frame of 8 (AllocsPerRun adds a
	// warm-up run).
	if w, c := off.direct.Load(), offa.Stats().TxCoalesced; w != runs+2 || c != (runs+2)*8 {
		t.Errorf("%d super-frames written, %d segments coalesced; want %d and %d", w, c, runs+2, (runs+2)*8)
	}
}

// TestTCPCoalescingNotUnicast: segments that are flooded (to an unknown
// or a broadcast address) are not merged: the offload port gets each
// alone, with a zero header. Segments to an address on their own port
// are dropped, not merged and sent anywhere.
func TestTCPCoalescingNotUnicast(t *testing.T) {
	r := newTCPRig(t, false, false)
	// MAC(5) is behind the source port.
	r.input(nil, [][]byte{porttest.Frame(porttest.Broadcast, porttest.MAC(5), 0x88b5, nil)})
	r.recv(t, r.off, "off: MAC(5)'s broadcast")
	r.recv(t, r.plain, "plain: MAC(5)'s broadcast")
	st := r.sw.Stats()
	flooded, fw := st.Flooded, st.Forwarded

	unknown := tcpRun(porttest.MAC(99), false, 4, 1, 1)
	bcast := tcpRun(porttest.Broadcast, false, 4, 1, 1)
	frames := append(append([][]byte{}, unknown...), bcast...)
	r.input(nil, frames)
	var runs [][][]byte
	for _, f := range frames {
		runs = append(runs, [][]byte{f})
	}
	r.expect(t, r.off, porttest.MAC(2), runs...)
	r.expect(t, r.plain, porttest.MAC(3), runs...)
	if st := r.sw.Stats(); st.Flooded != flooded+8 || st.Forwarded != fw+2 {
		t.Errorf("flooded +%d, forwarded +%d; want +8, +2 (the fences)", st.Flooded-flooded, st.Forwarded-fw)
	}

	same := r.in.Stats().Drops[vswitch.DropSamePort]
	r.input(nil, tcpRun(porttest.MAC(5), false, 4, 1, 1))
	r.expect(t, r.off, porttest.MAC(2))
	r.expect(t, r.plain, porttest.MAC(3))
	if d := r.in.Stats().Drops[vswitch.DropSamePort]; d != same+4 {
		t.Errorf("same_port drops +%d, want +4", d-same)
	}
	porttest.WaitFor(t, "off: tx counters", func() bool { return r.offa.Stats().TxFrames == 1+1+8+2 })
	if c := r.offa.Stats().TxCoalesced; c != 0 {
		t.Errorf("off: tx_coalesced %d, want 0", c)
	}
}

// TestTCPCoalescingLimits: a super-frame holds at most a 64 KiB IP packet
// (45 MTU-sized IPv4 segments) and offload.MaxCoalesced segments; a longer
// run goes as several super-frames.
func TestTCPCoalescingLimits(t *testing.T) {
	r := newTCPRig(t, false, false)
	dst := porttest.MAC(2)
	segs := tcpRun(dst, false, 50, 1, 1)
	r.input(nil, segs)
	r.expect(t, r.off, dst, segs[:45], segs[45:])

	var small [][]byte
	for i := range offload.MaxCoalesced + 6 {
		small = append(small, tcpSegment(tcpSpec{dst: dst, id: uint16(i), seq: 1 + uint32(i)*100, payload: 100}))
	}
	r.input(nil, small)
	r.expect(t, r.off, dst, small[:offload.MaxCoalesced], small[offload.MaxCoalesced:])
}
