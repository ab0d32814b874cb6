package stream

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred describes the process at the other end of a unix socket from
// SO_PEERCRED: its credentials when it connected (or listened).
func peerCred(rc syscall.RawConn) (string, error) {
	var cred *unix.Ucred
	var serr error
	err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return "", fmt.Errorf("get SO_PEERCRED: %w", err)
	}
	return fmt.Sprintf("pid=%d uid=%d gid=%d", cred.Pid, cred.Uid, cred.Gid), nil
}
