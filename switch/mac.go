package vswitch

import "net"

// MAC is an Ethernet address in the form used as the FDB key.
type MAC [6]byte

// Multicast reports whether m has the group bit set (broadcast included).
func (m MAC) Multicast() bool { return m[0]&1 != 0 }

// String formats m as six colon-separated hex bytes.
func (m MAC) String() string { return net.HardwareAddr(m[:]).String() }

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
