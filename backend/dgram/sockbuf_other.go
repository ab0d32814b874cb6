//go:build !linux

package dgram

import "golang.org/x/sys/unix"

// setBuffer sets a socket buffer size (on macOS capped by
// kern.ipc.maxsockbuf). Errors are ignored: the caller reads the size back.
func setBuffer(fd, opt, size int) {
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, size)
}
