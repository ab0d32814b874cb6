// Package metrics exposes a switch's counters to Prometheus. The collector
// reads a snapshot at scrape time, so metrics cost nothing between scrapes.
package metrics

import (
	"strconv"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// DHCPStats is what the DHCP responder reports, when it runs.
type DHCPStats struct {
	LeasesInUse int
	PoolSize    int
}

// Collector is a prometheus.Collector for one switch.
type Collector struct {
	sw        *vswitch.Switch
	dhcp      func() DHCPStats
	listeners func() []api.Listener

	rxFrames, rxBytes, rxAnswers, backend             *prometheus.Desc
	txFrames, txBytes, txCoalesced, drops             *prometheus.Desc
	fdbSize, fdbMax, fdbLearned, fdbRefused           *prometheus.Desc
	fdbExpired, fdbMoved, forwarded, flooded, wakeups *prometheus.Desc
	portsByKind, leases, pool                         *prometheus.Desc
	// Switch-wide totals, departed ports included: unlike the sums of the
	// per-port series, they never go back when a port leaves.
	totRxFrames, totRxBytes, totTxFrames, totTxBytes, totDrops *prometheus.Desc
	// Listening sockets.
	listenerPorts, dgramDatagrams, dgramDropped, dgramPeersRemoved, streamClients *prometheus.Desc

	// kindsMu guards kinds, the port kinds seen: a kind whose last port
	// has left stays in tapswitch_ports at 0 rather than disappearing,
	// which alerts and graphs would read as no data.
	kindsMu sync.Mutex
	kinds   map[string]bool
}

var _ prometheus.Collector = (*Collector)(nil)

// New returns a collector for sw; dhcp may be nil when DHCP is off, and
// listeners nil when there are none.
func New(sw *vswitch.Switch, dhcp func() DHCPStats, listeners func() []api.Listener) *Collector {
	port := []string{"port", "id", "kind"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("tapswitch_"+name, help, labels, nil)
	}
	return &Collector{
		sw:          sw,
		kinds:       map[string]bool{},
		dhcp:        dhcp,
		listeners:   listeners,
		rxFrames:    d("port_rx_frames_total", "Frames received on the port.", port...),
		rxBytes:     d("port_rx_bytes_total", "Bytes received on the port.", port...),
		rxAnswers:   d("port_rx_answers_total", "Frames received on the port (a tap) by the goroutine that had just written into it, without a wakeup.", port...),
		txFrames:    d("port_tx_frames_total", "Frames sent out of the port.", port...),
		txBytes:     d("port_tx_bytes_total", "Bytes sent out of the port.", port...),
		txCoalesced: d("port_tx_coalesced_total", "Frames sent out of the port (a tap) merged into UDP or TCP segmentation super-frames; part of port_tx_frames_total.", port...),
		drops:       d("port_drops_total", "Frames dropped on the port, by reason.", append(port, "reason")...),
		backend: d("port_backend_total", "The port's own counters, by name: a stream connection's discarded frames, "+
			"write timeouts and partial writes; the DHCP responder's messages by type, its drops and lease file writes; the frames vmnet dropped (macOS).", append(port, "counter")...),
		fdbSize:     d("fdb_entries", "MAC addresses in the forwarding database."),
		fdbMax:      d("fdb_max_entries", "Bound on the forwarding database."),
		fdbLearned:  d("fdb_learned_total", "MAC addresses learned."),
		fdbRefused:  d("fdb_refused_total", "MAC addresses not learned because the table was full."),
		fdbExpired:  d("fdb_expired_total", "MAC addresses aged out of the table (evictions)."),
		fdbMoved:    d("fdb_moved_total", "MAC addresses that moved to another port."),
		forwarded:   d("forwarded_frames_total", "Frames sent to one port by FDB lookup."),
		flooded:     d("flooded_frames_total", "Frames flooded to every other port."),
		wakeups:     d("warm_wakeups_total", "Timer wakeups scheduled by --warm-interval while traffic was sparse."),
		portsByKind: d("ports", "Live ports, by kind.", "kind"),
		totRxFrames: d("rx_frames_total", "Frames received on every port, departed ports included."),
		totRxBytes:  d("rx_bytes_total", "Bytes received on every port, departed ports included."),
		totTxFrames: d("tx_frames_total", "Frames sent out of every port, departed ports included."),
		totTxBytes:  d("tx_bytes_total", "Bytes sent out of every port, departed ports included."),
		totDrops:    d("drops_total", "Frames dropped on every port, departed ports included, by reason.", "reason"),
		leases:      d("dhcp_leases_in_use", "DHCP leases currently bound."),
		pool:        d("dhcp_pool_size", "Addresses in the DHCP pool."),
		listenerPorts: d("listener_ports", "Live ports a listening socket made (clients, datagram peers).",
			"listener", "kind"),
		dgramDatagrams: d("dgram_datagrams_total", "Datagrams a datagram listener received.", "listener"),
		streamClients: d("stream_clients_total", "Clients a stream listener accepted (result=accepted) or "+
			"disconnected at once (result=refused: not in --allow-uid/--allow-gid, 1024 clients connected already, or --max-ports reached).", "listener", "result"),
		dgramDropped: d("dgram_dropped_total", "Datagrams a datagram listener dropped before they reached a port, "+
			"by reason: unbound (sender bound to no absolute path), invalid (shorter than an Ethernet header, "+
			"from no peer), too_long, refused (no port for a new sender: too many peers or ports, not in --allow-uid/--allow-gid, "+
			"its socket not its own or gone, out of file descriptors).", "listener", "reason"),
		dgramPeersRemoved: d("dgram_peers_removed_total", "Peers a datagram listener removed, by reason: expired "+
			"(a UDP peer silent for an hour), gone (its socket closed), evicted (silent longest when the listener "+
			"or the switch was full and a new sender came).", "listener", "reason"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rxFrames, c.rxBytes, c.rxAnswers, c.txFrames, c.txBytes, c.txCoalesced, c.drops, c.backend,
		c.fdbSize, c.fdbMax, c.fdbLearned, c.fdbRefused, c.fdbExpired, c.fdbMoved,
		c.forwarded, c.flooded, c.wakeups, c.portsByKind, c.leases, c.pool,
		c.totRxFrames, c.totRxBytes, c.totTxFrames, c.totTxBytes, c.totDrops,
		c.listenerPorts, c.dgramDatagrams, c.dgramDropped, c.dgramPeersRemoved, c.streamClients} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := c.sw.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	kinds := map[string]int{}
	for _, p := range st.Ports {
		kinds[p.Kind]++
		l := []string{label(p.Name), strconv.Itoa(p.ID), p.Kind}
		counter(c.rxFrames, p.RxFrames, l...)
		counter(c.rxBytes, p.RxBytes, l...)
		counter(c.rxAnswers, p.RxAnswers, l...)
		counter(c.txFrames, p.TxFrames, l...)
		counter(c.txBytes, p.TxBytes, l...)
		counter(c.txCoalesced, p.TxCoalesced, l...)
		for _, r := range vswitch.DropReasons() {
			counter(c.drops, p.Drops[r], append(l, r.String())...)
		}
		for name, v := range p.Backend {
			counter(c.backend, v, append(l, name)...)
		}
	}
	c.kindsMu.Lock()
	for k := range kinds {
		c.kinds[k] = true
	}
	for k := range c.kinds {
		gauge(c.portsByKind, float64(kinds[k]), k)
	}
	c.kindsMu.Unlock()
	t := st.Totals
	counter(c.totRxFrames, t.RxFrames)
	counter(c.totRxBytes, t.RxBytes)
	counter(c.totTxFrames, t.TxFrames)
	counter(c.totTxBytes, t.TxBytes)
	for _, r := range vswitch.DropReasons() {
		counter(c.totDrops, t.Drops[r], r.String())
	}
	gauge(c.fdbSize, float64(st.FDB.Size))
	gauge(c.fdbMax, float64(st.FDB.Max))
	counter(c.fdbLearned, st.FDB.Learned)
	counter(c.fdbRefused, st.FDB.Refused)
	counter(c.fdbExpired, st.FDB.Expired)
	counter(c.fdbMoved, st.FDB.Moved)
	counter(c.forwarded, st.Forwarded)
	counter(c.flooded, st.Flooded)
	counter(c.wakeups, st.Wakeups)
	if c.dhcp != nil {
		d := c.dhcp()
		gauge(c.leases, float64(d.LeasesInUse))
		gauge(c.pool, float64(d.PoolSize))
	}
	if c.listeners != nil {
		for _, l := range c.listeners() {
			l.URL = label(l.URL)
			gauge(c.listenerPorts, float64(l.Ports), l.URL, l.Kind)
			if s := l.Stream; s != nil {
				counter(c.streamClients, s.Accepted, l.URL, "accepted")
				counter(c.streamClients, s.Refused, l.URL, "refused")
			}
			if d := l.Datagram; d != nil {
				counter(c.dgramDatagrams, d.Datagrams, l.URL)
				counter(c.dgramDropped, d.Unbound, l.URL, "unbound")
				counter(c.dgramDropped, d.Invalid, l.URL, "invalid")
				counter(c.dgramDropped, d.TooLong, l.URL, "too_long")
				counter(c.dgramDropped, d.Refused, l.URL, "refused")
				counter(c.dgramPeersRemoved, d.PeersExpired, l.URL, "expired")
				counter(c.dgramPeersRemoved, d.PeersGone, l.URL, "gone")
				counter(c.dgramPeersRemoved, d.PeersEvicted, l.URL, "evicted")
			}
		}
	}
}

// label makes s a valid label value: a datagram peer's port is named after
// the path it bound, which need not be UTF-8, and one label value that is
// not fails the whole scrape. Such a name is quoted, its bytes that are not
// UTF-8 escaped (\xff), so that two names stay two labels (replacing the
// bytes made two listeners one series, which failed the scrape too).
func label(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strconv.Quote(s)
}
