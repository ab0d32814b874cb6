package vswitch_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestReplacePort: on a full switch (MaxPorts) the new port takes the old
// one's place in one step. The old port is removed as by Close, its
// counters stay in the totals, its locked address and its FDB entries go,
// and a second replacement of it fails without adding anything.
func TestReplacePort(t *testing.T) {
	r := newRig(t, 1, vswitch.Config{MaxPorts: 2})
	v := r.addCfg("victim", vswitch.PortConfig{LockMAC: true, LockedMAC: porttest.MAC(9)})
	// The victim's frame is counted and MAC(9) learned on it.
	f := porttest.Frame(porttest.Broadcast, porttest.MAC(9), 0x88b5, []byte("victim"))
	r.send(v, f)
	r.expect(0, f)
	before := r.sw.Stats().Totals
	old := r.atts[v]
	capture := r.sw.StartCapture(vswitch.CaptureConfig{Port: old.ID()})

	np := porttest.New(porttest.Config{Name: "new"})
	// The victim's locked address is free for the new port.
	a, err := r.sw.ReplacePort(old, np, vswitch.PortConfig{Kind: "mem", NoReader: true, LockMAC: true, LockedMAC: porttest.MAC(9)})
	if err != nil {
		t.Fatalf("ReplacePort: %v", err)
	}
	// Its capture has ended, as Close ends it: a flood now is not
	// recorded as if it had left through the old port.
	flood := porttest.Frame(porttest.Broadcast, porttest.MAC(0), 0x88b5, []byte("after"))
	r.send(0, flood)
	for cf := range capture.C() {
		if cf.In == r.atts[0].ID() {
			t.Error("the replaced port's capture recorded a flood sent after it left")
		}
	}
	if ports := r.sw.Ports(); len(ports) != 2 || ports[0] != r.atts[0] || ports[1] != a {
		t.Fatalf("ports after ReplacePort: %v, want p0 and new", names(ports))
	}
	<-old.Done()
	if !old.Detached() {
		t.Error("the old port is not marked detached")
	}
	after := r.sw.Stats().Totals
	if after.RxFrames < before.RxFrames || after.TxFrames < before.TxFrames {
		t.Errorf("totals went back: rx %d → %d, tx %d → %d", before.RxFrames, after.RxFrames, before.TxFrames, after.TxFrames)
	}
	for _, e := range r.sw.FDB() {
		if e.PortID == old.ID() {
			t.Errorf("FDB entry %s still on the old port", e.MAC)
		}
	}
	// The new port has MAC(9) now: a frame from it goes through.
	g := porttest.Frame(porttest.Broadcast, porttest.MAC(9), 0x88b5, []byte("new"))
	a.Input([][]byte{append(make([]byte, vswitch.Headroom), g...)}, []int{len(g)}, vswitch.Headroom)
	r.expect(0, g)

	if _, err := r.sw.ReplacePort(old, porttest.New(porttest.Config{}), vswitch.PortConfig{}); !errors.Is(err, vswitch.ErrPortGone) {
		t.Errorf("replacing a removed port: %v, want ErrPortGone", err)
	}
	if _, err := r.sw.AddPort(porttest.New(porttest.Config{}), vswitch.PortConfig{}); !errors.Is(err, vswitch.ErrTooManyPorts) {
		t.Errorf("third port: %v, want ErrTooManyPorts", err)
	}
	if n := len(r.sw.Ports()); n != 2 {
		t.Errorf("%d ports, want 2", n)
	}
}

// TestReplacePortRoomNotTaken: a port added elsewhere at the same moment
// never takes the room a replaced port leaves. Removing the old port and
// then adding the new one let it: the new port was refused, and the old
// one gone all the same.
func TestReplacePortRoomNotTaken(t *testing.T) {
	for i := range 50 {
		sw := vswitch.New(vswitch.Config{MaxPorts: 2})
		add := func(name string) *vswitch.Attachment {
			a, err := sw.AddPort(porttest.New(porttest.Config{Name: name}), vswitch.PortConfig{Kind: "mem", NoReader: true})
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		add("other")
		// The old port takes a while to close, as a socket peer's does
		// (its descriptors, a log line): time enough for the other
		// goroutine to come in between a removal and an addition.
		old, err := sw.AddPort(slowClose{porttest.New(porttest.Config{Name: "old"})}, vswitch.PortConfig{Kind: "mem", NoReader: true})
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var grabbed *vswitch.Attachment
		var wg sync.WaitGroup
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if a, err := sw.AddPort(porttest.New(porttest.Config{Name: "grabber"}), vswitch.PortConfig{Kind: "mem", NoReader: true}); err == nil {
					grabbed = a
					return
				}
			}
		})
		_, err = sw.ReplacePort(old, porttest.New(porttest.Config{Name: "new"}), vswitch.PortConfig{Kind: "mem", NoReader: true})
		close(stop)
		wg.Wait()
		sw.Close()
		if err != nil || grabbed != nil {
			t.Fatalf("round %d: ReplacePort: %v; a port added meanwhile took the room: %v", i, err, grabbed != nil)
		}
	}
}

type slowClose struct{ *porttest.Port }

func (p slowClose) Close() error {
	time.Sleep(time.Millisecond)
	return p.Port.Close()
}

func names(ports []*vswitch.Attachment) []string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = fmt.Sprintf("%d:%s", p.ID(), p.Name())
	}
	return s
}
