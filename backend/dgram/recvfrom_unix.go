//go:build unix

package dgram

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// fromReader reads the datagrams queued on the socket, up to
// Config.BatchSize per wakeup, with one recvfrom(2) each: the reader where
// there is no recvmmsg(2) (macOS). Each slot has its own buffer and
// sockaddr, as with recvmmsg, so that reading allocates nothing (package
// net's ReadFrom allocates the sender's address per datagram). Only the
// read loop uses it.
type fromReader struct {
	rc syscall.RawConn
	ux bool // AF_UNIX socket: sources are paths

	// Datagram i of the last read is bufs[i][Headroom:][:sizes[i]], from
	// srcs[i].
	bufs  [][]byte
	sizes []int
	srcs  []source

	names []unix.RawSockaddrAny
	nlens []uint32 // socklen_t

	// The results of call, which is r.recvfrom bound once (a method
	// value made per read would allocate).
	n     int
	errno syscall.Errno
	call  func(fd uintptr) bool
}

func newFromReader(l *Listener) *fromReader {
	k := l.cfg.BatchSize
	r := &fromReader{
		rc:    l.rc,
		ux:    l.ux != nil,
		bufs:  make([][]byte, k),
		sizes: make([]int, k),
		srcs:  make([]source, k),
		names: make([]unix.RawSockaddrAny, k),
		nlens: make([]uint32, k),
	}
	for i := range k {
		// One byte beyond MaxFrame tells a datagram that is too long
		// from one that just fits (both systems cut it silently).
		r.bufs[i] = make([]byte, vswitch.Headroom+l.cfg.MaxFrame+1)
	}
	r.call = r.recvfrom
	return r
}

// read waits for datagrams and returns how many it read, at least one.
// Closing the socket makes it return an error matching net.ErrClosed.
func (r *fromReader) read() (int, error) {
	r.n, r.errno = 0, 0
	if err := r.rc.Read(r.call); err != nil {
		return 0, err
	}
	if r.n == 0 {
		return 0, os.NewSyscallError("recvfrom", r.errno)
	}
	for i := range r.n {
		r.srcs[i] = sockaddrSource(&r.names[i], int(r.nlens[i]), r.ux)
	}
	return r.n, nil
}

// recvfrom is RawConn.Read's callback: it reads datagrams until the
// socket is empty or the slots are full, and returns false, for the
// poller to wait, when there was none. An error after the first datagram
// ends the batch; the next read meets it again.
func (r *fromReader) recvfrom(fd uintptr) bool {
	for r.n < len(r.bufs) {
		i := r.n
		b := r.bufs[i][vswitch.Headroom:]
		r.nlens[i] = unix.SizeofSockaddrAny
		n, _, e := unix.Syscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0,
			uintptr(unsafe.Pointer(&r.names[i])), uintptr(unsafe.Pointer(&r.nlens[i])))
		switch e {
		case 0:
			r.sizes[i] = int(n)
			r.n++
		case unix.EINTR:
		case unix.EAGAIN:
			return r.n > 0
		default:
			if r.n == 0 {
				r.errno = e
			}
			return true
		}
	}
	return true
}

// sockaddrSource returns the sender in sa, n bytes of it valid, its path
// aliasing sa; ux says that the socket is AF_UNIX.
func sockaddrSource(sa *unix.RawSockaddrAny, n int, ux bool) source {
	if ux {
		return unixSource((*unix.RawSockaddrUnix)(unsafe.Pointer(sa)), n, runtime.GOOS == "linux")
	}
	switch {
	case sa.Addr.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		s4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return source{ap: netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), sockaddrPort(&s4.Port))}
	case sa.Addr.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		s6 := (*unix.RawSockaddrInet6)(unsafe.Pointer(sa))
		return source{ap: netip.AddrPortFrom(netip.AddrFrom16(s6.Addr).Unmap(), sockaddrPort(&s6.Port)), scope: s6.Scope_id}
	}
	return source{}
}

// unixSource returns the sender in su, n bytes of it valid, its path
// aliasing su. A path ends at its first NUL. With abstract (Linux), a name
// with a leading NUL is an abstract one, n bytes long. An unbound sender
// has an empty path: Linux gives no name (n is 2, the family); macOS gives
// a zeroed 16-byte sockaddr, which without abstract names is empty too.
func unixSource(su *unix.RawSockaddrUnix, n int, abstract bool) source {
	path := unsafe.Slice((*byte)(unsafe.Pointer(&su.Path[0])), len(su.Path))
	path = path[:min(max(n-int(unsafe.Offsetof(su.Path)), 0), len(path))]
	if len(path) > 0 && (path[0] != 0 || !abstract) {
		if j := bytes.IndexByte(path, 0); j >= 0 {
			path = path[:j]
		}
	}
	return source{path: path}
}

// sockaddrPort reads a sockaddr's port, which is in network byte order.
func sockaddrPort(p *uint16) uint16 { return binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(p))[:]) }
