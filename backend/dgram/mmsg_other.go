//go:build !linux

package dgram

import (
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// reader reads one datagram at a time: there is no recvmmsg(2) outside
// Linux. Only the read loop uses it.
type reader struct {
	l *Listener

	// The datagram of the last read is bufs[0][Headroom:][:sizes[0]],
	// from srcs[0].
	bufs  [][]byte
	sizes []int
	srcs  []source
}

func newReader(l *Listener) *reader {
	// One byte beyond MaxFrame tells a datagram that is too long from one
	// that just fits.
	return &reader{
		l:     l,
		bufs:  [][]byte{make([]byte, vswitch.Headroom+l.cfg.MaxFrame+1)},
		sizes: make([]int, 1),
		srcs:  make([]source, 1),
	}
}

// read waits for a datagram and returns 1. Closing the socket makes it
// return an error matching net.ErrClosed.
func (r *reader) read() (int, error) {
	b := r.bufs[0][vswitch.Headroom:]
	var (
		n   int
		src source
		err error
	)
	if r.l.udp != nil {
		var ap netip.AddrPort
		n, ap, err = r.l.udp.ReadFromUDPAddrPort(b)
		src.ap = netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
		src.scope = zoneIndex(ap.Addr().Zone())
	} else {
		var ua *net.UnixAddr
		n, ua, err = r.l.ux.ReadFromUnix(b)
		if ua != nil {
			src.path = []byte(ua.Name)
		}
	}
	if err != nil {
		return 0, err
	}
	r.sizes[0], r.srcs[0] = n, src
	return 1, nil
}

// zoneIndex returns the interface index of an IPv6 zone.
func zoneIndex(zone string) uint32 {
	if zone == "" {
		return 0
	}
	if ifi, err := net.InterfaceByName(zone); err == nil {
		return uint32(ifi.Index)
	}
	n, _ := strconv.ParseUint(zone, 10, 32)
	return uint32(n)
}

// sender sends one peer's datagrams with sendto(2), one per call, to the
// peer's sockaddr, built once. It uses RawConn.Control on the non-blocking
// socket rather than WriteTo: Go's WriteTo holds the socket's write lock
// while it waits for a full peer, which would stall every other peer
// sharing the socket.
type sender struct {
	rc   syscall.RawConn
	sa   unix.Sockaddr
	b    []byte           // call's argument
	err  error            // call's result
	call func(fd uintptr) // s.sendto, bound once: a method value made per send would allocate
}

// init builds the sockaddr of key. v6 tells that the socket is AF_INET6,
// so that an IPv4 peer is sent to at its IPv4-mapped address.
func (s *sender) init(rc syscall.RawConn, key peerKey, v6 bool, _ int) error {
	switch {
	case key.path != "":
		s.sa = &unix.SockaddrUnix{Name: key.path}
	case v6:
		s.sa = &unix.SockaddrInet6{Port: int(key.ap.Port()), Addr: key.ap.Addr().As16(), ZoneId: key.scope}
	default:
		s.sa = &unix.SockaddrInet4{Port: int(key.ap.Port()), Addr: key.ap.Addr().As4()}
	}
	s.rc, s.call = rc, s.sendto
	return nil
}

// send sends bufs[0][offset:] and returns 1, or its error.
func (s *sender) send(bufs [][]byte, offset int) (int, error) {
	s.b = bufs[0][offset:]
	err := s.rc.Control(s.call)
	s.b = nil
	if err == nil {
		err = s.err
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (s *sender) sendto(fd uintptr) { s.err = unix.Sendto(int(fd), s.b, 0, s.sa) }
