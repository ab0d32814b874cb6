package dhcp

import (
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// BenchmarkFlooded measures what every broadcast on the segment costs the
// responder: an ARP request for another host, dropped.
func BenchmarkFlooded(b *testing.B) {
	srv, err := New(Config{Gateway: testGateway, AnswerGateway: true})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	f := append(make([]byte, vswitch.Headroom), arpRequestFrame(porttest.MAC(1), ip4("198.18.0.2"), ip4("198.18.0.3"))...)
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = f
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += len(bufs) {
		srv.WriteFrames(bufs, vswitch.Headroom)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkRenewal measures a REQUEST/ACK round for a bound client, in
// memory (no lease file).
func BenchmarkRenewal(b *testing.B) {
	srv, err := New(Config{Gateway: testGateway, Now: newClock().Now})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	m := porttest.MAC(1)
	ip := acquire(b, srv, m)
	renew := newMsg(b, dhcpv4.MessageTypeRequest, m, dhcpv4.WithClientIP(ip.AsSlice()))
	bufs := [][]byte{append(make([]byte, vswitch.Headroom), clientFrame(srv.MAC(), m, ip, testGW, renew)...)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		srv.WriteFrames(bufs, vswitch.Headroom)
		<-srv.out
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "acks/s")
}

// BenchmarkDiscoverLoaded measures a DISCOVER from a new MAC to a /16
// responder with 60000 offers outstanding, and once the pool is full of
// unexpired bindings (no offer).
func BenchmarkDiscoverLoaded(b *testing.B) {
	for _, full := range []bool{false, true} {
		name := map[bool]string{false: "offers=60000", true: "pool=full"}[full]
		b.Run(name, func(b *testing.B) {
			clock := newClock()
			srv, err := New(Config{Gateway: netip.MustParsePrefix("198.18.0.1/16"), Now: clock.Now})
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			n := 60000
			if full {
				n = srv.t.poolSize
			}
			for i := range n {
				m := vswitch.MAC{0x02, 1, 0, byte(i >> 16), byte(i >> 8), byte(i)}
				ip, ok := srv.t.offer(m, netip.Addr{}, clock.Now(), offerHold)
				if full && (!ok || srv.t.bind(m, ip, "", clock.Now(), time.Hour) == bindRefused) {
					b.Fatalf("filling the pool: %v %v", ip, ok)
				}
			}
			bufs := make([][]byte, b.N)
			for i := range bufs {
				m := vswitch.MAC{0x02, 2, 0, byte(i >> 16), byte(i >> 8), byte(i)}
				bufs[i] = append(make([]byte, vswitch.Headroom), bcastFrame(m, newMsg(b, dhcpv4.MessageTypeDiscover, m))...)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range bufs {
				srv.WriteFrames(bufs[i:i+1], vswitch.Headroom)
				select {
				case <-srv.out:
				default:
				}
			}
		})
	}
}
