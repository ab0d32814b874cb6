package vswitch_test

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/offload"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// udpDatagram builds the i-th 64-byte UDP datagram of a flow from MAC(1) to
// dst, as a Linux tap with checksum offload hands it out: IPv4
// identification 1000+i, the checksum field holding the pseudo-header sum.
func udpDatagram(dst vswitch.MAC, i int) (offload.Hdr, []byte) {
	f := make([]byte, 14+20+8+64)
	src := porttest.MAC(1)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+64))
	binary.BigEndian.PutUint16(ip[4:], uint16(1000+i))
	copy(ip[12:16], []byte{198, 18, 0, 1})
	copy(ip[16:20], []byte{198, 18, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^fold(csumAdd(0, ip[:20])))
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 5001)
	binary.BigEndian.PutUint16(udp[2:], 5201)
	binary.BigEndian.PutUint16(udp[4:], 8+64)
	for j := range 64 {
		udp[8+j] = byte(i + j)
	}
	binary.BigEndian.PutUint16(udp[6:], fold(csumAdd(0, ip[12:20])+17+8+64))
	return offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 34, CsumOffset: 6}, f
}

// batch lays frames out as a port's receive buffers: frame i at Headroom of
// bufs[i], its virtio-net header in front.
func batch(hs []offload.Hdr, frames [][]byte) ([][]byte, []int) {
	bufs := make([][]byte, len(frames))
	sizes := make([]int, len(frames))
	for i, f := range frames {
		bufs[i] = make([]byte, vswitch.Headroom+len(f))
		hs[i].Encode(bufs[i][vswitch.Headroom-offload.HdrLen:])
		sizes[i] = copy(bufs[i][vswitch.Headroom:], f)
	}
	return bufs, sizes
}

func TestUDPCoalescing(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	uso := porttest.New(porttest.Config{Name: "uso", Offload: true, UDPSegments: true})
	off := porttest.New(porttest.Config{Name: "off", Offload: true})
	ina, err := sw.AddPort(in, vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	usoa, err := sw.AddPort(uso, vswitch.PortConfig{Kind: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	offa, err := sw.AddPort(off, vswitch.PortConfig{Kind: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	for n, p := range map[int]*porttest.Port{2: uso, 3: off} {
		if err := p.Send(append(make([]byte, offload.HdrLen), porttest.Frame(porttest.Broadcast, porttest.MAC(n), 0x88b5, nil)...)); err != nil {
			t.Fatal(err)
		}
	}
	porttest.WaitFor(t, "both MACs learned", func() bool { return len(sw.FDB()) == 2 })
	for _, p := range []*porttest.Port{uso, off} { // each gets the other's broadcast
		if _, _, ok := p.RecvOffload(5 * time.Second); !ok {
			t.Fatalf("%s: broadcast missing", p)
		}
	}
	capt := sw.StartCapture(vswitch.CaptureConfig{})
	defer capt.Close()

	// Five datagrams for the port that takes UDP super-frames arrive as
	// one, for the other port as they are.
	var hs []offload.Hdr
	var frames [][]byte
	for i := range 5 {
		h, f := udpDatagram(porttest.MAC(2), i)
		hs, frames = append(hs, h), append(frames, f)
	}
	for i := range 5 {
		h, f := udpDatagram(porttest.MAC(3), i)
		hs, frames = append(hs, h), append(frames, f)
	}
	bufs, sizes := batch(hs, frames)
	ina.Input(bufs, sizes, vswitch.Headroom)

	gh, gf, ok := uso.RecvOffload(5 * time.Second)
	if !ok {
		t.Fatal("uso: nothing received")
	}
	h := offload.DecodeHdr(gh)
	want := offload.Hdr{Flags: offload.NeedsCsum, GSOType: offload.GSOUDPL4, HdrLen: 42, GSOSize: 64, CsumStart: 34, CsumOffset: 6}
	if h != want || len(gf) != 42+5*64 {
		t.Fatalf("uso: header %+v, %d bytes; want %+v, %d bytes", h, len(gf), want, 42+5*64)
	}
	for i := range 5 {
		if !bytes.Equal(gf[42+64*i:42+64*(i+1)], frames[i][42:]) {
			t.Errorf("uso: payload %d differs", i)
		}
	}
	if got := binary.BigEndian.Uint16(gf[14+2:]); got != 20+8+5*64 {
		t.Errorf("uso: IP total length %d", got)
	}
	if got := binary.BigEndian.Uint16(gf[14+4:]); got != 1000 {
		t.Errorf("uso: IP identification %d, want the first datagram's", got)
	}
	for i := range 5 {
		gh, gf, ok := off.RecvOffload(5 * time.Second)
		if !ok || !bytes.Equal(gh, bufs[5+i][vswitch.Headroom-offload.HdrLen:vswitch.Headroom]) || !bytes.Equal(gf, frames[5+i]) {
			t.Fatalf("off: datagram %d missing or changed", i)
		}
	}
	if f, ok := uso.Recv(100 * time.Millisecond); ok {
		t.Fatalf("uso: unexpected frame of %d bytes", len(f))
	}
	// Each counter is updated after its write returns, one after the
	// other: wait for every one.
	porttest.WaitFor(t, "tx counters", func() bool {
		st := usoa.Stats()
		return offa.Stats().TxFrames == 1+5 && st.TxFrames == 1+5 && st.TxCoalesced == 5
	})
	if st := offa.Stats(); st.TxCoalesced != 0 {
		t.Errorf("off: tx_coalesced %d", st.TxCoalesced)
	}
	if fw := sw.Stats().Forwarded; fw != 10 {
		t.Errorf("forwarded %d, want 10", fw)
	}
	// A capture sees every datagram as it came in.
	for i := range 10 {
		select {
		case c := <-capt.C():
			if !bytes.Equal(c.Data, frames[i]) {
				t.Fatalf("capture: frame %d differs", i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("capture: frame %d missing", i)
		}
	}

	// A datagram that does not continue the flow ends the super-frame; a
	// lone datagram goes as it is.
	hs, frames = hs[:0], frames[:0]
	for _, i := range []int{10, 11, 13} { // identification 1012 is missing
		h, f := udpDatagram(porttest.MAC(2), i)
		hs, frames = append(hs, h), append(frames, f)
	}
	bufs, sizes = batch(hs, frames)
	ina.Input(bufs, sizes, vswitch.Headroom)
	if gh, gf, ok := uso.RecvOffload(5 * time.Second); !ok || offload.DecodeHdr(gh).GSOType != offload.GSOUDPL4 || len(gf) != 42+2*64 {
		t.Fatalf("uso: want a super-frame of the first two datagrams, got %d bytes (%t)", len(gf), ok)
	}
	if gh, gf, ok := uso.RecvOffload(5 * time.Second); !ok || offload.DecodeHdr(gh) != hs[2] || !bytes.Equal(gf, frames[2]) {
		t.Fatal("uso: the third datagram is missing or changed")
	}
	porttest.WaitFor(t, "tx counters 9 frames, 7 coalesced", func() bool {
		st := usoa.Stats()
		return st.TxFrames == 6+3 && st.TxCoalesced == 5+2
	})
}

// TestUDPCoalescingNoAllocs: merging and forwarding a batch of datagrams
// allocates nothing once the port's super-frame buffer exists.
func TestUDPCoalescingNoAllocs(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	uso := &directPort{Port: porttest.New(porttest.Config{Name: "uso", Offload: true, UDPSegments: true, Discard: true})}
	ina, err := sw.AddPort(in, vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	usoa, err := sw.AddPort(uso, vswitch.PortConfig{Kind: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	if err := uso.Send(append(make([]byte, offload.HdrLen), porttest.Frame(porttest.Broadcast, porttest.MAC(2), 0x88b5, nil)...)); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the MAC learned", func() bool { return len(sw.FDB()) == 1 })
	var hs []offload.Hdr
	var frames [][]byte
	for i := range 8 {
		h, f := udpDatagram(porttest.MAC(2), i)
		hs, frames = append(hs, h), append(frames, f)
	}
	bufs, sizes := batch(hs, frames)
	ina.Input(bufs, sizes, vswitch.Headroom) // allocates the super-frame buffer
	const runs = 200
	allocs := testing.AllocsPerRun(runs, func() { ina.Input(bufs, sizes, vswitch.Headroom) })
	if allocs != 0 {
		t.Errorf("%.2f allocations per batch of 8 datagrams", allocs)
	}
	// Every batch went out as one super-frame of 8 (AllocsPerRun adds a
	// warm-up run).
	if w, c := uso.direct.Load(), usoa.Stats().TxCoalesced; w != runs+2 || c != (runs+2)*8 {
		t.Errorf("%d super-frames written, %d datagrams coalesced; want %d and %d", w, c, runs+2, (runs+2)*8)
	}
}
