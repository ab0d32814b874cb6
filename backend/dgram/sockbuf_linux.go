package dgram

import "golang.org/x/sys/unix"

// setBuffer sets a socket buffer size, with the FORCE variant first so
// that a privileged daemon is not capped by net.core.{w,r}mem_max. Errors
// are ignored: the caller reads the size back.
func setBuffer(fd, opt, size int) {
	force := unix.SO_SNDBUFFORCE
	if opt == unix.SO_RCVBUF {
		force = unix.SO_RCVBUFFORCE
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, size) == nil {
		return
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, size)
}
