package stream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// byteConn is a net.Conn that reads from a byte slice in chunks of at most
// chunk bytes, so the decoder meets frames split across reads.
type byteConn struct {
	data  []byte
	chunk int
}

func (c *byteConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.chunk)], c.data)
	c.data = c.data[n:]
	return n, nil
}
func (c *byteConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *byteConn) Close() error                     { return nil }
func (c *byteConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fuzz", Net: "unix"} }
func (c *byteConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Net: "unix"} }
func (c *byteConn) SetDeadline(time.Time) error      { return nil }
func (c *byteConn) SetReadDeadline(time.Time) error  { return nil }
func (c *byteConn) SetWriteDeadline(time.Time) error { return nil }

const (
	fuzzMaxFrame = 2048
	fuzzSmallBuf = 200 // the buffers after the first (see vswitch.SizedReader)
)

func framed(frames ...[]byte) []byte {
	var b []byte
	for _, f := range frames {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

// FuzzDecode feeds arbitrary bytes to a Conn as a client's stream. The
// decoder must not panic, must yield exactly the frames a simple reference
// parser finds, in order, and must then fail with the error the reference
// predicts: io.EOF at a clean end, io.ErrUnexpectedEOF inside a frame,
// ErrBadLength on a length outside [14, MaxFrame].
func FuzzDecode(f *testing.F) {
	min14 := make([]byte, 14)
	f.Add(uint8(64), []byte{})                                           // empty stream: clean hang-up
	f.Add(uint8(64), framed(min14))                                      // one minimum-size frame
	f.Add(uint8(3), framed(min14, make([]byte, 100)))                    // two frames, read 3 bytes at a time
	f.Add(uint8(64), framed(make([]byte, fuzzMaxFrame)))                 // largest frame allowed
	f.Add(uint8(64), binary.BigEndian.AppendUint32(nil, fuzzMaxFrame+1)) // one byte too long
	f.Add(uint8(64), []byte{0, 0, 0, 0})                                 // length 0
	f.Add(uint8(64), append([]byte{0, 0, 0, 13}, make([]byte, 13)...))   // length 13: shorter than a header
	f.Add(uint8(64), []byte{0xff, 0xff, 0xff, 0xff})                     // length 2^32-1
	f.Add(uint8(1), []byte{0, 0, 0})                                     // truncated length prefix
	f.Add(uint8(7), append([]byte{0, 0, 0, 100}, make([]byte, 50)...))   // truncated frame, then EOF
	f.Add(uint8(64), append(framed(min14), 0, 0, 0, 1, 0xaa))            // good frame, then a bad length
	f.Add(uint8(0xff), framed(min14, make([]byte, 1000), min14))         // a batch meets a frame too long for its small buffer
	f.Fuzz(func(t *testing.T, chunk uint8, data []byte) {
		// The top bit of chunk picks larger reads into a read buffer that
		// holds whole frames, so that batches have more than one frame.
		size, rb := 1+int(chunk&0x7f), 1
		if chunk&0x80 != 0 {
			size, rb = 32*size, 4096
		}
		c := NewConn(&byteConn{data: bytes.Clone(data), chunk: size}, ConnConfig{MaxFrame: fuzzMaxFrame, BatchSize: 4, ReadBuffer: rb})

		// Reference parse.
		var want [][]byte
		var wantErr error
		for rest := data; ; {
			if len(rest) == 0 {
				wantErr = io.EOF
				break
			}
			if len(rest) < 4 {
				wantErr = io.ErrUnexpectedEOF
				break
			}
			n := binary.BigEndian.Uint32(rest)
			if n < MinFrame || n > fuzzMaxFrame {
				wantErr = ErrBadLength
				break
			}
			if uint64(len(rest)-4) < uint64(n) {
				wantErr = io.ErrUnexpectedEOF
				break
			}
			want = append(want, rest[4:4+n])
			rest = rest[4+n:]
		}

		// Buffers as the switch gives a SizedReader: the first takes any
		// frame, the others small ones only.
		bufs, sizes := buffers(4, 16+fuzzSmallBuf)
		bufs[0] = make([]byte, 16+fuzzMaxFrame)
		var got [][]byte
		var err error
		for calls := 0; err == nil; calls++ {
			if calls > len(data)+2 {
				t.Fatal("decoder makes no progress")
			}
			var n int
			n, err = c.ReadFrames(bufs, sizes, 16)
			if n < 0 || n > len(bufs) {
				t.Fatalf("ReadFrames returned n=%d", n)
			}
			for i := range n {
				if sizes[i] < MinFrame || sizes[i] > fuzzMaxFrame {
					t.Fatalf("frame of %d bytes delivered", sizes[i])
				}
				got = append(got, bytes.Clone(bufs[i][16:16+sizes[i]]))
			}
		}
		if !errors.Is(err, wantErr) {
			t.Fatalf("decoder ended with %v, want %v", err, wantErr)
		}
		if len(got) != len(want) {
			t.Fatalf("decoded %d frames, want %d", len(got), len(want))
		}
		for i := range got {
			if !bytes.Equal(got[i], want[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
		if d := c.Stats().Discarded; d != 0 {
			t.Fatalf("%d frames discarded", d)
		}
	})
}
