package stream

import (
	"testing"

	"github.com/tapswitch/tapswitch/switch/porttest"
)

// BenchmarkConn moves 1500-byte frames through a socket pair in batches:
// WriteFrames on one end, ReadFrames on the other.
func BenchmarkConn(b *testing.B) {
	s1, s2 := socketpairB(b)
	w := NewConn(s1, ConnConfig{})
	r := NewConn(s2, ConnConfig{})
	defer w.Close()
	defer r.Close()
	const batch = 32
	wbufs, _ := buffers(batch, 16+1500)
	for i := range wbufs {
		copy(wbufs[i][16:], frame(porttest.Broadcast, porttest.MAC(1), make([]byte, 1500-14)))
	}
	rbufs, sizes := buffers(batch, 16+65535)
	done := make(chan int)
	go func() {
		got := 0
		for got < b.N*batch {
			n, err := r.ReadFrames(rbufs, sizes, 16)
			if err != nil {
				break
			}
			got += n
		}
		done <- got
	}()
	b.SetBytes(batch * 1500)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if n, err := w.WriteFrames(wbufs, 16); n != batch || err != nil {
			b.Fatalf("WriteFrames = %d, %v", n, err)
		}
	}
	got := <-done
	b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "frames/s")
}
