package tap

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// slowWaiter is a pollWaiter whose wait takes a while to return once
// woken, as a thread may take to be scheduled. entered is closed when a
// wait begins.
type slowWaiter struct {
	*pollWaiter
	once    sync.Once
	entered chan struct{}
}

func (w *slowWaiter) wait() error {
	w.once.Do(func() { close(w.entered) })
	err := w.pollWaiter.wait()
	time.Sleep(200 * time.Millisecond)
	return err
}

// TestWaitFileCloseWaitsForRead: Close returns only once a pending Read
// has returned, so that the Read never uses a descriptor number that the
// process has reused for another file after Close.
func TestWaitFileCloseWaitsForRead(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[1])
	w := &slowWaiter{pollWaiter: newPollWaiter(t, fds[0]), entered: make(chan struct{})}
	f := newWaitFile(fds[0], w)
	var returned atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Read(make([]byte, 100))
		returned.Store(true)
	}()
	<-w.entered // the Read waits
	f.Close()
	if !returned.Load() {
		t.Error("Close returned while a Read was still under way on the descriptor")
	}
	<-done
}
