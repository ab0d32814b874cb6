//go:build !linux

package dgram

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reader is fromReader: there is no recvmmsg(2) outside Linux.
type reader = fromReader

func newReader(l *Listener) *reader { return newFromReader(l) }

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
