package vswitch_test

import (
	"fmt"
	"testing"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// benchSwitch returns a switch with one ingress port fed by Input and
// receivers discarding what they get, all stations learned. With direct,
// the receivers take frames synchronously (vswitch.DirectWriter, as taps
// do), so Input writes every frame itself and nothing is queued.
func benchSwitch(b *testing.B, receivers int, direct bool) (*vswitch.Switch, *vswitch.Attachment) {
	sw := vswitch.New(vswitch.Config{})
	b.Cleanup(func() { sw.Close() })
	in, err := sw.AddPort(porttest.New(porttest.Config{Name: "in"}), vswitch.PortConfig{Kind: "mem", NoReader: true})
	if err != nil {
		b.Fatal(err)
	}
	for i := range receivers {
		p := porttest.New(porttest.Config{Name: fmt.Sprintf("out%d", i), Discard: true, BatchSize: 64})
		var out vswitch.Port = p
		if direct {
			out = &directPort{Port: p}
		}
		a, err := sw.AddPort(out, vswitch.PortConfig{Kind: "mem", NoReader: true})
		if err != nil {
			b.Fatal(err)
		}
		hello := porttest.Frame(porttest.Broadcast, porttest.MAC(100+i), 0x88b5, nil)
		buf := make([]byte, vswitch.Headroom+len(hello))
		copy(buf[vswitch.Headroom:], hello)
		a.Input([][]byte{buf}, []int{len(hello)}, vswitch.Headroom)
	}
	return sw, in
}

func runForward(b *testing.B, receivers int, dst vswitch.MAC, size int, direct bool) {
	sw, in := benchSwitch(b, receivers, direct)
	fr := porttest.Frame(dst, porttest.MAC(1), 0x0800, make([]byte, size-14))
	buf := make([]byte, vswitch.Headroom+len(fr))
	copy(buf[vswitch.Headroom:], fr)
	bufs, sizes := [][]byte{buf}, []int{len(fr)}
	for range 1000 { // warm the buffer pool
		in.Input(bufs, sizes, vswitch.Headroom)
	}
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	for b.Loop() {
		in.Input(bufs, sizes, vswitch.Headroom)
	}
	b.StopTimer()
	var drops uint64
	for _, p := range sw.Stats().Ports {
		drops += p.Drops.Total()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/frame")
	b.ReportMetric(float64(drops)/float64(b.N+1000), "drops/frame")
}

// BenchmarkForward measures known unicast between two ports. The
// receiver's transmit goroutine cannot keep up with Input called in a
// tight loop, so part of the frames take the queue-full path (drops/frame).
func BenchmarkForward(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { runForward(b, 1, porttest.MAC(100), size, false) })
	}
}

// BenchmarkForwardDirect measures known unicast to a port that takes
// frames synchronously, as a tap does: every frame is forwarded and
// written by Input, none queued or dropped.
func BenchmarkForwardDirect(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { runForward(b, 1, porttest.MAC(100), size, true) })
	}
}

// BenchmarkFlood measures a broadcast copied to eight ports.
func BenchmarkFlood(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) { runForward(b, 8, porttest.Broadcast, size, false) })
	}
}
