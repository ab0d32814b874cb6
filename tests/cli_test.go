//go:build linux

package tests

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// linkMAC returns the MAC address of link in ns.
func linkMAC(t *testing.T, ns *testnet.NS, link string) string {
	t.Helper()
	var out []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal([]byte(ns.IP(t, "-j", "link", "show", "dev", link)), &out); err != nil || len(out) != 1 {
		t.Fatalf("ip link show %s: %v", link, err)
	}
	return out[0].Address
}

// tapNet is a switch in its own namespace with two taps moved into two
// client namespaces, addressed 198.18.N.2 and 198.18.N.3, and a host
// interface 198.18.N.1 in the switch's namespace.
type tapNet struct {
	sw, a, b   *testnet.NS
	tapA, tapB string
	host       string
	d          *daemon
	ipA, ipB   string
	hostIP     string
}

func newTapNet(t *testing.T, subnet int, extra ...string) *tapNet {
	t.Helper()
	return newTapNetBin(t, bin, subnet, extra...)
}

// newTapNetBin is newTapNet with the switch binary binary.
func newTapNetBin(t *testing.T, binary string, subnet int, extra ...string) *tapNet {
	t.Helper()
	n := &tapNet{
		sw: testnet.NewNS(t), a: testnet.NewNS(t), b: testnet.NewNS(t),
		tapA: testnet.UniqueName("tsa"), tapB: testnet.UniqueName("tsb"), host: testnet.UniqueName("tsh"),
		hostIP: fmt.Sprintf("198.18.%d.1", subnet), ipA: fmt.Sprintf("198.18.%d.2", subnet), ipB: fmt.Sprintf("198.18.%d.3", subnet),
	}
	ipv4Only(t, n.sw, n.a, n.b)
	args := append([]string{"--tap", n.tapA, "--tap", n.tapB, "--host", n.hostIP + "/24", "--host-ifname", n.host}, extra...)
	n.d = startSwitchBin(t, n.sw, binary, args...)
	n.join(t)
	return n
}

// ipv4Only turns IPv6 off in the namespaces: on new links it sends
// multicast listener reports and router solicitations for seconds, which
// would mix into the frames the tests count and capture.
func ipv4Only(t *testing.T, nss ...*testnet.NS) {
	t.Helper()
	for _, ns := range nss {
		ns.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
}

// join moves the taps into the client namespaces and addresses them.
func (n *tapNet) join(t *testing.T) {
	t.Helper()
	for _, c := range []struct {
		ns   *testnet.NS
		link string
		ip   string
	}{{n.a, n.tapA, n.ipA}, {n.b, n.tapB, n.ipB}} {
		waitLink(t, n.sw, c.link)
		testnet.MoveLink(t, c.link, n.sw, c.ns)
		c.ns.AddAddr(t, c.link, c.ip+"/24")
		c.ns.SetUp(t, c.link)
	}
}

// TestCLI runs the switch as a user does: from a config file, inspected
// with ctl in both formats, captured to a pcap file tcpdump reads, scraped
// for metrics, and stopped with SIGTERM.
func TestCLI(t *testing.T) {
	if _, err := exec.LookPath("tcpdump"); err != nil {
		t.Fatalf("tcpdump not found (install tcpdump): %v", err)
	}
	swNS, nsA, nsB := testnet.NewNS(t), testnet.NewNS(t), testnet.NewNS(t)
	ipv4Only(t, swNS, nsA, nsB) // the capture below counts six frames
	tapA, tapB, host := testnet.UniqueName("tsa"), testnet.UniqueName("tsb"), testnet.UniqueName("tsh")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tapswitch.yaml")
	pidfile := filepath.Join(dir, "tapswitch.pid")
	stream := filepath.Join(dir, "vm.sock")
	dgramSock := filepath.Join(dir, "vz.sock")
	writeFile(t, cfg, fmt.Sprintf(`# a config file as a user writes it
tap:
  - %s
  - %s
host: 198.18.21.1/24
host-ifname: %s
listen:
  - unix://%s
  - unixgram://%s
metrics: 127.0.0.1:9141
pidfile: %s
fdb-age: 120s
log-level: debug
`, tapA, tapB, host, stream, dgramSock, pidfile))
	d := startSwitch(t, swNS, "--config", cfg, "--log-level", "info") // the flag wins over the file
	n := &tapNet{sw: swNS, a: nsA, b: nsB, tapA: tapA, tapB: tapB, host: host, d: d,
		hostIP: "198.18.21.1", ipA: "198.18.21.2", ipB: "198.18.21.3"}
	n.join(t)
	if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(d.cmd.Process.Pid) {
		t.Errorf("pidfile: %q, %v; pid %d", b, err, d.cmd.Process.Pid)
	}

	nsA.Ping(t, n.ipB)
	nsB.Ping(t, n.ipA)
	nsA.Ping(t, n.hostIP)

	// ctl ports and fdb, as tables and as JSON, list the taps' real MACs.
	macA, macB := linkMAC(t, nsA, tapA), linkMAC(t, nsB, tapB)
	table := d.ctl(t, "fdb")
	for _, want := range []string{"MAC", "PORT", "AGE", macA, macB, tapA, tapB} {
		if !strings.Contains(table, want) {
			t.Errorf("ctl fdb lacks %q:\n%s", want, table)
		}
	}
	var fdb []vswitch.FDBEntry
	mustJSON(t, d.ctl(t, "fdb", "--json"), &fdb)
	seen := map[string]string{}
	for _, e := range fdb {
		seen[e.MAC.String()] = e.Port
	}
	if seen[macA] != tapA || seen[macB] != tapB {
		t.Errorf("ctl fdb --json: %v; want %s on %s and %s on %s", seen, macA, tapA, macB, tapB)
	}
	var ports []api.Port
	mustJSON(t, d.ctl(t, "ports", "--json"), &ports)
	kinds := map[string]string{}
	for _, p := range ports {
		kinds[p.Name] = p.Kind
		if p.Name == tapA && (p.RxFrames == 0 || p.TxFrames == 0 || len(p.MACs) != 1) {
			t.Errorf("port %s: %+v", tapA, p)
		}
	}
	if kinds[tapA] != "tap" || kinds[tapB] != "tap" || kinds[host] != "host" {
		t.Errorf("ctl ports kinds: %v", kinds)
	}
	if out := d.ctl(t, "ports"); !strings.Contains(out, "RX FRAMES") || !strings.Contains(out, tapB) {
		t.Errorf("ctl ports table:\n%s", out)
	}
	if out := d.ctl(t, "stats"); !strings.Contains(out, "fdb entries") || !strings.Contains(out, "queue length") {
		t.Errorf("ctl stats:\n%s", out)
	}
	// The pings started the timer wakeups (--warm-interval, on by default
	// on Linux), which ctl stats counts.
	porttest.WaitFor(t, "warm wakeups", func() bool {
		var st vswitch.Stats
		mustJSON(t, d.ctl(t, "stats", "--json"), &st)
		return st.Wakeups > 0
	})

	// capture -c: a pcap file that tcpdump parses, with the ICMP frames.
	pcapFile := filepath.Join(dir, "icmp.pcap")
	capture := exec.Command(bin, "capture", "--ctl", d.Ctl, "--port", tapA, "-c", "6", "-w", pcapFile)
	capOut := &syncBuffer{}
	capture.Stdout, capture.Stderr = capOut, capOut
	if err := testproc.Start(capture); err != nil {
		t.Fatal(err)
	}
	capDone := make(chan error, 1)
	go func() { capDone <- capture.Wait() }()
	// Ping until the capture has its frames: it may take a while to
	// start when the machine is busy.
	capDeadline := time.After(20 * time.Second)
	for captured := false; !captured; {
		nsA.Ping(t, n.ipB)
		select {
		case err := <-capDone:
			if err != nil {
				t.Fatalf("tapswitch capture: %v\n%s", err, capOut.String())
			}
			captured = true
		case <-capDeadline:
			capture.Process.Kill()
			t.Fatalf("tapswitch capture -c 6 did not end\n%s", capOut.String())
		default:
		}
	}
	dumpOut, err := exec.Command("tcpdump", "-n", "-r", pcapFile).Output() // frames on stdout
	if err != nil {
		t.Fatalf("tcpdump -r %s: %v", pcapFile, err)
	}
	dump := string(dumpOut)
	if lines := strings.Count(dump, "\n"); lines != 6 {
		t.Errorf("tcpdump read %d frames, want 6:\n%s", lines, dump)
	}
	if !strings.Contains(dump, "ICMP echo request") || !strings.Contains(dump, "ICMP echo reply") || !strings.Contains(dump, n.ipB) {
		t.Errorf("capture lacks the ICMP exchange:\n%s", dump)
	}

	// ctl listeners: both sockets; a datagram from an unbound socket (it
	// cannot be answered) is counted as dropped.
	uc, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: dgramSock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := uc.Write(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	uc.Close()
	dgramURL := "unixgram://" + dgramSock
	var ls []api.Listener
	porttest.WaitFor(t, "the unbound datagram counted", func() bool {
		mustJSON(t, d.ctl(t, "listeners", "--json"), &ls)
		for _, l := range ls {
			if l.URL == dgramURL && l.Datagram != nil && l.Datagram.Unbound == 1 {
				return true
			}
		}
		return false
	})
	if len(ls) != 2 || ls[0].URL != "unix://"+stream || ls[0].Kind != "stream" || ls[0].Stream == nil || ls[1].Kind != "datagram" || ls[1].Ports != 0 {
		t.Errorf("ctl listeners --json: %+v", ls)
	}
	if out := d.ctl(t, "listeners"); !strings.Contains(out, dgramURL) || !strings.Contains(out, "unbound=1") {
		t.Errorf("ctl listeners:\n%s", out)
	}

	// /metrics parses and counts the traffic.
	text := swNS.Output(t, "busybox", "wget", "-q", "-O", "-", "http://127.0.0.1:9141/metrics")
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	var rx float64
	for _, m := range fams["tapswitch_port_rx_frames_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "port" && l.GetValue() == tapA {
				rx = m.GetCounter().GetValue()
			}
		}
	}
	if rx == 0 || fams["tapswitch_fdb_entries"].GetMetric()[0].GetGauge().GetValue() < 2 {
		t.Errorf("metrics: rx frames of %s = %v, fdb entries %v", tapA, rx, fams["tapswitch_fdb_entries"])
	}
	var unbound float64
	for _, m := range fams["tapswitch_dgram_dropped_total"].GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		if labels["listener"] == dgramURL && labels["reason"] == "unbound" {
			unbound = m.GetCounter().GetValue()
		}
	}
	if unbound != 1 {
		t.Errorf("metrics: tapswitch_dgram_dropped_total{reason=unbound} of %s = %v, want 1", dgramURL, unbound)
	}

	// Runtime changes: detach a tap, flush the FDB.
	if out := d.ctl(t, "detach", tapB); !strings.Contains(out, "detached "+tapB) {
		t.Errorf("ctl detach: %s", out)
	}
	// The detach logs "tap closed" at debug, then "port removed" at info:
	// --log-level info on the command line wins over the file's debug.
	porttest.WaitFor(t, "the detach logged", func() bool { return logLine(d.Output(), "port removed", "port="+tapB) })
	if strings.Contains(d.Output(), "level=debug") {
		t.Errorf("--log-level info on the command line did not override the config file's debug:\n%s", d.Output())
	}
	if out := d.ctl(t, "flush-fdb"); !strings.Contains(out, "flushed") {
		t.Errorf("ctl flush-fdb: %s", out)
	}
	// --json applies to them too (it was ignored): the flush result as JSON.
	var fl api.FlushResult
	if out := d.ctl(t, "flush-fdb", "--json"); json.Unmarshal([]byte(out), &fl) != nil {
		t.Errorf("ctl flush-fdb --json: %q", out)
	}

	// SIGTERM leaves no socket, device or pidfile behind.
	d.Stop(t)
	if d.err != nil {
		t.Errorf("tapswitch exited with %v after SIGTERM\n%s", d.err, d.Output())
	}
	for _, f := range []string{d.Ctl, stream, dgramSock, pidfile} {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind (%v)", f, err)
		}
	}
	for _, c := range []struct {
		ns   *testnet.NS
		link string
	}{{nsA, tapA}, {nsB, tapB}, {swNS, host}} {
		if exec.Command("ip", "-n", c.ns.Name(), "link", "show", "dev", c.link).Run() == nil {
			t.Errorf("device %s left behind in %s", c.link, c.ns)
		}
	}
}

// TestBadConfig checks that bad configuration files and flags give one
// clear line, a non-zero exit, and create nothing.
func TestBadConfig(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	tapName := testnet.UniqueName("tsx")
	veth := testnet.UniqueName("tsv")
	ns.IP(t, "link", "add", veth, "type", "veth", "peer", "name", testnet.UniqueName("tsv"))
	for _, c := range []struct {
		name, file string
		args       []string
		want       string
	}{
		// Refused by the system when opened: the error names the flag,
		// and so the file's line.
		{name: "tap on a veth", file: "tap: [" + veth + "]\n", want: "cfg.yaml:1: --tap: tap " + veth + ": create: name taken by a device that is not a tap"},
		{name: "unknown key", file: "tap: [" + tapName + "]\nlisten: unix://" + dir + "/s.sock\nlisen: x\n", want: "cfg.yaml:3: unknown key \"lisen\""},
		{name: "bad value", file: "tap: [" + tapName + "]\nfdb-size: many\n", want: "cfg.yaml:2: fdb-size: \"many\" is not a whole number"},
		{name: "value out of range", file: "tap: [" + tapName + "]\nfdb-size: 99999999999999999999\n", want: "cfg.yaml:2: fdb-size: \"99999999999999999999\" is out of range"},
		{name: "bad list item", file: "tap: [" + tapName + "]\nallow-uid: [0, x]\n", want: "cfg.yaml:2: allow-uid: \"x\" is not a whole number"},
		{name: "list for a scalar", file: "tap: [" + tapName + "]\nmtu: [1, 2]\n", want: "cfg.yaml:2: mtu: takes one value"},
		{name: "bad yaml", file: "tap: [" + tapName + "\n", want: "cfg.yaml"},
		{name: "empty value", file: "tap: [" + tapName + "]\npidfile:\n", want: "cfg.yaml:2: pidfile: no value"},
		{name: "null in a list key", file: "tap: ~\n", want: "cfg.yaml:1: tap: no value"},
		{name: "refused by the plan", file: "tap: [" + tapName + "]\nfdb-size: 0\n", want: "cfg.yaml:2: --fdb-size 0: must be positive"},
		{name: "second document", file: "tap: [" + tapName + "]\n---\nlisen: x\n", want: "cfg.yaml:2: a second YAML document"},
		// Refused by the plan, so by a reload too (they failed only when
		// opened, after the tap was made).
		{name: "bad metrics address", file: "tap: [" + tapName + "]\nmetrics: not-an-address\n", want: "cfg.yaml:2: --metrics not-an-address: want HOST:PORT"},
		{name: "long socket path", file: "tap: [" + tapName + "]\nlisten: unix:///" + strings.Repeat("s", 110) + "\n", want: "cfg.yaml:2: --listen unix:///" + strings.Repeat("s", 110) + ": socket path longer than 103 bytes"},
		{name: "bad listen flag", args: []string{"--tap", tapName, "--listen", "ftp://x"}, want: "--listen"},
		{name: "bad host flag", args: []string{"--tap", tapName, "--host", "198.18.0.1"}, want: "--host \"198.18.0.1\""},
		{name: "dhcp options without dhcp", args: []string{"--tap", tapName, "--dhcp-range", "198.18.0.10-198.18.0.20"}, want: "--dhcp-range: needs --dhcp"},
		{name: "unknown flag", args: []string{"--tapp", tapName}, want: "unknown flag: --tapp"},
		// A --connect to the switch's own --listen: dialled, it looped
		// every flooded frame between the connection's two ends.
		{name: "connect to own listen", file: "listen: [\"tcp://127.0.0.1:5599\"]\nconnect: [\"tcp://127.0.0.1:5599\"]\n",
			want: "cfg.yaml:2: --connect tcp://127.0.0.1:5599 is this switch's own --listen tcp://127.0.0.1:5599: every flooded frame would loop between the two ends"},
		{name: "connect flag to own listen", args: []string{"--listen", "unix://" + dir + "/sw.sock", "--connect", "unix://" + dir + "/sw.sock"},
			want: "--connect unix://" + dir + "/sw.sock is this switch's own --listen unix://" + dir + "/sw.sock: every flooded frame would loop"},
		// The second open found the tap busy, after the first had made it.
		{name: "tap given twice", args: []string{"--tap", tapName, "--tap", tapName}, want: "--tap " + tapName + ": given twice"},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"serve", "--ctl", filepath.Join(dir, "ctl.sock")}, c.args...)
			if c.file != "" {
				f := filepath.Join(dir, "cfg.yaml")
				writeFile(t, f, c.file)
				args = append(args, "--config", f)
			}
			// A file that is wrongly accepted starts the switch: 10 s ends it.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			out, err := ns.Exec(ctx, append([]string{bin}, args...)...).CombinedOutput()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("%s: exit status 0, or still running after 10 s", c.name)
			}
			msg := strings.TrimSpace(string(out))
			if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, c.want) {
				t.Errorf("output %q, want one line containing %q", msg, c.want)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.Name() != "cfg.yaml" {
					t.Errorf("%s created", e.Name())
				}
			}
			if exec.Command("ip", "-n", ns.Name(), "link", "show", "dev", tapName).Run() == nil {
				t.Errorf("tap %s created", tapName)
			}
		})
	}
}

// TestConfigSocketInUse: a socket the file names that another program
// listens on is reported with the file's line, as the docs say (the error
// named the socket only).
func TestConfigSocketInUse(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	busy := filepath.Join(dir, "busy.sock")
	ln, err := net.Listen("unix", busy)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := filepath.Join(dir, "cfg.yaml")
	writeFile(t, cfg, "ctl: none\nlisten:\n  - unix://"+busy+"\n")
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	out, err := ns.Exec(ctx, bin, "serve", "--config", cfg).CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("serve with a socket in use: exit status 0, or still running after 10 s:\n%s", out)
	}
	if want := "cfg.yaml:2: --listen unix://" + busy; !strings.Contains(string(out), want) {
		t.Errorf("output %q, want %q", out, want)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
}

// TestServeTapsAndHost joins two taps and the host interface through the
// binary, then attaches a third tap at runtime with ctl.
func TestServeTapsAndHost(t *testing.T) {
	n := newTapNet(t, 22)
	n.a.Ping(t, n.ipB)
	n.b.Ping(t, n.ipA)
	n.a.Ping(t, n.hostIP)
	n.sw.Ping(t, n.ipB) // from the host interface's side

	c := testnet.NewNS(t)
	tapC := testnet.UniqueName("tsc")
	if out := n.d.ctl(t, "attach", "--tap", tapC); !strings.Contains(out, "attached") {
		t.Fatalf("ctl attach: %s", out)
	}
	waitLink(t, n.sw, tapC)
	testnet.MoveLink(t, tapC, n.sw, c)
	c.AddAddr(t, tapC, "198.18.22.4/24")
	c.SetUp(t, tapC)
	c.Ping(t, n.ipA)
	c.Ping(t, n.hostIP)
}

// logLine reports whether a line of the log out contains every one of
// words.
func logLine(out string, words ...string) bool {
	for l := range strings.Lines(out) {
		if !slices.ContainsFunc(words, func(w string) bool { return !strings.Contains(l, w) }) {
			return true
		}
	}
	return false
}

// TestReload: SIGHUP re-reads the configuration file, attaches and
// detaches taps, keeps command-line flags over the file, and says what
// needs a restart.
func TestReload(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tapswitch.yaml")
	tap1, tap2 := testnet.UniqueName("tsr"), testnet.UniqueName("tsr")
	writeFile(t, cfg, "tap: ["+tap1+"]\nlog-level: info\n")
	d := startSwitch(t, ns, "--config", cfg)
	waitLink(t, ns, tap1)

	// The file's level differs from the harness's --log-level debug, so
	// that applying it (wrongly) would show.
	writeFile(t, cfg, "tap: ["+tap2+"]\nlog-level: info\nfdb-size: 100\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLink(t, ns, tap2)
	porttest.WaitFor(t, "the reload logged", func() bool { return strings.Contains(d.Output(), "configuration reloaded") })
	if names := d.portNames(t); len(names) != 1 || names[0] != tap2 {
		t.Errorf("ports after reload: %v, want only %s", names, tap2)
	}
	out := d.Output()
	for _, want := range []string{"--fdb-size", "after a restart"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	// The harness gives --log-level debug on the command line, which wins
	// over the file's info on reload too: the reload's detach of tap1 logs
	// "tap closed" at debug, then "port removed" at info.
	porttest.WaitFor(t, "tap1's removal logged", func() bool { return logLine(d.Output(), "port removed", "port="+tap1) })
	out = d.Output()
	if strings.Contains(out, "log level changed") || !logLine(out, "level=debug", `msg="tap closed"`, "port="+tap1) {
		t.Errorf("the file's log level overrode the command line's:\n%s", out)
	}
	// A broken file is reported and changes nothing.
	writeFile(t, cfg, "tap: ["+tap1+"]\nbogus: 1\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	porttest.WaitFor(t, "the bad file reported", func() bool { return strings.Contains(d.Output(), "configuration not reloaded") })
	if names := d.portNames(t); len(names) != 1 || names[0] != tap2 {
		t.Errorf("a bad configuration changed the ports: %v", names)
	}
	// So is a file that only the kernel would refuse: a tap name with a
	// colon used to be found when the tap was opened, after the other
	// changes had been made.
	writeFile(t, cfg, "tap: ["+tap1+", bad:name]\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	porttest.WaitFor(t, "the bad tap name reported", func() bool {
		return strings.Count(d.Output(), "configuration not reloaded") == 2
	})
	if out := d.Output(); !strings.Contains(out, "bad:name") || strings.Count(out, "configuration reloaded") != 1 {
		t.Errorf("the bad tap name was not reported, or the file reported reloaded")
	}
	if names := d.portNames(t); len(names) != 1 || names[0] != tap2 {
		t.Errorf("a file with a bad tap name changed the ports: %v", names)
	}
	// So is a file that sets nothing: one caught while an editor or cat
	// writes it in place. It detached (and deleted) every tap.
	writeFile(t, cfg, "# being edited\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	porttest.WaitFor(t, "the empty file refused", func() bool {
		return strings.Count(d.Output(), "configuration not reloaded") == 3
	})
	if out := d.Output(); !strings.Contains(out, "sets nothing") {
		t.Errorf("the empty file's refusal does not say why:\n%s", out)
	}
	if names := d.portNames(t); len(names) != 1 || names[0] != tap2 {
		t.Errorf("an empty file changed the ports: %v", names)
	}
	// A good file whose tap the system refuses (the name is a veth's) is
	// applied, but not reported as simply reloaded.
	veth := testnet.UniqueName("tsv")
	ns.IP(t, "link", "add", veth, "type", "veth", "peer", "name", testnet.UniqueName("tsv"))
	writeFile(t, cfg, "tap: ["+tap2+", "+veth+"]\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	porttest.WaitFor(t, "the refused tap reported", func() bool {
		return strings.Contains(d.Output(), "taps could not be attached")
	})
	if strings.Count(d.Output(), "configuration reloaded\"") != 1 {
		t.Errorf("a reload whose tap failed was logged as reloaded:\n%s", d.Output())
	}
}

// accepted returns the next connection the switch makes to a stand-in
// server, closed when the test ends; it fails the test after 20 s.
func accepted(t *testing.T, conns <-chan net.Conn, what string) net.Conn {
	t.Helper()
	select {
	case c := <-conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(20 * time.Second):
		t.Fatalf("no connection: %s", what)
		return nil
	}
}

// noConn fails the test if the switch connects to a stand-in server
// within d.
func noConn(t *testing.T, conns <-chan net.Conn, d time.Duration, what string) {
	t.Helper()
	select {
	case c := <-conns:
		c.Close()
		t.Errorf("unexpected: %s", what)
	case <-time.After(d):
	}
}

// qemuServer makes the test's namespace and directory, and in it a stand-in
// for a QEMU listening with -netdev stream,server=on at qsock: the
// connections the switch makes to it arrive on conns.
func qemuServer(t *testing.T) (ns *testnet.NS, dir, qsock string, conns <-chan net.Conn) {
	t.Helper()
	ns = testnet.NewNS(t)
	dir = t.TempDir()
	qsock = filepath.Join(dir, "qemu.sock")
	return ns, dir, qsock, porttest.StreamServer(t, qsock)
}

// TestReloadConnect: SIGHUP starts dialling a connect URL added to the
// configuration file, and closes the connection of one removed from it
// and dials it no more.
func TestReloadConnect(t *testing.T) {
	ns, dir, qsock, conns := qemuServer(t)
	url := "unix://" + qsock
	portName := "unix:" + qsock

	cfg := filepath.Join(dir, "tapswitch.yaml")
	base := "listen: [\"unix://" + filepath.Join(dir, "sw.sock") + "\"]\n"
	writeFile(t, cfg, base)
	d := startSwitch(t, ns, "--config", cfg)
	ports := func() []string { return d.portNames(t) }

	writeFile(t, cfg, base+"connect: [\""+url+"\"]\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	c := accepted(t, conns, "the dial after SIGHUP")
	porttest.WaitFor(t, "the connection's port", func() bool { return slices.Contains(ports(), portName) })
	var ds []api.Dial
	mustJSON(t, d.ctl(t, "dials", "--json"), &ds)
	if len(ds) != 1 || ds[0].URL != url || ds[0].Origin != "connect" || !ds[0].Connected {
		t.Errorf("ctl dials: %+v; want %s from connect, connected", ds, url)
	}

	// A file with an error changes nothing: the URL it no longer lists
	// stays connected. (A bad value used to be logged, or left for a restart, while the rest
	// of the file was applied.)
	writeFile(t, cfg, base+"fdb-size: 0\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the bad file reported", func() bool { return strings.Contains(d.Output(), "configuration not reloaded") })
	if want := "tapswitch.yaml:2: --fdb-size 0: must be positive"; !strings.Contains(d.Output(), want) {
		t.Errorf("the reload's error does not name the line: want %q in\n%s", want, d.Output())
	}
	c.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("after a reload of a file with an error, the connection it dropped: %v, want it kept", err)
	}

	writeFile(t, cfg, base)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// The switch closes the connection: reading it ends in EOF.
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("connection not closed after the URL was removed: %v", err)
	}
	porttest.WaitFor(t, "the port to go", func() bool { return !slices.Contains(ports(), portName) })
	// A URL still dialled would be dialled again within the minimum
	// backoff (100 ms); ten times that passes without a new connection.
	noConn(t, conns, time.Second, "a dial after the URL was removed")
	if !strings.Contains(d.Output(), "no longer dialled") {
		t.Errorf("the removal was not logged:\n%s", d.Output())
	}

	// Connected by ctl attach, then listed in the file: SIGHUP does not
	// dial it a second time (it used to: two ports to one QEMU).
	d.ctl(t, "attach", "--connect", url)
	accepted(t, conns, "the dial of ctl attach --connect")
	porttest.WaitFor(t, "the attached port", func() bool { return slices.Contains(ports(), portName) })
	writeFile(t, cfg, base+"connect: [\""+url+"\"]\n")
	reloads := strings.Count(d.Output(), "configuration reloaded")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the reload", func() bool { return strings.Count(d.Output(), "configuration reloaded") > reloads })
	noConn(t, conns, time.Second, "a second dial of the attached URL by SIGHUP")
}

// TestReloadReattaches: the file is the configuration in force, so SIGHUP
// attaches again a tap and dials again a connect URL that it lists and
// that were detached with tapswitch ctl detach.
func TestReloadReattaches(t *testing.T) {
	ns, dir, qsock, conns := qemuServer(t)
	portName := "unix:" + qsock
	tap := testnet.UniqueName("tsr")
	cfg := filepath.Join(dir, "tapswitch.yaml")
	writeFile(t, cfg, "tap: ["+tap+"]\nconnect: [\"unix://"+qsock+"\"]\n")
	d := startSwitch(t, ns, "--config", cfg)
	ports := func() []string { return d.portNames(t) }
	accepted(t, conns, "the dial at start")
	porttest.WaitFor(t, "both ports", func() bool {
		p := ports()
		return slices.Contains(p, tap) && slices.Contains(p, portName)
	})

	d.ctl(t, "detach", tap)
	d.ctl(t, "detach", portName)
	porttest.WaitFor(t, "both ports detached", func() bool {
		p := ports()
		return !slices.Contains(p, tap) && !slices.Contains(p, portName)
	})
	// Detached, the URL is not dialled again on its own.
	noConn(t, conns, time.Second, "a dial of the detached URL before SIGHUP") // ten times the minimum backoff

	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	accepted(t, conns, "the dial after SIGHUP")
	porttest.WaitFor(t, "both ports back", func() bool {
		p := ports()
		return slices.Contains(p, tap) && slices.Contains(p, portName)
	})
	waitLink(t, ns, tap)
}

// TestCLIFailuresLeaveThingsAlone: a second serve that cannot start
// leaves the running one's pidfile (it removed it); a capture that cannot
// reach a switch leaves an existing -w file (it emptied it); and the qemu
// wrapper leaves a SIGINT to its command (it also sent SIGTERM, then
// SIGKILL, turning a clean exit into 143 or 137).
func TestCLIFailuresLeaveThingsAlone(t *testing.T) {
	dir := t.TempDir()
	sock, pidfile := filepath.Join(dir, "vm.sock"), filepath.Join(dir, "ts.pid")
	d := startSwitch(t, nil, "--listen", "unix://"+sock, "--pidfile", pidfile)
	first := fmt.Sprint(d.cmd.Process.Pid)
	// A second serve that did start would run for ever: 10 s is plenty.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--ctl", filepath.Join(dir, "ctl2.sock"), "--listen", "unix://"+filepath.Join(dir, "other.sock"),
		"--pidfile", pidfile).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is running") {
		t.Errorf("second serve with the same pidfile: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(pidfile); err != nil || strings.TrimSpace(string(b)) != first {
		t.Errorf("the running switch's pidfile after a second serve failed: %q, %v; want %s", b, err, first)
	}

	keep := filepath.Join(dir, "keep.pcap")
	writeFile(t, keep, "precious")
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	if out, err := exec.CommandContext(cctx, bin, "capture", "--ctl", filepath.Join(dir, "none.sock"), "-w", keep).CombinedOutput(); err == nil {
		t.Errorf("capture without a switch succeeded: %s", out)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "precious" {
		t.Errorf("capture without a switch left %q in the existing -w file, %v", b, err)
	}

	// The command traps SIGINT and exits 3; it has no TERM trap, so a
	// SIGTERM from the wrapper would make the status 143. It also ends
	// once the wrapper is gone (killed with a killed test binary).
	cmd := exec.Command(bin, "qemu", "--socket", sock, "--",
		"sh", "-c", `trap "exit 3" INT; echo ready; while kill -0 $PPID 2>/dev/null; do sleep 0.05; done`)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := testproc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(stdout, make([]byte, len("ready\n"))); err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if code := cmd.ProcessState.ExitCode(); code != 3 {
			t.Errorf("qemu wrapper after SIGINT: exit %d (%v), want the command's own 3", code, err)
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("qemu wrapper still running 20 s after SIGINT")
	}
}

// TestSIGHUPLeaseWriteFails: a SIGHUP whose lease-file write fails says
// so, and not, on the next line, that the leases were written.
func TestSIGHUPLeaseWriteFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "leases")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "vm.sock")
	d := startSwitch(t, nil, "--listen", "unix://"+sock,
		"--dhcp", "--gateway", "198.18.0.1/24", "--dhcp-lease-file", filepath.Join(dir, "leases"))
	if err := os.RemoveAll(dir); err != nil { // the next write finds no directory
		t.Fatal(err)
	}
	// A binding the responder cannot write: pending when SIGHUP comes.
	mac := vswitch.MAC{0x52, 0x54, 0, 0, 0, 9}
	req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac[:]), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IP{198, 18, 0, 50})))
	if err != nil {
		t.Fatal(err)
	}
	if err := dialStream(t, sock).sendBatch([][]byte{dhcpFrame(mac, req.ToBytes())}); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the write failure", func() bool { return strings.Contains(d.Output(), "cannot write the lease file") })
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the SIGHUP handled", func() bool { return strings.Contains(d.Output(), "no --config to reload") })
	if out := d.Output(); !strings.Contains(out, "SIGHUP: lease file not written") || strings.Contains(out, "leases written") {
		t.Errorf("a SIGHUP whose lease write failed logged:\n%s", out)
	}
}

// dhcpFrame wraps a DHCP client message from mac in Ethernet, IPv4 and
// UDP, from 0.0.0.0:68 to 255.255.255.255:67 (no UDP checksum).
func dhcpFrame(mac vswitch.MAC, msg []byte) []byte {
	ip := make([]byte, 28, 28+len(msg))
	ip[0], ip[8], ip[9] = 0x45, 64, 17 // IPv4, 5 words; TTL; UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(msg)))
	copy(ip[16:20], []byte{255, 255, 255, 255})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	binary.BigEndian.PutUint16(ip[20:], 68)
	binary.BigEndian.PutUint16(ip[22:], 67)
	binary.BigEndian.PutUint16(ip[24:], uint16(8+len(msg)))
	return porttest.Frame(vswitch.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac, 0x0800, append(ip, msg...))
}

// TestGatewayHeldElsewhereWarns: with no host interface, a gateway
// address that another interface of the host holds is not answered for
// by the responder (the host might answer through a tap that is up in
// its namespace), and serve says so: guests on sockets alone, or behind
// a tap that is down or moved away, could not resolve their router.
func TestGatewayHeldElsewhereWarns(t *testing.T) {
	ns := testnet.NewNS(t)
	ns.IP(t, "link", "set", "lo", "up")
	ns.IP(t, "addr", "add", "198.18.0.5/32", "dev", "lo")
	const warning = "an interface of this host holds the gateway address"
	for _, c := range []struct {
		gw, tap string
		warns   bool
	}{
		{"198.18.0.5/24", "", true},
		{"198.18.0.1/24", "", false},
		// The tap serve makes is down, or may be moved away: it may
		// answer, or not; the warning says when it does.
		{"198.18.0.5/24", testnet.UniqueName("tsg"), true},
	} {
		dir := t.TempDir()
		args := []string{"--listen", "unixgram://" + filepath.Join(dir, "g.sock"),
			"--dhcp", "--gateway", c.gw, "--dhcp-lease-file", filepath.Join(dir, "leases")}
		if c.tap != "" {
			args = append(args, "--tap", c.tap)
		}
		d := startSwitch(t, ns, args...)
		d.Stop(t)
		if got := strings.Contains(d.Output(), warning); got != c.warns {
			t.Errorf("gateway %s, tap %q: warned %v, want %v:\n%s", c.gw, c.tap, got, c.warns, d.Output())
		}
	}
}

// TestAttachConnectStoppable: ctl attach --connect to a URL where nothing
// listens yet says that the switch is dialling (it said "attached"),
// refuses to dial the same URL a second time (a second dialler, later a
// second port), and ctl detach by URL stops the dialling: with no port of
// that name, nothing could stop it.
func TestAttachConnectStoppable(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	qsock := filepath.Join(dir, "qemu.sock")
	url := "unix://" + qsock
	d := startSwitch(t, ns, "--listen", "unix://"+filepath.Join(dir, "sw.sock"))
	if out := d.ctl(t, "attach", "--connect", url); !strings.Contains(out, "connecting to "+url) {
		t.Errorf("ctl attach --connect: %q, want it to say that it is connecting", out)
	}
	out, err := exec.Command(bin, "ctl", "--ctl", d.Ctl, "attach", "--connect", url).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "being dialled already") {
		t.Errorf("second ctl attach --connect of %s: %v, %q; want it refused", url, err, out)
	}
	// As a tap attached twice, with 409 (it was 400).
	if code, body := d.postPorts(t, `{"connect":"`+url+`"}`); code != http.StatusConflict {
		t.Errorf("POST /v1/ports of a URL being dialled: %d %s, want 409", code, body)
	}
	// ctl dials shows it, failing (nothing listens).
	dials := func() []api.Dial {
		var ds []api.Dial
		mustJSON(t, d.ctl(t, "dials", "--json"), &ds)
		return ds
	}
	porttest.WaitFor(t, "ctl dials to show failed attempts", func() bool {
		ds := dials()
		return len(ds) == 1 && ds[0].Failures > 0
	})
	if ds := dials(); ds[0].URL != url || ds[0].Origin != "attach" || ds[0].Port != "unix:"+qsock || ds[0].Connected ||
		!strings.Contains(ds[0].LastError, "no such file") {
		t.Errorf("ctl dials: %+v; want %s from attach, not connected, failing with no such file", ds[0], url)
	}
	if out := d.ctl(t, "dials"); !strings.Contains(out, url) || !strings.Contains(out, "dialling") {
		t.Errorf("ctl dials:\n%s\nwant %s dialling", out, url)
	}
	if out := d.ctl(t, "detach", url); !strings.Contains(out, "stopped dialling unix:"+qsock) {
		t.Errorf("ctl detach %s: %q", url, out)
	}
	if ds := dials(); len(ds) != 0 {
		t.Errorf("ctl dials after the detach: %+v, want none", ds)
	}
	// The backoff between attempts is at most 5 s: a dialler still running
	// would connect to a server started now within that.
	conns := porttest.StreamServer(t, qsock)
	noConn(t, conns, 6*time.Second, "a dial after ctl detach")
	// Attached again, it connects; detached by its URL then, the port
	// goes with its counters (it was taken for a dialling that had not
	// connected).
	d.ctl(t, "attach", "--connect", url)
	accepted(t, conns, "the dial of ctl attach --connect after the detach")
	porttest.WaitFor(t, "the connection's port", func() bool { return slices.Contains(d.portNames(t), "unix:"+qsock) })
	if ds := dials(); len(ds) != 1 || !ds[0].Connected || ds[0].Failures != 0 {
		t.Errorf("ctl dials once connected: %+v, want it connected", ds)
	}
	if out := d.ctl(t, "detach", url); !strings.Contains(out, "detached unix:"+qsock+" (id ") {
		t.Errorf("ctl detach %s of a connected port: %q", url, out)
	}
}

// TestConnectOwnListener: a connect URL naming one of the switch's own
// stream listeners is refused. ctl attach --connect (POST /v1/ports)
// answers 400 where the URL shows it (the listener's path, a symlink to
// it, a wildcard listener's port at 127.0.0.1), and a reload refuses a
// file with one; where only the connection shows it (another address of
// this host), the dial is closed before it becomes a port, logged, and not
// made again, and the switch carries on. Such a URL used to be dialled: the
// switch held both ends of the connection as two ports, and one broadcast
// went round between them for ever (378 724 flooded frames in 2 s).
func TestConnectOwnListener(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "sw.sock")
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(sock, link); err != nil {
		t.Fatal(err)
	}
	// Another address of this host, which the addresses alone do not
	// tell from a remote one.
	ns.IP(t, "addr", "add", "198.18.77.1/32", "dev", "lo")
	cfg := filepath.Join(dir, "tapswitch.yaml")
	base := "listen: [\"unix://" + sock + "\", \"tcp://0.0.0.0:5599\"]\n"
	writeFile(t, cfg, base)
	d := startSwitch(t, ns, "--config", cfg)
	for _, url := range []string{"unix://" + sock, "unix://" + link, "tcp://127.0.0.1:5599", "tcp://localhost:5599"} {
		if code, body := d.postPorts(t, `{"connect":"`+url+`"}`); code != http.StatusBadRequest || !strings.Contains(body, "is this switch's own listener") {
			t.Errorf("POST /v1/ports {\"connect\":%q}: %d %s, want 400 naming the switch's own listener", url, code, body)
		}
	}
	out, err := exec.Command(bin, "ctl", "--ctl", d.Ctl, "attach", "--connect", "unix://"+sock).CombinedOutput()
	if want := "connect unix://" + sock + " is this switch's own listener unix://" + sock + ": every flooded frame would loop between the two ends"; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("ctl attach --connect of the switch's own socket: %v, %q; want it refused with %q", err, out, want)
	}

	// Known only once connected.
	url := "tcp://198.18.77.1:5599"
	d.ctl(t, "attach", "--connect", url)
	const refusal = "connected to this switch's own listener"
	porttest.WaitFor(t, "the refusal logged", func() bool { return strings.Contains(d.Output(), refusal) })
	if !regexp.MustCompile(`listener="tcp://(\[::\]|0\.0\.0\.0):5599"`).MatchString(d.Output()) {
		t.Errorf("the refusal does not name the listener:\n%s", d.Output())
	}
	porttest.WaitFor(t, "no stream ports", func() bool {
		for _, name := range d.portNames(t) {
			if strings.HasPrefix(name, "tcp:") || strings.HasPrefix(name, "unix:") {
				return false
			}
		}
		return true
	})
	// Not dialled again: the backoff is at most 5 s.
	time.Sleep(6 * time.Second)
	if n := strings.Count(d.Output(), refusal); n != 1 {
		t.Errorf("%d refusals logged, want 1: dialled again", n)
	}
	var st vswitch.Stats
	if err := d.api().Do(t.Context(), "GET", "/v1/stats", nil, &st); err != nil {
		t.Fatalf("the switch after the refusal: %v", err)
	}

	// A reload: the file's own --listen, refused as at start.
	writeFile(t, cfg, base+"connect: [\"unix://"+sock+"\"]\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the reload refused", func() bool { return strings.Contains(d.Output(), "configuration not reloaded") })
	if want := "tapswitch.yaml:2: --connect unix://" + sock + " is this switch's own --listen unix://" + sock; !strings.Contains(d.Output(), want) {
		t.Errorf("the reload's error: want %q in\n%s", want, d.Output())
	}
}

// TestDefaultSetup runs the README's quick start, `tapswitch serve` with no
// flags (as `make run` does), in a namespace of its own whose /run and
// /var/lib are the test's directories: the sockets and modes the README
// lists, the host interface tapswitch0 holding 192.168.109.1/24, and a
// guest (a tap attached with ctl, in a namespace of its own) that gets an
// address by DHCP and reaches the host; SIGTERM leaves the devices and
// sockets gone and the lease on disk.
func TestDefaultSetup(t *testing.T) {
	ns, guest := testnet.NewNS(t), testnet.NewNS(t)
	ipv4Only(t, ns, guest)
	dir := t.TempDir()
	run, lib := filepath.Join(dir, "run"), filepath.Join(dir, "lib")
	for _, d := range []string{run, lib} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// unshare execs sh, which execs env, which execs the switch: the PID
	// stays the switch's. The harness's TAPSWITCH_STATE_DIR is dropped:
	// the default is what is tested.
	script := fmt.Sprintf("mount --bind %q /run && mount --bind %q /var/lib && exec env -u TAPSWITCH_STATE_DIR %q serve", run, lib, bin)
	d := startDaemon(t, ns, filepath.Join(run, "tapswitch", "ctl.sock"),
		"unshare", "--mount", "--propagation", "private", "sh", "-c", script)

	for name, mode := range map[string]os.FileMode{"tapswitch.sock": 0o660, "tapswitch-dgram.sock": 0o660, "ctl.sock": 0o600} {
		fi, err := os.Stat(filepath.Join(run, "tapswitch", name))
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != mode {
			t.Errorf("/run/tapswitch/%s: %v, %v; want a socket of mode %o", name, fi, err, mode)
		}
	}
	if out := ns.Output(t, "ip", "-br", "addr", "show", "dev", "tapswitch0"); !strings.Contains(out, "192.168.109.1/24") {
		t.Errorf("tapswitch0: %q, want 192.168.109.1/24", out)
	}
	if out := d.Output(); !strings.Contains(out, "DHCP:     gateway 192.168.109.1/24") || !strings.Contains(out, "addr.path=/run/tapswitch/tapswitch.sock") {
		t.Errorf("start-up summary lacks the DHCP gateway or the QEMU arguments:\n%s", out)
	}

	tap := testnet.UniqueName("tsd")
	d.ctl(t, "attach", "--tap", tap)
	waitLink(t, ns, tap)
	testnet.MoveLink(t, tap, ns, guest)
	guest.SetUp(t, tap)
	out, err := guest.Exec(t.Context(), "busybox", "udhcpc", "-i", tap, "-n", "-q", "-t", "10", "-T", "1", "-s", "/bin/true").CombinedOutput()
	m := regexp.MustCompile(`lease of (192\.168\.109\.\d+) obtained`).FindStringSubmatch(string(out))
	if m == nil {
		t.Fatalf("udhcpc got no lease in 192.168.109.0/24 (%v):\n%s", err, out)
	}
	guest.AddAddr(t, tap, m[1]+"/24")
	guest.Ping(t, "192.168.109.1")

	d.Stop(t)
	if d.err != nil {
		t.Errorf("exit after SIGTERM: %v", d.err)
	}
	if exec.Command("ip", "-n", ns.Name(), "link", "show", "dev", "tapswitch0").Run() == nil {
		t.Error("tapswitch0 left behind")
	}
	if ents, _ := os.ReadDir(filepath.Join(run, "tapswitch")); len(ents) != 0 {
		t.Errorf("left in /run/tapswitch: %v", ents)
	}
	leases, err := os.ReadFile(filepath.Join(lib, "tapswitch", "dhcp-leases-192.168.109.0_24"))
	if err != nil || !strings.Contains(string(leases), m[1]) {
		t.Errorf("lease file: %v\n%s", err, leases)
	}
}

// TestSIGHUPDuringSetupAndShutdown: a SIGHUP at any time once the switch
// has begun is caught. One during set-up ended the process (status 129)
// and left its sockets and pidfile; one during shutdown cut the cleanup
// short and left the host interface's address and created devices.
func TestSIGHUPDuringSetupAndShutdown(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	host, tap := testnet.UniqueName("tsh"), testnet.UniqueName("tst")
	ctl, sock, pid := filepath.Join(dir, "ctl.sock"), filepath.Join(dir, "vm.sock"), filepath.Join(dir, "ts.pid")
	cmd := ns.Exec(t.Context(), bin, "serve", "--ctl", ctl, "--listen", "unix://"+sock, "--pidfile", pid,
		"--tap", tap, "--host", "198.18.25.1/24", "--host-ifname", host)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := testproc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("tapswitch output:\n%s", out)
		}
	}()
	// hup sends SIGHUP every millisecond until stop is closed or the
	// process has exited.
	hup := func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			case <-exited:
				return
			default:
			}
			cmd.Process.Signal(syscall.SIGHUP)
			time.Sleep(time.Millisecond)
		}
	}
	// Before its first line the process may not run Go code yet, and a
	// SIGHUP then ends any program that has not set a handler.
	porttest.WaitFor(t, "the switch's first output", func() bool { return out.String() != "" })
	stop := make(chan struct{})
	go hup(stop)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var st vswitch.Stats
		if api.NewClient(ctl).Do(t.Context(), "GET", "/v1/stats", nil, &st) == nil {
			break
		}
		select {
		case <-exited:
			close(stop)
			t.Fatalf("SIGHUPs during set-up: the switch exited: %v", cmd.ProcessState)
		default:
		}
		if time.Now().After(deadline) {
			close(stop)
			t.Fatal("the switch did not answer within 20 s")
		}
	}
	close(stop)

	cmd.Process.Signal(syscall.SIGTERM)
	go hup(nil)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("the switch did not exit within 20 s of SIGTERM")
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("SIGTERM and SIGHUPs: exit %v, want 0", cmd.ProcessState)
	}
	for _, f := range []string{ctl, sock, pid} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left after shutdown: %v", f, err)
		}
	}
	if links := ns.IP(t, "-o", "link"); strings.Contains(links, host) || strings.Contains(links, tap) {
		t.Errorf("devices left after shutdown:\n%s", links)
	}
}

// TestSummaryPathsAbsolute: serve's start-up hints for relative socket
// paths name them absolutely, so that they work from another directory
// (the vfkit line and the ctl line printed them as given).
func TestSummaryPathsAbsolute(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), bin, "serve", "--ctl", "ctl.sock", "--listen", "unixgram:vz.sock", "--listen", "unix:vm.sock")
	cmd.Dir = dir
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := testproc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() }()
	porttest.WaitFor(t, "the start-up summary", func() bool { return strings.Contains(out.String(), "# vfkit:") })
	for _, want := range []string{
		"tapswitch ctl --ctl " + filepath.Join(dir, "ctl.sock") + " ports",
		"unixSocketPath=" + filepath.Join(dir, "vz.sock") + ",",
		"addr.path=" + filepath.Join(dir, "vm.sock"),
		"remote.path=" + filepath.Join(dir, "vz.sock"),
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

// TestTapMTUAboveMaxFrameWarns: a tap made beforehand keeps its own MTU;
// one above --max-frame minus 14 is attached with a warning that its longer
// frames will be dropped (they were counted as too_long, unexplained).
func TestTapMTUAboveMaxFrameWarns(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t)
	big, small := testnet.UniqueName("tsm"), testnet.UniqueName("tsm")
	for _, c := range []struct{ tap, mtu string }{{big, "9000"}, {small, "1500"}} {
		ns.IP(t, "tuntap", "add", c.tap, "mode", "tap")
		ns.IP(t, "link", "set", c.tap, "mtu", c.mtu)
	}
	d := startSwitch(t, ns, "--tap", big, "--tap", small, "--max-frame", "1514")
	porttest.WaitFor(t, "both taps attached", func() bool { return len(d.portNames(t)) == 2 })
	var warned []string
	for _, line := range strings.Split(d.Output(), "\n") {
		if strings.Contains(line, "above --max-frame minus 14") {
			warned = append(warned, line)
		}
	}
	if len(warned) != 1 || !strings.Contains(warned[0], "port="+big) || !strings.Contains(warned[0], "mtu=9000") {
		t.Errorf("warnings %q, want one, for %s (MTU 9000)", warned, big)
	}
}

// TestHostInterfaceDeleted: deleting the host interface under the switch
// is logged as an error naming it (only the tap's "port ended" warning
// said so), and the switch runs on.
func TestHostInterfaceDeleted(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t)
	host := testnet.UniqueName("tsh")
	d := startSwitch(t, ns, "--host", "198.18.52.1/24", "--host-ifname", host, "--listen", "unix://"+filepath.Join(t.TempDir(), "s.sock"))
	if strings.Contains(d.Output(), "host interface gone") {
		t.Fatalf("host interface reported gone before it was deleted:\n%s", d.Output())
	}
	ns.IP(t, "link", "del", host)
	porttest.WaitFor(t, "the host interface's deletion logged", func() bool {
		return strings.Contains(d.Output(), "host interface gone") && strings.Contains(d.Output(), "port="+host)
	})
	if names := d.portNames(t); len(names) != 0 {
		t.Errorf("ports after the host interface's deletion: %v, want none", names)
	}
}

// TestAttachRenamedTap: attaching an attached tap by the name it was
// renamed to said that another process had it in use. Also: a tap name
// the kernel refuses is a bad request.
func TestAttachRenamedTap(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t)
	old, renamed := testnet.UniqueName("tsr"), testnet.UniqueName("tsr")
	d := startSwitch(t, ns, "--tap", old)
	porttest.WaitFor(t, "the tap attached", func() bool { return len(d.portNames(t)) == 1 })
	ns.IP(t, "link", "set", old, "down")
	ns.IP(t, "link", "set", old, "name", renamed)
	out, err := exec.Command(bin, "ctl", "--ctl", d.Ctl, "attach", "--tap", renamed).CombinedOutput()
	want := "tap " + renamed + " is already attached: it is port " + old + ", renamed since"
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("ctl attach --tap %s: %v, %q; want it refused with %q", renamed, err, out, want)
	}
	if names := d.portNames(t); len(names) != 1 || names[0] != old {
		t.Errorf("ports %v, want only %s", names, old)
	}
	// Another tap made with the old name is refused, saying why: the port
	// keeps the name (it said the new tap was attached already).
	ns.IP(t, "tuntap", "add", old, "mode", "tap")
	out, err = exec.Command(bin, "ctl", "--ctl", d.Ctl, "attach", "--tap", old).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "renamed, or moved to another network namespace, since it was attached") {
		t.Errorf("ctl attach --tap %s (a new tap of the old name): %v, %q; want it refused as a renamed port's name", old, err, out)
	}
	// A name the kernel would refuse is a bad request (400), as other bad
	// names are; it was answered 500.
	for _, name := range []string{"abcdefghijklmnopq", "a/b"} {
		if code, body := d.postPorts(t, `{"tap":"`+name+`"}`); code != http.StatusBadRequest || !strings.Contains(body, "invalid interface name") {
			t.Errorf("POST /v1/ports {\"tap\":%q}: %d %s, want 400 saying the name is invalid", name, code, body)
		}
	}
}

// TestConcurrentAttachSameTap: of several requests attaching one tap at
// once, one attaches it and the others are told it is attached (409).
// One that reached the tap while another held it half attached was
// answered 500, blaming "another process".
func TestConcurrentAttachSameTap(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tsc")
	d := startSwitch(t, ns, "--listen", "unix://"+filepath.Join(t.TempDir(), "vm.sock"))
	const rounds, clients = 10, 8
	for range rounds {
		codes := make(chan string, clients)
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				code, body := d.postPorts(t, `{"tap":"`+name+`"}`)
				codes <- fmt.Sprintf("%d %s", code, body)
			})
		}
		wg.Wait()
		close(codes)
		attached := 0
		for c := range codes {
			switch {
			case strings.HasPrefix(c, "201 "):
				attached++
			case !strings.HasPrefix(c, "409 ") || !strings.Contains(c, "is already attached"):
				t.Errorf("a concurrent attach of %s: %s, want 201 or 409 already attached", name, c)
			}
		}
		if attached != 1 {
			t.Fatalf("%d of %d concurrent attaches of %s succeeded, want 1", attached, clients, name)
		}
		d.ctl(t, "detach", name)
	}
}

// TestAttachRacesDetach: an attach of a tap racing its detach is answered
// 201 or 409, never 500: the tap, its port gone but its descriptor not
// yet closed, was found busy with no port to show ("in use by another
// process"), or gone between the two checks ("TUNSETIFF: device or
// resource busy").
func TestAttachRacesDetach(t *testing.T) {
	testnet.RequireRoot(t)
	ns := testnet.NewNS(t)
	name := testnet.UniqueName("tsd")
	d := startSwitch(t, ns, "--listen", "unix://"+filepath.Join(t.TempDir(), "vm.sock"))
	body := `{"tap":"` + name + `"}`
	if code, out := d.postPorts(t, body); code != http.StatusCreated {
		t.Fatalf("attach %s: %d %s", name, code, out)
	}
	for range 100 {
		var wg sync.WaitGroup
		var del, att string
		wg.Go(func() {
			code, out := d.request(t, "DELETE", "/v1/ports/"+name, "")
			del = fmt.Sprintf("%d %s", code, out)
		})
		wg.Go(func() {
			code, out := d.postPorts(t, body)
			att = fmt.Sprintf("%d %s", code, out)
		})
		wg.Wait()
		if !strings.HasPrefix(att, "201 ") && !strings.HasPrefix(att, "409 ") {
			t.Errorf("an attach of %s racing its detach (%s): %s, want 201 or 409", name, del, att)
		}
		if !slices.Contains(d.portNames(t), name) { // the detach came last
			if code, out := d.postPorts(t, body); code != http.StatusCreated {
				t.Fatalf("attach %s again: %d %s", name, code, out)
			}
		}
	}
}

// TestReloadCommentOnlyConfig: a --config file that set nothing at start
// (everything on the command line) reloads quietly: a SIGHUP that only
// writes the lease file logged an error each time.
func TestReloadCommentOnlyConfig(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tapswitch.yaml")
	writeFile(t, cfg, "# all settings are on the command line\n")
	d := startSwitch(t, ns, "--config", cfg, "--listen", "unix://"+filepath.Join(dir, "s.sock"))
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the reload", func() bool {
		return strings.Contains(d.Output(), "configuration reloaded") || strings.Contains(d.Output(), "configuration not reloaded")
	})
	if out := d.Output(); strings.Contains(out, "not reloaded") {
		t.Errorf("a file that set nothing before was refused on SIGHUP:\n%s", out)
	}
}
