package tap

import (
	"io"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawFile is a tap descriptor on the Go runtime poller whose reads and
// writes are single raw system calls. A tap's read and write never block
// (the descriptor is non-blocking), so they need not tell the runtime they
// are in a system call: that saves the entry and exit work on every frame,
// and sysmon never hands the goroutine's P to another thread in the middle
// of a write into a tap (which can run the receiving namespace's network
// stack for tens of µs). When there is nothing to read, the runtime poller
// parks the reader as an *os.File would.
//
// The closures given to RawConn are bound once, with their arguments and
// results in fields, so a frame costs no allocation. This needs one reader
// and one writer at a time, which the switch guarantees (one receive loop
// per port, writes serialised per port).
type rawFile struct {
	f      *os.File
	rc     syscall.RawConn
	closed atomic.Bool

	rbuf    []byte
	rn      int
	rerr    syscall.Errno
	readFn  func(uintptr) bool
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(uintptr) bool

	// batchFn reads the frames waiting into bbufs (TryReadBatch); waitFn
	// calls ready (Wait).
	bbufs   [][]byte
	bsizes  []int
	bfrom   int
	bmin    int
	bn      int
	berr    syscall.Errno
	beof    bool
	batchFn func(uintptr)
	ready   func() bool
	waitFn  func(uintptr) bool
}

// newRawFile takes over fd, which must be non-blocking.
func newRawFile(fd int, name string) (*rawFile, error) {
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &rawFile{f: f, rc: rc}
	r.readFn, r.writeFn = r.read, r.write
	r.batchFn = r.readBatch
	r.waitFn = func(uintptr) bool { return r.ready() }
	return r, nil
}

// control runs fn on the descriptor (for an ioctl), unless it is closed.
func (r *rawFile) control(fn func(fd int) error) error {
	var ferr error
	if err := r.rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// read reads once into rbuf, leaving the result in rn and rerr, for
// RawConn.Read: false (wait) when nothing is waiting.
func (r *rawFile) read(fd uintptr) bool {
	n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.rbuf))), uintptr(len(r.rbuf)))
	r.rn, r.rerr = int(n), e
	return e != unix.EAGAIN
}

// readBatch reads frames into bbufs[bn][bfrom:] until the descriptor has
// none waiting, bbufs are full or a read fails, leaving the count in bn,
// the lengths in bsizes and the failure in berr or beof (a read of 0
// bytes). A frame shorter than bmin is dropped and its buffer used again.
func (r *rawFile) readBatch(fd uintptr) {
	r.bn, r.berr, r.beof = 0, 0, false
	for r.bn < len(r.bbufs) {
		b := r.bbufs[r.bn][r.bfrom:]
		n, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
		switch {
		case e == unix.EAGAIN:
			return
		case e != 0:
			r.berr = e
			return
		case n == 0:
			r.beof = true
			return
		case int(n) < r.bmin:
			continue
		}
		r.bsizes[r.bn] = int(n)
		r.bn++
	}
}

func (r *rawFile) write(fd uintptr) bool {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(r.wbuf))), uintptr(len(r.wbuf)))
	if e == unix.EAGAIN {
		return false
	}
	r.wn, r.werr = int(n), e
	return true
}

// Read reads one frame into b, waiting on the runtime poller until one
// arrives. A read of 0 bytes returns io.EOF, as os.File does.
func (r *rawFile) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.rbuf = b
	err := r.rc.Read(r.readFn)
	r.rbuf = nil
	return r.readResult(err)
}

// TryReadBatch reads the frames waiting, without waiting for any, up to
// len(bufs): each into bufs[i][from:], its length into sizes[i]. A frame
// shorter than least bytes is dropped. The whole batch is one call into the
// runtime's descriptor (one reference taken, not one per frame). It
// returns how many frames it read and the error that ended the batch, if
// any (io.EOF for a read of 0 bytes); when both are nonzero, the error
// comes again on the next call. The caller must be the only reader at the
// time.
func (r *rawFile) TryReadBatch(bufs [][]byte, sizes []int, from, least int) (int, error) {
	r.bbufs, r.bsizes, r.bfrom, r.bmin = bufs, sizes, from, least
	r.bn = 0
	err := r.rc.Control(r.batchFn)
	r.bbufs, r.bsizes = nil, nil
	switch {
	case err != nil:
		return r.bn, r.pollError(err)
	case r.berr != 0:
		return r.bn, r.berr
	case r.beof:
		return r.bn, io.EOF
	}
	return r.bn, nil
}

// readResult turns the RawConn error err and the last read's rn and rerr
// into Read's results.
func (r *rawFile) readResult(err error) (int, error) {
	switch {
	case err != nil:
		return 0, r.pollError(err)
	case r.rerr != 0:
		return 0, r.rerr
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

// Wait calls ready each time the descriptor may have become readable,
// until it returns true or the descriptor is closed. ready must read until
// nothing is waiting before it returns false. Wait is for one goroutine
// for the life of the file.
func (r *rawFile) Wait(ready func() bool) error {
	r.ready = ready
	if err := r.rc.Read(r.waitFn); err != nil {
		return r.pollError(err)
	}
	return nil
}

// Write writes b as one frame.
func (r *rawFile) Write(b []byte) (int, error) {
	r.wbuf = b
	err := r.rc.Write(r.writeFn)
	r.wbuf = nil
	switch {
	case err != nil:
		return 0, r.pollError(err)
	case r.werr != 0:
		return 0, r.werr
	}
	return r.wn, nil
}

// pollError maps the poller's "use of closed file" to os.ErrClosed, as
// os.File's own methods do.
func (r *rawFile) pollError(err error) error {
	if r.closed.Load() {
		return os.ErrClosed
	}
	return err
}

// Close closes the descriptor and wakes a pending Read.
func (r *rawFile) Close() error {
	r.closed.Store(true)
	return r.f.Close()
}
