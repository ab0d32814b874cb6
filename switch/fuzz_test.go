package vswitch_test

import (
	"encoding/binary"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// FuzzForward feeds arbitrary bytes to a four-port switch as a sequence of
// frames, each prefixed by an ingress port number and a 2-byte length, and
// checks the invariants: no panic, no frame back out of its ingress port,
// and every received frame accounted for exactly once (dropped on ingress,
// forwarded to one port, or flooded to the three others).
func FuzzForward(f *testing.F) {
	bcast := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, nil)
	uni := porttest.Frame(porttest.MAC(1), porttest.MAC(2), 0x0800, []byte("x"))
	seed := func(parts ...[]byte) []byte {
		var b []byte
		for i, p := range parts {
			b = append(b, byte(i))
			b = binary.BigEndian.AppendUint16(b, uint16(len(p)))
			b = append(b, p...)
		}
		return b
	}
	f.Add(seed(bcast, uni))                                                    // learn, then known unicast
	f.Add(seed(bcast, bcast))                                                  // same MAC on two ports: a move
	f.Add(seed(make([]byte, 13), make([]byte, 14)))                            // one byte short, then minimal
	f.Add(seed(porttest.Frame(porttest.MAC(3), porttest.MAC(3), 0x0800, nil))) // to itself
	f.Add([]byte{0xff, 0xff, 0xff})                                            // truncated header
	f.Fuzz(func(t *testing.T, data []byte) {
		const n = 4
		sw := vswitch.New(vswitch.Config{MaxFrame: 2000, QueueLen: 4096})
		defer sw.Close()
		ports := make([]*porttest.Port, n)
		atts := make([]*vswitch.Attachment, n)
		for i := range ports {
			ports[i] = porttest.New(porttest.Config{OutLen: 4096})
			var err error
			if atts[i], err = sw.AddPort(ports[i], vswitch.PortConfig{Kind: "mem", NoReader: true}); err != nil {
				t.Fatal(err)
			}
		}
		sentBy := make(map[string]uint8) // frame -> bitmask of sending ports
		frames := 0
		for len(data) >= 3 && frames < 512 {
			in := int(data[0]) % n
			l := int(binary.BigEndian.Uint16(data[1:3]))
			data = data[3:]
			l = min(l, len(data))
			fr := data[:l]
			data = data[l:]
			buf := make([]byte, vswitch.Headroom+len(fr))
			copy(buf[vswitch.Headroom:], fr)
			atts[in].Input([][]byte{buf}, []int{len(fr)}, vswitch.Headroom)
			sentBy[string(fr)] |= 1 << in
			frames++
		}
		st := sw.Stats()
		var ingressDrops, rx uint64
		for _, p := range st.Ports {
			rx += p.RxFrames
			ingressDrops += p.Drops[vswitch.DropTooShort] + p.Drops[vswitch.DropTooLong] +
				p.Drops[vswitch.DropSrcMulticast] + p.Drops[vswitch.DropSamePort]
		}
		if rx != uint64(frames) || ingressDrops+st.Forwarded+st.Flooded != rx {
			t.Fatalf("rx=%d frames=%d ingress drops=%d forwarded=%d flooded=%d",
				rx, frames, ingressDrops, st.Forwarded, st.Flooded)
		}
		want := st.Forwarded + st.Flooded*(n-1)
		deadline := time.Now().Add(5 * time.Second)
		var got uint64
		for got < want && time.Now().Before(deadline) {
			got = 0
			for _, p := range sw.Stats().Ports {
				got += p.TxFrames + p.Drops[vswitch.DropQueueFull]
			}
		}
		if got != want {
			t.Fatalf("egress accounted %d frames, want %d", got, want)
		}
		for i, p := range ports {
			for {
				fr, ok := p.Recv(0)
				if !ok {
					break
				}
				if sentBy[string(fr)] == 1<<i {
					t.Fatalf("port %d received a frame only it sent: %x", i, fr)
				}
			}
		}
	})
}
