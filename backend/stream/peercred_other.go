//go:build !linux && !darwin

package stream

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
)

// peerCred is not implemented on this system; the port's peer is then
// described by its address only.
func peerCred(syscall.RawConn) (Cred, error) {
	return Cred{}, fmt.Errorf("peer credentials on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}
