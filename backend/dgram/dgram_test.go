package dgram

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.uber.org/goleak"

	"github.com/tapswitch/tapswitch/backend/listen"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func frame(dst, src vswitch.MAC, payload string) []byte {
	b := make([]byte, 14+len(payload))
	copy(b, dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], 0x88b5)
	copy(b[14:], payload)
	return b
}

func logger() logrus.FieldLogger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	if testing.Verbose() {
		l.SetOutput(os.Stderr)
		l.SetLevel(logrus.DebugLevel)
	}
	return l
}

// vm is a Go stand-in for a datagram peer (QEMU dgram, vfkit).
type vm struct {
	t  *testing.T
	c  net.PacketConn
	to net.Addr
}

func (v *vm) send(b []byte) {
	v.t.Helper()
	if _, err := v.c.WriteTo(b, v.to); err != nil {
		v.t.Fatalf("vm send: %v", err)
	}
}

func (v *vm) recv(d time.Duration) ([]byte, error) {
	v.c.SetReadDeadline(time.Now().Add(d))
	b := make([]byte, 70000)
	n, _, err := v.c.ReadFrom(b)
	return b[:n], err
}

func (v *vm) expect(want []byte) {
	v.t.Helper()
	got, err := v.recv(5 * time.Second)
	if err != nil {
		v.t.Fatalf("vm recv: %v", err)
	}
	if !bytes.Equal(got, want) {
		v.t.Fatalf("vm got % x, want % x", got, want)
	}
}

func (v *vm) expectNothing() {
	v.t.Helper()
	if got, err := v.recv(100 * time.Millisecond); err == nil {
		v.t.Fatalf("vm got unexpected datagram % x", got)
	}
}

type env struct {
	t   *testing.T
	sw  *vswitch.Switch
	l   *Listener
	dir string
}

func setup(t *testing.T, network string, cfg Config) *env {
	t.Helper()
	e := &env{t: t, dir: porttest.SocketDir(t)}
	e.sw = vswitch.New(vswitch.Config{Logger: logger()})
	url := "udp://127.0.0.1:0"
	if network == "unixgram" {
		url = "unixgram://" + filepath.Join(e.dir, "sw.sock")
	}
	if cfg.Logger == nil {
		cfg.Logger = logger()
	}
	l, err := Listen(context.Background(), url, cfg, e.sw)
	if err != nil {
		e.sw.Close()
		t.Fatal(err)
	}
	e.l = l
	t.Cleanup(func() {
		l.Close()
		e.sw.Close()
	})
	return e
}

func (e *env) vm(name string) *vm {
	e.t.Helper()
	var c net.PacketConn
	var to net.Addr
	var err error
	if e.l.Addr().Network == "unixgram" {
		p := filepath.Join(e.dir, name)
		c, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
		to = &net.UnixAddr{Name: e.l.Addr().Address, Net: "unixgram"}
	} else {
		c, err = net.ListenPacket("udp", "127.0.0.1:0")
		to, _ = net.ResolveUDPAddr("udp", e.l.Addr().Address)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { c.Close() })
	return &vm{t: e.t, c: c, to: to}
}

func (e *env) ports() int { return len(e.sw.Ports()) }

// pair makes two unixgram peers, a.sock and b.sock, that have each sent
// a broadcast (a has received b's), so that each has its port.
func (e *env) pair() (a, b *vm) {
	e.t.Helper()
	a, b = e.vm("a.sock"), e.vm("b.sock")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(e.t, "two ports", func() bool { return e.ports() == 2 })
	a.expect(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	return a, b
}

func testExchange(t *testing.T, network string) {
	e := setup(t, network, Config{})
	a, b := e.vm("a.sock"), e.vm("b.sock")

	f1 := frame(porttest.Broadcast, porttest.MAC(1), "hello from a")
	a.send(f1)
	porttest.WaitFor(t, "a's port", func() bool { return e.ports() == 1 })
	// b is not known yet, so the broadcast reached nobody; b announces
	// itself.
	f2 := frame(porttest.Broadcast, porttest.MAC(2), "hello from b")
	b.send(f2)
	a.expect(f2)
	a.send(f1)
	b.expect(f1)
	a.expectNothing() // no hairpin

	f3 := frame(porttest.MAC(2), porttest.MAC(1), "unicast a->b")
	a.send(f3)
	b.expect(f3)
	f4 := frame(porttest.MAC(1), porttest.MAC(2), strings.Repeat("unicast b->a ", 100))
	b.send(f4)
	a.expect(f4)

	if got := e.ports(); got != 2 {
		t.Fatalf("%d ports, want 2", got)
	}
	want := map[string]bool{a.c.LocalAddr().String(): true, b.c.LocalAddr().String(): true}
	for _, ps := range e.sw.Stats().Ports {
		if ps.Kind != "dgram" || !want[ps.Peer] || ps.Name != network+":"+ps.Peer {
			t.Errorf("port %q kind %q peer %q; want %s:<peer address>", ps.Name, ps.Kind, ps.Peer, network)
		}
	}
	if st := e.l.Stats(); st.Peers != 2 || st.PeersAdded != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnixgramExchange(t *testing.T) { testExchange(t, "unixgram") }
func TestUDPExchange(t *testing.T)      { testExchange(t, "udp") }

func TestVFKitMagicConsumed(t *testing.T) {
	for _, network := range []string{"unixgram", "udp"} {
		t.Run(network, func(t *testing.T) {
			e := setup(t, network, Config{})
			a, vf := e.vm("a.sock"), e.vm("vfkit.sock")
			a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
			porttest.WaitFor(t, "a's port", func() bool { return e.ports() == 1 })

			vf.send(MagicVFKit)
			porttest.WaitFor(t, "vfkit's port", func() bool { return e.ports() == 2 })
			a.expectNothing() // the magic is not forwarded

			// The magic alone registered vfkit: it gets a's broadcast.
			f := frame(porttest.Broadcast, porttest.MAC(1), "to everyone")
			a.send(f)
			vf.expect(f)
			if st := e.l.Stats(); st.Magic != 1 {
				t.Fatalf("magic %d, want 1", st.Magic)
			}
		})
	}
}

func TestIdleExpiry(t *testing.T) {
	// a speaks every 50 ms: a timeout well above that keeps a loaded
	// machine's pauses from making a look idle.
	e := setup(t, "udp", Config{IdleTimeout: 1500 * time.Millisecond})
	a, b := e.vm("a"), e.vm("b")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "two ports", func() bool { return e.ports() == 2 })
	has := func(v *vm) bool {
		for _, ps := range e.sw.Stats().Ports {
			if ps.Peer == v.c.LocalAddr().String() {
				return true
			}
		}
		return false
	}
	// Keep a alive; let b go quiet.
	deadline := time.Now().Add(10 * time.Second)
	for has(b) {
		if time.Now().After(deadline) {
			t.Fatal("idle peer not removed")
		}
		a.send(frame(porttest.Broadcast, porttest.MAC(1), "still here"))
		time.Sleep(50 * time.Millisecond)
	}
	if !has(a) {
		t.Fatal("busy peer removed")
	}
	if n := e.l.Stats().PeersExpired; n < 1 {
		t.Fatalf("expired %d, want >= 1", n)
	}
	for _, en := range e.sw.FDB() {
		if en.MAC == porttest.MAC(2) {
			t.Fatal("expired peer's MAC still in the FDB")
		}
	}
	// b comes back and is learned again.
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "back"))
	porttest.WaitFor(t, "b again", func() bool { return has(b) })
}

func TestPeerGone(t *testing.T) {
	for _, how := range []string{"closed", "removed"} {
		t.Run(how, func(t *testing.T) {
			e := setup(t, "unixgram", Config{})
			a, b := e.pair()

			// a's socket goes: closed with its file left (ECONNREFUSED)
			// or its file removed too (ENOENT).
			a.c.Close()
			if how == "removed" {
				os.Remove(a.c.LocalAddr().String())
			}
			b.send(frame(porttest.Broadcast, porttest.MAC(2), "anyone there?"))
			porttest.WaitFor(t, "a's removal", func() bool { return e.ports() == 1 })
			if st := e.l.Stats(); st.PeersGone != 1 {
				t.Fatalf("gone %d, want 1", st.PeersGone)
			}
		})
	}
}

func TestGarbageDropped(t *testing.T) {
	e := setup(t, "unixgram", Config{MaxFrame: 2000})
	a, b := e.pair()
	junk := e.vm("junk.sock")

	// From a stranger: short datagrams make no port.
	junk.send([]byte{})
	junk.send([]byte{1, 2, 3})
	junk.send(make([]byte, 13))
	// From a peer: a short one is counted by the switch on its port.
	a.send(make([]byte, 5))
	// Too long, from either.
	junk.send(make([]byte, 2001))
	a.send(make([]byte, 2500))
	// Still fine afterwards.
	f := frame(porttest.MAC(2), porttest.MAC(1), "after the junk")
	a.send(f)
	b.expect(f)
	a.expectNothing()
	b.expectNothing()

	st := e.l.Stats()
	if st.Invalid != 3 || st.TooLong != 2 || st.Peers != 2 {
		t.Fatalf("stats %+v; want invalid 3, too_long 2, peers 2", st)
	}
	var short uint64
	for _, ps := range e.sw.Stats().Ports {
		short += ps.Drops[vswitch.DropTooShort]
	}
	if short != 1 {
		t.Fatalf("switch counted %d too-short frames, want 1", short)
	}
}

func TestUnboundUnixgramDropped(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: e.l.Addr().Address, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(frame(porttest.Broadcast, porttest.MAC(1), "who am I")); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "unbound count", func() bool { return e.l.Stats().Unbound == 1 })
	if e.ports() != 0 {
		t.Fatal("an unbound sender got a port")
	}
}

// TestRelativePathDropped: a sender bound to a relative path cannot be
// answered (the path names a file in its working directory, not ours): its
// datagrams are dropped and counted, as an unbound sender's. It used to
// get a port, lose it at the first failed send, and get it back at its
// next frame.
func TestRelativePathDropped(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	t.Chdir(t.TempDir())
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "rel.sock", Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteTo(frame(porttest.Broadcast, porttest.MAC(1), "relative"), &net.UnixAddr{Name: e.l.Addr().Address, Net: "unixgram"}); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "unbound count", func() bool { return e.l.Stats().Unbound == 1 })
	if e.ports() != 0 {
		t.Fatal("a sender bound to a relative path got a port")
	}
}

// TestSilentUnixgramPeerKept: a unixgram peer that stays silent keeps its
// port (a send to it would fail if it had gone); only UDP peers expire.
func TestSilentUnixgramPeerKept(t *testing.T) {
	e := setup(t, "unixgram", Config{IdleTimeout: 100 * time.Millisecond})
	a, b := e.vm("a"), e.vm("b")
	a.send(MagicVFKit)
	porttest.WaitFor(t, "a's port", func() bool { return e.ports() == 1 })
	time.Sleep(time.Second)
	if e.ports() != 1 || e.l.Stats().PeersExpired != 0 {
		t.Fatalf("silent unixgram peer removed after 1 s (idle timeout 100 ms): %d ports", e.ports())
	}
	f := frame(porttest.Broadcast, porttest.MAC(2), "to the silent one")
	b.send(f)
	a.expect(f)
}

func TestSocketBuffers(t *testing.T) {
	for _, network := range []string{"unixgram", "udp"} {
		t.Run(network, func(t *testing.T) {
			e := setup(t, network, Config{})
			st := e.l.Stats()
			t.Logf("sndbuf %d rcvbuf %d", st.SendBuffer, st.RecvBuffer)
			if runtime.GOOS == "linux" && os.Geteuid() != 0 {
				t.Skip("needs root (CAP_NET_ADMIN) for SO_SNDBUFFORCE/SO_RCVBUFFORCE beyond net.core.*mem_max")
			}
			if st.SendBuffer < DefaultSendBuffer || st.RecvBuffer < DefaultRecvBuffer || st.RecvBuffer < 4*DefaultSendBuffer {
				t.Fatalf("buffers %d/%d, want >= %d/%d", st.SendBuffer, st.RecvBuffer, DefaultSendBuffer, DefaultRecvBuffer)
			}
			if runtime.GOOS == "linux" && (st.SendBuffer != 2*DefaultSendBuffer || st.RecvBuffer != 2*DefaultRecvBuffer) {
				t.Fatalf("buffers %d/%d; Linux should report twice %d/%d", st.SendBuffer, st.RecvBuffer, DefaultSendBuffer, DefaultRecvBuffer)
			}
		})
	}
}

// TestFullPeerDoesNotStallOthers attaches a unixgram peer that never
// reads: sends to it fail with EAGAIN once its queue is full, are retried
// briefly and dropped, and the other peers are not held up.
func TestFullPeerDoesNotStallOthers(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	a, b, stuck := e.vm("a.sock"), e.vm("b.sock"), e.vm("stuck.sock")
	stuck.send(frame(porttest.Broadcast, porttest.MAC(3), "I never read"))
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "three ports", func() bool { return e.ports() == 3 })
	a.expect(frame(porttest.Broadcast, porttest.MAC(2), "b"))

	start := time.Now()
	for i := range 500 {
		f := frame(porttest.Broadcast, porttest.MAC(1), strings.Repeat("x", 1000)+string(rune('a'+i%26)))
		a.send(f)
		b.expect(f)
	}
	t.Logf("500 frames through with a full peer in %v; stats %+v", time.Since(start), e.l.Stats())
	var stuckStats vswitch.PortStats
	for _, ps := range e.sw.Stats().Ports {
		if strings.HasSuffix(ps.Peer, "stuck.sock") {
			stuckStats = ps
		}
	}
	if stuckStats.Drops[vswitch.DropTxError] == 0 {
		t.Fatalf("full peer counted no tx drops: %+v", stuckStats)
	}
	if e.l.Stats().SendRetries == 0 {
		t.Fatal("no send was retried")
	}
}

// TestStuckPeersDoNotStarveOthers: peers that stop reading (a paused VM)
// no longer take the send buffer the other peers' frames go through. Sent
// from the listener's socket, the datagrams queued for 24 peers that never
// read (11 each, Linux's queue limit for an unconnected socket) filled its
// send buffer, and from then on sends to every peer failed.
func TestStuckPeersDoNotStarveOthers(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	a, b := e.vm("a.sock"), e.vm("b.sock")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	a.expect(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	// Sent to a, so that the stuck peers' queues are empty when the big
	// frames come (a reads what its queue took).
	for i := range 24 {
		e.vm(fmt.Sprintf("stuck%d.sock", i)).send(frame(porttest.MAC(1), porttest.MAC(10+i), "I never read"))
	}
	porttest.WaitFor(t, "26 ports", func() bool { return e.ports() == 26 })
	for _, err := a.recv(time.Second); err == nil; _, err = a.recv(200 * time.Millisecond) {
	}
	for i := range 300 {
		f := frame(porttest.Broadcast, porttest.MAC(1), strings.Repeat("x", 9000)+strconv.Itoa(i))
		a.send(f)
		b.expect(f)
	}
}

// TestConnectedPeer: a peer whose socket is connected to the listener's,
// as vfkit's and vz's are, takes datagrams from that socket only; the
// switch finds out at the first send and sends to it from there.
func TestConnectedPeer(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	laddr := &net.UnixAddr{Name: filepath.Join(e.dir, "vfkit.sock"), Net: "unixgram"}
	c, err := net.DialUnix("unixgram", laddr, &net.UnixAddr{Name: e.l.Addr().Address, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(MagicVFKit); err != nil {
		t.Fatal(err)
	}
	a := e.vm("a.sock")
	porttest.WaitFor(t, "the connected peer's port", func() bool { return e.ports() == 1 })
	for i := range 3 {
		f := frame(porttest.Broadcast, porttest.MAC(1), "to the connected peer "+strconv.Itoa(i))
		a.send(f)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 100)
		if n, err := c.Read(got); err != nil || !bytes.Equal(got[:n], f) {
			t.Fatalf("connected peer got %q, %v; want %q", got[:n], err, f)
		}
	}
	if st := e.l.Stats(); st.SendErrors != 0 {
		t.Errorf("%d send errors", st.SendErrors)
	}
}

func TestMaxPeers(t *testing.T) {
	e := setup(t, "udp", Config{MaxPeers: 2})
	vms := []*vm{e.vm("1"), e.vm("2"), e.vm("3")}
	for i, v := range vms {
		v.send(frame(porttest.Broadcast, porttest.MAC(i+1), "hi"))
	}
	porttest.WaitFor(t, "refusal", func() bool { return e.l.Stats().Refused == 1 })
	if e.ports() != 2 {
		t.Fatalf("%d ports, want 2", e.ports())
	}
}

// TestMaxPeersEvictsSilent: with MaxPeers reached, a new sender takes the
// place of the peer silent longest once that one has been silent for
// EvictAfter. Senders that sent once and went (a UDP source port each)
// used to keep every new VM out for the hour a UDP peer lives.
func TestMaxPeersEvictsSilent(t *testing.T) {
	e := setup(t, "udp", Config{MaxPeers: 2, EvictAfter: time.Second})
	a, b, c := e.vm("a"), e.vm("b"), e.vm("c")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "two peers", func() bool { return e.ports() == 2 })
	// Both spoke just now: c is refused.
	c.send(frame(porttest.Broadcast, porttest.MAC(3), "c"))
	porttest.WaitFor(t, "c refused", func() bool { return e.l.Stats().Refused == 1 })
	time.Sleep(1200 * time.Millisecond)
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b again"))
	porttest.WaitFor(t, "b's datagram", func() bool { return e.l.Stats().Datagrams == 4 })
	// a has been silent longest, and long enough: c takes its place.
	c.send(frame(porttest.Broadcast, porttest.MAC(3), "c again"))
	porttest.WaitFor(t, "c added", func() bool { return e.l.Stats().PeersAdded == 3 })
	b.expect(frame(porttest.Broadcast, porttest.MAC(3), "c again"))
	if st := e.l.Stats(); st.PeersEvicted != 1 || st.Peers != 2 || st.Refused != 1 {
		t.Errorf("evicted %d, peers %d, refused %d; want 1, 2, 1", st.PeersEvicted, st.Peers, st.Refused)
	}
	for _, p := range e.sw.Ports() {
		if p.Name() == "udp:"+a.c.LocalAddr().String() {
			t.Errorf("a's port %s is still there", p.Name())
		}
	}
}

// TestEvictsQuietest: of several peers silent long enough, the one
// silent longest is evicted, as the docs say; the others keep their ports.
func TestEvictsQuietest(t *testing.T) {
	e := setup(t, "udp", Config{MaxPeers: 3, EvictAfter: time.Second})
	vms := []*vm{e.vm("a"), e.vm("b"), e.vm("c")}
	// Spoken in the order b, a, c, 100 ms or more apart.
	for i, k := range []int{1, 0, 2} {
		vms[k].send(frame(porttest.Broadcast, porttest.MAC(1+k), "hello"))
		porttest.WaitFor(t, "the peer added", func() bool { return e.ports() == i+1 })
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(1100 * time.Millisecond) // all three silent for EvictAfter
	d := e.vm("d")
	d.send(frame(porttest.Broadcast, porttest.MAC(4), "d"))
	porttest.WaitFor(t, "d added", func() bool { return e.l.Stats().PeersAdded == 4 })
	names := map[string]bool{}
	for _, p := range e.sw.Ports() {
		names[p.Name()] = true
	}
	for i, want := range []bool{true, false, true, true} {
		v := append(vms, d)[i]
		if got := names["udp:"+v.c.LocalAddr().String()]; got != want {
			t.Errorf("peer %c has a port: %v, want %v (b, silent longest, evicted)", 'a'+i, got, want)
		}
	}
}

// TestRefusedSenderEvictsNone: a new sender that cannot be made a peer
// (its socket file gone) does not evict a silent one from a full
// listener; it evicted one, and each such datagram another.
func TestRefusedSenderEvictsNone(t *testing.T) {
	e := setup(t, "unixgram", Config{MaxPeers: 2, EvictAfter: 100 * time.Millisecond})
	a, b, gone := e.vm("a.sock"), e.vm("b.sock"), e.vm("gone.sock")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "two peers", func() bool { return e.ports() == 2 })
	time.Sleep(200 * time.Millisecond)
	os.Remove(gone.c.LocalAddr().String())
	gone.send(frame(porttest.Broadcast, porttest.MAC(3), "from nowhere"))
	porttest.WaitFor(t, "the datagram refused", func() bool { return e.l.Stats().Refused == 1 })
	if st := e.l.Stats(); st.PeersEvicted != 0 || st.Peers != 2 {
		t.Errorf("evicted %d, peers %d; want 0 and 2", st.PeersEvicted, st.Peers)
	}
}

// TestRestartSamePathSeamless: a VM of root or the switch's user that
// restarts with the same socket path is sent to at once, without a
// datagram of its own first: the port's socket, connected to the old
// socket, is connected to the new one. Since the connected sockets came
// in, such a VM lost every frame until it sent again.
func TestRestartSamePathSeamless(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	a, b := e.pair()

	path := a.c.LocalAddr().String()
	a.c.Close()
	os.Remove(path)
	a = e.vm("a.sock") // the same path, a new socket, silent
	for i := range 3 {
		fr := frame(porttest.MAC(1), porttest.MAC(2), fmt.Sprintf("unicast %d", i))
		b.send(fr)
		a.expect(fr)
	}
	if st := e.l.Stats(); st.PeersGone != 0 || e.ports() != 2 {
		t.Errorf("peers gone %d, ports %d; want the peer kept", st.PeersGone, e.ports())
	}
}

// TestSwitchRefusesPeer: a new sender the switch has no room for
// (vswitch.Config.MaxPorts) is dropped and counted as refused, as one over
// MaxPeers is; it used to be only logged.
func TestSwitchRefusesPeer(t *testing.T) {
	sw := vswitch.New(vswitch.Config{Logger: logger(), MaxPorts: 1})
	defer sw.Close()
	l, err := Listen(context.Background(), "udp://127.0.0.1:0", Config{Logger: logger()}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := &env{t: t, sw: sw, l: l}
	a, b := e.vm("a"), e.vm("b")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "hi"))
	porttest.WaitFor(t, "the first peer's port", func() bool { return e.ports() == 1 })
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "hi"))
	porttest.WaitFor(t, "the second sender refused", func() bool { return l.Stats().Refused == 1 })
	if st := l.Stats(); e.ports() != 1 || st.Peers != 1 {
		t.Errorf("%d ports, %d peers; want 1 of each", e.ports(), st.Peers)
	}
}

// TestFullSwitchEvictsSilent: when the switch (Config.MaxPorts) is full
// before the listener (MaxPeers), a new sender still takes the place of
// the peer silent longest. With another port on the switch (serve's
// responder or host interface), the listener never reached MaxPeers, and
// one-datagram UDP senders kept every new port out for an hour.
func TestFullSwitchEvictsSilent(t *testing.T) {
	sw := vswitch.New(vswitch.Config{Logger: logger(), MaxPorts: 3})
	defer sw.Close()
	if _, err := sw.AddPort(porttest.New(porttest.Config{Name: "other"}), vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	l, err := Listen(context.Background(), "udp://127.0.0.1:0", Config{Logger: logger(), EvictAfter: time.Second}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := &env{t: t, sw: sw, l: l}
	a, b, c := e.vm("a"), e.vm("b"), e.vm("c")
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "two peers", func() bool { return l.Stats().Peers == 2 })
	c.send(frame(porttest.Broadcast, porttest.MAC(3), "c")) // both spoke just now
	porttest.WaitFor(t, "c refused", func() bool { return l.Stats().Refused == 1 })
	time.Sleep(1200 * time.Millisecond)
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b again"))
	porttest.WaitFor(t, "b's datagram", func() bool { return l.Stats().Datagrams == 4 })
	c.send(frame(porttest.Broadcast, porttest.MAC(3), "c again"))
	porttest.WaitFor(t, "c added", func() bool { return l.Stats().PeersAdded == 3 })
	b.expect(frame(porttest.Broadcast, porttest.MAC(3), "c again"))
	if st := l.Stats(); st.PeersEvicted != 1 || st.Peers != 2 || st.Refused != 1 || len(sw.Ports()) != 3 {
		t.Errorf("evicted %d, peers %d, refused %d, switch ports %d; want 1, 2, 1, 3", st.PeersEvicted, st.Peers, st.Refused, len(sw.Ports()))
	}
}

// TestEvictionRoomNotTaken: when a new sender takes a silent peer's
// place on a full switch, a port added elsewhere at that moment (a stream
// client, a tap) cannot take the room between the two: the silent peer
// was evicted and the new sender then refused all the same.
func TestEvictionRoomNotTaken(t *testing.T) {
	for round := range 20 {
		sw := vswitch.New(vswitch.Config{Logger: logger(), MaxPorts: 2})
		if _, err := sw.AddPort(porttest.New(porttest.Config{Name: "other"}), vswitch.PortConfig{Kind: "mem", NoReader: true}); err != nil {
			t.Fatal(err)
		}
		l, err := Listen(context.Background(), "udp://127.0.0.1:0", Config{Logger: logger(), EvictAfter: 20 * time.Millisecond}, sw)
		if err != nil {
			t.Fatal(err)
		}
		e := &env{t: t, sw: sw, l: l}
		a, c := e.vm("a"), e.vm("c")
		a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
		porttest.WaitFor(t, "a's port", func() bool { return l.Stats().Peers == 1 })
		time.Sleep(40 * time.Millisecond) // a silent for EvictAfter

		stop := make(chan struct{})
		var grabbed atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			g := porttest.New(porttest.Config{Name: "grabber"})
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := sw.AddPort(g, vswitch.PortConfig{Kind: "mem", NoReader: true}); err == nil {
					grabbed.Store(true)
					return
				}
			}
		})
		c.send(frame(porttest.Broadcast, porttest.MAC(3), "c"))
		porttest.WaitFor(t, "c added or refused", func() bool { st := l.Stats(); return st.PeersAdded == 2 || st.Refused > 0 })
		close(stop)
		wg.Wait()
		st := l.Stats()
		l.Close()
		sw.Close()
		if st.PeersAdded != 2 || st.PeersEvicted != 1 || st.Refused != 0 || grabbed.Load() {
			t.Fatalf("round %d: peers added %d, evicted %d, refused %d, another port took the room: %v; want c in a's place",
				round, st.PeersAdded, st.PeersEvicted, st.Refused, grabbed.Load())
		}
	}
}

// onLog is a logrus hook that runs fn, once, inside the first entry
// whose message starts with msg.
type onLog struct {
	msg  string
	once sync.Once
	fn   func()
}

func (h *onLog) Levels() []logrus.Level { return logrus.AllLevels }

func (h *onLog) Fire(e *logrus.Entry) error {
	if strings.HasPrefix(e.Message, h.msg) {
		h.once.Do(h.fn)
	}
	return nil
}

// fullListener is a unixgram listener in dir on sw with room for one
// peer, taken by a new sender from one silent for 20 ms, that logs to
// hook only.
func fullListener(t *testing.T, sw *vswitch.Switch, dir string, hook logrus.Hook) *Listener {
	t.Helper()
	log := logrus.New()
	log.SetOutput(io.Discard)
	log.AddHook(hook)
	l, err := Listen(context.Background(), "unixgram://"+filepath.Join(dir, "sw.sock"), Config{Logger: log, MaxPeers: 1, EvictAfter: 20 * time.Millisecond}, sw)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSenderGoneWhileReplacing: a new sender whose socket goes away just
// as it takes an evicted peer's place (a flood to its new port finds it
// gone) is removed from the listener's table as well as from the switch,
// so that a VM starting again at its path is heard. A version of
// ReplacePort's use that let go of the listener's lock around it put the
// peer in the table after its port had gone: the path was deaf for good,
// and MaxPeers no longer held.
func TestSenderGoneWhileReplacing(t *testing.T) {
	sw := vswitch.New(vswitch.Config{Logger: logger()})
	defer sw.Close()
	other := porttest.New(porttest.Config{Name: "other"})
	if _, err := sw.AddPort(other, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	dir := porttest.SocketDir(t)
	var c atomic.Pointer[vm] // set before the read loop can log
	hook := &onLog{msg: "too many peers", fn: func() {
		// c's VM goes as it gets its port; a flood finds it gone.
		path := c.Load().c.LocalAddr().String()
		c.Load().c.Close()
		os.Remove(path)
		other.Send(frame(porttest.Broadcast, porttest.MAC(7), "flood"))
		time.Sleep(50 * time.Millisecond)
	}}
	l := fullListener(t, sw, dir, hook)
	defer l.Close()
	e := &env{t: t, sw: sw, l: l, dir: dir}
	a := e.vm("a.sock")
	c.Store(e.vm("c.sock"))
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	if _, ok := other.Recv(5 * time.Second); !ok {
		t.Fatal("a's frame not forwarded")
	}
	time.Sleep(50 * time.Millisecond) // a silent for EvictAfter
	c.Load().send(frame(porttest.Broadcast, porttest.MAC(3), "c"))
	porttest.WaitFor(t, "c's peer added", func() bool { return l.Stats().PeersAdded == 2 })

	again := e.vm("c.sock")
	fr := frame(porttest.Broadcast, porttest.MAC(3), "c again")
	again.send(fr)
	for {
		got, ok := other.Recv(5 * time.Second)
		if !ok {
			st := l.Stats()
			t.Fatalf("the VM at c's path again is not heard: peers %d, ports %d, added %d, gone %d, refused %d",
				st.Peers, len(sw.Ports()), st.PeersAdded, st.PeersGone, st.Refused)
		}
		if bytes.Equal(got, fr) {
			break
		}
	}
}

// TestPeerCountedOnce: a peer that is found gone (a send to it failed)
// while a new sender takes its place is counted as gone or as evicted,
// not as both: expired, evicted and gone add up to the peers that left.
func TestPeerCountedOnce(t *testing.T) {
	sw := vswitch.New(vswitch.Config{Logger: logger()})
	defer sw.Close()
	other := porttest.New(porttest.Config{Name: "other", Discard: true})
	if _, err := sw.AddPort(other, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	dir := porttest.SocketDir(t)
	var l atomic.Pointer[Listener]
	var c atomic.Pointer[vm]
	hook := &onLog{msg: "peer gone", fn: func() {
		// While the gone peer is being removed, a new sender evicts it.
		c.Load().send(frame(porttest.Broadcast, porttest.MAC(3), "c"))
		deadline := time.Now().Add(5 * time.Second)
		for l.Load().Stats().PeersAdded < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}}
	ln := fullListener(t, sw, dir, hook)
	defer ln.Close()
	l.Store(ln)
	e := &env{t: t, sw: sw, l: ln, dir: dir}
	a := e.vm("a.sock")
	c.Store(e.vm("c.sock"))
	a.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	porttest.WaitFor(t, "a's port", func() bool { return ln.Stats().Peers == 1 })
	time.Sleep(50 * time.Millisecond) // a silent for EvictAfter
	a.c.Close()
	os.Remove(filepath.Join(dir, "a.sock"))
	other.Send(frame(porttest.Broadcast, porttest.MAC(7), "flood")) // finds a gone
	porttest.WaitFor(t, "c added", func() bool { return ln.Stats().PeersAdded == 2 })
	porttest.WaitFor(t, "a's departure counted", func() bool {
		st := ln.Stats()
		return st.PeersGone+st.PeersEvicted > 0
	})
	time.Sleep(50 * time.Millisecond)
	if st := ln.Stats(); st.PeersExpired+st.PeersEvicted+st.PeersGone != st.PeersAdded-uint64(st.Peers) {
		t.Errorf("added %d, peers %d, expired %d, evicted %d, gone %d: a peer counted twice",
			st.PeersAdded, st.Peers, st.PeersExpired, st.PeersEvicted, st.PeersGone)
	}
}

func TestSocketFile(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "vz.sock")
	// A stale socket file from a previous run.
	old, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	old.Close()

	l, err := Listen(context.Background(), "unixgram://"+path, Config{}, sw)
	if err != nil {
		t.Fatalf("Listen over stale socket: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket %v, %v; want a socket with mode 0660", fi.Mode(), err)
	}
	if _, err := Listen(context.Background(), "unixgram://"+path, Config{}, sw); !errors.Is(err, listen.ErrInUse) {
		t.Fatalf("second Listen: %v, want ErrInUse", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestCloseRemovesPeersAndContext(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Listen(ctx, "udp://127.0.0.1:0", Config{}, sw)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := net.ListenPacket("udp", "127.0.0.1:0")
	defer c.Close()
	to, _ := net.ResolveUDPAddr("udp", l.Addr().Address)
	c.WriteTo(frame(porttest.Broadcast, porttest.MAC(1), "x"), to)
	porttest.WaitFor(t, "peer", func() bool { return len(sw.Ports()) == 1 })
	cancel()
	porttest.WaitFor(t, "peer removal on cancel", func() bool { return len(sw.Ports()) == 0 })
	l.Close()
}

func TestListenRejectsStream(t *testing.T) {
	if _, err := Listen(context.Background(), "tcp://127.0.0.1:0", Config{}, nil); err == nil {
		t.Fatal("Listen accepted a stream URL")
	}
}

func TestUDPIPv6Loopback(t *testing.T) {
	probe, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	probe.Close()
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	l, err := Listen(context.Background(), "udp://[::1]:0", Config{}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	to, _ := net.ResolveUDPAddr("udp", l.Addr().Address)
	var vms []*vm
	for range 2 {
		c, err := net.ListenPacket("udp6", "[::1]:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		vms = append(vms, &vm{t: t, c: c, to: to})
	}
	vms[0].send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	porttest.WaitFor(t, "first peer", func() bool { return len(sw.Ports()) == 1 })
	f := frame(porttest.Broadcast, porttest.MAC(2), "over IPv6")
	vms[1].send(f)
	vms[0].expect(f)
	if p := sw.Stats().Ports[0].Peer; !strings.HasPrefix(p, "[::1]:") {
		t.Fatalf("peer %q, want [::1]:port", p)
	}
}

// TestRestartedVMGetsItsAddress: with --lock-mac, a VM restarted with a new
// socket path and its old MAC gets its address back once its old peer's
// entry has aged out of the FDB: the refused frame is sent to the old peer,
// whose socket is gone, and that removes it. The address stayed reserved
// for the old peer, which nothing ever sent to again, so the VM was locked
// out for good.
func TestRestartedVMGetsItsAddress(t *testing.T) {
	dir := porttest.SocketDir(t)
	sw := vswitch.New(vswitch.Config{Logger: logger(), FDBAge: 200 * time.Millisecond})
	defer sw.Close()
	l, err := Listen(context.Background(), "unixgram://"+filepath.Join(dir, "sw.sock"),
		Config{Logger: logger(), Port: vswitch.PortConfig{LockMAC: true}}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := &env{t: t, sw: sw, l: l, dir: dir}
	old := e.vm("run1.sock")
	old.send(frame(porttest.Broadcast, porttest.MAC(1), "boot 1"))
	porttest.WaitFor(t, "the first run's peer", func() bool { return e.ports() == 1 })
	old.c.Close()
	os.Remove(filepath.Join(dir, "run1.sock"))
	porttest.WaitFor(t, "its address aged out", func() bool { return len(sw.FDB()) == 0 })

	restarted := e.vm("run2.sock")
	porttest.WaitFor(t, "the restarted VM bound to its address", func() bool {
		restarted.send(frame(porttest.Broadcast, porttest.MAC(1), "boot 2"))
		for _, ps := range sw.Stats().Ports {
			if ps.Peer == restarted.c.LocalAddr().String() && ps.LockedMAC != nil && *ps.LockedMAC == porttest.MAC(1) {
				return true
			}
		}
		return false
	})
	if st := l.Stats(); st.PeersGone != 1 || e.ports() != 1 {
		t.Errorf("%d peers gone, %d ports; want the first run's peer gone and one port", st.PeersGone, e.ports())
	}
	other := e.vm("other.sock")
	f := frame(porttest.MAC(1), porttest.MAC(2), "for the VM")
	other.send(f)
	restarted.expect(f)
}
