package tap

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// openDarwin opens a free tuntaposx tap, or skips the test with the
// remedy when this Mac cannot.
func openDarwin(t *testing.T, cfg Config) *Device {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to open /dev/tapN: run the tests with sudo")
	}
	if _, err := os.Stat("/dev/tap0"); err != nil {
		t.Skip("no /dev/tap0: install tuntaposx (or a maintained fork) to run this test")
	}
	d, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDarwinOpenMakesInterface(t *testing.T) {
	d := openDarwin(t, Config{MTU: 9000})
	if _, err := tapNumber(d.Name()); err != nil || !d.Created() || d.BatchSize() != 1 {
		t.Fatalf("got name %q created %v batch %d: want tapN, true, 1", d.Name(), d.Created(), d.BatchSize())
	}
	ifi, err := net.InterfaceByName(d.Name())
	if err != nil || ifi.MTU != 9000 || d.MTU() != 9000 {
		t.Fatalf("interface %s: %v, MTU %v, Device MTU %d, want it with MTU 9000", d.Name(), err, ifi, d.MTU())
	}
	// A device that is open is busy.
	if _, err := Open(Config{Name: d.Name()}); !errors.Is(err, ErrBusy) {
		t.Errorf("second Open of %s = %v, want ErrBusy", d.Name(), err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(d.Name()); err == nil {
		t.Errorf("interface %s still there after Close", d.Name())
	}
}

func TestDarwinCloseUnblocksRead(t *testing.T) {
	d := openDarwin(t, Config{})
	errc := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, 16+65535)}
		for {
			if _, err := d.ReadFrames(bufs, []int{0}, 16); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	d.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrames after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadFrames")
	}
}

func TestDarwinNoSuchTap(t *testing.T) {
	if _, err := os.Stat("/dev/tap99"); err == nil {
		t.Skip("this Mac has a /dev/tap99")
	}
	if _, err := Open(Config{Name: "tap99"}); !errors.Is(err, ErrNoTapDevice) {
		t.Errorf("Open(tap99) = %v, want ErrNoTapDevice", err)
	}
}
