package dgram

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
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

// openDir opens the directory part of path, as given (a ".." in it is
// resolved by the kernel, as a connect would), for reconnectIn; nil if it
// cannot.
func openDir(path string) *os.File {
	dir := path[:strings.LastIndexByte(path, '/')+1]
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), dir)
}

// reconnectIn connects the peer socket rc, connected before, to the socket
// named base in dir (see openDir), found there without following a
// symlink, if it is a socket of uid's (when cred): the directory is the
// one the peer's path led to when it was added, whatever has its name
// now, and the connection goes through /proc/self/fd, to the file checked.
func reconnectIn(rc syscall.RawConn, dir *os.File, base string, uid uint32, cred bool) error {
	dc, err := dir.SyscallConn()
	if err != nil {
		return err
	}
	fd, oerr := -1, error(nil)
	if err := dc.Control(func(d uintptr) { fd, oerr = unix.Openat(int(d), base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0) }); err != nil {
		return err
	}
	if oerr != nil {
		return oerr
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK || cred && st.Uid != uid {
		return errors.New("not a socket of the peer's user")
	}
	var cerr error
	if err := rc.Control(func(s uintptr) { cerr = connectUnix(int(s), "/proc/self/fd/"+strconv.Itoa(fd)) }); err != nil {
		return err
	}
	return cerr
}
