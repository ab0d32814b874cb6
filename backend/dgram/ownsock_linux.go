package dgram

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ownSocket returns a socket of the peer's own to send its frames from, or
// nil if the listener's must be used (a UDP peer).
//
// Linux charges a unix datagram to its sender's send buffer until the
// receiver reads it: sent from the listener's socket, the frames queued
// for a VM that stopped reading (paused, hung) would fill the one buffer
// every peer's frames go through, and then no peer would get any. From a
// socket of its own, a peer that does not read fills only its own buffer.
// A peer whose socket is connected to the listener's (vfkit, vz) accepts
// datagrams from that socket only: the first send from this one fails
// with EPERM, and the peer is sent to from the listener's from then on.
//
// The socket keeps the system's default send buffer (net.core.wmem_default,
// 208 KiB): an unconnected receiver holds at most max_dgram_qlen (10)
// datagrams anyway, and what a peer that stops reading pins in the kernel
// is this buffer, for each such peer (the listener's larger buffer, for
// all of them, was what they filled).
func ownSocket() (*os.File, syscall.RawConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "dgram peer socket")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, rc, nil
}

// connectedElsewhere reports whether a send from a peer's own socket failed
// because the peer's socket is connected to the listener's (see ownSocket).
func connectedElsewhere(err error) bool { return errors.Is(err, unix.EPERM) }
