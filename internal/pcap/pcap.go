// Package pcap writes and reads the classic libpcap file format (LINKTYPE
// Ethernet, microsecond timestamps), which tcpdump and Wireshark read. It
// carries frames from `tapswitch serve` to `tapswitch capture`.
package pcap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

const (
	magic         = 0xa1b2c3d4
	linkEthernet  = 1
	fileHeaderLen = 24
	recordHeadLen = 16
	maxSnapLen    = 262144
	versionMajor  = 2
	versionMinor  = 4
)

// Writer writes a pcap stream.
type Writer struct {
	w       io.Writer
	snaplen int
	hdr     [recordHeadLen]byte
}

// NewWriter writes the file header to w and returns a Writer that
// truncates frames to snaplen bytes (0 means 262144).
func NewWriter(w io.Writer, snaplen int) (*Writer, error) {
	if snaplen <= 0 || snaplen > maxSnapLen {
		snaplen = maxSnapLen
	}
	var h [fileHeaderLen]byte
	binary.LittleEndian.PutUint32(h[0:], magic)
	binary.LittleEndian.PutUint16(h[4:], versionMajor)
	binary.LittleEndian.PutUint16(h[6:], versionMinor)
	binary.LittleEndian.PutUint32(h[16:], uint32(snaplen))
	binary.LittleEndian.PutUint32(h[20:], linkEthernet)
	if _, err := w.Write(h[:]); err != nil {
		return nil, fmt.Errorf("pcap: write header: %w", err)
	}
	return &Writer{w: w, snaplen: snaplen}, nil
}

// WriteFrame writes one record.
func (w *Writer) WriteFrame(t time.Time, frame []byte) error {
	capLen := min(len(frame), w.snaplen)
	binary.LittleEndian.PutUint32(w.hdr[0:], uint32(t.Unix()))
	binary.LittleEndian.PutUint32(w.hdr[4:], uint32(t.Nanosecond()/1000))
	binary.LittleEndian.PutUint32(w.hdr[8:], uint32(capLen))
	binary.LittleEndian.PutUint32(w.hdr[12:], uint32(len(frame)))
	if _, err := w.w.Write(w.hdr[:]); err != nil {
		return fmt.Errorf("pcap: write record: %w", err)
	}
	if _, err := w.w.Write(frame[:capLen]); err != nil {
		return fmt.Errorf("pcap: write record: %w", err)
	}
	return nil
}

// ErrFormat is returned for a stream that is not a pcap file this package
// wrote (little-endian, microseconds, Ethernet).
var ErrFormat = errors.New("pcap: not a little-endian Ethernet pcap stream")

// Reader reads a pcap stream record by record.
type Reader struct {
	r      io.Reader
	header [fileHeaderLen]byte
	rec    [recordHeadLen]byte
}

// NewReader reads and checks the file header.
func NewReader(r io.Reader) (*Reader, error) {
	pr := &Reader{r: r}
	if _, err := io.ReadFull(r, pr.header[:]); err != nil {
		return nil, fmt.Errorf("pcap: read header: %w", err)
	}
	if binary.LittleEndian.Uint32(pr.header[0:]) != magic || binary.LittleEndian.Uint32(pr.header[20:]) != linkEthernet {
		return nil, ErrFormat
	}
	return pr, nil
}

// Header returns the raw file header, to copy a stream.
func (r *Reader) Header() []byte { return r.header[:] }

// Next reads the next record and returns its raw header and data, appended
// to buf. It returns io.EOF at a clean end of stream.
func (r *Reader) Next(buf []byte) (record []byte, err error) {
	if _, err := io.ReadFull(r.r, r.rec[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("pcap: truncated record header: %w", err)
		}
		return nil, err
	}
	n := binary.LittleEndian.Uint32(r.rec[8:])
	if n > maxSnapLen {
		return nil, fmt.Errorf("pcap: record of %d bytes: %w", n, ErrFormat)
	}
	buf = append(buf[:0], r.rec[:]...)
	buf = append(buf, make([]byte, n)...)
	if _, err := io.ReadFull(r.r, buf[recordHeadLen:]); err != nil {
		return nil, fmt.Errorf("pcap: truncated record: %w", err)
	}
	return buf, nil
}
