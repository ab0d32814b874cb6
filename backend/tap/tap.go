// Package tap is the switch port for tap devices: virtual Ethernet
// interfaces whose other side is a file descriptor. A VM monitor, a
// container runtime or the host's own stack sends frames into the tap and
// tapswitch reads them, one frame per read, through the Port interface of
// package vswitch.
//
// On Linux a tap is opened through /dev/net/tun (TUNSETIFF with
// IFF_TAP|IFF_NO_PI). Open creates the tap when no device has the name, and
// attaches to it when it is a persistent tap made beforehand, e.g. by
// `ip tuntap add NAME mode tap user USER` so that an unprivileged tapswitch
// may open it.
//
// On macOS a tap is a tuntaposx device, /dev/tap0 to /dev/tap15: opening
// /dev/tapN makes the interface tapN, which lasts while the device is open
// (Config.Name picks one; empty takes the first free). On other systems
// Open returns an error wrapping errors.ErrUnsupported.
package tap

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/sirupsen/logrus"

	"github.com/tapswitch/tapswitch/internal/logx"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/offload"
)

// maxDarwinTaps is how many devices tuntaposx makes: /dev/tap0 to
// /dev/tap15.
const maxDarwinTaps = 16

// maxNameLen is the longest interface name Linux accepts: IFNAMSIZ (16)
// less the terminating NUL. macOS has the same limit.
const maxNameLen = 15

// Errors returned by Open, ReadFrames and WriteFrames. They are wrapped
// with the operation, the device name and, where there is one, the errno,
// so test them with errors.Is. A missing privilege is reported with an
// error matching fs.ErrPermission whose text says that CAP_NET_ADMIN is
// missing.
var (
	// ErrInvalidName: the name is longer than 15 bytes or contains a
	// character the kernel refuses ('/', ':' or white space).
	ErrInvalidName = errors.New("invalid interface name")
	// ErrNoTunDevice: /dev/net/tun does not exist (the tun module is not
	// loaded, or a container was started without the device).
	ErrNoTunDevice = errors.New("/dev/net/tun missing")
	// ErrNoTapDevice (macOS): the /dev/tapN device does not exist: the
	// tuntaposx kernel extension (or a fork of it) is not installed, or N
	// is beyond the devices it makes.
	ErrNoTapDevice = errors.New("tuntaposx /dev/tap device missing")
	// ErrNameTaken: a network device that is not a tap already has the name.
	ErrNameTaken = errors.New("name taken by a device that is not a tap")
	// ErrBusy: the tap exists and another process (a VM monitor, another
	// tapswitch) has it open. A tap without multi-queue has one opener; a
	// tuntaposx device has one opener.
	ErrBusy = errors.New("tap in use by another process")
	// ErrDeviceGone: the tap was deleted while open (`ip link del`, or the
	// network namespace it had been moved into was removed). ReadFrames
	// returns it, so the switch removes the port; WriteFrames returns it at
	// once rather than blocking.
	ErrDeviceGone = errors.New("tap deleted or its network namespace removed")
)

// Config configures Open. The zero value opens a new tap named by the
// kernel ("tap0", "tap1", ...), or on macOS the first free /dev/tapN.
type Config struct {
	// Name is the interface name, at most 15 bytes. A tap of that name is
	// created if no device has the name; an existing persistent tap is
	// attached to. Empty lets the kernel choose a free "tapN" name. On
	// macOS it must be "tapN", naming the device /dev/tapN.
	Name string
	// MTU, if not 0, is set on the interface; 0 leaves it as it is (1500
	// for a new tap). Changing it needs CAP_NET_ADMIN.
	MTU int
	// Logger receives open and close events. Nil discards them.
	Logger logrus.FieldLogger
	// NoOffload opens the tap without a virtio-net header (Linux), and
	// with its offloads off, also those a persistent tap's last user left
	// on. By default the tap is opened with IFF_VNET_HDR and TCP
	// segmentation and checksum offloads, so TCP super-frames of up to
	// 64 KiB cross the switch whole (see vswitch.OffloadPort). macOS taps
	// have no offloads.
	NoOffload bool
}

// Device is an open tap. It implements vswitch.Port: one frame per read and
// per write system call, whole Ethernet frames without FCS.
//
// The file descriptor is non-blocking, and Close unblocks a pending
// ReadFrames: on Linux the descriptor is served by the Go runtime poller;
// on macOS, whose kqueue takes a tuntaposx device only on terms the
// runtime's poller does not offer, the reader waits in a kqueue of its own
// that Close wakes. A tap keeps working when it is moved into another
// network namespace after Open (the descriptor stays valid); when it is
// deleted, ReadFrames and WriteFrames fail with an error matching
// ErrDeviceGone.
type Device struct {
	f       devFile
	name    string
	mtu     int
	created bool
	vnet    bool // frames carry a virtio-net header (IFF_VNET_HDR)
	uso     bool // UDP super-frames may be written (Linux 6.2+, with vnet)
	log     logrus.FieldLogger
	// restore, if set, puts back what Open changed on a tap that existed
	// before (its offloads, its MTU); Close calls it before closing.
	restore func() error

	closeOnce sync.Once
	closeErr  error
}

var _ vswitch.Port = (*Device)(nil)

// devFile is the open device: an *os.File on the runtime poller, or a
// waitFile. After Close its methods return errors matching os.ErrClosed.
type devFile interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
	Close() error
}

// Name returns the interface name, as chosen by the kernel if Config.Name
// was empty.
func (d *Device) Name() string { return d.name }

// Created reports whether Open created the tap. A tap Open created is
// removed when the Device is closed; a tap that existed before (a
// persistent tap) is left in place.
func (d *Device) Created() bool { return d.created }

// String returns the interface name.
func (d *Device) String() string { return d.name }

// MTU returns the interface's MTU as it was after Open.
func (d *Device) MTU() int { return d.mtu }

// BatchSize returns how many frames the switch takes from the tap at once:
// up to 8 on Linux, where PollFrames reads what is waiting (one read per
// frame); 1 elsewhere.
func (d *Device) BatchSize() int { return batchSize }

// ReadFrames blocks until a frame arrives and reads it into
// bufs[0][offset:], storing its length in sizes[0]. It returns 1, or an
// error when the device can no longer deliver frames: one matching
// ErrDeviceGone if the tap was deleted, one matching net.ErrClosed after
// Close.
func (d *Device) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	if len(bufs) == 0 {
		return 0, nil
	}
	for {
		n, err := d.readFrame(bufs[0], offset)
		if err != nil {
			return 0, d.ioError("read", err)
		}
		if n > 0 {
			sizes[0] = n
			return 1, nil
		}
	}
}

// WriteFrames writes each frame bufs[i][offset:] with one write and returns
// how many were written. It stops at the first failure and returns its
// error: one matching ErrDeviceGone if the tap was deleted, net.ErrClosed
// after Close; other errors concern that frame only (Linux answers EIO
// while the interface is down, EINVAL to a frame shorter than an Ethernet
// header). It does not block: a tap accepts or refuses a frame at once.
func (d *Device) WriteFrames(bufs [][]byte, offset int) (int, error) {
	for i, b := range bufs {
		if err := d.writeFrame(b, offset); err != nil {
			return i, d.ioError("write", err)
		}
	}
	return len(bufs), nil
}

// readFrame and writeFrame are the one place where the layout of a frame
// in the descriptor is known. With IFF_NO_PI it is the bare frame; with
// IFF_VNET_HDR the virtio-net header comes first, and lives in
// b[offset-offload.HdrLen:offset], which vswitch.Headroom leaves free.
func (d *Device) readFrame(b []byte, offset int) (int, error) {
	if !d.vnet {
		return d.f.Read(b[offset:])
	}
	n, err := d.f.Read(b[offset-offload.HdrLen:])
	if n < offload.HdrLen {
		return 0, err
	}
	return n - offload.HdrLen, err
}

func (d *Device) writeFrame(b []byte, offset int) error {
	if d.vnet {
		offset -= offload.HdrLen
	}
	_, err := d.f.Write(b[offset:])
	return err
}

// Offload implements vswitch.OffloadPort: it reports whether frames carry
// a virtio-net header in the offload.HdrLen bytes before them.
func (d *Device) Offload() bool { return d.vnet }

// AcceptsUDPSegments implements vswitch.UDPSegmentPort: the kernel takes
// UDP segmentation super-frames written to the tap (Linux 6.2 and later).
func (d *Device) AcceptsUDPSegments() bool { return d.vnet && d.uso }

// ioError names op and the device in err and maps what the runtime and the
// kernel return to the documented errors.
func (d *Device) ioError(op string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err // the path is d.name, which the message names anyway
	}
	switch {
	case errors.Is(err, os.ErrClosed):
		return fmt.Errorf("tap %s: %s: %w", d.name, op, net.ErrClosed)
	case err == io.EOF || isGone(err):
		return fmt.Errorf("tap %s: %s: %w (%w)", d.name, op, ErrDeviceGone, err)
	}
	return fmt.Errorf("tap %s: %s: %w", d.name, op, err)
}

// Close closes the descriptor, which removes the tap if Open created it;
// a tap that existed before gets back the offloads and MTU it had. It
// unblocks pending reads and writes, and is idempotent; every later
// ReadFrames and WriteFrames returns an error matching net.ErrClosed.
func (d *Device) Close() error {
	d.closeOnce.Do(func() {
		if d.restore != nil {
			if err := d.restore(); err != nil && !isGone(err) {
				d.log.WithField("port", d.name).WithError(err).Warn("tap: could not restore its settings")
			}
		}
		if err := d.f.Close(); err != nil {
			d.closeErr = fmt.Errorf("tap %s: close: %w", d.name, err)
		}
		d.log.WithFields(logrus.Fields{"port": d.name, "created": d.created}).Debug("tap closed")
	})
	return d.closeErr
}

// CheckName returns the error, matching ErrInvalidName, that Open returns
// for name before it opens anything: a name the kernel would refuse or
// silently truncate, or on macOS one that is not "tapN". The empty name
// (the kernel chooses) passes. A configuration is checked with it before
// any tap is opened.
func CheckName(name string) error {
	if len(name) > maxNameLen {
		return fmt.Errorf("tap %s: %w: %d bytes long, at most %d allowed: choose a shorter name",
			name, ErrInvalidName, len(name), maxNameLen)
	}
	if name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n\r\v\f\x00") {
		return fmt.Errorf("tap %q: %w: must not be \".\" or \"..\" nor contain '/', ':', NUL or white space",
			name, ErrInvalidName)
	}
	if runtime.GOOS == "darwin" && name != "" {
		_, err := tapNumber(name)
		return err
	}
	return nil
}

// tapNumber checks that name is "tapN", the only names tuntaposx makes
// (macOS), and returns N.
func tapNumber(name string) (int, error) {
	n, err := strconv.Atoi(strings.TrimPrefix(name, "tap"))
	if !strings.HasPrefix(name, "tap") || err != nil || n < 0 || strconv.Itoa(n) != name[3:] {
		return 0, fmt.Errorf("tap %s: %w: tuntaposx devices are named tap0 to tap%d", name, ErrInvalidName, maxDarwinTaps-1)
	}
	return n, nil
}

func (c *Config) logger() logrus.FieldLogger {
	return logx.OrDiscard(c.Logger)
}
