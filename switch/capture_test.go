package vswitch_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// inputBuf returns fr in a receive buffer, behind Headroom.
func inputBuf(fr []byte) ([][]byte, []int) {
	buf := make([]byte, vswitch.Headroom+len(fr))
	copy(buf[vswitch.Headroom:], fr)
	return [][]byte{buf}, []int{len(fr)}
}

// TestCaptureCloseWhileForwarding: captures start and end while a port
// forwards without pause. Input used to load the capture list before
// taking the lock that Close waited for, so a Close in between closed
// the channel and Input then sent on it: a panic that ended the daemon.
func TestCaptureCloseWhileForwarding(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in, err := sw.AddPort(porttest.New(porttest.Config{Name: "in", Discard: true}), vswitch.PortConfig{NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.AddPort(porttest.New(porttest.Config{Name: "out", Discard: true}), vswitch.PortConfig{NoReader: true}); err != nil {
		t.Fatal(err)
	}
	bufs, sizes := inputBuf(porttest.Frame(porttest.MAC(2), porttest.MAC(1), 0x0800, make([]byte, 46)))
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			in.Input(bufs, sizes, vswitch.Headroom)
		}
	})
	var captured uint64
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		c := sw.StartCapture(vswitch.CaptureConfig{Buffer: 4})
		c.Close()
		for range c.C() {
			captured++
		}
	}
	stop.Store(true)
	wg.Wait()
	if captured == 0 {
		t.Fatal("no frame captured in 3 s of forwarding")
	}
}

// closingPeer is a port that removes itself from inside its direct write,
// as a datagram peer does when the VM's socket is gone (ECONNREFUSED).
type closingPeer struct {
	att     atomic.Pointer[vswitch.Attachment]
	entered chan struct{} // closed when the write has begun
	proceed chan struct{} // closed by the test to let it go on
	closed  chan struct{}
	once    sync.Once
}

func (p *closingPeer) ReadFrames([][]byte, []int, int) (int, error) {
	<-p.closed
	return 0, net.ErrClosed
}
func (p *closingPeer) WriteFrames(b [][]byte, _ int) (int, error) { return len(b), nil }
func (p *closingPeer) BatchSize() int                             { return 1 }
func (p *closingPeer) MTU() int                                   { return 1500 }
func (p *closingPeer) String() string                             { return "closing" }
func (p *closingPeer) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}
func (p *closingPeer) WriteFrameNow([]byte, int) (bool, error) {
	close(p.entered)
	<-p.proceed
	p.att.Load().Close()
	return true, net.ErrClosed
}

// TestCaptureCloseWhilePortRemoves: a capture ends while a frame's
// destination removes itself during the write. Input used to hold a
// switch-wide capture lock while forwarding, and Close held the switch's
// lock while waiting for it; the removal needed the switch's lock, so
// all three waited for ever and the switch stopped.
func TestCaptureCloseWhilePortRemoves(t *testing.T) {
	sw := vswitch.New(vswitch.Config{}) // closed at the end: Close would hang on a deadlocked switch
	in, err := sw.AddPort(porttest.New(porttest.Config{Discard: true}), vswitch.PortConfig{NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	cp := &closingPeer{entered: make(chan struct{}), proceed: make(chan struct{}), closed: make(chan struct{})}
	a, err := sw.AddPort(cp, vswitch.PortConfig{NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	cp.att.Store(a)
	c := sw.StartCapture(vswitch.CaptureConfig{})
	drained := make(chan struct{})
	go func() {
		for range c.C() {
		}
		close(drained)
	}()
	bufs, sizes := inputBuf(porttest.Frame(porttest.MAC(2), porttest.MAC(1), 0x0800, make([]byte, 46)))
	inputDone := make(chan struct{})
	go func() {
		in.Input(bufs, sizes, vswitch.Headroom) // floods: MAC(2) is unknown
		close(inputDone)
	}()
	<-cp.entered
	closeDone := make(chan struct{})
	go func() {
		c.Close()
		close(closeDone)
	}()
	// Let Close reach whatever it waits for before the port removes itself.
	time.Sleep(100 * time.Millisecond)
	close(cp.proceed)
	for what, ch := range map[string]chan struct{}{"Input": inputDone, "Capture.Close": closeDone, "the capture's channel closed": drained} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still waiting after 5 s", what)
		}
	}
	<-a.Done()
	if _, err := sw.AddPort(porttest.New(porttest.Config{Discard: true}), vswitch.PortConfig{NoReader: true}); err != nil {
		t.Fatal(err)
	}
	sw.Close()
}

// TestCapturePortLeaves: a capture limited to a port ends when the port
// leaves the switch, and one started for a port that has left ends at
// once. Such a capture used to run on and record every frame flooded to
// the other ports, since a flooded frame has no egress port to filter on.
func TestCapturePortLeaves(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in, err := sw.AddPort(porttest.New(porttest.Config{Name: "in", Discard: true}), vswitch.PortConfig{NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sw.AddPort(porttest.New(porttest.Config{Name: "other", Discard: true}), vswitch.PortConfig{NoReader: true}); err != nil {
		t.Fatal(err)
	}
	watched, err := sw.AddPort(porttest.New(porttest.Config{Name: "watched", Discard: true}), vswitch.PortConfig{NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	c := sw.StartCapture(vswitch.CaptureConfig{Port: watched.ID()})
	defer c.Close()
	bufs, sizes := inputBuf(porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, make([]byte, 46)))
	in.Input(bufs, sizes, vswitch.Headroom) // flooded to watched too
	if f := <-c.C(); f.In != in.ID() {
		t.Fatalf("captured a frame from port %d, want %d", f.In, in.ID())
	}
	watched.Close()
	<-watched.Done()
	in.Input(bufs, sizes, vswitch.Headroom) // flooded to other only
	if f, ok := <-c.C(); ok {
		t.Fatalf("captured a frame from port %d after the port left; want the capture ended", f.In)
	}
	if !c.PortLeft() {
		t.Error("PortLeft false after the port left")
	}
	late := sw.StartCapture(vswitch.CaptureConfig{Port: watched.ID()})
	if _, ok := <-late.C(); ok || !late.PortLeft() {
		t.Errorf("a capture of a port that has left: a frame, or PortLeft %v; want it ended at once", late.PortLeft())
	}
	all := sw.StartCapture(vswitch.CaptureConfig{})
	defer all.Close()
	in.Input(bufs, sizes, vswitch.Headroom)
	if _, ok := <-all.C(); !ok || all.PortLeft() {
		t.Error("a capture of every port ended")
	}
}

// TestCaptureBytesBounded: a capture whose reader does not keep up holds
// at most 4 MiB of frames, not its 1024 frames whatever their size (TSO
// super-frames of 64 KiB pinned 64 MiB), and a frame it drops is not
// copied first.
func TestCaptureBytesBounded(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	in, err := sw.AddPort(porttest.New(porttest.Config{Name: "in", Discard: true}), vswitch.PortConfig{NoReader: true})
	if err != nil {
		t.Fatal(err)
	}
	// No other port: flooding to one (through the buffer pool, whose
	// per-P caches miss now and then) would make the allocation counts
	// below vary from run to run.
	const size, sent = 9000, 1024
	bufs, sizes := inputBuf(porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0800, make([]byte, size-14)))
	// What forwarding allocates without a capture (the race detector's),
	// once its buffers are warm.
	for range sent {
		in.Input(bufs, sizes, vswitch.Headroom)
	}
	base := testing.AllocsPerRun(100, func() { in.Input(bufs, sizes, vswitch.Headroom) })
	c := sw.StartCapture(vswitch.CaptureConfig{})
	defer c.Close()
	for range sent {
		in.Input(bufs, sizes, vswitch.Headroom)
	}
	held := len(c.C()) * size
	if held > 4<<20 || held < 4<<20-size || c.Dropped() != uint64(sent-len(c.C())) {
		t.Errorf("the capture holds %d frames (%d bytes) and dropped %d; want 4 MiB at most, and the rest dropped",
			len(c.C()), held, c.Dropped())
	}
	if n := testing.AllocsPerRun(100, func() { in.Input(bufs, sizes, vswitch.Headroom) }); n > base {
		t.Errorf("%.1f allocations per frame the full capture drops, %.1f without a capture", n, base)
	}
	// What the reader takes makes room again.
	for range 10 {
		<-c.C()
	}
	before := c.Dropped()
	in.Input(bufs, sizes, vswitch.Headroom)
	if c.Dropped() != before {
		t.Error("a frame dropped after the reader made room")
	}
}

// TestCaptureTimesNeverGoBack: a batch offered after a later one (ports
// forward concurrently, each batch stamped as it entered) takes the later
// time: a capture's times went back by up to milliseconds under load.
func TestCaptureTimesNeverGoBack(t *testing.T) {
	r := newRig(t, 2, vswitch.Config{})
	c := r.sw.StartCapture(vswitch.CaptureConfig{})
	defer c.Close()
	fr := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x88b5, []byte("first"))
	r.send(0, fr)
	r.clock.Advance(-time.Millisecond) // the next batch entered earlier
	r.send(1, porttest.Frame(porttest.Broadcast, porttest.MAC(2), 0x88b5, []byte("second")))
	first, second := <-c.C(), <-c.C()
	if second.Time.Before(first.Time) {
		t.Errorf("capture times %v then %v: went back", first.Time, second.Time)
	}
}
