package vmnet

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// This file turns a Config into the parameters of vmnet_start_interface.
// It is plain Go and builds everywhere, so that the rules are unit-tested
// on Linux; only the dictionary itself and the call are darwin cgo.

// Mode is a vmnet.framework operating mode. Its values are vmnet's own
// (operating_modes_t), so the zero Mode is none of them.
type Mode uint32

// The vmnet operating modes.
const (
	// ModeHost: the VMs reach each other and the host, nothing beyond.
	ModeHost Mode = 1000
	// ModeShared: as ModeHost, and macOS routes the VMs to the outside
	// world through NAT.
	ModeShared Mode = 1001
	// ModeBridged: the segment is bridged to a physical interface
	// (Config.Bridge); the outside network's DHCP server and router serve
	// the VMs. macOS 10.15+.
	ModeBridged Mode = 1002
)

// ParseMode parses "host", "shared" or "bridged".
func ParseMode(s string) (Mode, error) {
	switch s {
	case "host":
		return ModeHost, nil
	case "shared":
		return ModeShared, nil
	case "bridged":
		return ModeBridged, nil
	}
	return 0, fmt.Errorf("unknown vmnet mode %q: want host, shared or bridged", s)
}

// String returns "host", "shared" or "bridged", or the number of an
// unknown mode.
func (m Mode) String() string {
	switch m {
	case ModeHost:
		return "host"
	case ModeShared:
		return "shared"
	case ModeBridged:
		return "bridged"
	}
	return "mode(" + strconv.FormatUint(uint64(m), 10) + ")"
}

// UUID is a 16-byte identifier as vmnet takes it (uuid_t). The zero UUID
// means "not set".
type UUID [16]byte

// ParseUUID parses the 36-character form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
// in either case, and nothing else: what libuuid's uuid_parse accepts, so
// that a value socket_vmnet takes is taken here too.
func ParseUUID(s string) (UUID, error) {
	var u UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, fmt.Errorf("invalid UUID %q: want xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return UUID{}, fmt.Errorf("invalid UUID %q: want hexadecimal digits: %w", s, err)
	}
	return u, nil
}

// RandomUUID returns a random (version 4) UUID, as uuid_generate_random.
func RandomUUID() (UUID, error) {
	var u UUID
	if _, err := rand.Read(u[:]); err != nil {
		return u, fmt.Errorf("random UUID: %w", err)
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u, nil
}

// String returns the lower-case 36-character form.
func (u UUID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
}

// IsZero reports whether u is the zero (unset) UUID.
func (u UUID) IsZero() bool { return u == UUID{} }

// paramKind is the xpc type of a parameter's value.
type paramKind int

const (
	kindUint64 paramKind = iota + 1
	kindString
	kindUUID
)

// param is one entry of the xpc dictionary given to vmnet_start_interface.
// Key is the name of the C symbol that holds vmnet's key string, e.g.
// "vmnet_operation_mode_key": the darwin shim looks it up with dlsym, so a
// key the running macOS lacks is an error that names it, and the code
// builds against any SDK.
type param struct {
	Key  string
	Kind paramKind
	Uint uint64
	Str  string
	UUID UUID
}

// String formats the parameter for logs and error messages.
func (p param) String() string {
	switch p.Kind {
	case kindUint64:
		return p.Key + "=" + strconv.FormatUint(p.Uint, 10)
	case kindUUID:
		return p.Key + "=" + p.UUID.String()
	}
	return p.Key + "=" + strconv.Quote(p.Str)
}

// The keys of vmnet.h used here, by their symbol names.
const (
	keyOperationMode       = "vmnet_operation_mode_key"
	keySharedInterfaceName = "vmnet_shared_interface_name_key"
	keyStartAddress        = "vmnet_start_address_key"
	keyEndAddress          = "vmnet_end_address_key"
	keySubnetMask          = "vmnet_subnet_mask_key"
	keyMTU                 = "vmnet_mtu_key"
	keyInterfaceID         = "vmnet_interface_id_key"
	keyNetworkIdentifier   = "vmnet_network_identifier_key"
	keyHostIPAddress       = "vmnet_host_ip_address_key"
	keyHostSubnetMask      = "vmnet_host_subnet_mask_key"
	keyHostIPv6Address     = "vmnet_host_ipv6_address_key"
)

// darwinName returns the label of a vmnet port: Config.Name, or "vmnet-"
// and the mode.
func darwinName(cfg Config) string {
	if cfg.Name != "" {
		return cfg.Name
	}
	m := cfg.Mode
	if m == 0 {
		m = ModeShared
	}
	return "vmnet-" + m.String()
}

// darwinParams checks cfg against what vmnet accepts and returns the
// parameters for vmnet_start_interface, in a fixed order. Errors name the
// Config field at fault, so that the CLI's message leads to the flag.
func darwinParams(cfg Config) ([]param, error) {
	name := darwinName(cfg)
	fail := func(format string, a ...any) ([]param, error) {
		return nil, fmt.Errorf("host interface %s: %s", name, fmt.Sprintf(format, a...))
	}
	mode := cfg.Mode
	if mode == 0 {
		mode = ModeShared
	}
	if mode != ModeHost && mode != ModeShared && mode != ModeBridged {
		return fail("unknown vmnet mode %d: want ModeHost, ModeShared or ModeBridged", uint32(mode))
	}
	if cfg.MAC != nil {
		return fail("MAC %s: vmnet chooses the MAC on macOS; set InterfaceID to keep it stable", cfg.MAC)
	}
	if cfg.MTU < 0 {
		return fail("MTU %d is negative", cfg.MTU)
	}
	ps := []param{{Key: keyOperationMode, Kind: kindUint64, Uint: uint64(mode)}}

	if mode == ModeBridged {
		switch {
		case cfg.Bridge == "":
			return fail("bridged mode needs Bridge, the physical interface to bridge to (e.g. en0)")
		case cfg.StartAddr.IsValid() || cfg.EndAddr.IsValid() || cfg.Mask != nil:
			return fail("bridged mode takes no StartAddr, EndAddr or Mask: the network bridged to assigns addresses")
		case cfg.MTU != 0:
			return fail("bridged mode takes no MTU: vmnet uses the physical interface's")
		case !cfg.NetworkID.IsZero():
			return fail("NetworkID applies to host mode only")
		case len(cfg.Addrs) > 0:
			return fail("bridged mode takes no Addrs: the network bridged to assigns addresses")
		}
		ps = append(ps, param{Key: keySharedInterfaceName, Kind: kindString, Str: cfg.Bridge})
	} else if cfg.Bridge != "" {
		return fail("Bridge %s is the interface of bridged mode; it has no meaning in %s mode", cfg.Bridge, mode)
	}

	if cfg.StartAddr.IsValid() || cfg.EndAddr.IsValid() || cfg.Mask != nil {
		end, err := CheckSubnet(cfg.StartAddr, cfg.EndAddr, cfg.Mask)
		if err != nil {
			return fail("%v", err)
		}
		ps = append(ps,
			param{Key: keyStartAddress, Kind: kindString, Str: cfg.StartAddr.String()},
			param{Key: keyEndAddress, Kind: kindString, Str: end.String()},
			param{Key: keySubnetMask, Kind: kindString, Str: net.IP(cfg.Mask).String()})
	}
	if cfg.MTU != 0 {
		ps = append(ps, param{Key: keyMTU, Kind: kindUint64, Uint: uint64(cfg.MTU)})
	}
	if !cfg.InterfaceID.IsZero() {
		ps = append(ps, param{Key: keyInterfaceID, Kind: kindUUID, UUID: cfg.InterfaceID})
	}
	if !cfg.NetworkID.IsZero() {
		if mode != ModeHost {
			return fail("NetworkID applies to host mode only, not %s", mode)
		}
		ps = append(ps, param{Key: keyNetworkIdentifier, Kind: kindUUID, UUID: cfg.NetworkID})
	}
	if len(cfg.Addrs) > 0 {
		if cfg.NetworkID.IsZero() {
			return fail("Addrs apply on macOS only to an isolated network (NetworkID): " +
				"otherwise the host's address is StartAddr")
		}
		var v4, v6 bool
		for _, p := range cfg.Addrs {
			switch {
			case !p.IsValid():
				return fail("invalid address prefix %v", p)
			case p.Addr().Is4() && !v4:
				v4 = true
				ps = append(ps,
					param{Key: keyHostIPAddress, Kind: kindString, Str: p.Addr().String()},
					param{Key: keyHostSubnetMask, Kind: kindString, Str: net.IP(net.CIDRMask(p.Bits(), 32)).String()})
			case p.Addr().Is6() && !p.Addr().Is4In6() && !v6:
				v6 = true
				ps = append(ps, param{Key: keyHostIPv6Address, Kind: kindString, Str: p.Addr().String()})
			default:
				return fail("address %v: vmnet takes at most one IPv4 and one IPv6 host address", p)
			}
		}
	}
	return ps, nil
}

// ErrNotPrivate is returned, wrapped, by CheckSubnet for a subnet that
// vmnet refuses because it is not private. It is the last check made, so
// the subnet is otherwise sound when it is returned.
var ErrNotPrivate = errors.New("not private (RFC 1918: 10/8, 172.16/12, 192.168/16), as vmnet requires")

// CheckSubnet checks a shared- or host-mode subnet as vmnet wants it
// (Config.StartAddr, EndAddr and Mask): IPv4, a contiguous mask of /1 to
// /30, a private (RFC 1918) subnet, the start address neither its network
// nor its broadcast address, and the end address inside it, after the
// start and before the broadcast address. It returns the end address,
// defaulted to the last before the broadcast address when end is zero.
func CheckSubnet(start, end netip.Addr, mask net.IPMask) (netip.Addr, error) {
	if !start.IsValid() || mask == nil {
		return end, fmt.Errorf("StartAddr and Mask go together (EndAddr may be left to its default)")
	}
	if !start.Is4() {
		return end, fmt.Errorf("start address %v is not IPv4", start)
	}
	if len(mask) != net.IPv4len {
		return end, fmt.Errorf("mask %v is not an IPv4 mask", mask)
	}
	ones, bits := mask.Size()
	if bits == 0 {
		return end, fmt.Errorf("mask %v is not contiguous", net.IP(mask))
	}
	if ones < 1 || ones > 30 {
		return end, fmt.Errorf("mask %v (/%d) leaves no room for a gateway and a DHCP pool", net.IP(mask), ones)
	}
	subnet := netip.PrefixFrom(start, ones).Masked()
	network, broadcast := subnet.Addr(), lastAddr(subnet)
	if start == network || start == broadcast {
		return end, fmt.Errorf("start address %v is the network or broadcast address of %v", start, subnet)
	}
	if !end.IsValid() {
		end = broadcast.Prev()
	}
	switch {
	case !end.Is4():
		return end, fmt.Errorf("end address %v is not IPv4", end)
	case !subnet.Contains(end):
		return end, fmt.Errorf("end address %v is outside the subnet %v", end, subnet)
	case end == broadcast:
		return end, fmt.Errorf("end address %v is the broadcast address of %v", end, subnet)
	case !start.Less(end):
		return end, fmt.Errorf("end address %v does not come after the start address %v "+
			"(the DHCP pool runs from the address after the start to the end)", end, start)
	}
	if !network.IsPrivate() || !broadcast.IsPrivate() {
		return end, fmt.Errorf("subnet %v: %w", subnet, ErrNotPrivate)
	}
	return end, nil
}

// lastAddr returns the last (broadcast) address of an IPv4 prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// checkLinux rejects the macOS-only fields, so that a configuration meant
// for vmnet does not quietly give a plain tap on Linux.
func checkLinux(cfg Config) error {
	var f string
	switch {
	case cfg.Mode != 0:
		f = "Mode " + cfg.Mode.String()
	case cfg.StartAddr.IsValid():
		f = "StartAddr"
	case cfg.EndAddr.IsValid():
		f = "EndAddr"
	case cfg.Mask != nil:
		f = "Mask"
	case !cfg.InterfaceID.IsZero():
		f = "InterfaceID"
	case !cfg.NetworkID.IsZero():
		f = "NetworkID"
	default:
		return nil
	}
	name := cfg.Name
	if name == "" {
		name = DefaultName
	}
	return fmt.Errorf("host interface %s: %s is a vmnet (macOS) setting; on Linux give Addrs, or a Bridge to join", name, f)
}

// parseMAC parses the MAC address vmnet reports: six hex fields separated
// by ':', of one or two digits each, since the BSD ether_ntoa form drops
// leading zeros ("a2:4:0:1:b:c") where net.ParseMAC wants two.
func parseMAC(s string) (net.HardwareAddr, error) {
	f := strings.Split(s, ":")
	if len(f) != 6 {
		return nil, fmt.Errorf("MAC address %q: want 6 fields separated by ':'", s)
	}
	mac := make(net.HardwareAddr, 6)
	for i, x := range f {
		b, err := strconv.ParseUint(x, 16, 8)
		if err != nil || len(x) == 0 || len(x) > 2 {
			return nil, fmt.Errorf("MAC address %q: field %q is not one or two hex digits", s, x)
		}
		mac[i] = byte(b)
	}
	return mac, nil
}
