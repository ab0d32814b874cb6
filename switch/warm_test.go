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

// After a quiet spell the wakeups start with the first frame, not at the
// warmer's next look for traffic (here a minute away).
func TestWarmKick(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{WarmInterval: time.Millisecond, WarmFor: time.Minute})
	time.Sleep(50 * time.Millisecond)
	if n := r.sw.Stats().Wakeups; n != 0 {
		t.Fatalf("%d wakeups before any frame, want 0", n)
	}
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x88b5, []byte("hello"))
	r.send(0, f)
	r.expect(1, f)
	porttest.WaitFor(t, "the wakeups to start", func() bool { return r.sw.Stats().Wakeups >= 10 })
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

// The warmer's wakeups poll a Poller port that has received a frame within
// the last WarmFor, and forward what they find there; once the port has
// been quiet that long they leave it alone, while traffic between other
// ports keeps them going.
func TestWarmPolls(t *testing.T) {
	const every, window = time.Millisecond, 300 * time.Millisecond
	sw, a, e, _ := setupEcho(t, true, vswitch.Config{WarmInterval: every, WarmFor: window})
	recv := func(p *porttest.Port, what string) {
		t.Helper()
		f, ok := p.Recv(wait)
		if !ok || string(f[14:14+len(what)]) != what {
			t.Fatalf("%q did not reach station 1 (got %q)", what, f)
		}
	}

	// Station 2 sends a frame its loop is told of, then one it is not: only
	// the warmer's polls can find the second.
	e.put(porttest.Frame(porttest.MAC(1), porttest.MAC(2), 0x88b5, []byte("told")))
	e.wake()
	recv(a, "told")
	e.put(porttest.Frame(porttest.MAC(1), porttest.MAC(2), 0x88b5, []byte("found")))
	recv(a, "found")

	// Station 3 on a third port; from here on station 1 talks only to it,
	// while station 2 stays quiet.
	c := porttest.New(porttest.Config{Name: "c", Discard: true})
	if _, err := sw.AddPort(c, vswitch.PortConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(3), 0x88b5, []byte("hello"))); err != nil {
		t.Fatal(err)
	}
	if _, ok := a.Recv(wait); !ok {
		t.Fatal("station 3's broadcast did not reach station 1")
	}
	porttest.WaitFor(t, "station 3 learned", func() bool { return len(sw.FDB()) == 3 })
	start := time.Now()
	var polls int64
	var wakeups uint64
	for time.Since(start) < 3*window {
		if err := a.Send(porttest.Frame(porttest.MAC(3), porttest.MAC(1), 0x88b5, []byte("to 3"))); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
		if polls == 0 && time.Since(start) > 3*window/2 {
			polls, wakeups = e.polls.Load(), sw.Stats().Wakeups
		}
	}
	if n := e.polls.Load(); n != polls {
		t.Errorf("station 2's port polled %d times after a window of quiet, want 0", n-polls)
	}
	if n := sw.Stats().Wakeups; n <= wakeups {
		t.Errorf("no warm wakeups while station 1 talked to station 3")
	}
}
