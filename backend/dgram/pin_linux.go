package dgram

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/listen"
)

// pinPeer opens the socket file at path, from which src sent, and returns
// the path to send the peer's frames to, /proc/self/fd/N (its own socket
// is connected there; the listener's sends there), with the file open as
// N (O_PATH), which the caller keeps for as long as it sends there, and
// closes when the peer goes: each send naming N runs inside the file's
// RawConn.Control, so that N is not closed, and reused, while a send may
// still name it.
//
// Sending to path itself would look it up afresh at every send, and the
// sender may replace it after its first datagram: with a symlink to
// another program's socket, which the switch (often root) would then send
// its frames to; to the switch's own socket, which would loop every frame
// it floods; or into a file system that never answers, which would stall
// the sending goroutine. The descriptor names the socket found now, for
// good. It must be a socket owned by the sender (SCM_CREDENTIALS; root may
// send from any), so that a path swapped before the switch opened it does
// not lead elsewhere either, and not the listener's own (self). A sender
// that is root or the switch's own user is trusted with its path.
func pinPeer(path string, src *source, self *listen.SocketFile) (string, *os.File, error) {
	if !src.cred {
		return "", nil, errors.New("no sender credentials with the datagram")
	}
	if src.uid == 0 || int(src.uid) == os.Geteuid() {
		// A sender with the switch's privileges (or root's) gains nothing
		// by redirecting them: its path is connected to as it is (a
		// symlink too).
		return path, nil, nil
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", nil, fmt.Errorf("open the sender's socket: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	fi, err := f.Stat()
	switch {
	case err != nil:
		err = fmt.Errorf("stat the sender's socket: %w", err)
	case fi.Mode().Type() != os.ModeSocket:
		err = fmt.Errorf("%s is not a socket (%s)", path, fi.Mode().Type())
	case self != nil && self.SameFile(fi):
		err = errors.New("the path leads to this listener's own socket")
	case src.uid != 0 && fi.Sys().(*syscall.Stat_t).Uid != src.uid:
		err = fmt.Errorf("the socket at the sender's path is owned by uid %d, the sender is uid %d",
			fi.Sys().(*syscall.Stat_t).Uid, src.uid)
	}
	if err != nil {
		f.Close()
		return "", nil, err
	}
	return "/proc/self/fd/" + strconv.Itoa(fd), f, nil
}
