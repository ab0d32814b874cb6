package vswitch_test

import (
	"sync"
	"testing"
	"time"
	"unsafe"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// steppedClock reads like time.Now (its readings carry a monotonic
// reading) and lets a test move the monotonic clock and, apart from it, the
// wall clock, as a step of the system clock (settimeofday, an NTP step)
// does.
type steppedClock struct {
	mu       sync.Mutex
	base     time.Time     // a real time.Now reading
	mono     time.Duration // elapsed on both clocks
	wallStep time.Duration // sum of the wall clock steps, whole seconds
}

func (c *steppedClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return stepWall(c.base.Add(c.mono), c.wallStep)
}

func (c *steppedClock) advance(d time.Duration) { c.mu.Lock(); c.mono += d; c.mu.Unlock() }
func (c *steppedClock) step(d time.Duration)    { c.mu.Lock(); c.wallStep += d; c.mu.Unlock() }

// stepWall returns t with its wall reading moved by d (whole seconds) and
// its monotonic reading kept. The time package has no way to build such a
// reading, so this writes the seconds field of time.Time's wall word
// (hasMonotonic flag, 33 bits of seconds since 1885, 30 bits of
// nanoseconds); the checks below fail the test if that layout changes.
func stepWall(t time.Time, d time.Duration) time.Time {
	if d == 0 {
		return t
	}
	s := t
	wall := (*uint64)(unsafe.Pointer(&s))
	*wall = uint64(int64(*wall) + int64(d/time.Second)<<30)
	return s
}

func TestStepWallHelper(t *testing.T) {
	now := time.Now()
	s := stepWall(now, -time.Hour)
	if s.Unix() != now.Unix()-3600 || s.Nanosecond() != now.Nanosecond() {
		t.Fatalf("wall %v, want %v", s, now.Add(-time.Hour))
	}
	if d := s.Sub(now); d != 0 {
		t.Fatalf("monotonic readings differ by %v, want 0", d)
	}
}

// TestAgeingIgnoresWallClockSteps: FDB entries age on the monotonic clock.
// A backward step of the wall clock kept dead entries (and held back
// --new-mac-rate) for as long as the step; a forward one expired every
// entry at once.
func TestAgeingIgnoresWallClockSteps(t *testing.T) {
	clock := &steppedClock{base: time.Now()}
	sw := vswitch.New(vswitch.Config{FDBAge: 300 * time.Second, Now: clock.Now})
	defer sw.Close()
	var atts []*vswitch.Attachment
	for _, name := range []string{"p0", "p1"} {
		a, err := sw.AddPort(porttest.New(porttest.Config{Name: name}), vswitch.PortConfig{Kind: "mem", NoReader: true})
		if err != nil {
			t.Fatal(err)
		}
		atts = append(atts, a)
	}
	send := func(i int, src vswitch.MAC) {
		f := porttest.Frame(porttest.Broadcast, src, 0x0800, nil)
		buf := make([]byte, vswitch.Headroom+len(f))
		copy(buf[vswitch.Headroom:], f)
		atts[i].Input([][]byte{buf}, []int{len(f)}, vswitch.Headroom)
	}
	live := func() (macs []vswitch.MAC) {
		for _, e := range sw.FDB() {
			macs = append(macs, e.MAC)
		}
		return macs
	}

	send(0, porttest.MAC(0))
	clock.step(time.Hour) // forward: the entry is 1 s old, not 1 h
	clock.advance(time.Second)
	if got := live(); len(got) != 1 {
		t.Fatalf("after a 1 h forward step: live FDB %v, want %s", got, porttest.MAC(0))
	}
	clock.step(-2 * time.Hour) // backward
	clock.advance(301 * time.Second)
	send(1, porttest.MAC(1))
	if got := live(); len(got) != 1 || got[0] != porttest.MAC(1) {
		t.Fatalf("after a 2 h backward step and 301 s: live FDB %v, want only %s", got, porttest.MAC(1))
	}
	if n := sw.ExpireFDB(); n != 1 {
		t.Fatalf("ExpireFDB removed %d, want 1", n)
	}
	if st := sw.Stats().Ports[1]; st.LearnedMACs != 1 {
		t.Fatalf("port 1 learned %d, want 1", st.LearnedMACs)
	}
}

// TestCaptureTimesAreWallClock: captured frames carry the wall clock's
// time, steps included, whatever clock ageing runs on.
func TestCaptureTimesAreWallClock(t *testing.T) {
	clock := &steppedClock{base: time.Now()}
	clock.step(-24 * time.Hour)
	sw := vswitch.New(vswitch.Config{Now: clock.Now})
	defer sw.Close()
	a, err := sw.AddPort(porttest.New(porttest.Config{Name: "p0"}), vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	c := sw.StartCapture(vswitch.CaptureConfig{})
	clock.step(time.Hour)
	want := clock.Now()
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x0800, nil)
	buf := make([]byte, vswitch.Headroom+len(f))
	copy(buf[vswitch.Headroom:], f)
	a.Input([][]byte{buf}, []int{len(f)}, vswitch.Headroom)
	c.Close()
	cf, ok := <-c.C()
	if !ok {
		t.Fatal("no frame captured")
	}
	if cf.Time.UnixNano() != want.UnixNano() {
		t.Fatalf("captured at %v, want %v", cf.Time, want)
	}
}
