package regfile

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// openRegular opens path for reading if it is a regular file, without
// opening anything else: an O_PATH descriptor tells what path leads to,
// and the file is opened through it (/proc/self/fd), so that a device (a
// watchdog, a tape) is never opened, even if path is swapped in between.
// Without /proc, path is opened again (non-blocking) and must be the same
// file: there a path swapped in between is opened before it is refused.
func openRegular(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	at := os.NewFile(uintptr(fd), path)
	defer at.Close()
	fi, err := at.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode().Type())
	}
	rd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		// No /proc (a chroot, a container): its ENOENT must not read as
		// a missing file, which the lease file's load would replace.
		if rd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		st := fi.Sys().(*syscall.Stat_t)
		var again unix.Stat_t
		if err := unix.Fstat(rd, &again); err != nil || again.Dev != st.Dev || again.Ino != st.Ino {
			unix.Close(rd)
			return nil, fmt.Errorf("%s: replaced while it was opened", path)
		}
	}
	return os.NewFile(uintptr(rd), path), nil
}
