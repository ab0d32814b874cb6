package vswitch_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/offload"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// csumAdd adds b to a one's-complement running sum.
func csumAdd(sum uint32, b []byte) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	return sum
}

func fold(sum uint32) uint16 {
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// tcpFrame builds an IPv4 TCP frame with payload whose TCP checksum field
// holds only the pseudo-header sum, as a sender using checksum offload
// leaves it, and the matching virtio-net header (GSO when mss > 0).
func tcpFrame(src vswitch.MAC, payload []byte, mss int) (offload.Hdr, []byte) {
	f := make([]byte, 14+20+20+len(payload))
	dst := porttest.MAC(99) // unknown: flooded
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	f[12], f[13] = 0x08, 0x00
	ip := f[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(20+20+len(payload)))
	copy(ip[12:16], []byte{198, 18, 0, 1})
	copy(ip[16:20], []byte{198, 18, 0, 2})
	binary.BigEndian.PutUint16(ip[10:], ^fold(csumAdd(0, ip[:20])))
	tcp := ip[20:]
	binary.BigEndian.PutUint32(tcp[4:], 1000) // sequence
	tcp[12], tcp[13] = 5<<4, 0x18             // ACK|PSH
	copy(tcp[20:], payload)
	pseudo := csumAdd(0, ip[12:20]) + 6 + uint32(20+len(payload))
	binary.BigEndian.PutUint16(tcp[16:], fold(pseudo))
	h := offload.Hdr{Flags: offload.NeedsCsum, HdrLen: 54, CsumStart: 34, CsumOffset: 16}
	if mss > 0 {
		h.GSOType, h.GSOSize = offload.GSOTCPv4, uint16(mss)
	}
	return h, f
}

// tcpValid checks the TCP checksum of an IPv4 frame.
func tcpValid(f []byte) bool {
	ip := f[14:]
	l := int(binary.BigEndian.Uint16(ip[2:])) - 20
	sum := csumAdd(0, ip[12:20]) + 6 + uint32(l)
	return fold(csumAdd(sum, ip[20:20+l])) == 0xffff
}

func TestOffloadForwarding(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	off := porttest.New(porttest.Config{Name: "off", Offload: true})
	plain := porttest.New(porttest.Config{Name: "plain"})
	for _, p := range []*porttest.Port{in, off, plain} {
		if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
	}
	payload := make([]byte, 2500)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	h, super := tcpFrame(porttest.MAC(1), payload, 1000)
	hdr := make([]byte, offload.HdrLen)
	h.Encode(hdr)
	if err := in.SendOffload(hdr, super); err != nil {
		t.Fatal(err)
	}
	// The offload port gets the super-frame whole, with its header.
	gh, gf, ok := off.RecvOffload(5 * time.Second)
	if !ok || !bytes.Equal(gh, hdr) || !bytes.Equal(gf, super) {
		t.Fatalf("offload port: header %x, frame of %d bytes, want the super-frame of %d", gh, len(gf), len(super))
	}
	// The plain port gets three checksummed segments carrying the payload.
	var got []byte
	for i, want := range []int{1000, 1000, 500} {
		seg, ok := plain.Recv(5 * time.Second)
		if !ok {
			t.Fatalf("segment %d missing", i)
		}
		if len(seg) != 54+want || !tcpValid(seg) {
			t.Fatalf("segment %d: %d bytes, checksum ok %t", i, len(seg), tcpValid(seg))
		}
		if seq := binary.BigEndian.Uint32(seg[38:]); seq != uint32(1000+1000*i) {
			t.Errorf("segment %d: sequence %d", i, seq)
		}
		got = append(got, seg[54:]...)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("segments do not carry the payload")
	}

	// Flooded, a partial checksum is completed once, for every port;
	// offload ports get a zero header.
	h, small := tcpFrame(porttest.MAC(1), []byte("ack"), 0)
	h.Encode(hdr)
	if err := in.SendOffload(hdr, small); err != nil {
		t.Fatal(err)
	}
	gh, gf, ok = off.RecvOffload(5 * time.Second)
	if !ok || !bytes.Equal(gh, make([]byte, offload.HdrLen)) || !tcpValid(gf) {
		t.Fatalf("offload port: header %x, checksum ok %t", gh, ok && tcpValid(gf))
	}
	if f, ok := plain.Recv(5 * time.Second); !ok || !tcpValid(f) {
		t.Fatal("plain port: frame missing or checksum not completed")
	}

	// A frame from a plain port reaches offload ports with a zero header.
	_, plainFrame := tcpFrame(porttest.MAC(2), []byte("plain"), 0)
	if err := plain.Send(plainFrame); err != nil {
		t.Fatal(err)
	}
	gh, _, ok = off.RecvOffload(5 * time.Second)
	if !ok || !bytes.Equal(gh, make([]byte, offload.HdrLen)) {
		t.Fatalf("offload port: header %x from a plain port", gh)
	}

	// Unicast, a partial checksum goes to an offload port as it is, header
	// and all, and is completed for a plain port.
	if err := off.Send(append(make([]byte, offload.HdrLen), porttest.Frame(porttest.Broadcast, porttest.MAC(3), 0x88b5, nil)...)); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the offload port's MAC learned", func() bool { return len(sw.FDB()) == 3 })
	for _, p := range []*porttest.Port{in, plain} { // the broadcast
		if _, ok := p.Recv(5 * time.Second); !ok {
			t.Fatalf("port %s: broadcast missing", p)
		}
	}
	h, small = tcpFrame(porttest.MAC(1), []byte("to off"), 0)
	mac := porttest.MAC(3)
	copy(small[0:6], mac[:])
	h.Encode(hdr)
	if err := in.SendOffload(hdr, small); err != nil {
		t.Fatal(err)
	}
	gh, gf, ok = off.RecvOffload(5 * time.Second)
	if !ok || !bytes.Equal(gh, hdr) || !bytes.Equal(gf, small) {
		t.Fatalf("offload port: header %x (want %x), frame changed %t", gh, hdr, !bytes.Equal(gf, small))
	}
	h, small = tcpFrame(porttest.MAC(1), []byte("to plain"), 0)
	mac = porttest.MAC(2)
	copy(small[0:6], mac[:])
	h.Encode(hdr)
	if err := in.SendOffload(hdr, small); err != nil {
		t.Fatal(err)
	}
	if f, ok := plain.Recv(5 * time.Second); !ok || !tcpValid(f) {
		t.Fatal("plain port: unicast frame missing or checksum not completed")
	}

	// A super-frame whose header lies is dropped and counted.
	bad := h
	bad.GSOType, bad.GSOSize, bad.CsumStart = offload.GSOTCPv4, 1000, 20
	bad.Encode(hdr)
	if err := in.SendOffload(hdr, super); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the bad offload header counted", func() bool {
		return sw.Stats().Ports[0].Drops[vswitch.DropBadOffload] == 1
	})
}

// offloadAndPlain returns a switch, closed when the test ends, with the
// in-memory port "in", which takes offloads, and "plain", which does not
// and discards what it gets.
func offloadAndPlain(t *testing.T) (*vswitch.Switch, *porttest.Port, *porttest.Port) {
	t.Helper()
	sw := vswitch.New(vswitch.Config{})
	t.Cleanup(func() { sw.Close() })
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	plain := porttest.New(porttest.Config{Name: "plain", Discard: true})
	for _, p := range []*porttest.Port{in, plain} {
		if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
	}
	return sw, in, plain
}

// TestSegmentBounds: a super-frame whose gso_size would cut it into more
// segments than Linux's smallest TCP MSS (88 bytes) allows is a counted
// bad_offload drop, not tens of thousands of segments and buffers; one at
// that MSS is cut and delivered whole.
func TestSegmentBounds(t *testing.T) {
	sw, in, _ := offloadAndPlain(t)
	payload := make([]byte, 65000)
	hdr := make([]byte, offload.HdrLen)
	send := func(mss int) {
		t.Helper()
		h, super := tcpFrame(porttest.MAC(1), payload, mss)
		h.Encode(hdr)
		if err := in.SendOffload(hdr, super); err != nil {
			t.Fatal(err)
		}
	}
	send(1)
	porttest.WaitFor(t, "the gso_size 1 super-frame counted as bad_offload", func() bool {
		return sw.Stats().Ports[0].Drops[vswitch.DropBadOffload] == 1
	})
	if n := sw.Stats().Ports[1].TxFrames; n != 0 {
		t.Fatalf("plain port sent %d frames of a gso_size 1 super-frame", n)
	}
	send(88)
	want := uint64((len(payload) + 87) / 88)
	porttest.WaitFor(t, "739 segments of 88 bytes", func() bool {
		st := sw.Stats()
		return st.Ports[1].TxFrames+st.Ports[1].Drops[vswitch.DropQueueFull] == want
	})
	if d := sw.Stats().Ports[0].Drops[vswitch.DropBadOffload]; d != 1 {
		t.Fatalf("bad_offload drops %d after an MSS-88 super-frame, want still 1", d)
	}
}

// TestBadSuperFrameNotForwarded: a super-frame sent to one port without
// offloads that cannot be cut is a bad_offload drop, and not also counted
// as forwarded; a good one is forwarded once.
func TestBadSuperFrameNotForwarded(t *testing.T) {
	sw, in, plain := offloadAndPlain(t)
	dst := porttest.MAC(2)
	if err := plain.Send(porttest.Frame(porttest.MAC(1), dst, 0x88b5, []byte("learn me"))); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "plain's MAC learned", func() bool { return sw.Stats().FDB.Size == 1 })
	flooded := sw.Stats().Flooded
	hdr := make([]byte, offload.HdrLen)
	send := func(mss int) {
		t.Helper()
		h, super := tcpFrame(porttest.MAC(1), make([]byte, 20000), mss)
		copy(super[0:6], dst[:])
		h.Encode(hdr)
		if err := in.SendOffload(hdr, super); err != nil {
			t.Fatal(err)
		}
	}
	send(1) // 20 000 segments: more than maxSegments
	porttest.WaitFor(t, "the gso_size 1 super-frame counted as bad_offload", func() bool {
		return sw.Stats().Ports[0].Drops[vswitch.DropBadOffload] == 1
	})
	if st := sw.Stats(); st.Forwarded != 0 || st.Flooded != flooded {
		t.Errorf("after a super-frame that could not be cut: forwarded %d, flooded %d more; want 0 and 0", st.Forwarded, st.Flooded-flooded)
	}
	send(1400)
	porttest.WaitFor(t, "a good super-frame forwarded", func() bool { return sw.Stats().Forwarded == 1 })
	porttest.WaitFor(t, "its 15 segments sent", func() bool { return sw.Stats().Ports[1].TxFrames == 15 })
}

// TestSegmentsBeyondMaxFrame: a super-frame whose segments would be longer
// than MaxFrame (a tap whose MTU is above --max-frame) is a too_long drop,
// as such a frame sent whole is. Its segments were queued to ports without
// offloads, where a stream port failed them and the frames behind them in
// its batch.
func TestSegmentsBeyondMaxFrame(t *testing.T) {
	sw := vswitch.New(vswitch.Config{MaxFrame: 1514})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	plain := porttest.New(porttest.Config{Name: "plain"})
	// A port that takes super-frames whole got the MSS 8000 one too: it
	// was checked only where segmented.
	whole := porttest.New(porttest.Config{Name: "whole", Offload: true})
	for _, p := range []*porttest.Port{in, plain, whole} {
		if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
	}
	hdr := make([]byte, offload.HdrLen)
	for _, mss := range []int{8000, 1460} {
		h, super := tcpFrame(porttest.MAC(1), make([]byte, 16000), mss)
		h.Encode(hdr)
		if err := in.SendOffload(hdr, super); err != nil {
			t.Fatal(err)
		}
	}
	// MSS 1460: 11 segments of 1514 bytes, the last shorter.
	for i := range 11 {
		f, ok := plain.Recv(wait)
		if !ok {
			t.Fatalf("segment %d of the MSS 1460 super-frame not delivered", i)
		}
		if len(f) > 1514 {
			t.Fatalf("a %d-byte segment delivered; the MSS 8000 super-frame was not dropped", len(f))
		}
	}
	if d := sw.Stats().Ports[0].Drops[vswitch.DropTooLong]; d != 1 {
		t.Errorf("too_long drops %d, want 1 (the MSS 8000 super-frame)", d)
	}
	// The offload port gets the MSS 1460 super-frame whole, and nothing
	// else.
	for got := 0; ; got++ {
		hb, f, ok := whole.RecvOffload(100 * time.Millisecond)
		if !ok {
			if got != 1 {
				t.Errorf("the offload port got %d frames, want 1", got)
			}
			break
		}
		if mss := offload.DecodeHdr(hb).GSOSize; mss != 1460 || len(f) != 14+20+20+16000 {
			t.Errorf("the offload port got a %d-byte frame of MSS %d, want only the MSS 1460 super-frame", len(f), mss)
		}
	}
}

// TestSuperFramesQueuedWhole: a super-frame for a port without offloads
// that is not written to directly (a stream port) takes one entry of its
// queue and is cut by its transmit goroutine. With the port not reading
// and a queue of 4, three super-frames of 10 segments each all arrive, in
// order and checksummed; queued segment by segment, 30 entries, most were
// queue_full drops.
func TestSuperFramesQueuedWhole(t *testing.T) {
	sw := vswitch.New(vswitch.Config{QueueLen: 4})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	slow := porttest.New(porttest.Config{Name: "slow", OutLen: 1, BatchSize: 4})
	for _, p := range []*porttest.Port{in, slow} {
		if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
	}
	dst := porttest.MAC(2)
	if err := slow.Send(porttest.Frame(porttest.Broadcast, dst, 0x88b5, nil)); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "slow's MAC learned", func() bool { return sw.Stats().FDB.Size == 1 })
	hdr := make([]byte, offload.HdrLen)
	var want []byte
	for k := range 3 {
		payload := make([]byte, 10*1000)
		for i := range payload {
			payload[i] = byte(k*31 + i*7)
		}
		h, super := tcpFrame(porttest.MAC(1), payload, 1000)
		copy(super[0:6], dst[:])
		h.Encode(hdr)
		if err := in.SendOffload(hdr, super); err != nil {
			t.Fatal(err)
		}
		want = append(want, payload...)
	}
	porttest.WaitFor(t, "three super-frames forwarded", func() bool { return sw.Stats().Forwarded == 3 })
	if d := sw.Stats().Ports[1].Drops[vswitch.DropQueueFull]; d != 0 {
		t.Fatalf("%d queue_full drops at slow with three super-frames queued", d)
	}
	var got []byte
	for i := range 30 {
		seg, ok := slow.Recv(wait)
		if !ok {
			t.Fatalf("segment %d of 30 not delivered", i)
		}
		if len(seg) != 54+1000 || !tcpValid(seg) {
			t.Fatalf("segment %d: %d bytes, checksum ok %t", i, len(seg), tcpValid(seg))
		}
		got = append(got, seg[54:]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the segments do not carry the three payloads in order")
	}
	// Counted once the transmit goroutine's turn is over.
	porttest.WaitFor(t, "30 segments counted sent", func() bool { return sw.Stats().Ports[1].TxFrames >= 30 })
	st := sw.Stats().Ports[1]
	if st.TxFrames != 30 || st.TxBytes != 30*1054 || st.Drops[vswitch.DropQueueFull] != 0 {
		t.Fatalf("slow: tx %d frames, %d bytes, %d queue_full; want 30, %d, 0", st.TxFrames, st.TxBytes, st.Drops[vswitch.DropQueueFull], 30*1054)
	}
}

// failOnce is an in-memory port whose first write that would take it past
// limit frames writes up to there and fails, like a stream peer whose
// write timed out; later writes succeed.
type failOnce struct {
	*porttest.Port
	mu      sync.Mutex
	limit   int
	written int
}

func (p *failOnce) WriteFrames(bufs [][]byte, offset int) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.limit >= 0 && p.written+len(bufs) > p.limit {
		n, _ := p.Port.WriteFrames(bufs[:p.limit-p.written], offset)
		p.limit = -1
		return n, errors.New("write timed out")
	}
	n, err := p.Port.WriteFrames(bufs, offset)
	p.written += n
	return n, err
}

// TestSuperFrameWriteFails: when a write fails inside a super-frame that
// a port's transmit goroutine cuts, the segments not written are tx_error
// drops and the rest of that super-frame is not tried; the next one goes
// out whole.
func TestSuperFrameWriteFails(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in := porttest.New(porttest.Config{Name: "in", Offload: true})
	out := &failOnce{Port: porttest.New(porttest.Config{Name: "out", BatchSize: 4}), limit: 3}
	for _, p := range []vswitch.Port{in, out} {
		if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
	}
	dst := porttest.MAC(2)
	if err := out.Send(porttest.Frame(porttest.Broadcast, dst, 0x88b5, nil)); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "out's MAC learned", func() bool { return sw.Stats().FDB.Size == 1 })
	hdr := make([]byte, offload.HdrLen)
	payloads := make([][]byte, 2)
	for k := range payloads {
		payloads[k] = bytes.Repeat([]byte{byte(k + 1)}, 10*1000)
		h, super := tcpFrame(porttest.MAC(1), payloads[k], 1000)
		copy(super[0:6], dst[:])
		h.Encode(hdr)
		if err := in.SendOffload(hdr, super); err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			porttest.WaitFor(t, "the first super-frame's write failed", func() bool {
				return sw.Stats().Ports[1].Drops[vswitch.DropTxError] > 0
			})
		}
	}
	want := append(bytes.Clone(payloads[0][:3000]), payloads[1]...)
	var got []byte
	for i := range 13 {
		seg, ok := out.Recv(wait)
		if !ok {
			t.Fatalf("segment %d of 13 not delivered", i)
		}
		got = append(got, seg[54:]...)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("delivered: not the first 3 segments of the first super-frame and all 10 of the second")
	}
	porttest.WaitFor(t, "13 segments counted sent", func() bool { return sw.Stats().Ports[1].TxFrames == 13 })
	if d := sw.Stats().Ports[1].Drops[vswitch.DropTxError]; d != 7 {
		t.Fatalf("tx_error %d, want the 7 segments not written", d)
	}
	if _, ok := out.Recv(100 * time.Millisecond); ok {
		t.Fatal("a frame beyond the 13 was delivered")
	}
}
