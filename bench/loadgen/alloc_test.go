package loadgen

import (
	"fmt"
	"runtime"
	"testing"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestSessionNoAllocs counts the allocations of the whole process, from
// runtime.MemStats.Mallocs, while an in-process switch forwards 100 000
// frames between two clients over each transport at 64 and 1500 B, and
// fails above one per 1000 frames. testing.AllocsPerRun and allocs/op
// round down to whole allocations per run or per op, so a test of 8
// frames per run passes with one allocation per 8 frames; this one sees
// an allocation per batch (1/64 to 1/32 per frame) fifteen times over.
//
// Everything in the process counts, so nothing else may run: no test of
// this package is parallel, the clients allocate nothing per frame and
// idle clients and ports nothing at all, and each Run allocates ~12
// objects (its goroutines and timers). The switch's frame pool grows to
// the most frames ever in flight, and sync.Pool's per-P lists as they
// fill: a first run with no window, whose queues fill, takes the pool
// past anything a run with a window needs, so that what is counted is
// the steady state (12-34 allocations per 100 000 frames in runs on a
// loaded 2-core machine). A GC cycle empties the pool again, so each case
// has up to three tries and passes on the first within the budget; an
// allocation per batch fails all three.
func TestSessionNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates (and sync.Pool drops items at random under it); run without -race")
	}
	const frames, budget, tries = 100_000, 100_000 / 1000, 3
	for _, transport := range []string{Stream, Dgram} {
		for _, size := range []int{64, 1500} {
			t.Run(fmt.Sprintf("%s/%dB", transport, size), func(t *testing.T) {
				sw, err := StartSwitch(porttest.SocketDir(t), vswitch.Config{})
				if err != nil {
					t.Fatal(err)
				}
				defer sw.Close()
				session := func(window int) *Session {
					t.Helper()
					s, err := NewSession(Config{Transport: transport, Path: socketPath(sw, transport), Size: size, Window: window})
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { s.Close() })
					return s
				}
				// Open until the end, so that no port leaves (and logs)
				// while allocations are counted.
				if _, err := session(-1).Run(frames, 0); err != nil {
					t.Fatal(err)
				}
				s := session(0)
				if _, err := s.Run(frames/10, 0); err != nil {
					t.Fatal(err)
				}
				var counts []uint64
				for range tries {
					var before, after runtime.MemStats
					runtime.ReadMemStats(&before)
					r, err := s.Run(frames, 0)
					runtime.ReadMemStats(&after)
					if err != nil {
						t.Fatal(err)
					}
					n := after.Mallocs - before.Mallocs
					t.Logf("%d allocations, %d GC cycles: %v", n, after.NumGC-before.NumGC, r)
					if n <= budget {
						return
					}
					counts = append(counts, n)
				}
				t.Errorf("%v allocations per %d frames forwarded in %d tries, want at most %d (one per 1000)", counts, frames, tries, budget)
			})
		}
	}
}
