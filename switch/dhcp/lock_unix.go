//go:build unix

package dhcp

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockLeaseFile takes an exclusive lock on path+".lock", held until the
// returned file is closed (by the kernel, too, when the process dies). The
// lease file itself cannot carry the lock: every write replaces it by a
// rename. The lock file stays after Close: removing it would let a server
// that opened it just before lock a file nobody else sees any more.
func lockLeaseFile(path string) (*os.File, error) {
	name := path + ".lock"
	// 0600: anyone who can open the file can lock it, and so keep the
	// responder from starting. Not through a symlink, which whoever may
	// write the directory could have put there to have a file made (or a
	// device opened) where they choose; and non-blocking, for a FIFO.
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if errors.Is(err, unix.ELOOP) {
		err = fmt.Errorf("%s is a symlink: not followed", name)
	}
	if err != nil {
		return nil, fmt.Errorf("lock lease file: %w", err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s: not a regular file (%s)", name, fi.Mode().Type())
		}
		return nil, fmt.Errorf("lock lease file: %w", err)
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("lease file %s: %w: another tapswitch (or DHCP responder) holds the lock on %s", path, ErrLeaseFileInUse, name)
		}
		return nil, fmt.Errorf("lock lease file: flock %s: %w", name, err)
	}
	return f, nil
}
