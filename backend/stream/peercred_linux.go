package stream

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred returns the credentials of the process at the other end of a
// unix socket from SO_PEERCRED, as they were when it connected.
func peerCred(rc syscall.RawConn) (Cred, error) {
	var cred *unix.Ucred
	var serr error
	err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return Cred{}, fmt.Errorf("get SO_PEERCRED: %w", err)
	}
	return Cred{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}, nil
}
