package dgram

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ownSocket returns a socket of the peer's own, connected to dst (the
// peer's path, /proc/self/fd/N of its pinned socket file, or "@name"), to
// send its frames from; or nil if the listener's must be used, because the
// peer's socket is connected to the listener's (vfkit, vz), and accepts
// datagrams from that socket only.
//
// Linux charges a unix datagram to its sender's send buffer until the
// receiver reads it: sent from the listener's socket, the frames queued
// for a VM that stopped reading (paused, hung) would fill the one buffer
// every peer's frames go through, and then no peer would get any. From a
// socket of its own, a peer that does not read fills only its own buffer.
//
// Connected, the socket sends to the socket object dst named now, not to
// whatever has the name later: once the peer's socket is closed, sends
// fail (ECONNREFUSED) and the peer is removed, even where the name could
// be bound again by another user (an abstract name, which has no file and
// no permissions; a path in a directory others may write) and even for a
// sender trusted with its path (root, the switch's own user), which is
// not pinned. A peer whose socket is already gone is refused here.
//
// The socket keeps the system's default send buffer (net.core.wmem_default,
// 208 KiB): an unconnected receiver holds at most max_dgram_qlen (10)
// datagrams anyway, and what a peer that stops reading pins in the kernel
// is this buffer, for each such peer (the listener's larger buffer, for
// all of them, was what they filled).
func ownSocket(dst string) (*os.File, syscall.RawConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	if err := connectUnix(fd, dst); err != nil {
		unix.Close(fd)
		if connectedElsewhere(err) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("connect to the sender's socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), "dgram peer socket")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}

// connectedElsewhere reports whether connecting or sending to a peer's
// socket failed because that socket is connected to another (the
// listener's, see ownSocket).
func connectedElsewhere(err error) bool { return errors.Is(err, unix.EPERM) }

// connectUnix connects the unixgram socket fd to dst, a path or "@name"
// (abstract). The sockaddr is built here: x/sys refuses a path of the
// full 108 bytes, which has no room for a NUL and which Linux takes.
func connectUnix(fd int, dst string) error {
	var sa unix.RawSockaddrUnix
	sa.Family = unix.AF_UNIX
	name := []byte(dst)
	if len(name) > 0 && name[0] == '@' {
		name[0] = 0 // abstract
	}
	if len(name) == 0 || len(name) > len(sa.Path) {
		return unix.EINVAL
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&sa.Path[0])), len(sa.Path)), name) // int8 or uint8 by architecture
	salen := unsafe.Offsetof(sa.Path) + uintptr(len(name))
	if name[0] != 0 && len(name) < len(sa.Path) {
		salen++ // a path's NUL
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa)), salen)
		if e != unix.EINTR {
			if e != 0 {
				return e
			}
			return nil
		}
	}
}

// reconnect connects the peer socket rc, connected before, to dst again:
// to the socket that has its path now.
func reconnect(rc syscall.RawConn, dst string) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) { err = connectUnix(int(fd), dst) }); cerr != nil {
		return cerr
	}
	return err
}
