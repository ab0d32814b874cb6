//go:build linux

package tap

import (
	"errors"
	"fmt"
	"net"
	"runtime"

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
	var mr *mtuRestorer
	var mrErr error
	if !created && oldMTU != mtu {
		mr, mrErr = newMTURestorer(fd, name, oldMTU)
	}
	// O_NONBLOCK makes os.NewFile put the descriptor on the runtime
	// poller, so that Close wakes a blocked Read.
	f, err := newRawFile(fd, name)
	if err != nil {
		mr.close()
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
	if mrErr != nil {
		d.log.WithField("port", name).WithError(mrErr).Warn("tap: its MTU will not be restored")
	}
	if !created {
		// Whoever opens the tap next may not read virtio-net headers:
		// left on, the offloads would hand it frames with partial
		// checksums. The MTU goes back to what it was on the tap itself,
		// wherever it is by then.
		d.restore = func() error {
			var errs []error
			if d.vnet {
				if err := f.control(func(fd int) error { return unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, 0) }); err != nil {
					errs = append(errs, fmt.Errorf("turn offloads off: %w", err))
				}
			}
			if mr != nil {
				if err := f.control(mr.restore); err != nil {
					errs = append(errs, fmt.Errorf("restore MTU %d: %w", mr.mtu, err))
				}
				mr.close()
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
	got, err := getIff(fd)
	if err != nil {
		return "", false, fmt.Errorf("tap %s: get flags: %w", name, err)
	}
	return name, got.Uint16()&unix.IFF_PERSIST == 0, nil
}

// getIff returns the tap's current name and flags (TUNGETIFF).
func getIff(fd int) (*unix.Ifreq, error) {
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return nil, err
	}
	if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
		return nil, err
	}
	return ifr, nil
}

// mtuRestorer gives a tap that existed before Open its MTU back at
// Close. It finds the tap through its descriptor, since it may have been
// renamed or moved to another namespace since Open, and another device
// may have taken its name where Open ran: the MTU is set on the tap
// itself, by interface index, or not at all.
type mtuRestorer struct {
	mtu    int             // the MTU to put back
	home   *netlink.Handle // in the namespace where Open ran
	homeNS nsID            // that namespace; zero if the kernel does not say
	index  int             // the tap's interface index there
}

// nsID tells namespaces apart: the device and inode of a descriptor
// referring to one.
type nsID struct{ dev, ino uint64 }

// newMTURestorer prepares to set the MTU of the tap on fd, called name in
// the calling thread's namespace, back to mtu. Its netlink socket stays in
// that namespace, so that the MTU is restored there without the
// privilege to enter namespaces (CAP_SYS_ADMIN).
func newMTURestorer(fd int, name string, mtu int) (*mtuRestorer, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("tap %s: netlink: %w", name, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("tap %s: look up: %w", name, err)
	}
	r := &mtuRestorer{mtu: mtu, home: h, index: l.Attrs().Index}
	if nsfd, id, err := tapNS(fd); err == nil { // Linux 5.2 and later
		unix.Close(nsfd)
		r.homeNS = id
	}
	return r, nil
}

// tapNS returns a descriptor for the tap's network namespace
// (TUNGETDEVNETNS, Linux 5.2 and later; it needs CAP_NET_ADMIN there) and
// the namespace's identity.
func tapNS(fd int) (int, nsID, error) {
	nsfd, err := unix.IoctlRetInt(fd, unix.TUNGETDEVNETNS)
	if err != nil {
		return -1, nsID{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		unix.Close(nsfd)
		return -1, nsID{}, err
	}
	return nsfd, nsID{uint64(st.Dev), uint64(st.Ino)}, nil // Dev is 32 bits on mips
}

// restore sets the MTU of the tap on fd. It refuses, with an error, when
// it cannot make sure that the device it would change is the tap.
func (r *mtuRestorer) restore(fd int) error {
	ifr, err := getIff(fd)
	if err != nil {
		return err // EBADFD: the tap is gone, and its MTU with it
	}
	name := ifr.Name()
	h, index := r.home, r.index
	nsfd, id, err := tapNS(fd)
	switch {
	case err == nil:
		defer unix.Close(nsfd)
		if id != r.homeNS {
			if h, err = handleIn(nsfd); err != nil {
				return fmt.Errorf("the tap, now %s, was moved to another network namespace, which this process cannot enter: %w", name, err)
			}
			defer h.Close()
			index = 0 // the kernel may have given it another one there
		}
	case r.homeNS != (nsID{}):
		return fmt.Errorf("find the tap's network namespace: %w", err)
	}
	// Without TUNGETDEVNETNS, the device of the tap's name in Open's
	// namespace is the tap if it has the tap's index.
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("the tap, now %s, was moved to another network namespace: %w", name, err)
	}
	// Names are unique in a namespace: if the tap still has the name, in
	// the same namespace, the device found is the tap.
	again, err := getIff(fd)
	if err != nil {
		return err
	}
	same := again.Name() == name && isTap(l) && (index == 0 || l.Attrs().Index == index)
	if nsfd >= 0 {
		nsfd2, id2, err := tapNS(fd)
		if err != nil {
			return err
		}
		unix.Close(nsfd2)
		same = same && id2 == id
	}
	if !same {
		return fmt.Errorf("the tap, now %s, was renamed or moved while its MTU was restored: left alone", name)
	}
	if l.Attrs().MTU == r.mtu {
		return nil
	}
	return h.LinkSetMTU(l, r.mtu) // by index
}

func (r *mtuRestorer) close() {
	if r != nil {
		r.home.Close()
	}
}

// handleIn returns a netlink handle whose socket is in the network
// namespace nsfd refers to. The socket is made by a thread that joins the
// namespace and is never returned to the Go scheduler: it ends with its
// goroutine, whichever namespace it is left in. Joining a namespace needs
// CAP_SYS_ADMIN.
func handleIn(nsfd int) (*netlink.Handle, error) {
	type result struct {
		h   *netlink.Handle
		err error
	}
	c := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			c <- result{err: fmt.Errorf("setns: %w", err)}
			return
		}
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		c <- result{h, err}
	}()
	r := <-c
	return r.h, r.err
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

// IsNamed reports whether the tap is called name now, in the calling
// thread's network namespace. It may have been renamed, or moved to
// another namespace, since Open; Name keeps the name it had then.
func (d *Device) IsNamed(name string) bool {
	f, ok := d.f.(*rawFile)
	if !ok {
		return false
	}
	is := false
	_ = f.control(func(fd int) error {
		ifr, err := getIff(fd)
		if err != nil || ifr.Name() != name {
			return nil
		}
		nsfd, id, err := tapNS(fd)
		if err != nil {
			is = true // before Linux 5.2 the name has to do
			return nil
		}
		unix.Close(nsfd)
		var st unix.Stat_t
		if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			is = true
			return nil
		}
		is = id == nsID{uint64(st.Dev), uint64(st.Ino)}
		return nil
	})
	return is
}
