package offload

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// naiveSum is RFC 1071 one big-endian word at a time: the reference for
// sum, and the baseline of BenchmarkSum.
func naiveSum(b []byte, initial uint64) uint16 {
	s := initial
	for len(b) >= 2 {
		s += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestSum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 600)
	fills := map[string]func(){
		"random": func() {
			for i := range buf {
				buf[i] = byte(rng.Uint32())
			}
		},
		"ones":  func() { copy(buf, bytes.Repeat([]byte{0xff}, len(buf))) }, // every add carries
		"zeros": func() { clear(buf) },
		"alternating": func() {
			for i := range buf {
				buf[i] = byte(0xff * (i & 1))
			}
		},
	}
	initials := []uint64{0, 1, 6, 0xffff, 0x1fffe, 0xffffffff, 1 << 40}
	for name, fill := range fills {
		fill()
		for off := range 8 { // every alignment
			for n := 0; off+n <= len(buf); n++ {
				b := buf[off : off+n]
				for _, init := range initials {
					if got, want := sum(b, init), naiveSum(b, init); got != want {
						t.Fatalf("%s: sum(buf[%d:%d], %#x) = %#x, want %#x", name, off, off+n, init, got, want)
					}
				}
			}
		}
	}
}

func TestFold(t *testing.T) {
	for _, x := range []uint64{0, 1, 0xffff, 0x10000, 0xffffffff, 1<<63 | 1, ^uint64(0), 0xfffe0001fffe0001} {
		s := x
		for s > 0xffff {
			s = s>>16 + s&0xffff // never overflows: s>>16 < 2^48
		}
		if got := fold(x); uint64(got) != s {
			t.Errorf("fold(%#x) = %#x, want %#x", x, got, s)
		}
	}
}

// BenchmarkSum compares sum with the word-at-a-time loop over a 1448-byte
// TCP payload.
func BenchmarkSum(b *testing.B) {
	buf := make([]byte, 1448)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	for _, bc := range []struct {
		name string
		fn   func([]byte, uint64) uint16
	}{{"fast", sum}, {"naive", naiveSum}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			var s uint16
			for b.Loop() {
				s += bc.fn(buf, 0)
			}
			_ = s
		})
	}
}
