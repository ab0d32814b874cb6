package vswitch

import (
	"crypto/sha256"
	"net"
)

// MAC is an Ethernet address in the form used as the FDB key.
type MAC [6]byte

// Multicast reports whether m has the group bit set (broadcast included).
func (m MAC) Multicast() bool { return m[0]&1 != 0 }

// String formats m as six colon-separated hex bytes.
func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

// DerivedMAC returns a locally administered unicast address made from
// seed (the first bytes of its SHA-256), the same for the same seed: for a
// port of the switch's own that should keep its MAC across restarts.
func DerivedMAC(seed []byte) MAC {
	h := sha256.Sum256(seed)
	m := MAC(h[:6])
	m[0] = m[0]&^1 | 2
	return m
}

// ParseMAC parses s in any form net.ParseMAC accepts for a 48-bit address.
func ParseMAC(s string) (MAC, error) {
	hw, err := net.ParseMAC(s)
	if err != nil {
		return MAC{}, err
	}
	if len(hw) != 6 {
		return MAC{}, &net.AddrError{Err: "not a 48-bit MAC address", Addr: s}
	}
	return MAC(hw), nil
}

// MarshalText implements encoding.TextMarshaler (JSON, YAML).
func (m MAC) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *MAC) UnmarshalText(b []byte) error {
	v, err := ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
