// Package offload resolves the work a Linux tap leaves to the receiver of a
// frame when it runs with IFF_VNET_HDR and TUNSETOFFLOAD: TCP segmentation
// (GSO) and partial L4 checksums.
//
// It sits beside the switch (package vswitch) and knows nothing of ports or
// devices. Frames travel between offload-capable ports whole, with their
// virtio_net_hdr; before a frame goes to a port that cannot take offloads (a
// QEMU stream or datagram peer, a tap without vnet headers) the switch calls
// Segment for a GSO super-frame or Checksum for a frame whose checksum is
// only partial, and sends ordinary frames.
//
// The header layout and semantics are those of struct virtio_net_hdr in
// Linux include/uapi/linux/virtio_net.h, as drivers/net/tun.c uses them: the
// header describes a whole Ethernet frame, so CsumStart counts the Ethernet
// header (and a VLAN tag, if any).
package offload

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// HdrLen is the size of struct virtio_net_hdr, the prefix a tap opened with
// IFF_VNET_HDR puts before every frame it reads and expects before every
// frame written to it, at the default TUNSETVNETHDRSZ. (A size of 12 adds
// num_buffers, which taps leave zero.)
const HdrLen = 10

// Flags of Hdr.Flags (VIRTIO_NET_HDR_F_*).
const (
	// NeedsCsum says the L4 checksum is partial: the 16-bit field at
	// CsumStart+CsumOffset holds the folded pseudo-header sum, and the one's
	// complement of the sum of the frame from CsumStart to its end must be
	// stored there before the frame leaves the host (see Checksum).
	NeedsCsum uint8 = 1
	// DataValid says the checksums have been verified. Linux sets it on
	// frames read from a tap whose checksum it already checked
	// (CHECKSUM_UNNECESSARY); tun ignores it on write. It leaves no work.
	DataValid uint8 = 2
)

// GSO types of Hdr.GSOType (VIRTIO_NET_HDR_GSO_*).
const (
	// GSONone marks an ordinary frame, GSOSize and HdrLen unused.
	GSONone uint8 = 0
	// GSOTCPv4 marks a TCP over IPv4 super-frame (TSO4).
	GSOTCPv4 uint8 = 1
	// GSOUDP marks a UDP datagram to be IP-fragmented (UFO); Segment does
	// not handle it, and taps only produce it when asked with TUN_F_UFO.
	GSOUDP uint8 = 3
	// GSOTCPv6 marks a TCP over IPv6 super-frame (TSO6).
	GSOTCPv6 uint8 = 4
	// GSOUDPL4 marks a UDP super-frame to be split into datagrams (USO);
	// Segment does not handle it, and taps only produce it when asked with
	// TUN_F_USO4 or TUN_F_USO6.
	GSOUDPL4 uint8 = 5
	// GSOECN is or-ed into a TCP type when the super-frame has CWR set: the
	// receiver must keep CWR on the first segment only (TUN_F_TSO_ECN).
	GSOECN uint8 = 0x80
)

// Hdr is a decoded struct virtio_net_hdr.
//
// A tap's header is in the host's native byte order (legacy virtio, the
// tun default unless TUNSETVNETLE or TUNSETVNETBE was used), so DecodeHdr
// and Encode use binary.NativeEndian. On the little-endian hosts tapswitch
// runs on this is also the virtio 1.0 (vhost) order.
type Hdr struct {
	// Flags is a set of NeedsCsum and DataValid.
	Flags uint8
	// GSOType is one of the GSO* types, possibly or-ed with GSOECN.
	GSOType uint8
	// HdrLen is a hint: the length of the headers before the payload.
	// Linux fills it with the length of the frame's linear part, which may
	// include payload, so Segment parses the headers instead of trusting it.
	HdrLen uint16
	// GSOSize is the payload size of each segment (the TCP MSS).
	GSOSize uint16
	// CsumStart is the offset in the frame (Ethernet header included) where
	// the checksummed data starts, the start of the L4 header.
	CsumStart uint16
	// CsumOffset is the offset of the checksum field from CsumStart: 16 for
	// TCP, 6 for UDP.
	CsumOffset uint16
}

// DecodeHdr decodes the virtio_net_hdr at the start of b. Like
// encoding/binary, it panics if b is shorter than HdrLen; callers check the
// length of what they read first.
func DecodeHdr(b []byte) Hdr {
	_ = b[HdrLen-1]
	ne := binary.NativeEndian
	return Hdr{
		Flags:      b[0],
		GSOType:    b[1],
		HdrLen:     ne.Uint16(b[2:]),
		GSOSize:    ne.Uint16(b[4:]),
		CsumStart:  ne.Uint16(b[6:]),
		CsumOffset: ne.Uint16(b[8:]),
	}
}

// Encode writes h into the first HdrLen bytes of b. It panics if b is
// shorter than HdrLen.
func (h Hdr) Encode(b []byte) {
	_ = b[HdrLen-1]
	ne := binary.NativeEndian
	b[0] = h.Flags
	b[1] = h.GSOType
	ne.PutUint16(b[2:], h.HdrLen)
	ne.PutUint16(b[4:], h.GSOSize)
	ne.PutUint16(b[6:], h.CsumStart)
	ne.PutUint16(b[8:], h.CsumOffset)
}

// Errors returned by Segment, SegmentCount and Checksum; test with
// errors.Is. ErrMalformed and ErrUnsupported come wrapped with the detail.
// No error is allocated per call.
var (
	// ErrMalformed reports a frame or header that contradicts itself or
	// the protocols: bad lengths, a fragment, GSOSize 0, checksum offsets
	// outside the frame.
	ErrMalformed = errors.New("offload: malformed frame")
	// ErrUnsupported reports a well-formed frame this package does not
	// handle (UDP GSO, IPv6 extension headers, two VLAN tags). It wraps
	// errors.ErrUnsupported.
	ErrUnsupported = fmt.Errorf("offload: %w", errors.ErrUnsupported)
	// ErrTooManySegments reports that out is shorter than the number of
	// segments SegmentCount gives.
	ErrTooManySegments = errors.New("offload: segment: too many segments for the output buffers")
	// ErrShortBuffer reports an output buffer whose capacity is below the
	// length of the segment it must hold.
	ErrShortBuffer = errors.New("offload: segment: output buffer too small")
)
