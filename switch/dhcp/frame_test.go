package dhcp

import (
	"encoding/binary"
	"testing"

	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestChecksumVector(t *testing.T) {
	// A well-known IPv4 header whose checksum is 0xb861.
	h := []byte{0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7}
	if c := checksum(h, 0); c != 0 {
		t.Errorf("checksum over a correct header: %#04x, want 0", c)
	}
	h[10], h[11] = 0, 0
	if c := checksum(h, 0); c != 0xb861 {
		t.Errorf("checksum: %#04x, want 0xb861", c)
	}
	// Odd length.
	if c, want := checksum([]byte{1, 2, 3}, 0), ^sum16([]byte{1, 2, 3}, 0); c != want {
		t.Errorf("odd length: %#04x, want %#04x", c, want)
	}
}

func TestBuildUDPParses(t *testing.T) {
	for _, n := range []int{0, 1, 300, 1401} { // short (padded), odd, even
		payload := make([]byte, n)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		f := buildUDP(porttest.MAC(1), porttest.MAC(2), 9, testGW, ip4("198.18.0.9"), 67, 68, payload)
		if len(f) < minFrameLen {
			t.Fatalf("%d: frame of %d bytes", n, len(f))
		}
		p, frag, ok := parseIPv4(f[etherHeaderLen:])
		if !ok || frag || p.proto != protoUDP || p.src != testGW || p.dst != ip4("198.18.0.9") {
			t.Fatalf("%d: parseIPv4 %+v %v %v", n, p, frag, ok)
		}
		sp, dp, data, ok := parseUDP(p)
		if !ok || sp != 67 || dp != 68 || len(data) != n {
			t.Fatalf("%d: parseUDP %d %d %d %v", n, sp, dp, len(data), ok)
		}
		// The UDP checksum, verified independently of checksum().
		u := f[etherHeaderLen+ipv4HeaderLen : etherHeaderLen+ipv4HeaderLen+udpHeaderLen+n]
		if sum16(u, pseudoHeaderSum(p.src, p.dst, protoUDP, len(u))) != 0xffff {
			t.Errorf("%d: UDP checksum does not verify", n)
		}
	}
}

func TestParseIPv4Rejects(t *testing.T) {
	good := buildUDP(porttest.MAC(1), porttest.MAC(2), 9, testGW, ip4("198.18.0.9"), 68, 67, make([]byte, 10))[etherHeaderLen:]
	mutate := func(fn func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		fn(b)
		return b
	}
	for name, b := range map[string][]byte{
		"short":     good[:19],
		"version":   mutate(func(b []byte) { b[0] = 0x65 }),
		"ihl":       mutate(func(b []byte) { b[0] = 0x44 }),
		"total":     mutate(func(b []byte) { binary.BigEndian.PutUint16(b[2:4], uint16(len(b)+1)) }),
		"checksum":  mutate(func(b []byte) { b[8]-- }),
		"truncated": good[:30],
	} {
		if _, _, ok := parseIPv4(b); ok {
			t.Errorf("%s: accepted", name)
		}
	}
	frag := mutate(func(b []byte) {
		b[6] = 0x20 // more fragments
		b[10], b[11] = 0, 0
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:20], 0))
	})
	if _, isFrag, ok := parseIPv4(frag); !ok || !isFrag {
		t.Errorf("fragment: ok=%v frag=%v", ok, isFrag)
	}
	p, _, _ := parseIPv4(good)
	badUDP := p
	badUDP.payload = append([]byte(nil), p.payload...)
	badUDP.payload[9]++
	if _, _, _, ok := parseUDP(badUDP); ok {
		t.Error("UDP with a bad checksum accepted")
	}
	badUDP.payload[6], badUDP.payload[7] = 0, 0 // no checksum: accepted
	if _, _, _, ok := parseUDP(badUDP); !ok {
		t.Error("UDP without checksum rejected")
	}
	badUDP.payload[5] = 200
	if _, _, _, ok := parseUDP(badUDP); ok {
		t.Error("UDP longer than its packet accepted")
	}
}

func TestARPRoundTrip(t *testing.T) {
	in := arpPacket{op: arpRequest, sha: porttest.MAC(1), spa: ip4("198.18.0.2"), tha: porttest.MAC(0), tpa: testGW}
	f := buildARP(broadcastMAC, in)
	if len(f) != minFrameLen {
		t.Errorf("ARP frame of %d bytes", len(f))
	}
	out, ok := parseARP(f[etherHeaderLen:])
	if !ok || out != in {
		t.Errorf("round trip: %+v, %v", out, ok)
	}
	if _, ok := parseARP(f[etherHeaderLen : etherHeaderLen+27]); ok {
		t.Error("short ARP accepted")
	}
}
