// Package vmnet is the host interface: the host's own leg on the switch's
// segment, a port through which the host's network stack talks to the VMs
// as if it were one of them.
//
// On Linux the host interface is a tap that tapswitch creates and
// configures with netlink: given addresses (Config.Addrs), so the host is
// reachable at them, or enslaved to an existing Linux bridge
// (Config.Bridge), so that a kernel bridge carries the segment further.
// On macOS the host interface is a vmnet.framework interface (cgo) in
// shared, host or bridged mode (Config.Mode): vmnet gives the host its
// address on the segment (Config.StartAddr, on the bridge100-style
// interface macOS creates), and in shared and host mode runs macOS's own
// DHCP server (bootpd) for the range StartAddr+1 to EndAddr. It needs root
// or the com.apple.vm.networking entitlement. A build without cgo, and
// every other system, gets an Open that returns an error wrapping
// errors.ErrUnsupported.
//
// Config says which fields apply where; a field that does not apply on the
// running system is an error rather than silently ignored.
package vmnet

import (
	"errors"
	"net"
	"net/netip"
	"sync"

	"github.com/sirupsen/logrus"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// DefaultName is the interface name used when Config.Name is empty.
const DefaultName = "tapswitch0"

// Errors returned by Open, wrapped with the interface and bridge names;
// test them with errors.Is. A missing privilege is reported with an error
// matching fs.ErrPermission whose text says what is missing (Linux:
// CAP_NET_ADMIN; macOS: root or the com.apple.vm.networking entitlement).
var (
	// ErrNoBridge: Config.Bridge names no device.
	ErrNoBridge = errors.New("bridge not found")
	// ErrNotBridge: Config.Bridge names a device that is not a bridge.
	ErrNotBridge = errors.New("not a bridge")
)

// Config configures Open. Fields marked "Linux" or "macOS" apply on that
// system only; Open fails if one set for the other system is not zero.
type Config struct {
	// Name is the interface's name (default DefaultName, "tapswitch0").
	// On macOS vmnet names the interface itself and Name only labels the
	// port in logs and statistics (default "vmnet-" and the mode).
	Name string
	// Addrs are the host's addresses on the segment, with their prefix
	// length, e.g. 198.18.0.1/24 and fd00::1/64.
	//
	// Linux: empty leaves the interface without addresses, as it must be
	// when Bridge is set. macOS: allowed only with NetworkID (an isolated
	// host-mode network), where at most one IPv4 and one IPv6 address
	// become vmnet_host_ip_address_key, vmnet_host_subnet_mask_key and
	// vmnet_host_ipv6_address_key; otherwise the host's address is
	// StartAddr, which vmnet assigns itself.
	Addrs []netip.Prefix
	// MTU, if not 0, is set on the interface. macOS: shared and host mode
	// only (vmnet_mtu_key; vmnet refuses it in bridged mode).
	MTU int
	// Bridge, on Linux, names an existing Linux bridge to enslave the
	// interface to, instead of giving it addresses: the bridge (or its
	// other ports) then carries the host's addresses. On macOS it names
	// the physical interface, e.g. "en0", that ModeBridged bridges to
	// (vmnet_shared_interface_name_key); it is required in that mode and
	// refused in the others.
	Bridge string
	// MAC, if set, is the interface's hardware address; nil keeps the
	// random one the kernel chose. A fixed address keeps the host's
	// neighbour entries and DHCP leases valid across restarts. Linux only:
	// vmnet chooses the MAC on macOS (use InterfaceID to keep it stable).
	MAC net.HardwareAddr

	// Mode is the vmnet operating mode (macOS). Zero means ModeShared.
	Mode Mode
	// StartAddr, EndAddr and Mask set the subnet of a shared- or host-mode
	// network (macOS): StartAddr is the host's own address and the
	// gateway, the addresses after it up to EndAddr are macOS's DHCP pool,
	// and Mask is the subnet mask (vmnet_start_address_key,
	// vmnet_end_address_key, vmnet_subnet_mask_key). All IPv4 and private
	// (RFC 1918), as vmnet requires. StartAddr and Mask go together; a
	// zero EndAddr means the last address before the subnet's broadcast
	// address (.254 in a /24). All zero lets macOS choose (usually
	// 192.168.64.1/24 in shared mode).
	StartAddr netip.Addr
	EndAddr   netip.Addr
	Mask      net.IPMask
	// InterfaceID identifies the vmnet interface (macOS,
	// vmnet_interface_id_key): the same ID gives the same MAC address
	// across restarts, so the host keeps its neighbour entries and the
	// DHCP leases stay valid. Zero lets vmnet pick a random one.
	InterfaceID UUID
	// NetworkID puts a host-mode interface on the isolated network of that
	// identifier (macOS 11+, vmnet_network_identifier_key). macOS serves
	// no DHCP on such a network. Zero means no isolated network.
	NetworkID UUID

	// Logger receives configuration events. Nil discards them.
	Logger logrus.FieldLogger
	// NoOffload opens the Linux host interface's tap without TCP offloads
	// (see tap.Config.NoOffload); macOS ignores it.
	NoOffload bool
}

// Interface is an open host interface. It implements vswitch.Port: frames
// the host sends on the segment are read from it, and frames written to it
// reach the host. Close undoes what Open did.
type Interface struct {
	port     vswitch.Port
	name     string
	mac      net.HardwareAddr
	close    func() error    // undoes the configuration and closes port
	counters func() Counters // nil: nothing counted

	closeOnce sync.Once
	closeErr  error
}

var _ vswitch.Port = (*Interface)(nil)

// MAC returns the interface's hardware address. On Linux it is the source
// address of the frames the host sends on the segment. On macOS it is the
// address vmnet allocated to this interface (vmnet_mac_address_key), fixed
// by Config.InterfaceID; the host's own frames come from the address of the
// bridge macOS put the interface on.
func (i *Interface) MAC() net.HardwareAddr { return i.mac }

// String returns the interface's name.
func (i *Interface) String() string { return i.name }

// BackendCounters returns Counters by name, for the switch's port
// statistics (vswitch.BackendCounter); nil where the interface keeps none
// (Linux, whose tap drops nothing on its own).
func (i *Interface) BackendCounters() map[string]uint64 {
	if i.counters == nil {
		return nil
	}
	c := i.counters()
	return map[string]uint64{"buffer_exhausted": c.BufferExhausted, "too_long": c.TooLong, "too_short": c.TooShort}
}

// Counters are frames an Interface dropped and counted instead of ending the
// port: per-frame trouble is never fatal.
type Counters struct {
	// BufferExhausted counts frames to the host that vmnet refused because
	// its kernel buffers were full (VMNET_BUFFER_EXHAUSTED, the ENOBUFS of
	// vmnet_write), and reads that found vmnet's buffers exhausted.
	BufferExhausted uint64
	// TooLong counts frames longer than vmnet's maximum packet size (to
	// the host) or than the switch's buffer (from the host).
	TooLong uint64
	// TooShort counts frames from the host shorter than an Ethernet
	// header.
	TooShort uint64
}

// ReadFrames reads frames the host sent, as vswitch.Port.ReadFrames.
func (i *Interface) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	return i.port.ReadFrames(bufs, sizes, offset)
}

// WriteFrames delivers frames to the host, as vswitch.Port.WriteFrames.
func (i *Interface) WriteFrames(bufs [][]byte, offset int) (int, error) {
	return i.port.WriteFrames(bufs, offset)
}

// Offload implements vswitch.OffloadPort: on Linux the host interface's
// tap carries TCP offloads like any other tap.
func (i *Interface) Offload() bool {
	o, ok := i.port.(vswitch.OffloadPort)
	return ok && o.Offload()
}

// WriteFrameNow implements vswitch.DirectWriter when the underlying port
// does (a tap); otherwise every frame goes through the switch's queue.
func (i *Interface) WriteFrameNow(b []byte, offset int) (bool, error) {
	if d, ok := i.port.(vswitch.DirectWriter); ok {
		return d.WriteFrameNow(b, offset)
	}
	return false, nil
}

// BatchSize returns the underlying device's batch size.
func (i *Interface) BatchSize() int { return i.port.BatchSize() }

// MTU returns the interface's MTU.
func (i *Interface) MTU() int { return i.port.MTU() }

// Close removes the addresses Open added and the bridge membership it set
// up, and closes the device, which removes the interface if Open created
// it; on macOS it stops the vmnet interface (vmnet_stop_interface). It
// unblocks pending I/O, is idempotent, and later I/O fails with an error
// matching net.ErrClosed.
func (i *Interface) Close() error {
	i.closeOnce.Do(func() { i.closeErr = i.close() })
	return i.closeErr
}
