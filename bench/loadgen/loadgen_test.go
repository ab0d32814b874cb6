package loadgen

import (
	"fmt"
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
				s, err := NewSession(Config{Transport: transport, Path: sw.Path(transport), Size: size, Idle: idle})
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

func report(b *testing.B, r Result) {
	b.ReportMetric(r.FramesPerSec(), "frames/s")
	b.ReportMetric(r.Gbps(), "Gbit/s")
	b.ReportMetric(r.LossRatio(), "lost/frame")
	b.ReportMetric(float64(r.IdleReceived)/float64(max(r.Sent, 1)), "idle-rx/frame")
	b.ReportMetric(r.CPU.Seconds()/max(r.Elapsed.Seconds(), 1e-9), "cpu-cores")
}

// BenchmarkStream: QEMU -netdev stream clients over a unix socket.
func BenchmarkStream(b *testing.B) { benchTransport(b, Stream) }

// BenchmarkDgram: vfkit-style unixgram clients (bound, connected, "VFKT"
// hello).
func BenchmarkDgram(b *testing.B) { benchTransport(b, Dgram) }

// TestSession checks that frames cross the switch both ways over each
// transport, that idle clients get none of them, and that a run without a
// window completes.
func TestSession(t *testing.T) {
	for _, transport := range []string{Stream, Dgram} {
		t.Run(transport, func(t *testing.T) {
			sw, err := StartSwitch(porttest.SocketDir(t), vswitch.Config{})
			if err != nil {
				t.Fatal(err)
			}
			defer sw.Close()
			s, err := NewSession(Config{Transport: transport, Path: sw.Path(transport), Size: 128, Idle: 3})
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
			if r.Sent != 5000 || r.Received+r.Lost < r.Sent || r.Received == 0 {
				t.Errorf("sent %d, received %d, lost %d", r.Sent, r.Received, r.Lost)
			}
			if r.IdleReceived != 0 {
				t.Errorf("idle clients received %d data frames; a learning switch sends them none", r.IdleReceived)
			}
			r, err = s.Run(0, 50*time.Millisecond)
			if err != nil || r.Received == 0 {
				t.Errorf("timed run: %v, %v", r, err)
			}
		})
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
