package tap

import (
	"bytes"
	"errors"
	"io/fs"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// pollWaiter is a waiter on poll(2) with a pipe to wake it: the Linux
// stand-in for macOS's kqueue waiter, so that waitFile's read, write and
// close paths run here.
type pollWaiter struct {
	fd   int
	pipe [2]int
}

func newPollWaiter(t *testing.T, fd int) *pollWaiter {
	w := &pollWaiter{fd: fd}
	if err := unix.Pipe2(w.pipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *pollWaiter) wait() error {
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.pipe[0]), Events: unix.POLLIN}}
	for {
		_, err := unix.Poll(fds, -1)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func (w *pollWaiter) wake() error {
	_, err := unix.Write(w.pipe[1], []byte{0})
	return err
}

func (w *pollWaiter) close() error {
	return errors.Join(unix.Close(w.pipe[0]), unix.Close(w.pipe[1]))
}

// seqpacketDevice returns a Device on a waitFile over one end of a
// SOCK_SEQPACKET pair, which keeps frame boundaries as a tap does, and the
// other end as the "kernel" side.
func seqpacketDevice(t *testing.T) (*Device, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[1]) })
	f := newWaitFile(fds[0], newPollWaiter(t, fds[0]))
	return &Device{f: f, name: "seqpacket", mtu: 1500, log: logrus.New()}, fds[1]
}

func TestWaitFilePendingReadEndsOnClose(t *testing.T) {
	d, peer := seqpacketDevice(t)
	if _, err := unix.Write(peer, make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	assertPendingReadEndsOnClose(t, d)
}

func TestWaitFileReadWaitsAndWrites(t *testing.T) {
	d, peer := seqpacketDevice(t)
	defer d.Close()
	const off = 16
	bufs := [][]byte{make([]byte, off+65535)}
	sizes := []int{0}
	frame := bytes.Repeat([]byte{7}, 1514)
	go func() {
		time.Sleep(50 * time.Millisecond) // the read below waits first
		unix.Write(peer, frame)
	}()
	if n, err := d.ReadFrames(bufs, sizes, off); n != 1 || err != nil || !bytes.Equal(bufs[0][off:off+sizes[0]], frame) {
		t.Fatalf("ReadFrames = %d, %v (size %d), want the 1514-byte frame", n, err, sizes[0])
	}
	out := [][]byte{append(make([]byte, off), frame[:60]...), append(make([]byte, off), frame[:100]...)}
	if n, err := d.WriteFrames(out, off); n != 2 || err != nil {
		t.Fatalf("WriteFrames = %d, %v, want 2, nil", n, err)
	}
	for _, want := range []int{60, 100} {
		b := make([]byte, 2000)
		n, err := unix.Read(peer, b)
		if err != nil || n != want {
			t.Fatalf("peer read %d, %v, want %d bytes", n, err, want)
		}
	}
}

func TestWaitFileEOFIsDeviceGone(t *testing.T) {
	d, peer := seqpacketDevice(t)
	defer d.Close()
	unix.Shutdown(peer, unix.SHUT_WR)
	_, err := d.ReadFrames([][]byte{make([]byte, 100)}, []int{0}, 16)
	if !errors.Is(err, ErrDeviceGone) {
		t.Errorf("ReadFrames after the peer went = %v, want ErrDeviceGone", err)
	}
}

func TestWaitFileCloseIdempotent(t *testing.T) {
	d, _ := seqpacketDevice(t)
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	wf := d.f.(*waitFile)
	if _, err := wf.Write([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v, want os.ErrClosed", err)
	}
	if _, err := d.WriteFrames([][]byte{make([]byte, 80)}, 16); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteFrames after Close = %v, want net.ErrClosed", err)
	}
}

// TestOpenErrorEACCES: /dev/net/tun that this user may not open (its mode)
// is not blamed on a missing CAP_NET_ADMIN, which would not help; both
// still match fs.ErrPermission, which the default setup treats as "no
// host interface".
func TestOpenErrorEACCES(t *testing.T) {
	err := openError("t0", unix.EACCES)
	if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "not readable and writable") || strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("EACCES: %v", err)
	}
	if err := openError("t0", unix.EPERM); !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "CAP_NET_ADMIN") {
		t.Errorf("EPERM: %v", err)
	}
}
