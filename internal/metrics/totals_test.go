package metrics_test

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tapswitch/tapswitch/internal/metrics"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestSwitchTotals: the switch-wide totals report each its own counter:
// bytes are bytes, frames are frames, in both directions.
func TestSwitchTotals(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	p1 := porttest.New(porttest.Config{Name: "one"})
	p2 := porttest.New(porttest.Config{Name: "two"})
	sw.AddPort(p1, vswitch.PortConfig{Kind: "mem"})
	sw.AddPort(p2, vswitch.PortConfig{Kind: "mem"})
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, make([]byte, 86)) // 100 bytes
	if err := p1.Send(f); err != nil {
		t.Fatal(err)
	}
	if _, ok := p2.Recv(5 * time.Second); !ok {
		t.Fatal("no frame")
	}
	porttest.WaitFor(t, "the counters", func() bool { return sw.Stats().Totals.TxFrames == 1 })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(metrics.New(sw, nil, nil))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	n := len(f)
	for _, want := range []string{
		"tapswitch_rx_frames_total 1\n",
		"tapswitch_tx_frames_total 1\n",
		"tapswitch_rx_bytes_total " + itoa(n) + "\n",
		"tapswitch_tx_bytes_total " + itoa(n) + "\n",
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("no %q in\n%s", strings.TrimSpace(want), grep(rec.Body.String(), "tapswitch_[rt]x_"))
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func grep(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
