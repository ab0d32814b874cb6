//go:build !linux

package regfile

import (
	"os"
	"syscall"
)

// openRegular opens path for reading if it is a regular file: it is
// looked at first, so that anything else (a device) is not opened unless
// path is swapped in between, which Open's check of the file opened then
// catches. Non-blocking, so that a FIFO swapped in returns.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, notRegular(path, fi.Mode().Type())
	}
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
