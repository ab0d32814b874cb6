package vmnet

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"testing"
	"time"
)

// openDarwin opens a vmnet interface, or skips the test with the remedy
// when this Mac cannot.
func openDarwin(t *testing.T, cfg Config) *Interface {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("vmnet needs root (or the com.apple.vm.networking entitlement): run the tests with sudo")
	}
	i, err := Open(cfg)
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		t.Skipf("%v", err) // built without cgo
	case errors.Is(err, fs.ErrPermission):
		t.Skipf("%v", err)
	case err != nil:
		t.Fatal(err)
	}
	t.Cleanup(func() { i.Close() })
	return i
}

func TestDarwinHostMode(t *testing.T) {
	i := openDarwin(t, Config{Mode: ModeHost, InterfaceID: UUID{0x74, 0x61, 0x70, 15: 1}})
	if i.MTU() < 1500 || i.BatchSize() < 1 || i.BatchSize() > maxBatch || len(i.MAC()) != 6 || i.String() != "vmnet-host" {
		t.Errorf("MTU %d batch %d MAC %v name %q", i.MTU(), i.BatchSize(), i.MAC(), i.String())
	}
	mac := i.MAC()
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	// The same interface ID gives the same MAC.
	j := openDarwin(t, Config{Mode: ModeHost, InterfaceID: UUID{0x74, 0x61, 0x70, 15: 1}})
	if j.MAC().String() != mac.String() {
		t.Errorf("MAC %v after reopening with the same InterfaceID, was %v", j.MAC(), mac)
	}
}

func TestDarwinCloseUnblocksRead(t *testing.T) {
	i := openDarwin(t, Config{Mode: ModeHost})
	errc := make(chan error, 1)
	go func() {
		bufs := make([][]byte, i.BatchSize())
		for k := range bufs {
			bufs[k] = make([]byte, 16+65535)
		}
		sizes := make([]int, len(bufs))
		for {
			if _, err := i.ReadFrames(bufs, sizes, 16); err != nil {
				errc <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond)
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrames after Close = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock ReadFrames")
	}
	if _, err := i.WriteFrames([][]byte{make([]byte, 16+60)}, 16); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteFrames after Close = %v, want net.ErrClosed", err)
	}
	if err := i.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
}

func TestDarwinBadConfig(t *testing.T) {
	// Refused before vmnet is called: runs without root.
	if _, err := Open(Config{Mode: ModeBridged}); err == nil {
		t.Error("bridged mode without an interface opened")
	}
}
