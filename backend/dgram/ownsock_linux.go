package dgram

import (
	"errors"
	"fmt"
	"os"
	"syscall"

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
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: dst}); err != nil {
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
