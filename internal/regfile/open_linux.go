package regfile

import (
	"fmt"
	"os"
	"strconv"

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
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, notRegular(path, fileType(st.Mode))
	}
	rd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(fd), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		// No /proc (a chroot, a container): its ENOENT must not read as
		// a missing file, which the lease file's load would replace.
		if rd, err = unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0); err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		var again unix.Stat_t
		if err := unix.Fstat(rd, &again); err != nil || again.Dev != st.Dev || again.Ino != st.Ino {
			unix.Close(rd)
			return nil, fmt.Errorf("%s: replaced while it was opened", path)
		}
	}
	return os.NewFile(uintptr(rd), path), nil
}

// fileType returns the type bits of a stat mode as an os.FileMode.
func fileType(mode uint32) os.FileMode {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return os.ModeDir
	case unix.S_IFIFO:
		return os.ModeNamedPipe
	case unix.S_IFCHR:
		return os.ModeDevice | os.ModeCharDevice
	case unix.S_IFBLK:
		return os.ModeDevice
	case unix.S_IFSOCK:
		return os.ModeSocket
	}
	return os.ModeIrregular
}
