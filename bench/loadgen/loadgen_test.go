package loadgen

import (
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// benchTransport runs two active clients of transport through an
// in-process switch with its real listeners, at 64 and 1500 bytes, alone
// and with 8 idle clients attached. One op is one frame; allocs/op counts
// the whole process (the clients allocate nothing per frame), so it is the
// switch's stream or datagram path's allocations per forwarded frame.
func benchTransport(b *testing.B, transport string) {
	for _, size := range []int{64, 1500} {
		for _, idle := range []int{0, 8} {
			b.Run(fmt.Sprintf("%dB/idle=%d", size, idle), func(b *testing.B) {
				sw, err := StartSwitch(porttest.SocketDir(b), vswitch.Config{})
				if err != nil {
					b.Fatal(err)
				}
				defer sw.Close()
				s, err := NewSession(Config{Transport: transport, Path: socketPath(sw, transport), Size: size, Idle: idle})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				// Warm the switch's buffer pools and the clients' paths.
				if _, err := s.Run(2000, 0); err != nil {
					b.Fatal(err)
				}
				drops0 := sw.Drops()
				b.ReportAllocs()
				b.SetBytes(int64(size))
				b.ResetTimer()
				r, err := s.Run(b.N, 0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				report(b, r)
				b.ReportMetric(float64(sw.Drops()-drops0)/float64(b.N), "drops/frame")
			})
		}
	}
}

// socketPath returns the socket file of sw's listener for transport.
func socketPath(sw *Switch, transport string) string {
	if transport == Dgram {
		return sw.DgramPath
	}
	return sw.StreamPath
}

func report(b *testing.B, r Result) {
	b.ReportMetric(r.FramesPerSec(), "frames/s")
	b.ReportMetric(r.Gbps(), "Gbit/s")
	b.ReportMetric(float64(r.Lost)/float64(max(r.Sent, 1)), "lost/frame")
	b.ReportMetric(float64(r.IdleReceived)/float64(max(r.Sent, 1)), "idle-rx/frame")
	b.ReportMetric(r.CPU.Seconds()/max(r.Elapsed.Seconds(), 1e-9), "cpu-cores")
}

// BenchmarkStream: QEMU -netdev stream clients over a unix socket.
func BenchmarkStream(b *testing.B) { benchTransport(b, Stream) }

// BenchmarkDgram: vfkit-style unixgram clients (bound, connected, "VFKT"
// hello).
func BenchmarkDgram(b *testing.B) { benchTransport(b, Dgram) }

// TestSession checks that frames cross the switch both ways over each
// transport, that every frame sent is counted once, received or lost, that
// idle clients get none of them, and that a timed run completes.
func TestSession(t *testing.T) {
	for _, transport := range []string{Stream, Dgram} {
		t.Run(transport, func(t *testing.T) {
			sw, err := StartSwitch(porttest.SocketDir(t), vswitch.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer sw.Close()
			s, err := NewSession(Config{Transport: transport, Path: socketPath(sw, transport), Size: 128, Idle: 3})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n := sw.Switch.Stats().FDB.Size; n != 5 {
				t.Errorf("FDB has %d entries, want 5 (one per client)", n)
			}
			r, err := s.Run(5000, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Log(r)
			if r.Sent != 5000 || r.Received+r.Lost != r.Sent || r.Received == 0 {
				t.Errorf("sent %d, received %d, lost %d", r.Sent, r.Received, r.Lost)
			}
			if r.IdleReceived != 0 {
				t.Errorf("idle clients received %d data frames; a learning switch sends them none", r.IdleReceived)
			}
			r, err = s.Run(0, 50*time.Millisecond)
			if err != nil || r.Received == 0 || r.Received+r.Lost != r.Sent {
				t.Errorf("timed run: %v, %v", r, err)
			}
		})
	}
}

// TestSessionLateFrames stalls the path between the two active clients
// for longer than LossTimeout: the frames the senders write off and that
// arrive once the stall ends count as received and late, not lost as
// well; and frames of an earlier run that arrive during a later one count
// in neither.
func TestSessionLateFrames(t *testing.T) {
	g := startGatedRelay(t)
	s, err := NewSession(Config{Transport: Stream, Path: g.path, Size: 128, Window: 64, Batch: 8,
		LossTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	// Within a run: a 1 s stall from the start of a 1.5 s run.
	g.close()
	time.AfterFunc(time.Second, g.open)
	r, err := s.Run(0, 1500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if r.Received+r.Lost != r.Sent || r.Late == 0 {
		t.Errorf("stall within a run: sent %d, received %d, lost %d, late %d; want received+lost = sent and some late",
			r.Sent, r.Received, r.Lost, r.Late)
	}

	// Across runs: the first run's frames are all written off, and arrive
	// during the second, ahead of its own.
	g.close()
	r, err = s.Run(64, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if r.Sent != 64 || r.Received != 0 || r.Lost != 64 {
		t.Errorf("stalled run: sent %d, received %d, lost %d; want 64, 0, 64", r.Sent, r.Received, r.Lost)
	}
	time.AfterFunc(20*time.Millisecond, g.open)
	r, err = s.Run(2000, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Log(r)
	if r.Sent != 2000 || r.Received+r.Lost != r.Sent {
		t.Errorf("run after the stalled one: sent %d, received %d, lost %d; want received+lost = sent = 2000",
			r.Sent, r.Received, r.Lost)
	}
}

// TestFlight checks a sender's account of its window when frames
// written off arrive after all.
func TestFlight(t *testing.T) {
	var f flight
	check := func(what string, got, inflight, lost, late uint64) {
		t.Helper()
		if n, l, e := f.inflight(got), f.lost(got), f.late(got); n != inflight || l != lost || e != late {
			t.Errorf("%s: in flight %d, lost %d, late %d; want %d, %d, %d", what, n, l, e, inflight, lost, late)
		}
	}
	f.sent = 64
	check("64 sent", 0, 64, 0, 0)
	f.writeOff(0) // LossTimeout without progress
	check("64 written off", 0, 0, 64, 0)
	f.sent += 64
	// The oldest arrive first: 10 of those written off.
	check("64 more sent, 10 arrived", 10, 64, 54, 10)
	check("the 64 written off and 20 more arrived", 84, 44, 0, 64)
	check("all arrived", 128, 0, 0, 64)
	// A frame dropped on the way: the sender's last write-off says so.
	f.sent += 64
	check("64 more sent, 63 arrived", 191, 1, 0, 64)
	f.writeOff(191)
	check("the missing one written off", 191, 0, 1, 64)
	if f.sent != 192 || f.lost(191)+191 != f.sent {
		t.Errorf("sent %d, received 191, lost %d: want received+lost = sent", f.sent, f.lost(191))
	}
}

// gatedRelay passes the stream between the first two clients that
// connect, as Relay does, but holds every byte while its gate is closed:
// a switch that stalls.
type gatedRelay struct {
	path string
	mu   sync.Mutex
	gate chan struct{} // closed while the gate is open
}

func startGatedRelay(t *testing.T) *gatedRelay {
	g := &gatedRelay{path: filepath.Join(porttest.SocketDir(t), "gated.sock"), gate: make(chan struct{})}
	close(g.gate)
	ln, err := net.Listen("unix", g.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var conns [2]net.Conn
	t.Cleanup(func() {
		g.open()
		ln.Close()
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		wg.Wait()
	})
	accepted := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(accepted)
		for i := range conns {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns[i] = c
		}
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for {
					n, err := conns[i].Read(buf)
					if err != nil {
						return
					}
					g.mu.Lock()
					gate := g.gate
					g.mu.Unlock()
					<-gate
					if _, err := conns[i^1].Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { <-accepted }) // runs first: conns is complete
	return g
}

func (g *gatedRelay) close() { g.set(false) }
func (g *gatedRelay) open()  { g.set(true) }

func (g *gatedRelay) set(open bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.gate:
		if !open {
			g.gate = make(chan struct{})
		}
	default:
		if open {
			close(g.gate)
		}
	}
}

// BenchmarkRelay is the baseline for BenchmarkStream and BenchmarkDgram:
// the same two clients through a Relay, which only copies, instead of the
// switch.
func BenchmarkRelay(b *testing.B) {
	for _, transport := range []string{Stream, Dgram} {
		for _, size := range []int{64, 1500} {
			b.Run(fmt.Sprintf("%s/%dB", transport, size), func(b *testing.B) {
				rl, err := StartRelay(porttest.SocketDir(b), transport)
				if err != nil {
					b.Fatal(err)
				}
				defer rl.Close()
				s, err := NewSession(Config{Transport: transport, Path: rl.Path, Size: size})
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				if _, err := s.Run(2000, 0); err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				r, err := s.Run(b.N, 0)
				b.StopTimer()
				if err != nil {
					b.Fatal(err)
				}
				report(b, r)
			})
		}
	}
}
