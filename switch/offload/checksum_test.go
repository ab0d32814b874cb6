package offload_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// checkL4 verifies the TCP or UDP checksum of an untagged or tagged frame
// built by build.
func checkL4(t *testing.T, h offload.Hdr, f []byte) {
	t.Helper()
	ipOff := 14
	if be.Uint16(f[12:]) == 0x8100 {
		ipOff = 18
	}
	ip, l4 := f[ipOff:h.CsumStart], f[h.CsumStart:]
	proto := ip[9]
	if ip[0]>>4 == 6 {
		proto = ip[6]
	}
	if s := refSum(pseudoHdr(ip, proto, len(l4)), l4); s != 0xffff {
		t.Fatalf("checksum %#x wrong (sum %#x)", be.Uint16(f[h.CsumStart+h.CsumOffset:]), s)
	}
}

func TestChecksum(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    spec
	}{
		{"ipv4 tcp", spec{payload: 1460, flags: ack | psh}},
		{"ipv4 tcp odd", spec{tcpOpts: 12, payload: 1001, flags: ack}},
		{"ipv4 tcp syn", spec{tcpOpts: 20, flags: syn}},
		{"ipv4 options", spec{ipOpts: 12, payload: 77, flags: ack}},
		{"ipv6 tcp", spec{v6: true, tcpOpts: 12, payload: 1428, flags: ack}},
		{"ipv6 tcp vlan odd", spec{v6: true, vlan: true, payload: 3, flags: ack}},
		{"ipv4 udp", spec{udp: true, payload: 1472}},
		{"ipv4 udp odd", spec{udp: true, payload: 33}},
		{"ipv6 udp", spec{v6: true, udp: true, payload: 512}},
		{"ipv6 udp empty", spec{v6: true, udp: true}},
		{"jumbo", spec{tcpOpts: 12, payload: 9000 - 52, flags: ack}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, f := build(tc.s)
			if err := offload.Checksum(h, f); err != nil {
				t.Fatal(err)
			}
			checkL4(t, h, f)
		})
	}
}

// TestChecksumZero builds UDP datagrams whose checksum comes out as 0:
// Checksum must store 0xffff, 0 meaning "no checksum" in UDP.
func TestChecksumZero(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		h, f := build(spec{v6: v6, udp: true, payload: 64})
		// Choose the last payload word so that the whole sum is 0xffff.
		f[len(f)-2], f[len(f)-1] = 0, 0
		ip := f[14:h.CsumStart]
		l4 := f[h.CsumStart:]
		full := bytes.Clone(l4)
		full[6], full[7] = 0, 0
		s := refSum(pseudoHdr(ip, 17, len(l4)), full)
		be.PutUint16(f[len(f)-2:], ^s)
		if err := offload.Checksum(h, f); err != nil {
			t.Fatal(err)
		}
		if got := be.Uint16(f[h.CsumStart+6:]); got != 0xffff {
			t.Fatalf("v6 %v: checksum %#x, want 0xffff", v6, got)
		}
		checkL4(t, h, f)
	}
}

func TestChecksumNoop(t *testing.T) {
	_, f := build(spec{payload: 100, flags: ack})
	orig := bytes.Clone(f)
	for _, h := range []offload.Hdr{{}, {Flags: offload.DataValid, CsumStart: 34, CsumOffset: 16}} {
		if err := offload.Checksum(h, f); err != nil || !bytes.Equal(f, orig) {
			t.Fatalf("Checksum(%+v) = %v, frame changed %v", h, err, !bytes.Equal(f, orig))
		}
	}
}

func TestChecksumMalformed(t *testing.T) {
	h, f := build(spec{payload: 100, flags: ack})
	orig := bytes.Clone(f)
	n := uint16(len(f))
	for _, tc := range []struct {
		name string
		h    offload.Hdr
		want error
	}{
		{"start beyond frame", offload.Hdr{Flags: offload.NeedsCsum, CsumStart: n + 1}, offload.ErrMalformed},
		{"start at end", offload.Hdr{Flags: offload.NeedsCsum, CsumStart: n}, offload.ErrMalformed},
		{"field straddles end", offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 34, CsumOffset: n - 35}, offload.ErrMalformed},
		{"max offsets", offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 0xffff, CsumOffset: 0xffff}, offload.ErrMalformed},
		{"gso", func() offload.Hdr { g := h; g.GSOType, g.GSOSize = offload.GSOTCPv4, 50; return g }(), offload.ErrUnsupported},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := offload.Checksum(tc.h, f); !errors.Is(err, tc.want) {
				t.Fatalf("Checksum error %v, want %v", err, tc.want)
			}
			if !bytes.Equal(f, orig) {
				t.Fatal("frame modified on error")
			}
		})
	}
	// The last two bytes are a legal place for the field.
	g := offload.Hdr{Flags: offload.NeedsCsum, CsumStart: 34, CsumOffset: n - 36}
	if err := offload.Checksum(g, f); err != nil {
		t.Fatalf("field at the end: %v", err)
	}
}
