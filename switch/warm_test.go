package vswitch_test

import (
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// settled waits until the switch's wakeup counter stops moving and returns
// it.
func settled(t *testing.T, sw *vswitch.Switch) uint64 {
	t.Helper()
	var n uint64
	porttest.WaitFor(t, "the warm wakeups to stop", func() bool {
		n = sw.Stats().Wakeups
		time.Sleep(250 * time.Millisecond)
		return sw.Stats().Wakeups == n
	})
	return n
}

func TestWarmWakeups(t *testing.T) {
	const every, window = time.Millisecond, 60 * time.Millisecond
	r := newRig(t, 2, vswitch.Config{WarmInterval: every, WarmFor: window})

	// Without traffic the switch only checks once per window.
	time.Sleep(3 * window)
	if n := r.sw.Stats().Wakeups; n != 0 {
		t.Fatalf("%d wakeups before any frame, want 0", n)
	}

	// One frame: a wakeup every interval for one window after it.
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x88b5, []byte("hello"))
	r.send(0, f)
	r.expect(1, f)
	if n, want := settled(t, r.sw), uint64(window/every); n != want {
		t.Fatalf("%d wakeups after one frame, want %d", n, want)
	}

	// Traffic resumed after a quiet spell starts them again.
	r.send(0, f)
	r.expect(1, f)
	if n, want := settled(t, r.sw), 2*uint64(window/every); n != want {
		t.Fatalf("%d wakeups after a second frame, want %d", n, want)
	}
}

func TestWarmOff(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{WarmFor: 10 * time.Millisecond})
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x88b5, []byte("hello"))
	r.send(0, f)
	r.expect(1, f)
	time.Sleep(100 * time.Millisecond)
	if n := r.sw.Stats().Wakeups; n != 0 {
		t.Fatalf("%d wakeups without WarmInterval, want 0", n)
	}
}

func TestWarmDense(t *testing.T) {
	const every, window = time.Millisecond, 100 * time.Millisecond
	sw := vswitch.New(vswitch.Config{WarmInterval: every, WarmFor: window})
	t.Cleanup(func() { sw.Close() })
	var in *vswitch.Attachment
	for _, name := range []string{"p0", "p1"} {
		a, err := sw.AddPort(porttest.New(porttest.Config{Name: name, Discard: true}),
			vswitch.PortConfig{Kind: "mem", NoReader: true})
		if err != nil {
			t.Fatal(err)
		}
		in = a
	}
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x88b5, []byte("dense"))
	buf := make([]byte, vswitch.Headroom+len(f))
	copy(buf[vswitch.Headroom:], f)
	bufs, sizes := [][]byte{buf}, []int{len(f)}

	// Frames far closer than 50 µs apart keep the process awake without
	// the warmer: it stands aside while they last (a wakeup per
	// millisecond would be ~300 here).
	for end := time.Now().Add(3 * window); time.Now().Before(end); {
		for range 100 {
			in.Input(bufs, sizes, vswitch.Headroom)
		}
	}
	during := sw.Stats().Wakeups
	if during > 30 {
		t.Errorf("%d wakeups during dense traffic, want few", during)
	}
	// After the last frame they go on for a window, as for sparse traffic.
	if n, want := settled(t, sw), during+uint64(window/every); n < want {
		t.Errorf("%d wakeups after dense traffic stopped, want at least %d", n, want)
	}
}
