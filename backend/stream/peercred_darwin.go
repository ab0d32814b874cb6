package stream

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerCred returns the credentials of the process at the other end of a
// unix socket from LOCAL_PEERCRED (user and groups) and LOCAL_PEERPID.
func peerCred(rc syscall.RawConn) (Cred, error) {
	var (
		cred *unix.Xucred
		pid  int
		serr error
	)
	err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if serr == nil {
			pid, serr = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID)
		}
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return Cred{}, fmt.Errorf("get LOCAL_PEERCRED: %w", err)
	}
	gid := -1
	if cred.Ngroups > 0 {
		gid = int(cred.Groups[0])
	}
	return Cred{PID: pid, UID: int(cred.Uid), GID: gid}, nil
}
