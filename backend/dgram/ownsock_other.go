//go:build !linux

package dgram

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ownSocket returns nil: outside Linux a unix datagram is charged to its
// receiver's buffer, so a peer that stops reading holds up no other peer
// sending from the same socket (sends to it fail with ENOBUFS).
func ownSocket(string) (*os.File, syscall.RawConn, error) { return nil, nil, nil }

// connectedElsewhere is never true: there is no socket of a peer's own.
func connectedElsewhere(error) bool { return false }

// openDir returns nil: there is no socket of a peer's own to reconnect.
func openDir(string) *os.File { return nil }

// reconnectIn is never called: openDir gives no directory.
func reconnectIn(syscall.RawConn, *os.File, string, uint32, bool) error { return errors.ErrUnsupported }

// connectUnix connects the unixgram socket fd to dst, a path or "@name".
func connectUnix(fd int, dst string) error { return unix.Connect(fd, &unix.SockaddrUnix{Name: dst}) }
