package vmnet

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrBufferExhausted is returned, wrapped, by WriteFrames on macOS when
// vmnet refuses frames because its kernel buffers are full
// (VMNET_BUFFER_EXHAUSTED). It concerns those frames only: the port stays
// up, and Counters counts them.
var ErrBufferExhausted = errors.New("vmnet buffers exhausted")

// vmnet_return_t values (vmnet.h).
const (
	statusSuccess          uint32 = 1000
	statusFailure          uint32 = 1001
	statusMemFailure       uint32 = 1002
	statusInvalidArgument  uint32 = 1003
	statusSetupIncomplete  uint32 = 1004
	statusInvalidAccess    uint32 = 1005
	statusPacketTooBig     uint32 = 1006
	statusBufferExhausted  uint32 = 1007
	statusTooManyPackets   uint32 = 1008
	statusSharingBusy      uint32 = 1009
	statusNotAuthorized    uint32 = 1010
	statusUnknownParameter uint32 = 1 // the shim's own: a key the running macOS lacks
)

// statusText names a vmnet_return_t.
func statusText(st uint32) string {
	switch st {
	case statusSuccess:
		return "VMNET_SUCCESS"
	case statusFailure:
		return "VMNET_FAILURE"
	case statusMemFailure:
		return "VMNET_MEM_FAILURE"
	case statusInvalidArgument:
		return "VMNET_INVALID_ARGUMENT"
	case statusSetupIncomplete:
		return "VMNET_SETUP_INCOMPLETE"
	case statusInvalidAccess:
		return "VMNET_INVALID_ACCESS"
	case statusPacketTooBig:
		return "VMNET_PACKET_TOO_BIG"
	case statusBufferExhausted:
		return "VMNET_BUFFER_EXHAUSTED"
	case statusTooManyPackets:
		return "VMNET_TOO_MANY_PACKETS"
	case statusSharingBusy:
		return "VMNET_SHARING_SERVICE_BUSY"
	case statusNotAuthorized:
		return "VMNET_NOT_AUTHORIZED"
	}
	return fmt.Sprintf("vmnet status %d", st)
}

// geteuid is os.Geteuid, replaced by tests.
var geteuid = os.Geteuid

// vmnetError describes a failed vmnet call on the interface name, with
// what to do about it where there is something to do. A missing privilege
// matches fs.ErrPermission, as on Linux. vmnet_start_interface refuses a
// process that is neither root nor entitled with VMNET_FAILURE, as often
// as with VMNET_INVALID_ACCESS or VMNET_NOT_AUTHORIZED, so a general
// failure to start counts as a missing privilege when not root.
func vmnetError(name, op string, st uint32) error {
	denied := st == statusInvalidAccess || st == statusNotAuthorized ||
		st == statusFailure && op == "vmnet_start_interface" && geteuid() != 0
	if denied {
		return fmt.Errorf("host interface %s: %s: %s: %w: run tapswitch as root (sudo, or a launchd daemon), "+
			"or sign it with the com.apple.vm.networking entitlement", name, op, statusText(st), fs.ErrPermission)
	}
	switch st {
	case statusBufferExhausted:
		return fmt.Errorf("host interface %s: %s: %w (%s)", name, op, ErrBufferExhausted, statusText(st))
	case statusSharingBusy:
		return fmt.Errorf("host interface %s: %s: %s: a conflicting sharing service (Internet Sharing, "+
			"or another program's vmnet interface on the same subnet) is in use", name, op, statusText(st))
	case statusInvalidArgument:
		return fmt.Errorf("host interface %s: %s: %s: vmnet refused the configuration "+
			"(subnet already used by another vmnet network, bridged interface unknown, or an option this macOS lacks)",
			name, op, statusText(st))
	}
	return fmt.Errorf("host interface %s: %s: %s", name, op, statusText(st))
}
