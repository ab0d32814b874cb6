package tap

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestOpenInvalidName(t *testing.T) {
	for _, name := range []string{"tapswitch-0123456", "a/b", "a:b", "a b", ".."} {
		_, err := Open(Config{Name: name})
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("Open(%q) = %v, want ErrInvalidName", name, err)
		}
	}
	_, err := Open(Config{Name: "tapswitch-0123456"})
	if !strings.Contains(err.Error(), "at most 15") {
		t.Errorf("error %q does not say how long a name may be", err)
	}
}

// pipeDevice returns a Device reading from a pipe: the runtime treats it
// as it treats a tap's descriptor, so the read and close paths are tested
// without root.
func pipeDevice(t *testing.T) (*Device, *os.File) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return &Device{f: r, name: "pipe", mtu: 1500, log: logrus.New()}, w
}

func TestPendingReadEndsOnClose(t *testing.T) {
	d, w := pipeDevice(t)
	if _, err := w.Write(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	assertPendingReadEndsOnClose(t, d)
}

// assertPendingReadEndsOnClose checks the Port contract on Close: it
// unblocks ReadFrames, is idempotent, and later I/O fails with
// net.ErrClosed. d must have one 60-byte frame ready to read.
func assertPendingReadEndsOnClose(t *testing.T, d *Device) {
	t.Helper()
	const off = 16
	bufs := [][]byte{make([]byte, off+65535)}
	sizes := make([]int, 1)
	if n, err := d.ReadFrames(bufs, sizes, off); n != 1 || err != nil || sizes[0] != 60 {
		t.Fatalf("ReadFrames = %d, %v (size %d), want 1 frame of 60 bytes", n, err, sizes[0])
	}
	errc := make(chan error, 1)
	go func() {
		_, err := d.ReadFrames(bufs, sizes, off)
		errc <- err
	}()
	select {
	case err := <-errc:
		t.Fatalf("ReadFrames returned %v before Close", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("pending ReadFrames after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadFrames")
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := d.ReadFrames(bufs, sizes, off); !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrames after Close = %v, want net.ErrClosed", err)
	}
	if n, err := d.WriteFrames(bufs, off); n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteFrames after Close = %d, %v, want 0, net.ErrClosed", n, err)
	}
}

func TestTapNumber(t *testing.T) {
	for name, want := range map[string]int{"tap0": 0, "tap3": 3, "tap15": 15, "tap99": 99} {
		if n, err := tapNumber(name); n != want || err != nil {
			t.Errorf("tapNumber(%q) = %d, %v, want %d", name, n, err, want)
		}
	}
	for _, name := range []string{"", "tap", "tap01", "tap-1", "tap+1", "tun0", "tapx", "foo3", "tap1a"} {
		if _, err := tapNumber(name); !errors.Is(err, ErrInvalidName) || !strings.Contains(err.Error(), "tap0 to tap15") {
			t.Errorf("tapNumber(%q) = %v, want ErrInvalidName naming tap0 to tap15", name, err)
		}
	}
}
