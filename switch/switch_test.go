package vswitch_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 5 * time.Second

// fakeClock is an injectable clock for ageing tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rig is a switch with n in-memory ports whose frames are injected
// synchronously with Attachment.Input, so every forwarding decision has
// been taken (and the frame queued) when send returns.
type rig struct {
	t     *testing.T
	sw    *vswitch.Switch
	clock *fakeClock
	ports []*porttest.Port
	atts  []*vswitch.Attachment
}

func newRig(t *testing.T, n int, cfg vswitch.Config) *rig {
	t.Helper()
	r := &rig{t: t, clock: &fakeClock{t: time.Unix(1_700_000_000, 0)}}
	cfg.Now = r.clock.Now
	r.sw = vswitch.New(cfg)
	t.Cleanup(func() { r.sw.Close() })
	for i := 0; i < n; i++ {
		r.add(i)
	}
	return r
}

func (r *rig) add(i int) {
	r.t.Helper()
	r.addCfg(fmt.Sprintf("p%d", i), vswitch.PortConfig{})
}

// addCfg adds a port named name with cfg (of kind "mem", NoReader) and
// returns its index.
func (r *rig) addCfg(name string, cfg vswitch.PortConfig) int {
	r.t.Helper()
	p := porttest.New(porttest.Config{Name: name})
	cfg.Kind, cfg.NoReader = "mem", true
	a, err := r.sw.AddPort(p, cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.ports, r.atts = append(r.ports, p), append(r.atts, a)
	return len(r.atts) - 1
}

func (r *rig) send(i int, frame []byte) {
	buf := make([]byte, vswitch.Headroom+len(frame))
	copy(buf[vswitch.Headroom:], frame)
	r.atts[i].Input([][]byte{buf}, []int{len(frame)}, vswitch.Headroom)
}

// expect asserts that port i receives exactly frame next.
func (r *rig) expect(i int, frame []byte) {
	r.t.Helper()
	got, ok := r.ports[i].Recv(wait)
	if !ok {
		r.t.Fatalf("port %d: no frame, want %x", i, frame[:14])
	}
	if !bytes.Equal(got, frame) {
		r.t.Fatalf("port %d: got frame %x, want %x", i, got[:min(len(got), 14)], frame[:14])
	}
}

// expectNone asserts that port i has received nothing more, by sending it a
// unicast marker from another port and checking that the marker comes
// first (transmit queues are FIFO). Port i's station MAC must be learned.
func (r *rig) expectNone(i int) {
	r.t.Helper()
	from := (i + 1) % len(r.ports)
	marker := porttest.Frame(porttest.MAC(i), porttest.MAC(from), 0x88b5, []byte("marker"))
	r.send(from, marker)
	got, ok := r.ports[i].Recv(wait)
	if !ok {
		r.t.Fatalf("port %d: marker not delivered", i)
	}
	if !bytes.Equal(got, marker) {
		r.t.Fatalf("port %d: unexpected frame %x before the marker", i, got[:min(len(got), 14)])
	}
}

// learnAll makes every port announce its station MAC with a broadcast and
// drains the copies.
func (r *rig) learnAll() {
	r.t.Helper()
	for i := range r.ports {
		f := porttest.Frame(porttest.Broadcast, porttest.MAC(i), 0x88b5, []byte("hello"))
		r.send(i, f)
		for j := range r.ports {
			if j != i {
				r.expect(j, f)
			}
		}
	}
}

func TestLearnAndForwardUnicast(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{})
	r.learnAll()
	f := porttest.Frame(porttest.MAC(0), porttest.MAC(1), 0x0800, []byte("to zero"))
	r.send(1, f)
	r.expect(0, f)
	r.expectNone(2)
	st := r.sw.Stats()
	if st.Forwarded < 1 || st.FDB.Size != 3 || st.FDB.Learned != 3 {
		t.Fatalf("forwarded=%d fdb=%+v", st.Forwarded, st.FDB)
	}
}

func TestFloodingRules(t *testing.T) {
	r := newRig(t, 4, vswitch.Config{})
	r.learnAll()
	for name, dst := range map[string]vswitch.MAC{
		"broadcast":       porttest.Broadcast,
		"multicast":       {0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb},
		"unknown unicast": porttest.MAC(99),
	} {
		t.Run(name, func(t *testing.T) {
			r.t = t
			f := porttest.Frame(dst, porttest.MAC(2), 0x0800, []byte(name))
			r.send(2, f)
			for _, i := range []int{0, 1, 3} {
				r.expect(i, f)
			}
			r.expectNone(2) // never back out of the ingress port
		})
	}
}

func TestNoHairpin(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{})
	r.learnAll()
	// A second station behind port 0 talks to the first one: both are on
	// port 0, so the frame goes nowhere.
	f := porttest.Frame(porttest.MAC(0), porttest.MAC(50), 0x0800, []byte("local"))
	r.send(0, f)
	for i := range r.ports {
		r.expectNone(i)
	}
	if d := r.sw.Stats().Ports[0].Drops[vswitch.DropSamePort]; d != 1 {
		t.Fatalf("same_port drops on port 0 = %d, want 1", d)
	}
}

func TestMACMove(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{})
	r.learnAll()
	vm := porttest.MAC(7)
	r.send(0, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	r.expect(1, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	r.expect(2, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	// The VM migrates to port 2.
	r.send(2, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	r.expect(0, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	r.expect(1, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	f := porttest.Frame(vm, porttest.MAC(1), 0x0800, []byte("follow"))
	r.send(1, f)
	r.expect(2, f)
	r.expectNone(0)
	if m := r.sw.Stats().FDB.Moved; m != 1 {
		t.Fatalf("moved = %d, want 1", m)
	}
	// An address seen again after its entry expired has not moved: a VM
	// silent for FDBAge that comes back on another port is counted as
	// learned anew, not as a move (a sign of a loop or a spoof).
	r.clock.Advance(vswitch.DefaultFDBAge + time.Second)
	r.send(0, porttest.Frame(porttest.Broadcast, vm, 0x0806, nil))
	if m := r.sw.Stats().FDB.Moved; m != 1 {
		t.Errorf("moved = %d after an expired address came back elsewhere, want 1", m)
	}
}

func TestPurgeOnRemove(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{})
	r.learnAll()
	r.atts[1].Close()
	<-r.atts[1].Done()
	for _, e := range r.sw.FDB() {
		if e.MAC == porttest.MAC(1) {
			t.Fatalf("entry for removed port still present: %+v", e)
		}
	}
	// Frames to the departed MAC flood to the remaining ports.
	f := porttest.Frame(porttest.MAC(1), porttest.MAC(0), 0x0800, []byte("gone"))
	r.send(0, f)
	r.expect(2, f)
	if st := r.sw.Stats(); st.FDB.Purged != 1 || len(st.Ports) != 2 || len(st.Departed) != 1 {
		t.Fatalf("purged=%d ports=%d departed=%d", st.FDB.Purged, len(st.Ports), len(st.Departed))
	}
}

func TestAging(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{FDBAge: 300 * time.Second})
	r.learnAll()
	f1 := porttest.Frame(porttest.MAC(0), porttest.MAC(1), 0x0800, []byte("young"))
	f2 := porttest.Frame(porttest.MAC(0), porttest.MAC(1), 0x0800, []byte("aged"))

	r.clock.Advance(299 * time.Second)
	r.send(1, f1) // known unicast; refreshes MAC(1) only
	r.expect(0, f1)

	r.clock.Advance(2 * time.Second) // MAC(0) and MAC(2) last seen 301 s ago
	r.send(1, f2)
	r.expect(0, f2)
	r.expect(2, f2) // flooded: MAC(0) has aged out; f1 never reached port 2
	fdb := r.sw.FDB()
	if len(fdb) != 1 || fdb[0].MAC != porttest.MAC(1) {
		t.Fatalf("live FDB = %+v, want only %s", fdb, porttest.MAC(1))
	}
	if n := r.sw.ExpireFDB(); n != 2 {
		t.Fatalf("ExpireFDB removed %d, want 2", n)
	}
	if st := r.sw.Stats().FDB; st.Size != 1 || st.Expired != 2 {
		t.Fatalf("fdb stats %+v", st)
	}
}

func TestFDBBound(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{FDBSize: 4, FDBAge: time.Minute})
	for n := 10; n < 14; n++ { // fill the table from port 0
		r.send(0, porttest.Frame(porttest.Broadcast, porttest.MAC(n), 0x0800, nil))
		r.expect(1, porttest.Frame(porttest.Broadcast, porttest.MAC(n), 0x0800, nil))
	}
	// A fifth address is refused but its frame is still forwarded.
	late := porttest.Frame(porttest.Broadcast, porttest.MAC(20), 0x0800, []byte("late"))
	r.send(0, late)
	r.expect(1, late)
	st := r.sw.Stats().FDB
	if st.Size != 4 || st.Refused != 1 {
		t.Fatalf("fdb %+v, want size 4, refused 1", st)
	}
	// Frames to the refused address flood (it is unknown): port 0 gets it.
	to := porttest.Frame(porttest.MAC(20), porttest.MAC(30), 0x0800, []byte("to late"))
	r.send(1, to)
	r.expect(0, to)
	if st := r.sw.Stats().FDB; st.Refused != 2 { // MAC(30) was refused too
		t.Fatalf("refused = %d, want 2", st.Refused)
	}
	// Once the old entries age out, new addresses are learned again.
	r.clock.Advance(2 * time.Minute)
	r.send(0, late)
	r.expect(1, late)
	if st := r.sw.Stats().FDB; st.Size != 1 || st.Refused != 2 || st.Expired != 4 {
		t.Fatalf("after ageing: %+v", st)
	}
}

// failPort fails every write after the first n frames.
type failPort struct {
	*porttest.Port
	n atomic.Int64
}

func (p *failPort) WriteFrames(bufs [][]byte, offset int) (int, error) {
	if p.n.Add(-int64(len(bufs))) < 0 {
		return 0, errors.New("boom")
	}
	return p.Port.WriteFrames(bufs, offset)
}

func TestDropReasons(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{MaxFrame: 1000, QueueLen: 4})
	r.learnAll()
	a, b := porttest.MAC(0), porttest.MAC(1)

	r.send(0, make([]byte, 13))
	r.send(0, porttest.Frame(b, a, 0x0800, make([]byte, 1000-14+1)))
	r.send(0, porttest.Frame(b, vswitch.MAC{0x01, 0, 0x5e, 0, 0, 1}, 0x0800, nil))
	r.send(0, porttest.Frame(b, vswitch.MAC{}, 0x0800, nil)) // was learned
	r.send(0, porttest.Frame(a, a, 0x0800, nil))
	// An exactly-maximal frame passes.
	maxed := porttest.Frame(b, a, 0x0800, make([]byte, 1000-14))
	r.send(0, maxed)
	r.expect(1, maxed)

	// queue_full: a port that stops reading.
	r.ports[1].Stall()
	for range 20 {
		r.send(0, porttest.Frame(b, a, 0x0800, nil))
	}
	// tx_error: a port whose writes fail.
	fp := &failPort{Port: porttest.New(porttest.Config{Name: "fail"})}
	fa, err := r.sw.AddPort(fp, vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	fbuf := make([]byte, vswitch.Headroom+60)
	copy(fbuf[vswitch.Headroom:], porttest.Frame(porttest.Broadcast, porttest.MAC(5), 0x0800, nil))
	fa.Input([][]byte{fbuf}, []int{60}, vswitch.Headroom)
	r.send(0, porttest.Frame(porttest.MAC(5), a, 0x0800, nil))

	var st vswitch.Stats
	porttest.WaitFor(t, "the tx_error on p2", func() bool {
		st = r.sw.Stats()
		return st.Ports[2].Drops[vswitch.DropTxError] == 1
	})
	p0, p1, p2 := st.Ports[0].Drops, st.Ports[1].Drops, st.Ports[2].Drops
	for _, c := range []struct {
		got  uint64
		want uint64
		what string
	}{
		{p0[vswitch.DropTooShort], 1, "too_short on p0"},
		{p0[vswitch.DropTooLong], 1, "too_long on p0"},
		{p0[vswitch.DropSrcMulticast], 2, "src_multicast on p0"},
		{p0[vswitch.DropSamePort], 1, "same_port on p0"},
		{p2[vswitch.DropTxError], 1, "tx_error on fail"},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.what, c.got, c.want)
		}
	}
	// The stalled port holds one batch in WriteFrames and QueueLen frames
	// in its queue; everything beyond is dropped.
	if p1[vswitch.DropQueueFull] < 20-4-1-4 {
		t.Errorf("queue_full on p1 = %d, want >= %d", p1[vswitch.DropQueueFull], 20-4-1-4)
	}
	if p0.Total() != 5 || st.Ports[0].RxFrames != 1+5+1+20+1 {
		t.Errorf("p0 drops %d rx %d", p0.Total(), st.Ports[0].RxFrames)
	}
	for _, r := range vswitch.DropReasons() {
		if r.String() == "invalid" {
			t.Errorf("reason %d has no name", r)
		}
	}
}

// TestStuckPortDoesNotSlowOthers runs eight ports with real receive loops:
// seven exchange unicast and broadcast traffic in windows no larger than a
// queue, once with the eighth port reading normally and once with it
// stalled. The seven must deliver exactly the same frames both times.
func TestStuckPortDoesNotSlowOthers(t *testing.T) {
	const (
		nPorts  = 8
		windows = 40
		window  = 64 // frames per sender per window, < QueueLen
	)
	run := func(stall bool) (delivered uint64, stuckDrops uint64) {
		sw := vswitch.New(vswitch.Config{QueueLen: 256})
		defer sw.Close()
		ports := make([]*porttest.Port, nPorts)
		for i := range ports {
			ports[i] = porttest.New(porttest.Config{Name: fmt.Sprintf("p%d", i), Discard: true})
			if _, err := sw.AddPort(ports[i], vswitch.PortConfig{Kind: "mem"}); err != nil {
				t.Fatal(err)
			}
		}
		if stall {
			ports[nPorts-1].Stall()
		}
		for i := 0; i < nPorts-1; i++ { // learn the seven
			if err := ports[i].Send(porttest.Frame(porttest.Broadcast, porttest.MAC(i), 0x88b5, nil)); err != nil {
				t.Fatal(err)
			}
		}
		want := uint64(nPorts - 2) // each announcement reached the six others
		want *= nPorts - 1
		waitDelivered(t, ports[:nPorts-1], want)
		var wg sync.WaitGroup
		for w := 0; w < windows; w++ {
			for i := 0; i < nPorts-1; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					for k := 0; k < window; k++ {
						dst := porttest.MAC((i + 1 + k%(nPorts-2)) % (nPorts - 1))
						if k%8 == 0 {
							dst = porttest.Broadcast // floods to the stuck port too
						}
						ports[i].Send(porttest.Frame(dst, porttest.MAC(i), 0x88b5, make([]byte, 100)))
					}
				}(i)
			}
			wg.Wait()
			// Each sender sent 56 unicast frames (one receiver each) and 8
			// broadcasts (six of the seven receive them).
			want += (nPorts - 1) * (window - window/8 + window/8*(nPorts-2))
			waitDelivered(t, ports[:nPorts-1], want)
		}
		for _, p := range ports[:nPorts-1] {
			f, _ := p.Written()
			delivered += f
		}
		return delivered, sw.Stats().Ports[nPorts-1].Drops[vswitch.DropQueueFull]
	}
	base, baseDrops := run(false)
	stuck, stuckDrops := run(true)
	if base != stuck {
		t.Fatalf("seven ports delivered %d frames with a stuck eighth port, %d without", stuck, base)
	}
	if baseDrops != 0 || stuckDrops == 0 {
		t.Fatalf("stuck port queue_full drops: %d when reading, %d when stuck", baseDrops, stuckDrops)
	}
	t.Logf("delivered %d frames in both runs; stuck port dropped %d", base, stuckDrops)
}

// waitDelivered waits until ports have together accepted want frames.
func waitDelivered(t *testing.T, ports []*porttest.Port, want uint64) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		var got uint64
		for _, p := range ports {
			f, _ := p.Written()
			got += f
		}
		if got == want {
			return
		}
		if got > want || time.Now().After(deadline) {
			t.Fatalf("delivered %d frames, want %d", got, want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

func TestAddRemoveWhileTrafficFlows(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		p := porttest.New(porttest.Config{Name: fmt.Sprintf("steady%d", i), Discard: true})
		if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				dst := porttest.Broadcast
				if k%2 == 1 {
					dst = porttest.MAC(1000 + (i+1)%3)
				}
				p.Send(porttest.Frame(dst, porttest.MAC(1000+i), 0x88b5, nil))
			}
		}(i)
	}
	for k := 0; k < 200; k++ {
		p := porttest.New(porttest.Config{Name: "churn", Discard: true})
		a, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"})
		if err != nil {
			t.Fatal(err)
		}
		p.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(2000+k), 0x88b5, nil))
		if k%2 == 0 {
			a.Close()
		} else {
			p.Close() // the port ends by itself: the receive loop removes it
		}
		<-a.Done()
	}
	close(stop)
	wg.Wait()
	st := sw.Stats()
	if len(st.Ports) != 3 || st.Totals.RxFrames == 0 {
		t.Fatalf("ports=%d rx=%d", len(st.Ports), st.Totals.RxFrames)
	}
	for _, e := range sw.FDB() {
		if e.Port == "churn" {
			t.Fatalf("FDB entry of a removed port: %+v", e)
		}
	}
}

func TestClosedSwitch(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	p := porttest.New(porttest.Config{})
	if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	sw.Close()
	sw.Close()
	if _, err := p.ReadFrames(make([][]byte, 1), make([]int, 1), 0); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("port not closed by Switch.Close: %v", err)
	}
	if _, err := sw.AddPort(porttest.New(porttest.Config{}), vswitch.PortConfig{}); !errors.Is(err, vswitch.ErrClosed) {
		t.Fatalf("AddPort after Close: %v", err)
	}
}

func TestCapture(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{})
	r.learnAll()
	all := r.sw.StartCapture(vswitch.CaptureConfig{})
	only2 := r.sw.StartCapture(vswitch.CaptureConfig{Port: r.atts[2].ID()})
	to1 := porttest.Frame(porttest.MAC(1), porttest.MAC(0), 0x0800, []byte("0->1"))
	to2 := porttest.Frame(porttest.MAC(2), porttest.MAC(0), 0x0800, []byte("0->2"))
	bc := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, []byte("flood"))
	for _, f := range [][]byte{to1, to2, bc} {
		r.send(int(f[11]), f)
	}
	all.Close()
	only2.Close()
	collect := func(c *vswitch.Capture) (got [][]byte) {
		for cf := range c.C() {
			got = append(got, cf.Data)
		}
		return got
	}
	if got := collect(all); len(got) != 3 || !bytes.Equal(got[0], to1) || !bytes.Equal(got[2], bc) {
		t.Fatalf("capture of all ports: %d frames", len(got))
	}
	if got := collect(only2); len(got) != 2 || !bytes.Equal(got[0], to2) || !bytes.Equal(got[1], bc) {
		t.Fatalf("capture of port 2: %d frames: %q", len(got), got)
	}
	// Closed captures see nothing more, and the switch carries on.
	r.send(0, to1)
	r.expect(1, to1)
}

// dhcpRequest builds an IPv4 UDP datagram to port 67 for dstIP.
func dhcpRequest(dst, src vswitch.MAC, dstIP [4]byte) []byte {
	ip := make([]byte, 20+8+4)
	ip[0], ip[9] = 0x45, 17
	copy(ip[16:20], dstIP[:])
	ip[20+1], ip[20+3] = 68, 67
	return porttest.Frame(dst, src, 0x0800, ip)
}

func TestDHCPServerPort(t *testing.T) {
	r := newRig(t, 3, vswitch.Config{})
	srv := porttest.New(porttest.Config{Name: "dhcp"})
	if _, err := r.sw.AddPort(srv, vswitch.PortConfig{Kind: "dhcp", DHCPServer: true, DHCPAddr: netip.MustParseAddr("198.18.9.1")}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.sw.AddPort(porttest.New(porttest.Config{}), vswitch.PortConfig{DHCPServer: true}); err == nil {
		t.Fatal("a second DHCP server port was accepted")
	}
	r.learnAll()
	for range r.ports { // the announcements flooded to the server port too
		if _, ok := srv.Recv(wait); !ok {
			t.Fatal("announcement not flooded to the server port")
		}
	}
	// A broadcast DISCOVER goes to the server only.
	disc := dhcpRequest(porttest.Broadcast, porttest.MAC(0), [4]byte{255, 255, 255, 255})
	r.send(0, disc)
	if got, ok := srv.Recv(wait); !ok || !bytes.Equal(got, disc) {
		t.Fatal("broadcast DHCP request not delivered to the server port")
	}
	r.expectNone(1)
	r.expectNone(2)
	// A renewal to the server's address but another station's MAC (a host
	// interface owning the gateway address) goes to the server too.
	renew := dhcpRequest(porttest.MAC(1), porttest.MAC(0), [4]byte{198, 18, 9, 1})
	r.send(0, renew)
	if got, ok := srv.Recv(wait); !ok || !bytes.Equal(got, renew) {
		t.Fatal("renewal to the server address not delivered to the server port")
	}
	r.expectNone(1)
	// A request unicast to another DHCP server is forwarded as usual.
	other := dhcpRequest(porttest.MAC(2), porttest.MAC(0), [4]byte{198, 18, 9, 2})
	r.send(0, other)
	r.expect(2, other)
	// So is one with a broadcast MAC but another server's address: it
	// went to the responder only.
	otherBcast := dhcpRequest(porttest.Broadcast, porttest.MAC(0), [4]byte{198, 18, 9, 2})
	r.send(0, otherBcast)
	r.expect(2, otherBcast)
}

// directPort is an in-memory DirectWriter whose direct writes can be made
// to "block".
type directPort struct {
	*porttest.Port
	block  atomic.Bool
	direct atomic.Int64
}

func (p *directPort) WriteFrameNow(b []byte, offset int) (bool, error) {
	if p.block.Load() {
		return false, nil
	}
	p.direct.Add(1)
	_, err := p.Port.WriteFrames([][]byte{b}, offset)
	return true, err
}

func TestDirectWrite(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{})
	dp := &directPort{Port: porttest.New(porttest.Config{Name: "direct"})}
	if _, err := r.sw.AddPort(dp, vswitch.PortConfig{Kind: "mem", NoReader: true}); err != nil {
		t.Fatal(err)
	}
	r.ports = append(r.ports, dp.Port)
	// Idle: the frame is written from the sending goroutine, synchronously.
	f1 := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x0800, []byte("one"))
	r.send(0, f1)
	if dp.direct.Load() != 1 {
		t.Fatalf("direct writes = %d, want 1", dp.direct.Load())
	}
	r.expect(1, f1)
	// Would block: frames are queued, and arrive in order.
	dp.block.Store(true)
	var sent [][]byte
	for i := range 50 {
		f := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x0800, []byte{byte(i)})
		sent = append(sent, f)
		r.send(0, f)
	}
	dp.block.Store(false)
	for _, f := range sent {
		r.expect(1, f)
	}
	if dp.direct.Load() != 1 {
		t.Fatalf("direct writes = %d, want 1", dp.direct.Load())
	}
	porttest.WaitFor(t, "51 frames counted as sent", func() bool { return r.sw.Stats().Ports[1].TxFrames == 51 })
}

// TestMaxMACsReclaimsExpired: a port at its --max-macs-per-port learns a
// new address once one of its own has expired, without waiting for the
// periodic sweep (up to 30 s during which its new address flooded).
func TestMaxMACsReclaimsExpired(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{FDBAge: time.Minute})
	p := r.addCfg("limited", vswitch.PortConfig{MaxMACs: 1})
	r.send(p, porttest.Frame(porttest.Broadcast, porttest.MAC(100), 0x0800, []byte("first")))
	r.expect(0, porttest.Frame(porttest.Broadcast, porttest.MAC(100), 0x0800, []byte("first")))
	r.clock.Advance(2 * time.Minute)
	second := porttest.Frame(porttest.Broadcast, porttest.MAC(101), 0x0800, []byte("second"))
	r.send(p, second)
	r.expect(0, second)
	st := r.atts[p].Stats()
	if st.LearnedMACs != 1 || st.LearnRefused != 0 {
		t.Errorf("learned %d, refused %d; want the new address learned", st.LearnedMACs, st.LearnRefused)
	}
}

func TestPortSecurity(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{MaxPorts: 5})
	add := func(name string, cfg vswitch.PortConfig) *vswitch.Attachment {
		t.Helper()
		return r.atts[r.addCfg(name, cfg)]
	}
	add("locked", vswitch.PortConfig{LockMAC: true})                             // 1: bound to its first MAC
	add("fixed", vswitch.PortConfig{LockMAC: true, LockedMAC: porttest.MAC(77)}) // 2
	add("limited", vswitch.PortConfig{MaxMACs: 2})                               // 3
	add("rated", vswitch.PortConfig{NewMACRate: 2})                              // 4
	if _, err := r.sw.AddPort(porttest.New(porttest.Config{}), vswitch.PortConfig{}); !errors.Is(err, vswitch.ErrTooManyPorts) {
		t.Fatalf("sixth port: %v, want ErrTooManyPorts", err)
	}
	bcast := func(src int, payload string) []byte {
		return porttest.Frame(porttest.Broadcast, porttest.MAC(src), 0x0800, []byte(payload))
	}

	// The locked ports keep their MAC; spoofed sources are dropped.
	first := bcast(1, "mine")
	r.send(1, first)
	r.expect(0, first)
	for n := 100; n < 110; n++ {
		r.send(1, bcast(n, "spoof"))
	}
	r.send(2, bcast(2, "not the configured MAC"))
	ok := bcast(77, "configured")
	r.send(2, ok)
	r.expect(0, ok)

	// The limited port teaches two addresses; frames from the others still
	// flood.
	for n := 200; n < 205; n++ {
		f := bcast(n, "limited")
		r.send(3, f)
		r.expect(0, f)
	}
	// The rated port teaches two addresses at once, two more a second later.
	for n := 300; n < 305; n++ {
		r.send(4, bcast(n, "rated"))
	}
	r.clock.Advance(time.Second)
	for n := 305; n < 310; n++ {
		r.send(4, bcast(n, "rated"))
	}

	st := r.sw.Stats()
	p := func(i int) vswitch.PortStats { return st.Ports[i] }
	if p(1).Drops[vswitch.DropLockedMAC] != 10 || p(1).LockedMAC == nil || *p(1).LockedMAC != porttest.MAC(1) || p(1).LearnedMACs != 1 {
		t.Errorf("locked port: drops %d, bound to %v, %d MACs", p(1).Drops[vswitch.DropLockedMAC], p(1).LockedMAC, p(1).LearnedMACs)
	}
	if p(2).Drops[vswitch.DropLockedMAC] != 1 || *p(2).LockedMAC != porttest.MAC(77) {
		t.Errorf("fixed port: drops %d, bound to %v", p(2).Drops[vswitch.DropLockedMAC], p(2).LockedMAC)
	}
	if p(3).LearnedMACs != 2 || p(3).LearnRefused != 3 {
		t.Errorf("limited port: %d MACs, %d refused; want 2, 3", p(3).LearnedMACs, p(3).LearnRefused)
	}
	if p(4).LearnedMACs != 4 || p(4).LearnRefused != 6 {
		t.Errorf("rated port: %d MACs, %d refused; want 4, 6", p(4).LearnedMACs, p(4).LearnRefused)
	}
	if st.FDB.Size != 1+1+2+4 {
		t.Errorf("fdb size %d", st.FDB.Size)
	}
}

// TestLockMACNoTakeover: a locked port whose first frame uses an address
// live on another port (another VM's, the gateway's) is not bound to it:
// the frame is dropped as locked_mac and the address stays where it was.
// The port used to be bound to it and take the address's traffic.
func TestLockMACNoTakeover(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{})
	r.learnAll() // MAC(0) on port 0, MAC(1) on port 1
	r.addCfg("attacker", vswitch.PortConfig{LockMAC: true})
	r.send(2, porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x0800, []byte("I am port 0")))
	st := r.sw.Stats().Ports[2]
	if st.Drops[vswitch.DropLockedMAC] != 1 || st.LockedMAC != nil {
		t.Fatalf("attacker: %d locked_mac drops, bound to %v; want 1 and unbound", st.Drops[vswitch.DropLockedMAC], st.LockedMAC)
	}
	toZero := porttest.Frame(porttest.MAC(0), porttest.MAC(1), 0x0800, []byte("for port 0"))
	r.send(1, toZero)
	r.expect(0, toZero)
	// Its own address is still bound on its first frame.
	own := porttest.Frame(porttest.Broadcast, porttest.MAC(9), 0x0800, []byte("mine"))
	r.send(2, own)
	if st := r.sw.Stats().Ports[2]; st.LockedMAC == nil || *st.LockedMAC != porttest.MAC(9) {
		t.Fatalf("attacker's own address: bound to %v, want %v", st.LockedMAC, porttest.MAC(9))
	}
}

// TestLockMACReservedWhileAttached: an address bound to a LockMAC port,
// or a port's OwnMAC, is not taken by another LockMAC port when its entry
// has aged out of the FDB or the FDB was flushed, only once its port is
// gone. The check looked at the FDB alone: a VM silent for five minutes (or
// any after a flush) lost its address, and its unicast, to the next
// locked port that claimed it.
func TestLockMACReservedWhileAttached(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{FDBAge: time.Minute})
	victim := r.addCfg("victim", vswitch.PortConfig{LockMAC: true})
	r.addCfg("gateway", vswitch.PortConfig{OwnMAC: porttest.MAC(7)})
	attacker := r.addCfg("attacker", vswitch.PortConfig{LockMAC: true})
	r.send(victim, porttest.Frame(porttest.Broadcast, porttest.MAC(5), 0x0800, []byte("hello")))
	r.clock.Advance(2 * time.Minute) // the victim's entry ages out
	r.sw.FlushFDB()
	for _, m := range []vswitch.MAC{porttest.MAC(5), porttest.MAC(7)} {
		r.send(attacker, porttest.Frame(porttest.Broadcast, m, 0x0800, []byte("I am them")))
	}
	st := r.sw.Stats().Ports[attacker]
	if st.Drops[vswitch.DropLockedMAC] != 2 || st.LockedMAC != nil {
		t.Fatalf("attacker: %d locked_mac drops, bound to %v; want 2 and unbound", st.Drops[vswitch.DropLockedMAC], st.LockedMAC)
	}
	// The victim speaks again and gets its unicast.
	r.send(victim, porttest.Frame(porttest.Broadcast, porttest.MAC(5), 0x0800, []byte("back")))
	toVictim := porttest.Frame(porttest.MAC(5), porttest.MAC(0), 0x0800, []byte("for the victim"))
	r.send(0, toVictim)
	r.expect(victim, toVictim) // and nothing of the attacker's before it
	if f, ok := r.ports[attacker].Recv(100 * time.Millisecond); ok && bytes.Equal(f, toVictim) {
		t.Fatal("the attacker got the victim's unicast")
	}
	// Once the victim's port is gone its address is free.
	r.atts[victim].Close()
	<-r.atts[victim].Done()
	r.send(attacker, porttest.Frame(porttest.Broadcast, porttest.MAC(5), 0x0800, []byte("now mine")))
	if st := r.sw.Stats().Ports; st[len(st)-1].LockedMAC == nil || *st[len(st)-1].LockedMAC != porttest.MAC(5) {
		t.Errorf("after the victim left, the attacker is bound to %v, want %v", st[len(st)-1].LockedMAC, porttest.MAC(5))
	}
	// A port cannot be added with a reserved OwnMAC or LockedMAC.
	if _, err := r.sw.AddPort(porttest.New(porttest.Config{Name: "x"}), vswitch.PortConfig{OwnMAC: porttest.MAC(7)}); err == nil {
		t.Error("AddPort with another port's OwnMAC: no error")
	}
}

// probingPort is a port that counts the switch's Probe calls.
type probingPort struct {
	*porttest.Port
	probes atomic.Int32
}

func (p *probingPort) Probe() { p.probes.Add(1) }

// TestProbeSilentHolder: a locked port refused an address because it is
// reserved for a port silent past the FDB age makes the switch ask that
// port whether it is gone (Prober), at most once a second, and sends it
// nothing; a holder still in the FDB is not asked.
func TestProbeSilentHolder(t *testing.T) {
	r := newRig(t, 0, vswitch.Config{FDBAge: time.Minute})
	add := func(p vswitch.Port) int {
		t.Helper()
		a, err := r.sw.AddPort(p, vswitch.PortConfig{Kind: "mem", NoReader: true, LockMAC: true})
		if err != nil {
			t.Fatal(err)
		}
		r.atts = append(r.atts, a)
		return len(r.atts) - 1
	}
	holder := &probingPort{Port: porttest.New(porttest.Config{Name: "holder"})}
	h := add(holder)
	other := porttest.New(porttest.Config{Name: "other"})
	o := add(other)
	r.ports = []*porttest.Port{holder.Port, other}
	claim := porttest.Frame(porttest.Broadcast, porttest.MAC(5), 0x0800, []byte("mine"))
	r.send(h, claim)
	r.send(o, claim) // the holder is live: refused, not probed
	if n := holder.probes.Load(); n != 0 {
		t.Fatalf("%d probes of a live holder", n)
	}
	r.clock.Advance(2 * time.Minute)
	for range 3 {
		r.send(o, claim)
	}
	if n := holder.probes.Load(); n != 1 {
		t.Fatalf("%d probes for 3 refused frames within a second, want 1", n)
	}
	r.clock.Advance(2 * time.Second)
	r.send(o, claim)
	if n := holder.probes.Load(); n != 2 {
		t.Fatalf("%d probes after a second more, want 2", n)
	}
	if f, ok := holder.Recv(100 * time.Millisecond); ok {
		t.Fatalf("the holder was sent %x", f[:14])
	}
	if d := r.sw.Stats().Ports[o].Drops[vswitch.DropLockedMAC]; d != 5 {
		t.Errorf("locked_mac drops %d, want 5", d)
	}
}

// TestNewMACRateBelowOne: a rate below one address a second still lets
// addresses in, one per 1/rate seconds. The bucket was capped at the rate,
// so it never held a whole token and the port learned nothing.
func TestNewMACRateBelowOne(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{})
	r.addCfg("slow", vswitch.PortConfig{NewMACRate: 0.5})
	for n := range 6 {
		r.send(1, porttest.Frame(porttest.Broadcast, porttest.MAC(100+n), 0x0800, nil))
		r.clock.Advance(time.Second)
	}
	if st := r.sw.Stats().Ports[1]; st.LearnedMACs != 3 || st.LearnRefused != 3 {
		t.Fatalf("rate 0.5/s over 6 s: %d learned, %d refused; want 3 and 3", st.LearnedMACs, st.LearnRefused)
	}
}

// TestQueueBytes: a port that stops reading holds at most QueueBytes of
// buffers, whatever the frame count allows.
func TestQueueBytes(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{QueueBytes: 200_000, MaxFrame: 65535})
	r.learnAll()
	r.ports[1].Stall()
	big := porttest.Frame(porttest.MAC(1), porttest.MAC(0), 0x0800, make([]byte, 60000))
	for range 10 {
		r.send(0, big)
	}
	// 200,000 bytes hold three 64 KiB buffers: the rest is dropped.
	if d := r.sw.Stats().Ports[1].Drops[vswitch.DropQueueFull]; d != 7 {
		t.Fatalf("queue_full drops = %d, want 7", d)
	}
	if l := r.sw.Stats().Limits; l.QueueBytes != 200_000 || l.QueueLen != vswitch.DefaultQueueLen {
		t.Fatalf("limits %+v", l)
	}
}

// TestQueueBytesSizeClasses: a queued frame counts against QueueBytes as
// the buffer of its size class, so that a port's queue holds hundreds of
// jumbo frames, not 64 (when every frame above 1536 bytes took a 64 KiB
// buffer, a burst of 9000-byte frames toward a stream port lost most of
// them). Classes: 1536, 9216 and the largest frame, each behind Headroom.
func TestQueueBytesSizeClasses(t *testing.T) {
	const queueBytes = 200_000
	for _, tc := range []struct {
		payload, class int
	}{
		{1400, 1536},
		{1536 - 14, 1536},
		{1536 - 13, 9216},
		{9000 - 14, 9216},
		{9216 - 14, 9216},
		{9216 - 13, 65535 + 14 + 4},
	} {
		r := newRig(t, 2, vswitch.Config{QueueBytes: queueBytes, MaxFrame: 65535})
		r.learnAll()
		r.ports[1].Stall()
		fr := porttest.Frame(porttest.MAC(1), porttest.MAC(0), 0x0800, make([]byte, tc.payload))
		const sent = 200
		for range sent {
			r.send(0, fr)
		}
		held := min(queueBytes/(vswitch.Headroom+tc.class), vswitch.DefaultQueueLen)
		if d := r.sw.Stats().Ports[1].Drops[vswitch.DropQueueFull]; d != uint64(sent-held) {
			t.Errorf("%d-byte frames: queue_full drops = %d, want %d (%d held in %d-byte buffers)",
				len(fr), d, sent-held, held, vswitch.Headroom+tc.class)
		}
	}
}

// TestQueueBytesDefaultJumbo: with the defaults, a port's queue takes a
// burst of 400 9000-byte frames whole.
func TestQueueBytesDefaultJumbo(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{})
	r.learnAll()
	r.ports[1].Stall()
	fr := porttest.Frame(porttest.MAC(1), porttest.MAC(0), 0x0800, make([]byte, 9000-14))
	for range 400 {
		r.send(0, fr)
	}
	if d := r.sw.Stats().Ports[1].Drops[vswitch.DropQueueFull]; d != 0 {
		t.Fatalf("queue_full drops = %d, want 0", d)
	}
}

// TestNoLearningAfterRemove: a port removed while a long batch of its
// frames is forwarded learns nothing after its FDB entries were purged.
// It used to re-learn the batch's source (here a MAC that had been a live
// port's), leaving an entry on the dead port: the address flooded until
// its owner spoke again, and the entry held a table slot.
func TestNoLearningAfterRemove(t *testing.T) {
	for range 10 {
		sw := vswitch.New(vswitch.Config{})
		a, _ := sw.AddPort(porttest.New(porttest.Config{Discard: true}), vswitch.PortConfig{NoReader: true})
		b, _ := sw.AddPort(porttest.New(porttest.Config{Discard: true}), vswitch.PortConfig{NoReader: true})
		fr := porttest.Frame(porttest.MAC(1), porttest.MAC(100), 0x0800, make([]byte, 46))
		one, size := inputBuf(fr)
		b.Input(one, size, vswitch.Headroom)
		bufs, sizes := make([][]byte, 100_000), make([]int, 100_000)
		for i := range bufs {
			bufs[i], sizes[i] = one[0], size[0]
		}
		done := make(chan struct{})
		go func() {
			a.Input(bufs, sizes, vswitch.Headroom)
			close(done)
		}()
		// Spin, not sleep: a's removal must come while Input runs.
		deadline := time.Now().Add(wait)
		for a.Stats().RxFrames == 0 {
			if time.Now().After(deadline) {
				t.Fatal("Input counted no frame")
			}
			runtime.Gosched()
		}
		a.Close()
		<-done
		<-a.Done()
		if st, live := sw.Stats().FDB.Size, len(sw.FDB()); st != live {
			t.Fatalf("FDB holds %d entries, %d of them on live ports", st, live)
		}
		sw.Close()
	}
}

// TestTotalsWhileRemoving: Stats' totals count a port being removed
// exactly once. A port left the live list before its counters reached
// the departed sum, so totals missed it in between, or counted it twice.
func TestTotalsWhileRemoving(t *testing.T) {
	const frames = 100
	bufs, sizes := inputBuf(porttest.Frame(porttest.MAC(2), porttest.MAC(1), 0x0800, make([]byte, 46)))
	for range 300 {
		sw := vswitch.New(vswitch.Config{})
		a, _ := sw.AddPort(porttest.New(porttest.Config{Discard: true}), vswitch.PortConfig{NoReader: true})
		for range frames {
			a.Input(bufs, sizes, vswitch.Headroom)
		}
		stop := make(chan struct{})
		var wrong []uint64
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if n := sw.Stats().Totals.RxFrames; n != frames {
					wrong = append(wrong, n)
				}
			}
		})
		a.Close()
		<-a.Done()
		close(stop)
		wg.Wait()
		sw.Close()
		if len(wrong) > 0 {
			t.Fatalf("totals counted %v received frames while the port went, want %d", wrong[:min(len(wrong), 5)], frames)
		}
	}
}

// TestDropCountsString: the form ctl's tables print.
func TestDropCountsString(t *testing.T) {
	var d vswitch.DropCounts
	if s := d.String(); s != "0" {
		t.Errorf("no drops: %q, want 0", s)
	}
	d[vswitch.DropTooShort], d[vswitch.DropTxError] = 1, 2
	if s := d.String(); s != "too_short=1,tx_error=2" {
		t.Errorf("%q, want too_short=1,tx_error=2", s)
	}
}

// TestRemovedPortCountsQueuedFrames: frames still queued for a port when it
// is removed are counted as tx_error. They were counted nowhere (the
// switch had counted them forwarded), so a departed port's counters fell
// short of what was sent to it, by a different amount each run.
func TestRemovedPortCountsQueuedFrames(t *testing.T) {
	for range 5 {
		sw := vswitch.New(vswitch.Config{QueueLen: 64})
		src := porttest.New(porttest.Config{Name: "src"})
		stuck := porttest.New(porttest.Config{Name: "stuck"})
		a, err := sw.AddPort(src, vswitch.PortConfig{Kind: "mem", NoReader: true})
		if err != nil {
			t.Fatal(err)
		}
		b, err := sw.AddPort(stuck, vswitch.PortConfig{Kind: "mem"})
		if err != nil {
			t.Fatal(err)
		}
		stuck.Stall()
		const n = 1000
		f := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x88b5, nil)
		buf := make([]byte, vswitch.Headroom+len(f))
		for range n {
			copy(buf[vswitch.Headroom:], f)
			a.Input([][]byte{buf}, []int{len(f)}, vswitch.Headroom)
		}
		b.Close()
		<-b.Done()
		st := sw.Stats()
		var ps vswitch.PortStats
		for _, d := range st.Departed {
			if d.ID == b.ID() {
				ps = d
			}
		}
		sw.Close()
		if got := ps.TxFrames + ps.Drops[vswitch.DropQueueFull] + ps.Drops[vswitch.DropTxError]; got != n {
			t.Fatalf("departed port: tx %d + queue_full %d + tx_error %d = %d, want the %d frames flooded to it",
				ps.TxFrames, ps.Drops[vswitch.DropQueueFull], ps.Drops[vswitch.DropTxError], got, n)
		}
	}
}

// TestDerivedMACStable: the MACs of the switch's own ports (the DHCP
// responder's, the host interface's) are kept across restarts and
// upgrades, or guests' ARP entries for the gateway go stale: the
// derivation must not change.
func TestDerivedMACStable(t *testing.T) {
	m := vswitch.DerivedMAC(append([]byte("tapswitch dhcp "), 198, 18, 0, 1))
	if m.String() != "c2:c7:e2:0e:f9:0d" {
		t.Errorf("DerivedMAC = %v, want c2:c7:e2:0e:f9:0d (as every earlier release)", m)
	}
	if m.Multicast() || m[0]&2 == 0 {
		t.Errorf("%v: want unicast and locally administered", m)
	}
}

// TestNewMACRateBurstAfterIdle: after a long idle time a port's bucket
// holds NewMACRate new addresses, not more: the cap was not checked.
func TestNewMACRateBurstAfterIdle(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{})
	r.addCfg("rated", vswitch.PortConfig{NewMACRate: 2})
	r.send(1, porttest.Frame(porttest.Broadcast, porttest.MAC(100), 0x0800, nil))
	r.clock.Advance(10 * time.Second)
	for n := 101; n < 106; n++ {
		r.send(1, porttest.Frame(porttest.Broadcast, porttest.MAC(n), 0x0800, nil))
	}
	if st := r.sw.Stats().Ports[1]; st.LearnedMACs != 3 || st.LearnRefused != 3 {
		t.Fatalf("after 10 s idle: %d learned, %d refused; want 1+2 learned, 3 refused", st.LearnedMACs, st.LearnRefused)
	}
}
