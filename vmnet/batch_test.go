package vmnet

import (
	"bytes"
	"slices"
	"testing"
)

func TestBatchSize(t *testing.T) {
	for _, tc := range []struct {
		read, write uint64
		want        int
	}{
		{0, 0, defaultBatch}, // before macOS 15: not reported
		{256, 256, maxBatch},
		{16, 256, 16},
		{256, 8, 8},
		{0, 10, 10},
		{12, 0, 12},
		{1, 1, 1},
		{1 << 40, 1 << 40, maxBatch},
	} {
		if got := batchSize(tc.read, tc.write); got != tc.want {
			t.Errorf("batchSize(%d, %d) = %d, want %d", tc.read, tc.write, got, tc.want)
		}
	}
}

// frames returns n vmnet-side buffers of size bytes, frame i filled with
// byte i+1, and their lengths.
func frames(n, size int, lens ...uint64) ([][]byte, []uint64) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{byte(i + 1)}, size)
	}
	return bufs, lens
}

func TestDeliver(t *testing.T) {
	const off = 16
	src, srcSizes := frames(5, 1518, 60, 13, 1514, 1519, 1000)
	dst := make([][]byte, 5)
	for i := range dst {
		dst[i] = make([]byte, off+1514)
	}
	sizes := make([]int, 5)
	var c counters
	n := deliver(dst, sizes, off, src, srcSizes, 5, &c)
	// Frame 1 is a runt, frame 3 is longer than its vmnet buffer (truncated
	// by vmnet); the others move up.
	if n != 3 || !slices.Equal(sizes[:3], []int{60, 1514, 1000}) {
		t.Fatalf("deliver = %d, sizes %v; want 3 frames of 60, 1514, 1000", n, sizes[:n])
	}
	for i, fill := range []byte{1, 3, 5} {
		if !bytes.Equal(dst[i][off:off+sizes[i]], bytes.Repeat([]byte{fill}, sizes[i])) {
			t.Errorf("frame %d has the wrong contents", i)
		}
		if !bytes.Equal(dst[i][:off], make([]byte, off)) {
			t.Errorf("frame %d: headroom written", i)
		}
	}
	if got := c.snapshot(); got != (Counters{TooShort: 1, TooLong: 1}) {
		t.Errorf("counters %+v, want one too short and one too long", got)
	}

	// A frame longer than the caller's buffer is dropped too.
	src, srcSizes = frames(2, 9000, 9000, 100)
	small := [][]byte{make([]byte, off+1514), make([]byte, off+1514)}
	if n := deliver(small, sizes, off, src, srcSizes, 2, &c); n != 1 || sizes[0] != 100 {
		t.Errorf("deliver with a jumbo frame = %d (size %d), want 1 (100)", n, sizes[0])
	}
	if c.snapshot().TooLong != 2 {
		t.Errorf("TooLong = %d, want 2", c.snapshot().TooLong)
	}
	if n := deliver(small, sizes, off, src, srcSizes, 0, &c); n != 0 {
		t.Errorf("deliver of nothing = %d", n)
	}
}

func TestStage(t *testing.T) {
	const off = 16
	mk := func(n int, fill byte) []byte { return append(make([]byte, off), bytes.Repeat([]byte{fill}, n)...) }
	bufs := [][]byte{mk(60, 1), mk(1600, 2), mk(1514, 3), mk(100, 4)}
	dst := [][]byte{make([]byte, 1514), make([]byte, 1514), make([]byte, 1514), make([]byte, 1514)}
	dstSizes := make([]uint64, 4)
	from := make([]int, 4)
	var c counters
	k := stage(dst, dstSizes, from, bufs, off, 1514, &c)
	if k != 3 || !slices.Equal(dstSizes[:3], []uint64{60, 1514, 100}) {
		t.Fatalf("stage = %d, sizes %v; want 3 frames of 60, 1514, 100 (the 1600-byte one dropped)", k, dstSizes[:k])
	}
	// A write that stops after the first staged frame stops before input
	// frame 2: the dropped one, 1, is behind it.
	if !slices.Equal(from[:3], []int{0, 2, 3}) {
		t.Errorf("staged frames come from %v, want [0 2 3]", from[:3])
	}
	for i, fill := range []byte{1, 3, 4} {
		if !bytes.Equal(dst[i][:dstSizes[i]], bytes.Repeat([]byte{fill}, int(dstSizes[i]))) {
			t.Errorf("staged frame %d has the wrong contents", i)
		}
	}
	if got := c.snapshot(); got != (Counters{TooLong: 1}) {
		t.Errorf("counters %+v, want one too long", got)
	}
	// maxPacket larger than the buffers: the buffer bounds.
	if k := stage(dst, dstSizes, from, [][]byte{mk(2000, 9)}, off, 65535, &c); k != 0 || c.snapshot().TooLong != 2 {
		t.Errorf("stage of a frame longer than the buffer = %d, TooLong %d", k, c.snapshot().TooLong)
	}
}
