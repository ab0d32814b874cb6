package dhcp

import (
	"testing"

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
