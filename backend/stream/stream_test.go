package stream

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/backend/listen"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// exchange checks that a and b (with MACs ma and mb) reach each other by
// broadcast and, once learned, by unicast.
func exchange(t *testing.T, a, b *client, ma, mb vswitch.MAC, tag string) {
	t.Helper()
	f1 := frame(porttest.Broadcast, ma, []byte(tag+" hello from a"))
	a.send(f1)
	b.expect(f1)
	f2 := frame(ma, mb, []byte(tag+" unicast b->a"))
	b.send(f2)
	a.expect(f2)
	f3 := frame(mb, ma, bytes.Repeat([]byte(tag+" unicast a->b "), 100))
	a.send(f3)
	b.expect(f3)
}

func TestUnixExchange(t *testing.T) {
	sw, l, path, _, _ := setupPair(t, "x")

	st := sw.Stats()
	if st.Forwarded < 2 || st.Flooded < 1 {
		t.Fatalf("forwarded %d flooded %d; want >= 2 and >= 1", st.Forwarded, st.Flooded)
	}
	pid := fmt.Sprintf("pid=%d uid=%d gid=%d", os.Getpid(), os.Getuid(), os.Getgid())
	for _, ps := range st.Ports {
		if !strings.HasPrefix(ps.Name, "unix:"+path+"#") {
			t.Errorf("port name %q, want unix:%s#N", ps.Name, path)
		}
		if ps.Peer != pid {
			t.Errorf("port peer %q, want %q", ps.Peer, pid)
		}
		if ps.Kind != "stream" {
			t.Errorf("port kind %q", ps.Kind)
		}
	}
	if got := len(l.Ports()); got != 2 {
		t.Fatalf("listener has %d ports, want 2", got)
	}
}

// Frames of every size, sent in one write, cross the switch whole and in
// order: the switch reads a stream port into one large buffer and small
// ones (vswitch.SizedReader). Each write is answered before the next, so
// that b's transmit queue (4 MiB) never fills.
func TestMixedSizesThroughSwitch(t *testing.T) {
	sw, _, _, a, b := setupPair(t, "x")
	lens := []int{60, 1536, 1537, 60, 9000, 65535, 100, 1514}
	seq := 0
	for round := range 30 {
		var wire []byte
		var sent [][]byte
		for k := range lens {
			// Rotated each round, so that every size meets every position in a batch.
			l := lens[(k+round)%len(lens)]
			payload := make([]byte, l-14)
			binary.BigEndian.PutUint32(payload, uint32(seq))
			seq++
			fr := frame(porttest.MAC(2), porttest.MAC(1), payload)
			sent = append(sent, fr)
			wire = binary.BigEndian.AppendUint32(wire, uint32(len(fr)))
			wire = append(wire, fr...)
		}
		go func() {
			a.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
			a.c.Write(wire)
		}()
		for i, want := range sent {
			got, err := b.recv(10 * time.Second)
			if err != nil {
				t.Fatalf("round %d, frame %d: %v", round, i, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("round %d, frame %d: got %d bytes (seq %d), want %d bytes", round, i, len(got), binary.BigEndian.Uint32(got[14:]), len(want))
			}
		}
	}
	for _, ps := range sw.Stats().Ports {
		if ps.Drops != (vswitch.DropCounts{}) {
			t.Errorf("port %s dropped: %+v", ps.Name, ps.Drops)
		}
	}
}

// TestListenIPv4WildcardOnly: a listener on 0.0.0.0 takes IPv4 only. Go
// listened on it with an IPv6 socket, so a switch bound to 0.0.0.0 to
// stay off IPv6 took IPv6 clients too. One on [::] takes both.
func TestListenIPv4WildcardOnly(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	port := func(url string) string {
		l, err := Listen(context.Background(), url, ListenerConfig{Logger: log}, sw)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		_, p, _ := net.SplitHostPort(l.Addr().Address)
		return p
	}
	dials := func(network, addr string) bool {
		c, err := net.DialTimeout(network, addr, 5*time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}
	both := port("tcp://[::]:0")
	if !dials("tcp6", "[::1]:"+both) {
		t.Skip("no IPv6 loopback here: nothing to tell")
	}
	if !dials("tcp4", "127.0.0.1:"+both) {
		t.Errorf("a listener on [::] refused IPv4")
	}
	v4 := port("tcp://0.0.0.0:0")
	if !dials("tcp4", "127.0.0.1:"+v4) {
		t.Errorf("a listener on 0.0.0.0 refused IPv4")
	}
	if dials("tcp6", "[::1]:"+v4) {
		t.Errorf("a listener on 0.0.0.0 took an IPv6 connection")
	}
}

func TestTCPExchange(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	l, err := Listen(context.Background(), "tcp://127.0.0.1:0", ListenerConfig{Logger: log}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Addr().Network != "tcp" || strings.HasSuffix(l.Addr().Address, ":0") {
		t.Fatalf("listener address %v has no real port", l.Addr())
	}
	a := dialClient(t, "tcp", l.Addr().Address)
	b := dialClient(t, "tcp", l.Addr().Address)
	porttest.WaitFor(t, "two ports", func() bool { return streamPorts(sw) == 2 })
	exchange(t, a, b, porttest.MAC(1), porttest.MAC(2), "tcp")
	for _, ps := range sw.Stats().Ports {
		if ps.Name != "tcp:"+ps.Peer || !strings.HasPrefix(ps.Peer, "127.0.0.1:") {
			t.Errorf("port %q peer %q, want tcp:127.0.0.1:N", ps.Name, ps.Peer)
		}
	}
}

func TestClientLeaveRemovesPortAndFDB(t *testing.T) {
	sw, l, _, a, _ := setupPair(t, "leave")
	if n := len(sw.FDB()); n != 2 {
		t.Fatalf("FDB has %d entries, want 2", n)
	}
	a.c.Close()
	porttest.WaitFor(t, "port removal", func() bool { return streamPorts(sw) == 1 })
	for _, e := range sw.FDB() {
		if e.MAC == porttest.MAC(1) {
			t.Fatalf("FDB still holds %v of the departed client", e.MAC)
		}
	}
	porttest.WaitFor(t, "listener forgets client", func() bool { return len(l.Ports()) == 1 })
}

// TestListenerForgetsDepartedClient: the listener lets go of a departed
// client's port, and with it the connection's buffers (~380 KiB), when
// the port goes; it used to keep it until the next accept.
func TestListenerForgetsDepartedClient(t *testing.T) {
	sw, l, _, a, _ := setupPair(t, "forget")
	a.c.Close()
	porttest.WaitFor(t, "port removal", func() bool { return streamPorts(sw) == 1 })
	porttest.WaitFor(t, "the listener to let go of the client", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.ports) == 1
	})
}

func TestMalformedClients(t *testing.T) {
	sw, _, path, a, b := setupPair(t, "before")

	hdr := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	random := make([]byte, 4096)
	rand.New(rand.NewSource(1)).Read(random)
	cases := []struct {
		name   string
		data   []byte
		hangup bool // the bad client closes its side after writing
	}{
		{"length 0", hdr(0), false},
		{"length 1", append(hdr(1), 0xaa), false},
		{"length 13", append(hdr(13), make([]byte, 13)...), false},
		{"length 0xFFFFFFFF", hdr(0xFFFFFFFF), false},
		{"length 200000", hdr(200000), false},
		{"good then length 0", append(append(hdr(14), frame(porttest.Broadcast, porttest.MAC(9), nil)...), hdr(0)...), false},
		{"truncated then hang-up", append(hdr(100), make([]byte, 50)...), true},
		{"truncated header then hang-up", []byte{0, 0}, true},
		{"random bytes then hang-up", random, true},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bad := dialClient(t, "unix", path)
			porttest.WaitFor(t, "bad client's port", func() bool { return streamPorts(sw) == 3 })
			if _, err := bad.c.Write(tc.data); err != nil {
				t.Fatal(err)
			}
			if tc.hangup {
				bad.c.(*net.UnixConn).CloseWrite()
			}
			// The switch cuts the bad client off...
			bad.expectHangup()
			porttest.WaitFor(t, "bad client's removal", func() bool { return streamPorts(sw) == 2 })
			// ...and the good ones carry on. The bad client may have
			// flooded a valid frame first ("good then length 0").
			for _, c := range []*client{a, b} {
				c.c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
				for {
					if _, err := c.recv(50 * time.Millisecond); err != nil {
						break
					}
				}
			}
			exchange(t, a, b, porttest.MAC(1), porttest.MAC(2), fmt.Sprintf("after %d", i))
		})
	}
	if n := len(sw.Stats().Departed); n != len(cases) {
		t.Fatalf("%d departed ports, want %d", n, len(cases))
	}
}

func TestBadLengthError(t *testing.T) {
	s1, s2 := socketpair(t)
	c := NewConn(s1, ConnConfig{Name: "pair"})
	defer c.Close()
	s2.Write([]byte{0, 0, 0, 13})
	bufs, sizes := buffers(1, 16+65535)
	_, err := c.ReadFrames(bufs, sizes, 16)
	if !errors.Is(err, ErrBadLength) || !strings.Contains(err.Error(), "length 13") {
		t.Fatalf("ReadFrames: %v, want ErrBadLength naming length 13", err)
	}
}

// TestWriteToClosedPeerQuiet: a write that finds the peer gone (EPIPE) is
// an ordinary hang-up, reported by the reader: it closes the connection
// without the warning every disconnect under traffic used to log.
func TestWriteToClosedPeerQuiet(t *testing.T) {
	log, h := testLogger(t)
	s1, s2 := socketpair(t)
	c := NewConn(s1, ConnConfig{Name: "pair", Logger: log})
	defer c.Close()
	s2.Close()
	bufs, _ := buffers(1, 16+100)
	bufs[0] = bufs[0][:16+len(frame(porttest.Broadcast, porttest.MAC(1), nil))]
	copy(bufs[0][16:], frame(porttest.Broadcast, porttest.MAC(1), nil))
	if _, err := c.WriteFrames(bufs, 16); !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("WriteFrames to a closed peer: %v, want EPIPE", err)
	}
	if _, err := c.WriteFrames(bufs, 16); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames after that: %v, want the connection closed", err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.entries {
		if e.Level <= logrus.WarnLevel {
			t.Errorf("logged %s %q (%v), want nothing above debug", e.Level, e.Message, e.Data)
		}
	}
}

func TestReadBatchNeverBlocksOnPartialFrame(t *testing.T) {
	s1, s2 := socketpair(t)
	c := NewConn(s1, ConnConfig{})
	defer c.Close()
	var wire []byte
	for i := range 3 {
		fr := frame(porttest.Broadcast, porttest.MAC(i), []byte{byte(i)})
		wire = binary.BigEndian.AppendUint32(wire, uint32(len(fr)))
		wire = append(wire, fr...)
	}
	// Three whole frames and the first half of a fourth.
	wire = append(wire, 0, 0, 0, 100, 1, 2, 3)
	s2.Write(wire)
	bufs, sizes := buffers(8, 16+65535)
	n, err := readWithin(c, bufs, sizes, 2*time.Second)
	if err != nil || n != 3 {
		t.Fatalf("ReadFrames = %d, %v; want 3 frames", n, err)
	}
	for i := range 3 {
		if sizes[i] != 15 || bufs[i][16+14] != byte(i) {
			t.Fatalf("frame %d: size %d payload %d", i, sizes[i], bufs[i][16+14])
		}
	}
	// The rest arrives; the fourth frame completes.
	s2.Write(make([]byte, 97))
	n, err = readWithin(c, bufs, sizes, 2*time.Second)
	if err != nil || n != 1 || sizes[0] != 100 {
		t.Fatalf("ReadFrames = %d, %v (size %d); want the 100-byte frame", n, err, sizes[0])
	}
	// A clean hang-up at a frame boundary is io.EOF.
	s2.Close()
	if _, err := c.ReadFrames(bufs, sizes, 16); !errors.Is(err, io.EOF) {
		t.Fatalf("after hang-up: %v, want io.EOF", err)
	}
}

// With one large buffer and small ones behind it (vswitch.SizedReader), a
// frame too long for the next buffer ends the batch and starts the next.
func TestReadBatchEndsAtLongFrame(t *testing.T) {
	s1, s2 := socketpair(t)
	c := NewConn(s1, ConnConfig{})
	defer c.Close()
	lens := []int{60, 1536, 1537, 60, 9000, 65535, 100}
	var wire []byte
	for i, l := range lens {
		fr := frame(porttest.Broadcast, porttest.MAC(i), make([]byte, l-14))
		wire = binary.BigEndian.AppendUint32(wire, uint32(len(fr)))
		wire = append(wire, fr...)
	}
	go s2.Write(wire)
	big, _ := buffers(1, 16+65535)
	small, sizes := buffers(4, 16+1536)
	bufs := append(big, small[1:]...)
	var got []int
	var batches [][]int
	for len(got) < len(lens) {
		n, err := readWithin(c, bufs, sizes, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		batches = append(batches, append([]int(nil), sizes[:n]...))
		for i := range n {
			if int(bufs[i][16+11]) != len(got) { // the source MAC's last byte
				t.Fatalf("frame %d came out of order: batches %v", len(got), batches)
			}
			got = append(got, sizes[i])
		}
	}
	if !slices.Equal(got, lens) {
		t.Fatalf("frame lengths %v, want %v", got, lens)
	}
	// The batch breaks before 1537, 9000 and 65535, and the rest that
	// fits is taken: {60, 1536} {1537, 60} {9000} {65535, 100}, or
	// shorter batches where the write had not all arrived.
	for _, b := range batches {
		for _, l := range b[1:] {
			if l > 1536 {
				t.Fatalf("a %d-byte frame in a small buffer: batches %v", l, batches)
			}
		}
	}
	if d := c.Stats().Discarded; d != 0 {
		t.Errorf("%d frames discarded", d)
	}
}

func TestCloseUnblocksAndLaterCallsFail(t *testing.T) {
	s1, _ := socketpair(t)
	c := NewConn(s1, ConnConfig{})
	bufs, sizes := buffers(1, 16+65535)
	errc := make(chan error, 1)
	go func() {
		_, err := c.ReadFrames(bufs, sizes, 16)
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("ReadFrames returned %v before Close, with nothing to read", err)
	case <-time.After(100 * time.Millisecond): // blocked, as it should be
	}
	c.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked ReadFrames after Close: %v", err)
	}
	if _, err := c.ReadFrames(bufs, sizes, 16); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrames after Close: %v", err)
	}
	if _, err := c.WriteFrames(bufs, 16); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames after Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSmallCallerBufferSkipsFrame(t *testing.T) {
	s1, s2 := socketpair(t)
	c := NewConn(s1, ConnConfig{})
	defer c.Close()
	big := frame(porttest.Broadcast, porttest.MAC(1), make([]byte, 3000))
	small := frame(porttest.Broadcast, porttest.MAC(2), []byte("ok"))
	var wire []byte
	for _, fr := range [][]byte{big, small} {
		wire = binary.BigEndian.AppendUint32(wire, uint32(len(fr)))
		wire = append(wire, fr...)
	}
	s2.Write(wire)
	bufs, sizes := buffers(4, 16+1500)
	n, err := readWithin(c, bufs, sizes, 2*time.Second)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][16:16+sizes[0]], small) {
		t.Fatalf("ReadFrames = %d, %v; want only the small frame", n, err)
	}
	if c.Stats().Discarded != 1 {
		t.Fatalf("discarded %d, want 1", c.Stats().Discarded)
	}
}

// TestWriteTimeoutKeepsFraming writes to a peer that reads slowly, in
// small pieces, with a short write timeout: WriteFrames must return
// (dropping frames) rather than block, writes must time out inside frames,
// and every frame the peer sees must still be whole and in order.
func TestWriteTimeoutKeepsFraming(t *testing.T) {
	s1, s2 := socketpair(t)
	c := NewConn(s1, ConnConfig{WriteTimeout: 3 * time.Millisecond})
	defer c.Close()

	// The slow peer: 700 bytes every millisecond, kept for parsing.
	wire := make(chan []byte)
	go func() {
		var all []byte
		buf := make([]byte, 700)
		for {
			n, err := s2.Read(buf)
			all = append(all, buf[:n]...)
			if err != nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		wire <- all
	}()

	const batches = 200
	bufs, _ := buffers(8, 16+3000)
	sent, timeouts, seq := 0, 0, 0
	for b := 0; b < batches || c.Stats().PartialWrites == 0 && b < 10*batches; b++ {
		for i := range bufs {
			fr := frame(porttest.Broadcast, porttest.MAC(1), make([]byte, 1000+seq%1500))
			binary.BigEndian.PutUint32(fr[14:], uint32(seq))
			seq++
			bufs[i] = bufs[i][:16+copy(bufs[i][16:cap(bufs[i])], fr)]
		}
		start := time.Now()
		w, err := c.WriteFrames(bufs, 16)
		if time.Since(start) > 2*time.Second {
			t.Fatal("WriteFrames blocked")
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("WriteFrames: %v", err)
			}
			timeouts++
		}
		sent += w
	}
	// A last write with time to spare flushes any held tail.
	fin := frame(porttest.Broadcast, porttest.MAC(1), make([]byte, 1000+seq%1500))
	binary.BigEndian.PutUint32(fin[14:], uint32(seq))
	bufs[0] = bufs[0][:16+copy(bufs[0][16:cap(bufs[0])], fin)]
	c.cfg.WriteTimeout = 10 * time.Second
	if w, err := c.WriteFrames(bufs[:1], 16); w != 1 || err != nil {
		t.Fatalf("final WriteFrames = %d, %v", w, err)
	}
	sent++
	c.Close()

	st := c.Stats()
	t.Logf("sent %d of %d frames; %d timeouts; stats %+v", sent, seq+1, timeouts, st)
	if timeouts == 0 || st.WriteTimeouts == 0 {
		t.Fatal("no write timed out")
	}
	if st.PartialWrites == 0 {
		t.Fatal("no write timed out inside a frame; the test did not exercise the held tail")
	}
	all := <-wire
	got, last := 0, -1
	for len(all) > 0 {
		if len(all) < 4 {
			t.Fatalf("%d stray bytes at the end of the stream", len(all))
		}
		n := int(binary.BigEndian.Uint32(all))
		if n < 14 || 4+n > len(all) {
			t.Fatalf("after %d frames: length %d with %d bytes left: torn stream", got, n, len(all)-4)
		}
		fr := all[4 : 4+n]
		s := int(binary.BigEndian.Uint32(fr[14:]))
		if s <= last || n != 14+1000+s%1500 {
			t.Fatalf("frame seq %d (len %d) after %d: torn or reordered stream", s, n, last)
		}
		last = s
		got++
		all = all[4+n:]
	}
	if got != sent {
		t.Fatalf("peer read %d whole frames, WriteFrames reported %d", got, sent)
	}
}

// TestSlowClientDoesNotBlockOthers attaches a client that never reads: the
// others keep exchanging frames at full rate and the stuck port counts
// drops. (The write timeout applies to every client: at 20 ms, a loaded
// machine that descheduled b's writer for longer made b lose a batch.)
func TestSlowClientDoesNotBlockOthers(t *testing.T) {
	const writeTimeout = 500 * time.Millisecond
	sw, _, path := setup(t, ListenerConfig{Conn: ConnConfig{WriteTimeout: writeTimeout}})
	a := dialClient(t, "unix", path)
	b := dialClient(t, "unix", path)
	stuck := dialClient(t, "unix", path)
	porttest.WaitFor(t, "three ports", func() bool { return streamPorts(sw) == 3 })
	stuck.send(frame(porttest.Broadcast, porttest.MAC(3), []byte("I never read")))
	a.expect(frame(porttest.Broadcast, porttest.MAC(3), []byte("I never read")))
	b.expect(frame(porttest.Broadcast, porttest.MAC(3), []byte("I never read")))

	const total, window = 3000, 64
	payload := make([]byte, 1400)
	start := time.Now()
	for i := 0; i < total; i += window {
		for j := i; j < i+window; j++ {
			binary.BigEndian.PutUint32(payload, uint32(j))
			a.send(frame(porttest.Broadcast, porttest.MAC(1), payload))
		}
		for j := i; j < i+window; j++ {
			fr, err := b.recv(5 * time.Second)
			if err != nil {
				t.Fatalf("b after %d frames: %v", j, err)
			}
			if got := binary.BigEndian.Uint32(fr[14:]); got != uint32(j) {
				t.Fatalf("b got frame %d, want %d; ports: %+v", got, j, sw.Stats().Ports)
			}
		}
	}
	elapsed := time.Since(start)
	t.Logf("%d broadcast frames through with a stuck client in %v", total, elapsed)
	// Full rate, checked loosely: had the stuck client held a and b up
	// until its writes timed out, every window would have taken a write
	// timeout, 23 s in all. They take well under a second, under -race on
	// a loaded 2-core machine too.
	stalled := time.Duration((total+window-1)/window) * writeTimeout
	if limit := stalled * 2 / 5; elapsed > limit {
		t.Fatalf("%d frames took %v, over %v (a write timeout per window is %v): the stuck client held the others up",
			total, elapsed.Round(time.Millisecond), limit, stalled)
	}
	var stuckStats vswitch.PortStats
	for _, ps := range sw.Stats().Ports {
		if strings.HasSuffix(ps.Name, "#3") {
			stuckStats = ps
		}
	}
	drops := stuckStats.Drops[vswitch.DropTxError] + stuckStats.Drops[vswitch.DropQueueFull]
	if drops == 0 {
		t.Fatalf("stuck port counted no drops: %+v", stuckStats)
	}
	t.Logf("stuck port: tx %d, drops %d", stuckStats.TxFrames, drops)
}

func TestSocketFileLifecycle(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "life.sock")

	// Stale socket from a previous run.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()

	l, err := Listen(context.Background(), "unix://"+path, ListenerConfig{Logger: log}, sw)
	if err != nil {
		t.Fatalf("Listen over stale socket: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil || fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket file %v, %v; want a socket with mode 0660", fi.Mode(), err)
	}

	// A second listener on the same path is refused: this one is live.
	if _, err := Listen(context.Background(), "unix://"+path, ListenerConfig{Logger: log}, sw); !errors.Is(err, listen.ErrInUse) {
		t.Fatalf("second Listen: %v, want listen.ErrInUse", err)
	}
	c := dialClient(t, "unix", path)
	porttest.WaitFor(t, "client port", func() bool { return streamPorts(sw) == 1 })

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file after Close: %v", err)
	}
	c.expectHangup()
	porttest.WaitFor(t, "client port removal", func() bool { return streamPorts(sw) == 0 })

	// A regular file is never removed.
	os.WriteFile(path, []byte("x"), 0o600)
	if _, err := Listen(context.Background(), "unix://"+path, ListenerConfig{Logger: log}, sw); !errors.Is(err, listen.ErrNotSocket) {
		t.Fatalf("Listen over a regular file: %v, want listen.ErrNotSocket", err)
	}
}

func TestListenContextCancel(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "ctx.sock")
	ctx, cancel := context.WithCancel(context.Background())
	l, err := Listen(ctx, "unix://"+path, ListenerConfig{Logger: log}, sw)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	porttest.WaitFor(t, "socket removal", func() bool { _, err := os.Lstat(path); return os.IsNotExist(err) })
	l.Close()
}

// TestListenerCountsClients: clients the listener accepted and those it
// disconnected at once are counted (a refused stream client used to leave
// only a rate-limited log line, where a refused datagram sender is
// counted).
func TestListenerCountsClients(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log, MaxPorts: 1})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "count.sock")
	l, err := Listen(context.Background(), "unix://"+path, ListenerConfig{Logger: log}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for range 3 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	want := ListenerStats{Accepted: 1, Refused: 2}
	porttest.WaitFor(t, "one client accepted, two refused", func() bool { return l.Stats() == want })
}

func TestListenRejectsDgram(t *testing.T) {
	if _, err := Listen(context.Background(), "udp://127.0.0.1:0", ListenerConfig{}, nil); err == nil {
		t.Fatal("Listen accepted a datagram URL")
	}
}

// TestAcceptRetriesOnEMFILE exhausts the file descriptor limit so that
// Accept fails with EMFILE, then frees descriptors: the listener must
// still be there and accept the waiting client.
func TestAcceptRetriesOnEMFILE(t *testing.T) {
	log, h := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "emfile.sock")
	l, err := Listen(context.Background(), "unix://"+path, ListenerConfig{Logger: log}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Skipf("getrlimit: %v", err)
	}
	open := countFDs(t)
	small := lim
	small.Cur = uint64(open + 16)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &small); err != nil {
		t.Skipf("setrlimit: %v", err)
	}
	var fill []*os.File
	restore := func() {
		for _, f := range fill {
			f.Close()
		}
		fill = nil
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	defer restore()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		fill = append(fill, f)
	}
	// One descriptor for the client's socket; none left for Accept.
	fill[len(fill)-1].Close()
	fill = fill[:len(fill)-1]
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial with one descriptor free: %v", err)
	}
	defer c.Close()
	porttest.WaitFor(t, "accept failure", func() bool { return h.count("accept failed; retrying") > 0 })
	if streamPorts(sw) != 0 {
		t.Fatal("client attached although no descriptor was free")
	}
	restore()
	porttest.WaitFor(t, "client attached after descriptors freed", func() bool { return streamPorts(sw) == 1 })
}

// TestConnectCycles connects and disconnects 500 clients and checks that
// neither descriptors nor goroutines leak.
func TestConnectCycles(t *testing.T) {
	sw, _, path := setup(t, ListenerConfig{})
	peer := dialClient(t, "unix", path)
	porttest.WaitFor(t, "peer port", func() bool { return streamPorts(sw) == 1 })
	before := countFDs(t)
	for i := range 500 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("cycle %d: %v", i, err)
		}
		fr := frame(porttest.Broadcast, porttest.MAC(100+i), []byte("cycle"))
		c.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(fr))), fr...))
		if i%2 == 0 {
			// Half the clients also wait for their frame to go through
			// (frames of other clients may come first).
			for {
				got, err := peer.recv(5 * time.Second)
				if err != nil {
					t.Fatalf("cycle %d: %v", i, err)
				}
				if bytes.Equal(got, fr) {
					break
				}
			}
		}
		c.Close()
	}
	porttest.WaitFor(t, "all cycle ports gone", func() bool { return streamPorts(sw) == 1 })
	porttest.WaitFor(t, "descriptors released", func() bool { return countFDs(t) <= before })
	if d := len(sw.Stats().Departed); d == 0 {
		t.Fatal("no departed ports recorded")
	}
}

// TestDialReconnects runs a Go stand-in for QEMU's `-netdev
// stream,server=on`: Dial must connect, and connect again after the server
// goes away and comes back.
func TestDialReconnects(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	mem := porttest.New(porttest.Config{Name: "mem"})
	if _, err := sw.AddPort(mem, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(porttest.SocketDir(t), "qemu.sock")
	serve := func() (*net.UnixListener, *client) {
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		ln.SetDeadline(time.Now().Add(10 * time.Second))
		c, err := ln.Accept()
		if err != nil {
			t.Fatalf("server accept: %v", err)
		}
		return ln, &client{t: t, c: c, r: bufioReader(c)}
	}

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	var st DialStatus
	go func() {
		errc <- Dial(ctx, "unix://"+path, DialConfig{Logger: log, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Status: &st}, sw)
	}()

	for round := range 3 {
		// Nothing listens: the attempts fail, and the status says why.
		porttest.WaitFor(t, "failed attempts reported", func() bool { return st.Get().Failures >= 2 })
		if i := st.Get(); i.Connected || !strings.Contains(i.LastError, "no such file") || i.Since.IsZero() {
			t.Fatalf("round %d: status %+v while nothing listens, want not connected, with the error", round, i)
		}
		ln, srv := serve()
		porttest.WaitFor(t, "dialled port", func() bool { return streamPorts(sw) == 1 })
		porttest.WaitFor(t, "connected reported", func() bool { return st.Get().Connected })
		if i := st.Get(); i.Failures != 0 || i.LastError != "" {
			t.Fatalf("round %d: status %+v once connected, want no failures", round, i)
		}
		fr := frame(porttest.Broadcast, porttest.MAC(1), []byte(fmt.Sprintf("round %d", round)))
		srv.send(fr)
		got, ok := mem.Recv(5 * time.Second)
		if !ok || !bytes.Equal(got, fr) {
			t.Fatalf("round %d: mem port got %x, %v", round, got, ok)
		}
		back := frame(porttest.MAC(1), porttest.MAC(2), []byte("back"))
		if err := mem.Send(back); err != nil {
			t.Fatal(err)
		}
		srv.expect(back)
		// The server goes away.
		ln.Close()
		srv.c.Close()
		porttest.WaitFor(t, "port removal", func() bool { return streamPorts(sw) == 0 })
		porttest.WaitFor(t, "disconnected reported", func() bool { return !st.Get().Connected })
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Dial returned %v after cancel, want nil", err)
	}
}

// TestDialStopsWhenDetached: a dialled port removed by Attachment.Close
// (tapswitch ctl detach) is not dialled again, and Dial returns nil.
func TestDialStopsWhenDetached(t *testing.T) {
	log, _ := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "qemu.sock")
	conns := porttest.StreamServer(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Dial(ctx, "unix://"+path, DialConfig{Logger: log, MinBackoff: 10 * time.Millisecond}, sw)
	}()
	c := <-conns
	defer c.Close()
	porttest.WaitFor(t, "dialled port", func() bool { return streamPorts(sw) == 1 })
	for _, a := range sw.Ports() {
		if a.Stats().Kind == PortKind {
			a.Close()
		}
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("Dial returned %v after its port was detached, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Dial still running after its port was detached")
	}
	select {
	case c2 := <-conns:
		c2.Close()
		t.Error("a detached port was dialled again")
	case <-time.After(100 * time.Millisecond): // 10 times MinBackoff
	}
}

// A switch at --max-ports refuses the dialled connection; Dial keeps
// trying (the other ports are unaffected) and attaches once there is room.
func TestDialWaitsForRoom(t *testing.T) {
	log, hooks := testLogger(t)
	sw := vswitch.New(vswitch.Config{Logger: log, MaxPorts: 1})
	defer sw.Close()
	mem := porttest.New(porttest.Config{Name: "mem"})
	ma, err := sw.AddPort(mem, vswitch.PortConfig{Kind: "mem"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(porttest.SocketDir(t), "qemu.sock")
	conns := porttest.StreamServer(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		errc <- Dial(ctx, "unix://"+path, DialConfig{Logger: log, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}, sw)
	}()
	// Three attempts refused, each connection closed by the switch.
	for i := range 3 {
		select {
		case c := <-conns:
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 1)); err != io.EOF {
				t.Fatalf("attempt %d: read on a refused connection = %v, want EOF", i, err)
			}
			c.Close()
		case err := <-errc:
			t.Fatalf("Dial returned %v while the switch was full, want it to keep trying", err)
		case <-time.After(10 * time.Second):
			t.Fatalf("attempt %d not made", i)
		}
	}
	if n := streamPorts(sw); n != 0 {
		t.Fatalf("%d stream ports on a full switch", n)
	}
	if hooks.count("switch refused the connection; retrying") == 0 {
		t.Error("the refusals were not logged as such")
	}
	ma.Close()
	porttest.WaitFor(t, "dialled port once there was room", func() bool { return streamPorts(sw) == 1 })
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Dial = %v after cancel, want nil", err)
	}
}

func TestDialStopsWhenSwitchCloses(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	path := filepath.Join(porttest.SocketDir(t), "q.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sw.Close()
	err = Dial(context.Background(), "unix://"+path, DialConfig{}, sw)
	if !errors.Is(err, vswitch.ErrClosed) {
		t.Fatalf("Dial on closed switch: %v", err)
	}
}

// helpers

func socketpair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := socketpairB(t)
	// Small buffers make a non-reading peer fill up quickly.
	a.(*net.UnixConn).SetWriteBuffer(16 << 10)
	b.(*net.UnixConn).SetReadBuffer(16 << 10)
	return a, b
}

func socketpairB(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), fmt.Sprintf("pair%d", i))
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

func buffers(n, size int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, size)
	}
	return bufs, make([]int, n)
}

func readWithin(c *Conn, bufs [][]byte, sizes []int, d time.Duration) (int, error) {
	c.c.SetReadDeadline(time.Now().Add(d))
	defer c.c.SetReadDeadline(time.Time{})
	return c.ReadFrames(bufs, sizes, 16)
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count descriptors: %v", err)
	}
	return len(ents)
}

// TestRefusedClientsLogRateLimited: a user outside --allow-uid that
// connects again and again is refused each time, with a log line now and
// then; it used to get one line per attempt (4 MB in 0.7 s).
func TestRefusedClientsLogRateLimited(t *testing.T) {
	log, h := testLogger(t)
	sw, _, path := setup(t, ListenerConfig{Logger: log, AllowUIDs: []int{os.Getuid() + 4242}})
	const msg = "client refused: not in --allow-uid / --allow-gid"
	for range 50 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		// The listener closes a refused connection.
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("refused client read: %v, want EOF", err)
		}
		c.Close()
	}
	if n := h.count(msg); n != 1 {
		t.Errorf("%d log lines for 50 refused clients, want 1 (rate-limited)", n)
	}
	if n := len(sw.Ports()); n != 0 {
		t.Errorf("%d ports, want none", n)
	}
}

// TestBackendCountersInPortStats: a connection's own counters (here, write
// timeouts to a client that never reads) show in the switch's port
// statistics, so ctl ports --json and /metrics have them; they were kept
// by the connection only.
func TestBackendCountersInPortStats(t *testing.T) {
	sw, _, path := setup(t, ListenerConfig{Conn: ConnConfig{WriteTimeout: 10 * time.Millisecond}})
	a := dialClient(t, "unix", path)
	dialClient(t, "unix", path) // never reads
	porttest.WaitFor(t, "two ports", func() bool { return streamPorts(sw) == 2 })
	payload := make([]byte, 1400)
	porttest.WaitFor(t, "a write timeout counted on the stuck port", func() bool {
		for range 64 {
			a.send(frame(porttest.Broadcast, porttest.MAC(1), payload))
		}
		for _, ps := range sw.Stats().Ports {
			if strings.HasSuffix(ps.Name, "#2") && ps.Backend["write_timeouts"] > 0 {
				return true
			}
		}
		return false
	})
}

// TestMaxClients: a listener takes MaxClients clients at once; one more is
// disconnected at accept and counted as refused, and a client that leaves
// makes room again. Clients were unbounded, and so the memory of their
// ports' queues.
func TestMaxClients(t *testing.T) {
	sw, l, path := setup(t, ListenerConfig{MaxClients: 2})
	a := dialClient(t, "unix", path)
	dialClient(t, "unix", path)
	porttest.WaitFor(t, "two ports", func() bool { return streamPorts(sw) == 2 })
	c := dialClient(t, "unix", path)
	porttest.WaitFor(t, "the third refused", func() bool { return l.Stats().Refused == 1 })
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the refused client's read: %v, want EOF (disconnected)", err)
	}
	a.c.Close()
	porttest.WaitFor(t, "a's port gone", func() bool { return streamPorts(sw) == 1 })
	dialClient(t, "unix", path)
	porttest.WaitFor(t, "a new client accepted", func() bool { return streamPorts(sw) == 2 })
	if st := l.Stats(); st.Accepted != 3 || st.Refused != 1 {
		t.Errorf("accepted %d, refused %d; want 3 and 1", st.Accepted, st.Refused)
	}
}
