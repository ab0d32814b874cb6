package metrics_test

import (
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapswitch/tapswitch/internal/metrics"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestCollectConcurrent: scrapes may run at once (two Prometheus servers,
// a scrape while another times out): the kinds seen are shared between
// them, and a concurrent map write is fatal to the whole daemon.
func TestCollectConcurrent(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	for _, k := range []string{"tap", "stream", "dgram", "host"} {
		if _, err := sw.AddPort(porttest.New(porttest.Config{Name: k}), vswitch.PortConfig{Kind: k}); err != nil {
			t.Fatal(err)
		}
	}
	c := metrics.New(sw, nil, nil)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				ch := make(chan prometheus.Metric, 256)
				c.Collect(ch)
			}
		}()
	}
	wg.Wait()
}
