package offload_test

import (
	"testing"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// BenchmarkSegment splits what Linux sends a tap for a bulk TCP transfer:
// a 64 KiB IPv4 super-frame with timestamps, 45 segments of MSS 1448
// (Linux sizes TSO frames to a multiple of the MSS). MB/s counts the
// super-frame's bytes.
func BenchmarkSegment(b *testing.B) {
	h, f := build(spec{tcpOpts: 12, payload: 45 * 1448, mss: 1448, flags: ack | psh})
	n, maxLen, err := offload.SegmentCount(h, f)
	if err != nil {
		b.Fatal(err)
	}
	out := outBufs(n, maxLen)
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := offload.Segment(h, f, out); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "segments/s")
}

// BenchmarkChecksum completes the checksum of a full-size (1514-byte) TCP
// frame, as a non-GSO frame from a tap with TUN_F_CSUM needs.
func BenchmarkChecksum(b *testing.B) {
	h, f := build(spec{tcpOpts: 12, payload: 1448, flags: ack})
	partial := f[h.CsumStart+h.CsumOffset:][:2]
	p0, p1 := partial[0], partial[1]
	b.SetBytes(int64(len(f)))
	b.ReportAllocs()
	for b.Loop() {
		partial[0], partial[1] = p0, p1 // restore the pseudo-header sum
		if err := offload.Checksum(h, f); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}
