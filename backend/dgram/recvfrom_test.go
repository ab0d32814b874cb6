//go:build unix

package dgram

import (
	"bytes"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestFromReader runs the recvfrom reader (macOS's; Linux reads with
// recvmmsg) on this system: a burst queued on a unixgram socket comes out
// of one read, in order, with each sender's path (none for an unbound
// one), and a datagram longer than MaxFrame comes out one byte longer, for
// the listener to drop.
func TestFromReader(t *testing.T) {
	dir := porttest.SocketDir(t)
	path := filepath.Join(dir, "sw.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l := rawListener(t, c)
	l.cfg.MaxFrame = 1514
	r := newFromReader(l)
	dial := func(name string) *net.UnixConn {
		t.Helper()
		var laddr *net.UnixAddr
		if name != "" {
			laddr = &net.UnixAddr{Name: filepath.Join(dir, name), Net: "unixgram"}
		}
		c, err := net.DialUnix("unixgram", laddr, &net.UnixAddr{Name: path, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	a, b, unbound := dial("a.sock"), dial("b.sock"), dial("")
	from := []*net.UnixConn{a, b, unbound, a, b, a}
	for i, c := range from {
		if _, err := c.Write(bytes.Repeat([]byte{byte(i)}, 60+i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.Write(make([]byte, 2000)); err != nil {
		t.Fatal(err)
	}
	n, err := r.read()
	if err != nil || n != len(from)+1 {
		t.Fatalf("read = %d, %v; want the %d queued datagrams at once", n, err, len(from)+1)
	}
	for i, c := range from {
		want := ""
		if c != unbound {
			want = c.LocalAddr().String()
		}
		if got := string(r.srcs[i].path); got != want || r.srcs[i].ap.IsValid() {
			t.Errorf("datagram %d from %q, want %q", i, got, want)
		}
		if d := r.bufs[i][vswitch.Headroom:][:r.sizes[i]]; !bytes.Equal(d, bytes.Repeat([]byte{byte(i)}, 60+i)) {
			t.Errorf("datagram %d is %d bytes of %x..., want %d of %02x", i, len(d), d[:1], 60+i, i)
		}
	}
	if got := r.sizes[len(from)]; got != l.cfg.MaxFrame+1 {
		t.Errorf("a 2000-byte datagram read as %d bytes, want MaxFrame+1 = %d", got, l.cfg.MaxFrame+1)
	}
}

// TestFromReaderUDP: UDP senders' addresses and ports, IPv4 on an IPv4
// socket and IPv6 on an IPv6 one.
func TestFromReaderUDP(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			loop := "127.0.0.1:0"
			if network == "udp6" {
				loop = "[::1]:0"
			}
			c, err := net.ListenPacket(network, loop)
			if err != nil {
				t.Skipf("no %s loopback here: %v", network, err)
			}
			r := newFromReader(rawListener(t, c))
			s, err := net.Dial(network, c.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			for range 3 {
				if _, err := s.Write(make([]byte, 64)); err != nil {
					t.Fatal(err)
				}
			}
			got := 0
			for got < 3 {
				n, err := r.read()
				if err != nil {
					t.Fatal(err)
				}
				for i := range n {
					want := netip.MustParseAddrPort(s.LocalAddr().String())
					if r.srcs[i].ap != want || r.sizes[i] != 64 {
						t.Errorf("datagram from %v, %d bytes; want %v, 64", r.srcs[i].ap, r.sizes[i], want)
					}
				}
				got += n
			}
		})
	}
}

// TestFromReaderNoAllocs: reading a burst allocates nothing.
func TestFromReaderNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates; run without -race to count allocations")
	}
	dir := porttest.SocketDir(t)
	path := filepath.Join(dir, "sw.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	r := newFromReader(rawListener(t, c))
	s, err := net.DialUnix("unixgram", &net.UnixAddr{Name: filepath.Join(dir, "a.sock"), Net: "unixgram"},
		&net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f := make([]byte, 100)
	allocs := testing.AllocsPerRun(200, func() {
		for range 4 {
			if _, err := s.Write(f); err != nil {
				t.Fatal(err)
			}
		}
		for got := 0; got < 4; {
			n, err := r.read()
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per 4 datagrams read, want 0", allocs)
	}
}

// TestUnixSource: the sender's path from the sockaddr as each system gives
// it.
func TestUnixSource(t *testing.T) {
	off := int(unsafe.Offsetof(unix.RawSockaddrUnix{}.Path))
	mk := func(name string) *unix.RawSockaddrUnix {
		var su unix.RawSockaddrUnix
		for i := range len(name) {
			su.Path[i] = int8(name[i])
		}
		return &su
	}
	for _, tc := range []struct {
		what     string
		su       *unix.RawSockaddrUnix
		n        int
		abstract bool
		want     string
	}{
		{"Linux, unbound: the family only", mk(""), off, true, ""},
		{"macOS, unbound: a zeroed 16-byte sockaddr", mk(""), 16, false, ""},
		{"a path", mk("/run/vm.sock"), off + len("/run/vm.sock") + 1, true, "/run/vm.sock"},
		{"a path, the length counting NULs after it", mk("/run/vm.sock"), off + 40, false, "/run/vm.sock"},
		{"Linux, abstract", mk("\x00vm\x00x"), off + 5, true, "\x00vm\x00x"},
		{"a length beyond the sockaddr", mk("/x"), 4096, false, "/x"},
		{"a length shorter than the family", mk("/x"), 0, true, ""},
	} {
		if got := string(unixSource(tc.su, tc.n, tc.abstract).path); got != tc.want {
			t.Errorf("%s: path %q, want %q", tc.what, got, tc.want)
		}
	}
}
