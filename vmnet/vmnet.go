// Package vmnet is the host interface: the host's own leg on the switch's
// segment, a port through which the host's network stack talks to the VMs
// as if it were one of them.
//
// On Linux the host interface is a tap that tapswitch creates and
// configures with netlink: given addresses (Config.Addrs), so the host is
// reachable at them, or enslaved to an existing Linux bridge
// (Config.Bridge), so that a kernel bridge carries the segment further.
// On macOS it will be vmnet.framework; on other systems Open returns an
// error wrapping errors.ErrUnsupported.
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
// matching fs.ErrPermission whose text says that CAP_NET_ADMIN is missing.
var (
	// ErrNoBridge: Config.Bridge names no device.
	ErrNoBridge = errors.New("bridge not found")
	// ErrNotBridge: Config.Bridge names a device that is not a bridge.
	ErrNotBridge = errors.New("not a bridge")
)

// Config configures Open.
type Config struct {
	// Name is the interface's name (default DefaultName, "tapswitch0").
	Name string
	// Addrs are the host's addresses on the segment, with their prefix
	// length, e.g. 198.18.0.1/24 and fd00::1/64. Empty leaves the
	// interface without addresses, as it must be when Bridge is set.
	Addrs []netip.Prefix
	// MTU, if not 0, is set on the interface.
	MTU int
	// Bridge, if set, names an existing Linux bridge to enslave the
	// interface to, instead of giving it addresses: the bridge (or its
	// other ports) then carries the host's addresses.
	Bridge string
	// MAC, if set, is the interface's hardware address; nil keeps the
	// random one the kernel chose. A fixed address keeps the host's
	// neighbour entries and DHCP leases valid across restarts.
	MAC net.HardwareAddr
	// Logger receives configuration events. Nil discards them.
	Logger logrus.FieldLogger
}

// Interface is an open host interface. It implements vswitch.Port: frames
// the host sends on the segment are read from it, and frames written to it
// reach the host. Close undoes what Open did.
type Interface struct {
	port  vswitch.Port
	name  string
	mac   net.HardwareAddr
	close func() error // undoes the configuration and closes port

	closeOnce sync.Once
	closeErr  error
}

var _ vswitch.Port = (*Interface)(nil)

// Name returns the interface's name.
func (i *Interface) Name() string { return i.name }

// MAC returns the interface's hardware address: the source address of the
// frames the host sends on the segment.
func (i *Interface) MAC() net.HardwareAddr { return i.mac }

// String returns the interface's name.
func (i *Interface) String() string { return i.name }

// ReadFrames reads frames the host sent, as vswitch.Port.ReadFrames.
func (i *Interface) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	return i.port.ReadFrames(bufs, sizes, offset)
}

// WriteFrames delivers frames to the host, as vswitch.Port.WriteFrames.
func (i *Interface) WriteFrames(bufs [][]byte, offset int) (int, error) {
	return i.port.WriteFrames(bufs, offset)
}

// BatchSize returns the underlying device's batch size.
func (i *Interface) BatchSize() int { return i.port.BatchSize() }

// MTU returns the interface's MTU.
func (i *Interface) MTU() int { return i.port.MTU() }

// Close removes the addresses Open added and the bridge membership it set
// up, and closes the device, which removes the interface if Open created
// it. It unblocks pending I/O, is idempotent, and later I/O fails with an
// error matching net.ErrClosed.
func (i *Interface) Close() error {
	i.closeOnce.Do(func() { i.closeErr = i.close() })
	return i.closeErr
}
