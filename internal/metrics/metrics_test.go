package metrics_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/stream"
	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/metrics"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// countingPort is a port that keeps counters of its own.
type countingPort struct{ *porttest.Port }

func (countingPort) BackendCounters() map[string]uint64 {
	return map[string]uint64{"write_timeouts": 4, "discarded": 0}
}

func TestCollector(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	p1 := porttest.New(porttest.Config{Name: "one"})
	p2 := porttest.New(porttest.Config{Name: "two"})
	sw.AddPort(p1, vswitch.PortConfig{Kind: "mem"})
	sw.AddPort(countingPort{p2}, vswitch.PortConfig{Kind: "mem"})
	p1.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, nil))
	p1.Send(make([]byte, 10)) // too short
	if _, ok := p2.Recv(5 * time.Second); !ok {
		t.Fatal("no frame")
	}
	// Send returns once the switch has read a frame, and a sent frame is
	// counted once its write has returned: wait for the counters.
	porttest.WaitFor(t, "the counters", func() bool {
		st := sw.Stats()
		return st.Ports[0].RxFrames == 2 && st.Ports[0].Drops[vswitch.DropTooShort] == 1 && st.Ports[1].TxFrames == 1
	})

	reg := prometheus.NewPedanticRegistry()
	listeners := func() []api.Listener {
		return []api.Listener{
			{URL: "unix:///run/vm.sock", Kind: "stream", Ports: 3, Stream: &stream.ListenerStats{Accepted: 9, Refused: 2}},
			{URL: "unixgram:///run/vz.sock", Kind: "datagram", Ports: 1,
				Datagram: &dgram.Stats{Datagrams: 40, Unbound: 5, Invalid: 6, TooLong: 7, Refused: 8, Peers: 1,
					PeersExpired: 2, PeersGone: 3, PeersEvicted: 4}},
		}
	}
	reg.MustRegister(metrics.New(sw, func() metrics.DHCPStats { return metrics.DHCPStats{LeasesInUse: 3, PoolSize: 250} }, listeners))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("metric %s missing", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := labels[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			if m.Counter != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
		t.Fatalf("metric %s%v missing", name, labels)
		return 0
	}
	if v := value("tapswitch_port_rx_frames_total", map[string]string{"port": "one"}); v != 2 {
		t.Errorf("rx frames of one = %v, want 2", v)
	}
	if v := value("tapswitch_port_tx_frames_total", map[string]string{"port": "two"}); v != 1 {
		t.Errorf("tx frames of two = %v, want 1", v)
	}
	if v := value("tapswitch_port_drops_total", map[string]string{"port": "one", "reason": "too_short"}); v != 1 {
		t.Errorf("too_short drops = %v, want 1", v)
	}
	if v := value("tapswitch_port_backend_total", map[string]string{"port": "two", "counter": "write_timeouts"}); v != 4 {
		t.Errorf("two's write_timeouts = %v, want 4", v)
	}
	if f := fams["tapswitch_port_backend_total"]; len(f.GetMetric()) != 2 {
		t.Errorf("%d backend series, want two's 2 (port one keeps none)", len(f.GetMetric()))
	}
	// Totals count departed ports too: they stay when a port leaves.
	if v := value("tapswitch_rx_frames_total", nil); v != 2 {
		t.Errorf("total rx frames = %v, want 2", v)
	}
	if v := value("tapswitch_drops_total", map[string]string{"reason": "too_short"}); v != 1 {
		t.Errorf("total too_short drops = %v, want 1", v)
	}
	if v := value("tapswitch_fdb_entries", nil); v != 1 {
		t.Errorf("fdb entries = %v", v)
	}
	if v := value("tapswitch_ports", map[string]string{"kind": "mem"}); v != 2 {
		t.Errorf("ports = %v", v)
	}
	if v := value("tapswitch_dhcp_pool_size", nil); v != 250 {
		t.Errorf("pool = %v", v)
	}
	if v := value("tapswitch_listener_ports", map[string]string{"listener": "unix:///run/vm.sock", "kind": "stream"}); v != 3 {
		t.Errorf("stream listener ports = %v, want 3", v)
	}
	for result, want := range map[string]float64{"accepted": 9, "refused": 2} {
		if v := value("tapswitch_stream_clients_total", map[string]string{"listener": "unix:///run/vm.sock", "result": result}); v != want {
			t.Errorf("stream clients %s = %v, want %v", result, v, want)
		}
	}
	vz := "unixgram:///run/vz.sock"
	if v := value("tapswitch_dgram_datagrams_total", map[string]string{"listener": vz}); v != 40 {
		t.Errorf("datagrams = %v, want 40", v)
	}
	for reason, want := range map[string]float64{"unbound": 5, "invalid": 6, "too_long": 7, "refused": 8} {
		if v := value("tapswitch_dgram_dropped_total", map[string]string{"listener": vz, "reason": reason}); v != want {
			t.Errorf("datagrams dropped as %s = %v, want %v", reason, v, want)
		}
	}
	for reason, want := range map[string]float64{"expired": 2, "gone": 3, "evicted": 4} {
		if v := value("tapswitch_dgram_peers_removed_total", map[string]string{"listener": vz, "reason": reason}); v != want {
			t.Errorf("peers removed as %s = %v, want %v", reason, v, want)
		}
	}
	if f := fams["tapswitch_dgram_datagrams_total"]; len(f.GetMetric()) != 1 {
		t.Errorf("datagram counters for %d listeners, want only the datagram one", len(f.GetMetric()))
	}

	// Port one leaves: its series go, the switch-wide totals stay.
	a := sw.Ports()[0]
	if a.Name() != "one" {
		t.Fatalf("first port %s, want one", a.Name())
	}
	a.Close()
	<-a.Done()
	rec = httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if fams, err = parser.TextToMetricFamilies(rec.Body); err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	if v := value("tapswitch_rx_frames_total", nil); v != 2 {
		t.Errorf("total rx frames after port one left = %v, want still 2", v)
	}
	for _, m := range fams["tapswitch_port_rx_frames_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "port" && l.GetValue() == "one" {
				t.Error("port one's series are still exported after it left")
			}
		}
	}

	// The last port of a kind leaves: the kind's count goes to 0. Its
	// series used to disappear, which reads as no data.
	b := sw.Ports()[0]
	b.Close()
	<-b.Done()
	rec = httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if fams, err = parser.TextToMetricFamilies(rec.Body); err != nil {
		t.Fatalf("parse metrics: %v", err)
	}
	if v := value("tapswitch_ports", map[string]string{"kind": "mem"}); v != 0 {
		t.Errorf("mem ports after the last left = %v, want 0", v)
	}
}

// TestLabelsValidUTF8: a port named by a datagram peer's socket path that
// is not UTF-8 made every scrape fail (the client library refuses such a
// label value) for as long as the peer stayed; and two listener paths that
// differ only in such bytes made one series twice, which failed it too.
func TestLabelsValidUTF8(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	sw.AddPort(porttest.New(porttest.Config{Name: "unixgram:/tmp/bad\xff.sock"}), vswitch.PortConfig{Kind: "dgram", NoReader: true})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.New(sw, nil, func() []api.Listener {
		// Two names that differ only in their bytes that are not UTF-8.
		return []api.Listener{{URL: "unixgram:///tmp/vz\xfe.sock", Kind: "datagram", Datagram: &dgram.Stats{}},
			{URL: "unixgram:///tmp/vz\xff.sock", Kind: "datagram", Datagram: &dgram.Stats{}}}
	}))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{`port="\"unixgram:/tmp/bad\\xff.sock\""`, `listener="\"unixgram:///tmp/vz\\xfe.sock\""`,
		`listener="\"unixgram:///tmp/vz\\xff.sock\""`} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %s:\n%s", want, body)
		}
	}
}
