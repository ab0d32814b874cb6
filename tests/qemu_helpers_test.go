//go:build linux

package tests

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/qemu"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/tests/internal/guest"
)

// qemuNetdev returns the -netdev option that `tapswitch qemu
// --print-netdev URL --id ID` prints for QEMU 7.2 and later.
func qemuNetdev(t *testing.T, url, id string) []string {
	t.Helper()
	nd, err := qemu.Netdev(url, qemu.NetdevOptions{ID: id})
	if err != nil {
		t.Fatal(err)
	}
	return nd
}

// goroutineTB lets a helper that fails with t.Fatal (guest.Boot) run on a
// goroutine other than the test's: Fatal and FailNow mark the test failed
// and end only the calling goroutine, which is all FailNow may do off the
// test goroutine. The caller checks t.Failed() once its goroutines are
// done.
type goroutineTB struct{ testing.TB }

func (g goroutineTB) Fatal(args ...any) { g.TB.Helper(); g.TB.Error(args...); runtime.Goexit() }
func (g goroutineTB) Fatalf(format string, args ...any) {
	g.TB.Helper()
	g.TB.Errorf(format, args...)
	runtime.Goexit()
}
func (g goroutineTB) FailNow() { g.TB.Fail(); runtime.Goexit() }

// bootGuests boots the guests concurrently (TCG boots are CPU-bound, and
// booting them one after another takes longest) and fails the test if any
// did not come up. The guests are killed when the test ends.
func bootGuests(t *testing.T, cfgs []guest.Config) []*guest.VM {
	t.Helper()
	vms := make([]*guest.VM, len(cfgs))
	var wg sync.WaitGroup
	for i, cfg := range cfgs {
		wg.Go(func() { vms[i] = guest.Boot(goroutineTB{t}, cfg) })
	}
	wg.Wait()
	if t.Failed() || slices.Contains(vms, nil) {
		t.FailNow()
	}
	return vms
}

// guestsRun runs one guest command per entry at once (each guest's own
// commands are serialised by guest.VM) and reports every failure.
func guestsRun(t *testing.T, jobs []guestJob) {
	t.Helper()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() {
			out, err := j.vm.Run(j.cmd, j.timeout)
			if err != nil {
				t.Errorf("%s: %v", j.what, err)
				return
			}
			t.Logf("%s: ok\n%s", j.what, lastLines(out, 2))
		})
	}
	wg.Wait()
}

// guestJob is one command for guestsRun.
type guestJob struct {
	what    string
	vm      *guest.VM
	cmd     string
	timeout time.Duration
}

// pingCmd pings addr from a guest until two echo requests have been
// answered, starting new ones for 30 s; it fails if fewer than two were.
// The margin is for several TCG guests sharing two busy cores, where a
// request may be lost (the first one waiting for ARP, say) although the
// path works. Busybox ping cannot do this alone: it sends exactly -c
// requests even with -w, and with -w fails unless all were answered. So
// the guest runs one-request pings, each waiting up to 3 s for its reply
// (a late reply to an earlier one does not count: each ping has its own
// ident), and after a failure sleeps 1 s so that one failing at once (no
// route, say) is not retried in a tight loop. The subshell keeps the
// variables out of the guest's shell; the last line of output says how
// many requests were answered.
func pingCmd(addr string) string {
	return "(n=0 i=0 end=$(($(date +%s)+30)); " +
		"while [ $n -lt 2 ] && [ $(date +%s) -lt $end ]; do i=$((i+1)); " +
		"if ping -c 1 -W 3 " + addr + "; then n=$((n+1)); else sleep 1; fi; done; " +
		"echo \"pingCmd: $n of $i echo requests to " + addr + " answered\"; [ $n -ge 2 ])"
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	i := len(s)
	for ; n > 0 && i > 0; n-- {
		j := i - 1
		for j > 0 && s[j-1] != '\n' {
			j--
		}
		i = j
	}
	return s[i:]
}

// switchPorts returns the switch's ports as `tapswitch ctl ports --json`
// prints them.
func switchPorts(t *testing.T, d *daemon) []api.Port {
	t.Helper()
	var ports []api.Port
	out := d.ctl(t, "ports", "--json")
	if err := json.Unmarshal([]byte(out), &ports); err != nil {
		t.Fatalf("ctl ports --json: %v\n%s", err, out)
	}
	return ports
}

// portWithMAC returns the port on which mac is learned.
func portWithMAC(ports []api.Port, mac string) (api.Port, bool) {
	m, err := vswitch.ParseMAC(mac)
	if err != nil {
		return api.Port{}, false
	}
	for _, p := range ports {
		if slices.Contains(p.MACs, m) {
			return p, true
		}
	}
	return api.Port{}, false
}

// portByID returns the live port with the given ID.
func portByID(ports []api.Port, id int) (api.Port, bool) {
	for _, p := range ports {
		if p.ID == id {
			return p, true
		}
	}
	return api.Port{}, false
}

// waitPorts polls the control API's port list (what `ctl ports` shows)
// every 50 ms until cond holds, for at most timeout, and returns how long
// it took. It asks the API itself rather than running ctl: a -race
// binary sleeps 1 s before exiting (GORACE atexit_sleep_ms), which would
// make every poll take a second.
func waitPorts(t *testing.T, d *daemon, timeout time.Duration, what string, cond func([]api.Port) bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		var ports []api.Port
		if err := d.api().Do(t.Context(), "GET", "/v1/ports", nil, &ports); err != nil {
			t.Fatalf("GET /v1/ports: %v", err)
		}
		if cond(ports) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			b, _ := json.MarshalIndent(ports, "", "  ")
			t.Fatalf("%s: not within %v; ports:\n%s", what, timeout, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Ethernet, ARP and IPv4 constants used by vfkitClient.
const (
	etherTypeIPv4 = 0x0800
	etherTypeARP  = 0x0806
	arpRequest    = 1
	arpReply      = 2
	icmpEchoReply = 0
	icmpEcho      = 8
	minFrameLen   = 60 // Ethernet minimum without FCS
)

// vfkitClient plays vfkit's part of the protocol with the switch's
// unixgram listener: its own socket bound to a path, connected to the
// switch's, the 4-byte "VFKT" datagram first, then one raw Ethernet frame
// per datagram. Behind it is a tiny host with one MAC and one IPv4 address
// that answers ARP requests and ICMP echo requests for its address and
// records the ARP replies it receives.
type vfkitClient struct {
	conn  *net.UnixConn
	local string
	mac   net.HardwareAddr
	ip    netip.Addr

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced on every change below
	neighbours  map[netip.Addr]net.HardwareAddr
	arpAnswered int
	echoes      map[netip.Addr]int // echo requests answered, by source
	readErr     error
}

// newVFKitClient binds local, connects to the switch's unixgram socket and
// sends the hello. It is closed when the test ends.
func newVFKitClient(t *testing.T, local, switchSock string, mac net.HardwareAddr, ip netip.Addr) *vfkitClient {
	t.Helper()
	conn, err := net.DialUnix("unixgram",
		&net.UnixAddr{Name: local, Net: "unixgram"},
		&net.UnixAddr{Name: switchSock, Net: "unixgram"})
	if err != nil {
		t.Fatalf("vfkit client: %v", err)
	}
	// vfkit's buffer sizes (Apple's guidance: receive 4x send).
	_ = conn.SetWriteBuffer(1 << 20)
	_ = conn.SetReadBuffer(4 << 20)
	c := &vfkitClient{conn: conn, local: local, mac: mac, ip: ip, changed: make(chan struct{}),
		neighbours: map[netip.Addr]net.HardwareAddr{}, echoes: map[netip.Addr]int{}}
	if _, err := conn.Write(dgram.MagicVFKit); err != nil {
		conn.Close()
		t.Fatalf("vfkit client: hello: %v", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); c.readLoop() }()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return c
}

func (c *vfkitClient) readLoop() {
	buf := make([]byte, 65536)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.update(func() { c.readErr = err })
			}
			return
		}
		c.handle(buf[:n])
	}
}

func (c *vfkitClient) update(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// handle answers what is for c and records ARP replies.
func (c *vfkitClient) handle(f []byte) {
	if len(f) < 14 {
		return
	}
	dst := net.HardwareAddr(f[0:6])
	if dst[0]&1 == 0 && !slices.Equal(dst, c.mac) {
		return // unicast for someone else, flooded while unknown
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case etherTypeARP:
		a := f[14:]
		if len(a) < 28 || binary.BigEndian.Uint16(a[0:2]) != 1 || binary.BigEndian.Uint16(a[2:4]) != etherTypeIPv4 || a[4] != 6 || a[5] != 4 {
			return
		}
		sha := net.HardwareAddr(append([]byte(nil), a[8:14]...))
		spa := netip.AddrFrom4([4]byte(a[14:18]))
		tpa := netip.AddrFrom4([4]byte(a[24:28]))
		switch binary.BigEndian.Uint16(a[6:8]) {
		case arpRequest:
			if tpa == c.ip {
				if _, err := c.conn.Write(arpFrame(arpReply, c.mac, c.ip, sha, spa)); err == nil {
					c.update(func() { c.arpAnswered++ })
				}
			}
		case arpReply:
			if tpa == c.ip {
				c.update(func() { c.neighbours[spa] = sha })
			}
		}
	case etherTypeIPv4:
		if reply, src, ok := echoReply(f, c.mac, c.ip); ok {
			if _, err := c.conn.Write(reply); err == nil {
				c.update(func() { c.echoes[src]++ })
			}
		}
	}
}

// resolve sends ARP requests for ip (one a second) until a reply comes, and
// returns the MAC address it gave.
func (c *vfkitClient) resolve(ip netip.Addr, timeout time.Duration) (net.HardwareAddr, error) {
	deadline := time.Now().Add(timeout)
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	for time.Now().Before(deadline) {
		if _, err := c.conn.Write(arpFrame(arpRequest, c.mac, c.ip, bcast, ip)); err != nil {
			return nil, fmt.Errorf("vfkit client: send ARP request: %w", err)
		}
		next := time.Now().Add(time.Second)
		for time.Now().Before(next) {
			c.mu.Lock()
			mac, ok := c.neighbours[ip]
			ch, rerr := c.changed, c.readErr
			c.mu.Unlock()
			if ok {
				return mac, nil
			}
			if rerr != nil {
				return nil, fmt.Errorf("vfkit client: read: %w", rerr)
			}
			select {
			case <-ch:
			case <-time.After(time.Until(next)):
			}
		}
	}
	return nil, fmt.Errorf("vfkit client: no ARP reply for %s within %v", ip, timeout)
}

// answered returns how many ARP requests c answered and how many echo
// requests from src.
func (c *vfkitClient) answered(src netip.Addr) (arp, echo int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.arpAnswered, c.echoes[src]
}

// arpFrame builds an ARP request (ethernet destination dst, target
// hardware address zero) or reply (to dst) from sha/spa about tpa.
func arpFrame(op uint16, sha net.HardwareAddr, spa netip.Addr, dst net.HardwareAddr, tpa netip.Addr) []byte {
	f := make([]byte, minFrameLen)
	copy(f[0:6], dst)
	copy(f[6:12], sha)
	binary.BigEndian.PutUint16(f[12:14], etherTypeARP)
	a := f[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], sha)
	s4 := spa.As4()
	copy(a[14:18], s4[:])
	if op == arpReply {
		copy(a[18:24], dst)
	}
	t4 := tpa.As4()
	copy(a[24:28], t4[:])
	return f
}

// echoReply returns the ICMP echo reply to f if f is an IPv4 echo request
// for ip, and the request's source address.
func echoReply(f []byte, mac net.HardwareAddr, ip netip.Addr) ([]byte, netip.Addr, bool) {
	p := f[14:]
	if len(p) < 20 || p[0]>>4 != 4 {
		return nil, netip.Addr{}, false
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < 20 || total < ihl+8 || total > len(p) || p[9] != 1 /* ICMP */ ||
		netip.AddrFrom4([4]byte(p[16:20])) != ip || p[ihl] != icmpEcho {
		return nil, netip.Addr{}, false
	}
	src := netip.AddrFrom4([4]byte(p[12:16]))
	r := make([]byte, max(14+total, minFrameLen))
	copy(r[0:6], f[6:12])
	copy(r[6:12], mac)
	binary.BigEndian.PutUint16(r[12:14], etherTypeIPv4)
	q := r[14:]
	copy(q, p[:total])
	copy(q[12:16], p[16:20])
	copy(q[16:20], p[12:16])
	q[8] = 64 // TTL
	q[10], q[11] = 0, 0
	binary.BigEndian.PutUint16(q[10:12], inetChecksum(q[:ihl]))
	icmp := q[ihl:total]
	icmp[0], icmp[1] = icmpEchoReply, 0
	icmp[2], icmp[3] = 0, 0
	binary.BigEndian.PutUint16(icmp[2:4], inetChecksum(icmp))
	return r, src, true
}

// inetChecksum is the Internet checksum (RFC 1071) of b.
func inetChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
