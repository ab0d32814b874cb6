// Package regfile reads files that must be regular files of bounded size:
// the configuration, the pidfile, the DHCP lease file. Each is named by
// the user, and a FIFO or a device there (or a symlink to /dev/zero) would
// block the reader or grow its memory without end.
package regfile

import (
	"fmt"
	"io"
	"os"
)

// Read returns the contents of the regular file at path, at most limit
// bytes. Anything else is refused with an error naming path: a FIFO, a
// device, a directory, a file over limit. Errors opening path (it does
// not exist) are os.OpenFile's.
func Read(path string, limit int64) ([]byte, error) {
	f, fi, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d bytes allowed", path, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && int64(len(data)) > limit {
		err = fmt.Errorf("%s: more than the %d bytes allowed", path, limit)
	}
	return data, err
}

// Open opens the regular file at path for reading and returns its
// information; anything else is refused, as Read refuses it, and not
// opened (on Linux with /proc; elsewhere unless path changes between a
// look and the open).
func Open(path string) (*os.File, os.FileInfo, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = notRegular(path, fi.Mode().Type())
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

func notRegular(path string, t os.FileMode) error {
	return fmt.Errorf("%s: not a regular file (%s)", path, t)
}
