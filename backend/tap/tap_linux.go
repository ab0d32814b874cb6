//go:build linux

package tap

import (
	"errors"
	"fmt"
	"net"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/switch/offload"
)

// tunPath is the clone device through which every tap is made or attached.
const tunPath = "/dev/net/tun"

// openFlags are the TUNSETIFF flags: an Ethernet (layer 2) device whose
// frames carry no packet-information prefix. Open adds IFF_VNET_HDR unless
// Config.NoOffload, then sets TUNSETVNETHDRSZ and TUNSETOFFLOAD; the
// virtio-net header is handled in readFrame and writeFrame. With
// Config.NoOffload it sets TUNSETOFFLOAD to 0.
const openFlags = unix.IFF_TAP | unix.IFF_NO_PI

// permHint tells a user without the privilege what to do.
const permHint = "CAP_NET_ADMIN is missing: run tapswitch as root or with CAP_NET_ADMIN " +
	"(setcap cap_net_admin+ep, or AmbientCapabilities=CAP_NET_ADMIN), or have root make a " +
	"persistent tap for this user: ip tuntap add NAME mode tap user USER"

// Open opens the tap cfg.Name, creating it if no device has that name, in
// the network namespace of the calling thread. See Config and the Err
// variables for what can go wrong.
func Open(cfg Config) (*Device, error) {
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.MTU < 0 {
		return nil, fmt.Errorf("tap %s: MTU %d is negative", cfg.Name, cfg.MTU)
	}
	fd, err := unix.Open(tunPath, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, openError(cfg.Name, err)
	}
	flags := uint16(openFlags)
	if !cfg.NoOffload {
		flags |= unix.IFF_VNET_HDR
	}
	name, created, err := setIff(fd, cfg.Name, flags)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	uso := false
	if !cfg.NoOffload {
		if uso, err = setOffload(fd, name); err != nil {
			unix.Close(fd)
			return nil, err
		}
	} else if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0); err != nil {
		// A persistent tap keeps the offloads its last user turned on
		// (one killed before it could turn them off): without a
		// virtio-net header to say so, its frames would come with
		// partial checksums and as TCP super-frames.
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: turn off the offloads left on by its last user: %w", name, err)
	}
	// From here on closing fd removes the tap if we created it.
	oldMTU, mtu, err := setMTU(name, cfg.MTU)
	if err != nil {
		if !created && !cfg.NoOffload {
			_ = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0)
		}
		unix.Close(fd)
		return nil, err
	}
	// O_NONBLOCK makes os.NewFile put the descriptor on the runtime
	// poller, so that Close wakes a blocked Read.
	f, err := newRawFile(fd, name)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	d := &Device{
		f:       f,
		name:    name,
		mtu:     mtu,
		created: created,
		vnet:    !cfg.NoOffload,
		uso:     uso,
		log:     cfg.logger(),
	}
	if !created {
		// Whoever opens the tap next may not read virtio-net headers:
		// left on, the offloads would hand it frames with partial
		// checksums. The MTU goes back to what it was, through a socket
		// of the tap's namespace (Close may run in another).
		s := -1
		if oldMTU != mtu {
			if s, err = ifSocket(name); err != nil {
				d.log.WithField("port", name).WithError(err).Warn("tap: its MTU will not be restored")
				s = -1
			}
		}
		d.restore = func() error {
			var errs []error
			if d.vnet {
				if err := f.control(func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0) }); err != nil {
					errs = append(errs, fmt.Errorf("turn offloads off: %w", err))
				}
			}
			if s >= 0 {
				// ENODEV: the tap was moved to another namespace or deleted.
				if _, _, err := ifMTU(s, name, oldMTU); err != nil && !errors.Is(err, unix.ENODEV) {
					errs = append(errs, err)
				}
				unix.Close(s)
			}
			return errors.Join(errs...)
		}
	}
	d.log.WithFields(logrus.Fields{"port": name, "created": created, "mtu": mtu, "offload": d.vnet, "udp_segments": uso}).Info("tap opened")
	return d, nil
}

// setIff binds fd to the tap name (the kernel chooses one if name is
// empty) and reports the name and whether the kernel created the device.
// We never set IFF_PERSIST, and a non-persistent tap cannot be attached to
// while its creator holds it, so a tap that is persistent after TUNSETIFF
// existed before: this tells created from attached without a race.
func setIff(fd int, name string, flags uint16) (string, bool, error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return "", false, fmt.Errorf("tap %s: %w: %w", name, ErrInvalidName, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return "", false, setIffError(name, err)
	}
	name = ifr.Name()
	got, err := unix.NewIfreq("")
	if err != nil {
		return "", false, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, got); err != nil {
		return "", false, fmt.Errorf("tap %s: get flags: %w", name, err)
	}
	return name, got.Uint16()&unix.IFF_PERSIST == 0, nil
}

// tapOffloads are the offloads tapswitch takes from a tap: frames with a
// partial checksum (TUN_F_CSUM) and TCP segmentation super-frames over
// IPv4 and IPv6 (TUN_F_TSO4, TUN_F_TSO6). UDP segmentation is left off:
// the switch segments TCP only.
const tapOffloads = unix.TUN_F_CSUM | unix.TUN_F_TSO4 | unix.TUN_F_TSO6

// setOffload sets the virtio-net header size and the offloads of a tap
// opened with IFF_VNET_HDR. It reports whether the kernel knows UDP
// segmentation offload (Linux 6.2 and later), and so takes UDP
// super-frames written to the tap: it is asked to turn it on, and then
// off again, since the switch does not split UDP super-frames it reads.
func setOffload(fd int, name string) (uso bool, err error) {
	if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, offload.HdrLen); err != nil {
		return false, fmt.Errorf("tap %s: set vnet header size: %w", name, err)
	}
	uso = unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tapOffloads|unix.TUN_F_USO4|unix.TUN_F_USO6) == nil
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, tapOffloads); err != nil {
		return false, fmt.Errorf("tap %s: set offloads: %w", name, err)
	}
	return uso, nil
}

// setMTU sets the interface's MTU to mtu unless mtu is 0 or already set,
// and returns the MTU before and the MTU in force.
func setMTU(name string, mtu int) (old, cur int, err error) {
	s, err := ifSocket(name)
	if err != nil {
		return 0, 0, err
	}
	defer unix.Close(s)
	return ifMTU(s, name, mtu)
}

// ifSocket returns a socket for interface ioctls in the calling thread's
// namespace (the tap's, in Open). Any family works; AF_UNIX needs no IP
// stack.
func ifSocket(name string) (int, error) {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("tap %s: socket: %w", name, err)
	}
	return s, nil
}

// ifMTU is setMTU through the socket s.
func ifMTU(s int, name string, mtu int) (old, cur int, err error) {
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, 0, fmt.Errorf("tap %s: get MTU: %w", name, err)
	}
	old = int(ifr.Uint32())
	if mtu == 0 || mtu == old {
		return old, old, nil
	}
	ifr.SetUint32(uint32(mtu))
	if err := unix.IoctlIfreq(s, unix.SIOCSIFMTU, ifr); err != nil {
		if errors.Is(err, unix.EPERM) {
			return 0, 0, fmt.Errorf("tap %s: set MTU %d: %w: %s", name, mtu, err, permHint)
		}
		return 0, 0, fmt.Errorf("tap %s: set MTU %d (the tap allows 68 to 65521): %w", name, mtu, err)
	}
	return old, mtu, nil
}

func openError(name string, err error) error {
	switch {
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENXIO):
		return fmt.Errorf("tap %s: open %s: %w (%w): load the tun module (modprobe tun), "+
			"or give the container the device (--device /dev/net/tun)", name, tunPath, ErrNoTunDevice, err)
	case errors.Is(err, unix.EACCES):
		// The device's mode, which no capability gets past (it is 0600
		// on some systems, 0666 on most).
		return fmt.Errorf("tap %s: open %s: %w: the device is not readable and writable by this user "+
			"(ls -l %s; most systems make it 0666)", name, tunPath, err, tunPath)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("tap %s: open %s: %w: %s", name, tunPath, err, permHint)
	}
	return fmt.Errorf("tap %s: open %s: %w", name, tunPath, err)
}

// setIffError explains a failed TUNSETIFF, looking at the device that
// holds the name when the kernel's errno is ambiguous.
func setIffError(name string, err error) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		if l, lerr := netlink.LinkByName(name); lerr == nil && isTap(l) {
			return fmt.Errorf("tap %s: attach: %w: the tap belongs to another user or group and %s",
				name, err, permHint)
		}
		return fmt.Errorf("tap %s: create: %w: %s", name, err, permHint)
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EBUSY):
		l, lerr := netlink.LinkByName(name)
		if lerr != nil {
			break
		}
		if isTap(l) {
			tt := l.(*netlink.Tuntap)
			if tt.Flags&netlink.TUNTAP_MULTI_QUEUE != 0 {
				return fmt.Errorf("tap %s: attach: %w: it is a multi-queue tap, which tapswitch does not open: "+
					"recreate it without multi_queue", name, err)
			}
			return fmt.Errorf("tap %s: attach: %w (%w): close the other user (a VM monitor, "+
				"another tapswitch) or choose another name", name, ErrBusy, err)
		}
		if l.Attrs().Flags&net.FlagLoopback != 0 {
			return fmt.Errorf("tap %s: create: %w (%w): it is the loopback device: choose another name", name, ErrNameTaken, err)
		}
		return fmt.Errorf("tap %s: create: %w (%w): it is a %s device: choose another name, "+
			"or delete that device (ip link del %s)", name, ErrNameTaken, err, describe(l), name)
	}
	return fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
}

func isTap(l netlink.Link) bool {
	tt, ok := l.(*netlink.Tuntap)
	return ok && tt.Mode == netlink.TUNTAP_MODE_TAP
}

// describe names a link's kind as ip(8) would.
func describe(l netlink.Link) string {
	if tt, ok := l.(*netlink.Tuntap); ok && tt.Mode == netlink.TUNTAP_MODE_TUN {
		return "tun (layer 3)"
	}
	if t := l.Type(); t != "" && t != "device" {
		return t
	}
	// Devices without rtnl link ops (loopback, hardware NICs) have no kind.
	return "non-virtual (" + l.Attrs().EncapType + ")"
}

// isGone reports whether err is what the kernel returns for I/O on a tap
// whose interface has been deleted: tun detaches the descriptor and
// answers EBADFD to reads and writes (and EPOLLERR to poll).
func isGone(err error) bool {
	return errors.Is(err, unix.EBADFD)
}
