package dgram

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// FuzzDatagram feeds arbitrary datagrams from up to four UDP peers to a
// listener's datagram handling, each input a sequence of [peer][u16
// length][bytes] records handled in batches of up to 8 (a peer byte with
// bit 7 set ends a batch), and checks: no panic, every datagram counted,
// and the switch never forwards a VFKT hello, a runt or an oversized frame
// (an observer port sees only well-formed frames).
func FuzzDatagram(f *testing.F) {
	rec := func(peer byte, b []byte) []byte {
		out := append([]byte{peer}, binary.BigEndian.AppendUint16(nil, uint16(len(b)))...)
		return append(out, b...)
	}
	frame := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, nil)
	f.Add(rec(0, MagicVFKit))                                   // hello only
	f.Add(append(rec(0, MagicVFKit), rec(0, frame)...))         // hello, then a frame
	f.Add(append(rec(1, make([]byte, 13)), rec(1, frame)...))   // a runt, then a frame
	f.Add(append(rec(2, frame), rec(3, make([]byte, 2001))...)) // a frame, then too long
	f.Add(rec(0, []byte("VFK")))                                // almost a hello
	f.Add(append(rec(0, frame), rec(0x80, frame)...))           // two batches
	f.Fuzz(func(t *testing.T, data []byte) {
		sw := vswitch.New(vswitch.Config{})
		defer sw.Close()
		obs := porttest.New(porttest.Config{Name: "observer", OutLen: 4096})
		if _, err := sw.AddPort(obs, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
		l, err := Listen(context.Background(), "udp://127.0.0.1:0", Config{MaxFrame: 2000}, sw)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		const batch = 8
		bufs, sizes, srcs := make([][]byte, batch), make([]int, batch), make([]source, batch)
		for i := range bufs {
			bufs[i] = make([]byte, vswitch.Headroom+2000+1)
		}
		n, k := 0, 0
		for len(data) >= 3 && n < 256 {
			srcs[k] = source{ap: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), 9+uint16(data[0]%4))}
			sizes[k] = min(int(binary.BigEndian.Uint16(data[1:3])), len(data)-3, 2001)
			copy(bufs[k][vswitch.Headroom:], data[3:3+sizes[k]])
			end := data[0]&0x80 != 0
			data = data[3+sizes[k]:]
			n, k = n+1, k+1
			if end || k == batch || len(data) < 3 || n == 256 {
				l.handle(srcs[:k], bufs[:k], sizes[:k])
				k = 0
			}
		}
		if got := l.Stats().Datagrams; got != uint64(n) {
			t.Fatalf("%d datagrams counted, %d handled", got, n)
		}
		for {
			fr, ok := obs.Recv(2 * time.Millisecond)
			if !ok {
				break
			}
			if len(fr) < 14 || len(fr) > 2000 || string(fr) == string(MagicVFKit) {
				t.Fatalf("observer received a %d-byte frame %x", len(fr), fr)
			}
		}
	})
}
