//go:build darwin || linux

package tap

import (
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// waitFile is a non-blocking descriptor for a device the Go runtime poller
// cannot serve. A reader that finds nothing to read blocks its thread in
// w.wait; Close wakes it with w.wake, then waits for every call in
// progress to return before it closes the descriptor, so that a reader
// never touches a descriptor number the process has reused.
//
// macOS uses it for tuntaposx devices, with a kqueue waiter. It builds on
// Linux too so that its read, write and close paths are tested there with
// a poll(2) waiter.
type waitFile struct {
	fd int
	w  waiter

	mu     sync.RWMutex // shared by Read and Write, exclusive in Close
	closed atomic.Bool

	closeOnce sync.Once
	closeErr  error
}

// waiter blocks until a descriptor may be readable.
type waiter interface {
	// wait returns when the descriptor may be readable or wake was
	// called (before or during the wait).
	wait() error
	// wake makes a wait in progress, or the next one, return.
	wake() error
	close() error
}

func newWaitFile(fd int, w waiter) *waitFile { return &waitFile{fd: fd, w: w} }

// Read reads one frame, waiting until one arrives. It returns io.EOF if
// the device reports end of file, and os.ErrClosed after Close.
func (f *waitFile) Read(b []byte) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for {
		if f.closed.Load() {
			return 0, os.ErrClosed
		}
		n, err := unix.Read(f.fd, b)
		switch {
		case err == nil && n == 0 && len(b) > 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			if err := f.w.wait(); err != nil {
				return 0, err
			}
		default:
			return 0, err
		}
	}
}

// Write writes one frame. A tap takes or refuses a frame at once, so it
// does not wait: EAGAIN is returned as it is.
func (f *waitFile) Write(b []byte) (int, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for {
		if f.closed.Load() {
			return 0, os.ErrClosed
		}
		n, err := unix.Write(f.fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

// Close wakes a pending Read, waits for the calls in progress, and closes
// the descriptor and the waiter. It is idempotent.
func (f *waitFile) Close() error {
	f.closeOnce.Do(func() {
		f.closed.Store(true)
		werr := f.w.wake()
		f.mu.Lock()
		defer f.mu.Unlock()
		f.closeErr = errors.Join(werr, unix.Close(f.fd), f.w.close())
	})
	return f.closeErr
}
