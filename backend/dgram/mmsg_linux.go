package dgram

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// reader reads batches of up to Config.BatchSize datagrams with
// recvmmsg(2). Each slot has its own buffer of Headroom+MaxFrame+1 bytes
// (2 MiB in all with the defaults; there is one reader per listener) and
// its own sockaddr. Only the read loop uses it.
type reader struct {
	rc syscall.RawConn
	ux bool // AF_UNIX socket: sources are paths

	// Datagram i of the last read is bufs[i][Headroom:][:sizes[i]], from
	// srcs[i].
	bufs  [][]byte
	sizes []int
	srcs  []source

	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrAny
	ctrl  []byte // per slot credsSpace bytes: the sender's SCM_CREDENTIALS (unixgram)

	// The results of call, which is r.recvmmsg bound once: a method value
	// or closure made per read would allocate, as RawConn.Read's argument
	// escapes.
	n     int
	errno syscall.Errno
	call  func(fd uintptr) bool
}

func newReader(l *Listener) *reader {
	k := l.cfg.BatchSize
	r := &reader{
		rc:    l.rc,
		ux:    l.ux != nil,
		bufs:  make([][]byte, k),
		sizes: make([]int, k),
		srcs:  make([]source, k),
		msgs:  make([]unix.Mmsghdr, k),
		iovs:  make([]unix.Iovec, k),
		names: make([]unix.RawSockaddrAny, k),
	}
	if r.ux {
		r.ctrl = make([]byte, k*credsSpace)
	}
	for i := range k {
		// One byte beyond MaxFrame tells a datagram that is too long
		// from one that just fits.
		r.bufs[i] = make([]byte, vswitch.Headroom+l.cfg.MaxFrame+1)
		r.iovs[i].Base = &r.bufs[i][vswitch.Headroom]
		r.iovs[i].SetLen(l.cfg.MaxFrame + 1)
		h := &r.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
	}
	r.call = r.recvmmsg
	return r
}

// read waits for datagrams and returns how many it read, at least one.
// Closing the socket makes it return an error matching net.ErrClosed.
func (r *reader) read() (int, error) {
	for i := range r.msgs {
		h := &r.msgs[i].Hdr
		h.Namelen = unix.SizeofSockaddrAny
		if r.ctrl != nil {
			h.Control = &r.ctrl[i*credsSpace]
			h.SetControllen(credsSpace)
		}
	}
	if err := r.rc.Read(r.call); err != nil {
		return 0, err
	}
	if r.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", r.errno)
	}
	for i := range r.n {
		r.sizes[i] = int(r.msgs[i].Len)
		r.srcs[i] = r.source(i)
	}
	return r.n, nil
}

// recvmmsg is RawConn.Read's callback: it returns false, for the poller to
// wait, when no datagram is queued.
func (r *reader) recvmmsg(fd uintptr) bool {
	for {
		n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.msgs[0])), uintptr(len(r.msgs)), unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// source returns the sender of datagram i, its path aliasing r.names[i],
// with its credentials when it came with them.
func (r *reader) source(i int) source {
	src := sockaddrSource(&r.names[i], int(r.msgs[i].Hdr.Namelen), r.ux)
	if r.ctrl != nil {
		src.uid, src.gid, src.cred = creds(r.ctrl[i*credsSpace:][:min(int(r.msgs[i].Hdr.Controllen), credsSpace)])
	}
	return src
}

// credsSpace is the room for one SCM_CREDENTIALS control message.
var credsSpace = unix.CmsgSpace(unix.SizeofUcred)

// creds returns the user and group in an SCM_CREDENTIALS control message
// at the start of b, if there is one.
func creds(b []byte) (uid, gid uint32, ok bool) {
	if len(b) < unix.CmsgLen(unix.SizeofUcred) {
		return 0, 0, false
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_CREDENTIALS || int(h.Len) < unix.CmsgLen(unix.SizeofUcred) {
		return 0, 0, false
	}
	u := (*unix.Ucred)(unsafe.Pointer(&b[unix.CmsgLen(0)]))
	return u.Uid, u.Gid, true
}

// credsPassed says that datagrams on a unixgram listener come with their
// senders' credentials (passCred).
const credsPassed = true

// passCred asks the kernel for each sender's credentials with its
// datagrams (SO_PASSCRED), which pinPeer checks.
func passCred(fd int) error {
	return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
}

// sender sends one peer's datagrams with sendmmsg(2) to the peer's
// sockaddr, built once; its message headers take 80 bytes per frame of a
// batch (2.5 KiB a peer with the defaults, on 64-bit systems). It uses
// RawConn.Control with MSG_DONTWAIT rather than WriteTo: Go's WriteTo
// holds the socket's write lock while it waits for a full peer, which
// would stall every other peer sharing the socket.
type sender struct {
	rc    syscall.RawConn
	sa    unix.RawSockaddrAny
	msgs  []unix.Mmsghdr
	iovs  []unix.Iovec
	n     int // call's argument: the number of messages to send
	sent  int // call's results
	errno syscall.Errno
	call  func(fd uintptr) // s.sendmmsg, bound once (see reader.call)
}

// init builds the sockaddr of key and the message headers for batches of
// up to batch frames. v6 tells that the socket is AF_INET6, so that an IPv4
// peer is sent to at its IPv4-mapped address. The zero key sends without
// an address, on a connected socket.
func (s *sender) init(rc syscall.RawConn, key peerKey, v6 bool, batch int) error {
	s.sa = unix.RawSockaddrAny{}
	var salen uint32
	switch {
	case key == peerKey{}:
	case key.path != "":
		su := (*unix.RawSockaddrUnix)(unsafe.Pointer(&s.sa))
		path := unsafe.Slice((*byte)(unsafe.Pointer(&su.Path[0])), len(su.Path))
		if len(key.path) > len(path) {
			return errors.New("path too long")
		}
		su.Family = unix.AF_UNIX
		copy(path, key.path)
		salen = uint32(unsafe.Offsetof(su.Path)) + uint32(len(key.path))
		if key.path[0] != 0 && len(key.path) < len(path) {
			salen++ // the NUL of a path; an abstract name has none
		}
	case v6:
		s6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(&s.sa))
		s6.Family = unix.AF_INET6
		setSockaddrPort(&s6.Port, key.ap.Port())
		s6.Addr = key.ap.Addr().As16()
		s6.Scope_id = key.scope
		salen = unix.SizeofSockaddrInet6
	default:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.sa))
		s4.Family = unix.AF_INET
		setSockaddrPort(&s4.Port, key.ap.Port())
		s4.Addr = key.ap.Addr().As4()
		salen = unix.SizeofSockaddrInet4
	}
	s.rc = rc
	s.msgs = make([]unix.Mmsghdr, batch)
	s.iovs = make([]unix.Iovec, batch)
	for i := range s.msgs {
		h := &s.msgs[i].Hdr
		if salen > 0 {
			h.Name = (*byte)(unsafe.Pointer(&s.sa))
			h.Namelen = salen
		}
		h.Iov = &s.iovs[i]
		h.SetIovlen(1)
	}
	s.call = s.sendmmsg
	return nil
}

func setSockaddrPort(p *uint16, port uint16) {
	binary.BigEndian.PutUint16((*[2]byte)(unsafe.Pointer(p))[:], port)
}

// send sends frames from the start of bufs, each bufs[i][offset:], in one
// system call and returns how many were sent, at least one, or else the
// error of bufs[0]. sendmmsg reports an error only for the first message:
// after a partial send, the caller's next send starts at the frame that
// failed and gets its error.
func (s *sender) send(bufs [][]byte, offset int) (int, error) {
	s.n = min(len(bufs), len(s.msgs))
	for i, b := range bufs[:s.n] {
		b = b[offset:]
		s.iovs[i].Base = unsafe.SliceData(b)
		s.iovs[i].SetLen(len(b))
	}
	err := s.rc.Control(s.call)
	// The caller owns the frames: keep no pointer to them.
	for i := range s.iovs[:s.n] {
		s.iovs[i].Base = nil
	}
	switch {
	case err != nil:
		return 0, err
	case s.errno != 0:
		return 0, s.errno
	case s.sent < 1: // not seen; it would make WriteFrames loop
		return 0, fmt.Errorf("sendmmsg: %d of %d sent", s.sent, s.n)
	}
	return s.sent, nil
}

func (s *sender) sendmmsg(fd uintptr) {
	for {
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(s.n), unix.MSG_DONTWAIT, 0, 0)
		if e != unix.EINTR {
			s.sent, s.errno = int(n), e
			return
		}
	}
}
