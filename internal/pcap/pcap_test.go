package pcap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"
)

// TestWriterFormat: the file and record headers are the classic libpcap
// ones tcpdump and Wireshark read: version 2.4, microsecond timestamps,
// captured and original lengths.
func TestWriterFormat(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 32)
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, 60)
	for i := range frame {
		frame[i] = byte(i)
	}
	ts := time.Unix(1700000000, 123456789)
	if err := w.WriteFrame(ts, frame); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	le := binary.LittleEndian
	if len(b) != 24+16+32 {
		t.Fatalf("%d bytes written, want %d", len(b), 24+16+32)
	}
	for _, f := range []struct {
		what      string
		got, want uint32
	}{
		{"magic", le.Uint32(b[0:]), 0xa1b2c3d4},
		{"version major", uint32(le.Uint16(b[4:])), 2},
		{"version minor", uint32(le.Uint16(b[6:])), 4},
		{"thiszone", le.Uint32(b[8:]), 0},
		{"sigfigs", le.Uint32(b[12:]), 0},
		{"snaplen", le.Uint32(b[16:]), 32},
		{"linktype", le.Uint32(b[20:]), 1},
		{"ts_sec", le.Uint32(b[24:]), 1700000000},
		{"ts_usec", le.Uint32(b[28:]), 123456},
		{"incl_len", le.Uint32(b[32:]), 32},
		{"orig_len", le.Uint32(b[36:]), 60},
	} {
		if f.got != f.want {
			t.Errorf("%s = %d, want %d", f.what, f.got, f.want)
		}
	}
	if !bytes.Equal(b[40:], frame[:32]) {
		t.Errorf("record data %x, want the frame's first 32 bytes", b[40:])
	}
}

// TestReaderRoundTrip: what Writer writes, Reader reads back record by
// record, and a clean end is io.EOF.
func TestReaderRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w, err := NewWriter(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{bytes.Repeat([]byte{1}, 14), bytes.Repeat([]byte{2}, 1514)}
	for _, f := range frames {
		if err := w.WriteFrame(time.Unix(1, 0), f); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range frames {
		rec, err := r.Next(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(rec[16:], f) || binary.LittleEndian.Uint32(rec[12:]) != uint32(len(f)) {
			t.Fatalf("record %x, want the frame %x", rec, f)
		}
	}
	if _, err := r.Next(nil); err != io.EOF {
		t.Fatalf("after the last record: %v, want io.EOF", err)
	}
}

func header(linktype uint32) []byte {
	h := make([]byte, 24)
	binary.LittleEndian.PutUint32(h[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(h[4:], 2)
	binary.LittleEndian.PutUint16(h[6:], 4)
	binary.LittleEndian.PutUint32(h[16:], 262144)
	binary.LittleEndian.PutUint32(h[20:], linktype)
	return h
}

// TestReaderRefusesOtherLinkTypes: a stream of another link type (raw IP,
// 101) is not taken for Ethernet frames.
func TestReaderRefusesOtherLinkTypes(t *testing.T) {
	if _, err := NewReader(bytes.NewReader(header(101))); !errors.Is(err, ErrFormat) {
		t.Fatalf("link type 101: %v, want ErrFormat", err)
	}
	if _, err := NewReader(bytes.NewReader(header(1))); err != nil {
		t.Fatalf("Ethernet: %v", err)
	}
}

// TestReaderRecordBound: a record of the largest snaplen (262144 bytes) is
// read; one byte more is refused as not this format.
func TestReaderRecordBound(t *testing.T) {
	for _, n := range []uint32{maxSnapLen, maxSnapLen + 1} {
		b := header(1)
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[8:], n)
		binary.LittleEndian.PutUint32(rec[12:], n)
		b = append(b, rec...)
		b = append(b, make([]byte, n)...)
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Next(nil)
		if n == maxSnapLen && (err != nil || len(got) != 16+int(n)) {
			t.Errorf("record of %d bytes: %d, %v; want it read", n, len(got), err)
		}
		if n > maxSnapLen && !errors.Is(err, ErrFormat) {
			t.Errorf("record of %d bytes: %v; want ErrFormat", n, err)
		}
	}
}
