package dgram

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// rawReader returns a reader on a socket of its own, with no read loop, so
// that a test can queue datagrams before reading them.
func rawReader(t *testing.T, c net.PacketConn) *reader {
	t.Helper()
	return newReader(rawListener(t, c))
}

// rawListener returns a Listener on c with only what a reader needs.
func rawListener(t *testing.T, c net.PacketConn) *Listener {
	t.Helper()
	t.Cleanup(func() { c.Close() })
	// A datagram lost would leave a read waiting: fail instead.
	c.SetReadDeadline(time.Now().Add(time.Minute))
	l := &Listener{conn: c}
	switch c := c.(type) {
	case *net.UnixConn:
		l.ux = c
	case *net.UDPConn:
		l.udp = c
	}
	l.cfg.setDefaults()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	l.rc = rc
	return l
}

// TestReadBatch queues bursts of datagrams on a unixgram socket and checks
// that the reader returns them in order with their senders' paths, all
// from one read on Linux (recvmmsg). A burst is at most 8 datagrams: a
// unixgram socket queues net.unix.max_dgram_qlen (10 by default) before
// senders block.
func TestReadBatch(t *testing.T) {
	dir := porttest.SocketDir(t)
	path := filepath.Join(dir, "sw.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	r := rawReader(t, c)
	dial := func(name string) *net.UnixConn {
		t.Helper()
		var laddr *net.UnixAddr
		if name != "" {
			laddr = &net.UnixAddr{Name: name, Net: "unixgram"}
		}
		c, err := net.DialUnix("unixgram", laddr, &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b := dial(filepath.Join(dir, "a.sock")), dial(filepath.Join(dir, "b.sock"))
	unbound := dial("")
	// The peer's name: the path, "@name" for an abstract address, "" for
	// none.
	name := map[*net.UnixConn]string{a: a.LocalAddr().String(), b: b.LocalAddr().String(), unbound: ""}
	tests := []struct {
		name string
		from []*net.UnixConn
	}{
		{"one peer", []*net.UnixConn{a, a, a, a, a, a, a, a}},
		{"interleaved", []*net.UnixConn{a, b, a, b, b, a, a, b}},
		{"unbound", []*net.UnixConn{a, unbound, b}},
	}
	if runtime.GOOS == "linux" {
		n := fmt.Sprintf("@tapswitch-test-%d", time.Now().UnixNano())
		abstract := dial(n)
		name[abstract] = n
		tests = append(tests, struct {
			name string
			from []*net.UnixConn
		}{"abstract", []*net.UnixConn{abstract, a}})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, c := range tc.from {
				if _, err := c.Write([]byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			got, reads := 0, 0
			for got < len(tc.from) {
				n, err := r.read()
				if err != nil {
					t.Fatal(err)
				}
				reads++
				for i := range n {
					src := r.srcs[i]
					k := ""
					if len(src.path) > 0 {
						k = src.key().String()
					}
					if want := name[tc.from[got]]; k != want || src.ap.IsValid() {
						t.Errorf("datagram %d from %q (%+v), want %q", got, k, src, want)
					}
					if d := r.bufs[i][vswitch.Headroom:][:r.sizes[i]]; !bytes.Equal(d, []byte{byte(got)}) {
						t.Errorf("datagram %d is % x, want %02x", got, d, got)
					}
					got++
				}
			}
			if runtime.GOOS == "linux" && reads != 1 {
				t.Errorf("%d queued datagrams took %d reads, want 1", len(tc.from), reads)
			}
		})
	}
}

// TestReadUDPSource checks the UDP source addresses the reader reports, on
// an IPv4 socket and on a dual-stack IPv6 socket (which sees IPv4 senders
// at IPv4-mapped addresses, reported unmapped).
func TestReadUDPSource(t *testing.T) {
	for _, laddr := range []string{"127.0.0.1:0", "[::ffff:127.0.0.1]:0"} {
		t.Run(laddr, func(t *testing.T) {
			var c net.PacketConn
			var err error
			if laddr == "127.0.0.1:0" {
				c, err = net.ListenPacket("udp", laddr)
			} else {
				c, err = listenDualStackLoopback()
			}
			if err != nil {
				t.Skipf("no socket at %s: %v", laddr, err)
			}
			r := rawReader(t, c)
			port := c.LocalAddr().(*net.UDPAddr).Port
			s, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
			n, err := r.read()
			if err != nil || n != 1 {
				t.Fatalf("read %d, %v", n, err)
			}
			want := s.LocalAddr().(*net.UDPAddr).AddrPort()
			if got := r.srcs[0]; got.ap != want || got.scope != 0 || got.path != nil {
				t.Fatalf("source %+v, want %v", got, want)
			}
		})
	}
}

// listenDualStackLoopback returns a UDP socket of the IPv6 family bound to
// ::ffff:127.0.0.1, with IPV6_V6ONLY off: IPv4 senders on loopback reach
// it, and it is not open on the host's other interfaces, as one on [::]
// would be. (Go's listeners take no IPv4-mapped address for udp6.)
func listenDualStackLoopback() (net.PacketConn, error) {
	syscall.ForkLock.RLock()
	fd, err := syscall.Socket(syscall.AF_INET6, syscall.SOCK_DGRAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "udp6")
	defer f.Close()
	if err := syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0); err != nil {
		return nil, fmt.Errorf("IPV6_V6ONLY off: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet6{Addr: [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}}); err != nil {
		return nil, fmt.Errorf("bind: %w", err)
	}
	return net.FilePacketConn(f)
}

// TestBatchOrder sends bursts through a listener, from one peer and from
// two interleaved, to an in-memory port, and checks that the frames arrive
// in the order sent and that each was forwarded from its sender's port.
func TestBatchOrder(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	obs := porttest.New(porttest.Config{Name: "observer"})
	if _, err := e.sw.AddPort(obs, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	a, b := e.vm("a.sock"), e.vm("b.sock")
	// The observer announces its MAC first, so that the bursts go to it
	// alone rather than filling a's and b's socket queues.
	obsMAC := porttest.MAC(9)
	if err := obs.Send(frame(porttest.Broadcast, obsMAC, "observer")); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "observer's MAC", func() bool {
		for _, en := range e.sw.FDB() {
			if en.MAC == obsMAC {
				return true
			}
		}
		return false
	})
	mac := map[*vm]vswitch.MAC{a: porttest.MAC(1), b: porttest.MAC(2)}
	for _, tc := range []struct {
		name string
		from []*vm
	}{
		{"one peer", []*vm{a, a, a, a, a, a, a, a, a, a, a, a, a, a, a, a}},
		{"interleaved", []*vm{a, b, a, b, b, a, a, b, b, b, a, b, a, a, a, b}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var want [][]byte
			for i, v := range tc.from {
				f := frame(obsMAC, mac[v], fmt.Sprintf("%s %d", tc.name, i))
				want = append(want, f)
				v.send(f)
			}
			for i, w := range want {
				got, ok := obs.Recv(5 * time.Second)
				if !ok {
					t.Fatalf("frame %d not received", i)
				}
				if !bytes.Equal(got, w) {
					t.Fatalf("frame %d is %q, want %q", i, got[14:], w[14:])
				}
			}
		})
	}
	for v, m := range mac {
		port := "unixgram:" + v.c.LocalAddr().String()
		found := false
		for _, en := range e.sw.FDB() {
			if en.MAC == m {
				found = true
				if en.Port != port {
					t.Errorf("%v learned on %s, want %s", m, en.Port, port)
				}
			}
		}
		if !found {
			t.Errorf("%v not learned", m)
		}
	}
}

// TestNoAllocs checks that forwarding frames between two unixgram peers,
// read with recvmmsg (recvfrom outside Linux) and written directly
// (WriteFrameNow) or in batches (WriteFrames, sendmmsg), allocates nothing
// once the peers are known.
func TestNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race to count allocations")
	}
	e := setup(t, "unixgram", Config{})
	dial := func(name string) *net.UnixConn {
		t.Helper()
		c, err := net.DialUnix("unixgram", &net.UnixAddr{Name: filepath.Join(e.dir, name), Net: "unixgram"},
			&net.UnixAddr{Name: e.l.Addr().Address, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		// A frame lost would leave a read waiting: fail instead.
		c.SetReadDeadline(time.Now().Add(time.Minute))
		return c
	}
	a, b := dial("a.sock"), dial("b.sock")
	buf := make([]byte, 2048)
	write := func(c *net.UnixConn, f []byte) {
		if _, err := c.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	read := func(c *net.UnixConn, want []byte) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("got % x, want % x", buf[:n], want)
		}
	}
	write(a, frame(porttest.Broadcast, porttest.MAC(1), "a"))
	porttest.WaitFor(t, "a's port", func() bool { return e.ports() == 1 })
	hello := frame(porttest.Broadcast, porttest.MAC(2), "b")
	write(b, hello)
	read(a, hello)

	ab := frame(porttest.MAC(2), porttest.MAC(1), string(make([]byte, 1000)))
	ba := frame(porttest.MAC(1), porttest.MAC(2), string(make([]byte, 100)))
	const burst = 4 // within a unixgram socket's queue of 10
	allocs := testing.AllocsPerRun(500, func() {
		for range burst {
			write(a, ab)
		}
		for range burst {
			read(b, ab)
		}
		for range burst {
			write(b, ba)
		}
		for range burst {
			read(a, ba)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per %d frames forwarded, want 0", allocs, 2*burst)
	}

	// WriteFrames, as the switch's transmit goroutine calls it: nothing
	// else writes to b meanwhile.
	e.l.mu.Lock()
	pb := e.l.peers[peerKey{path: b.LocalAddr().String()}]
	e.l.mu.Unlock()
	bufs := make([][]byte, 8)
	for i := range bufs {
		bufs[i] = append(make([]byte, vswitch.Headroom), ab...)
	}
	allocs = testing.AllocsPerRun(500, func() {
		if n, err := pb.WriteFrames(bufs, vswitch.Headroom); n != len(bufs) || err != nil {
			t.Fatalf("WriteFrames: %d, %v", n, err)
		}
		for range bufs {
			read(b, ab)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per WriteFrames of %d frames, want 0", allocs, len(bufs))
	}
}
