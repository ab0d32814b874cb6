//go:build darwin

package tap

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// permHint tells a user without access to the device what to do.
const permHint = "run tapswitch as root, or give its user access to the device (chown or chmod /dev/tapN)"

// Open opens the tuntaposx device /dev/<cfg.Name>, or with an empty name
// the first free one of /dev/tap0 to /dev/tap15, which makes the interface
// of the same name. See Config and the Err variables for what can go wrong.
func Open(cfg Config) (*Device, error) {
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	if cfg.MTU < 0 {
		return nil, fmt.Errorf("tap %s: MTU %d is negative", cfg.Name, cfg.MTU)
	}
	if cfg.Name != "" {
		return openDev(cfg.Name, cfg)
	}
	for i := range maxDarwinTaps {
		d, err := openDev("tap"+strconv.Itoa(i), cfg)
		if errors.Is(err, ErrBusy) {
			continue
		}
		return d, err
	}
	return nil, fmt.Errorf("tap: /dev/tap0 to /dev/tap%d: %w: all are open (close a VM monitor that holds one)",
		maxDarwinTaps-1, ErrBusy)
}

func openDev(name string, cfg Config) (*Device, error) {
	path := "/dev/" + name
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENXIO):
			return nil, fmt.Errorf("tap %s: open %s: %w (%w): install tuntaposx (or a maintained fork) "+
				"and load its kext", name, path, ErrNoTapDevice, err)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tap %s: open %s: %w (%w)", name, path, ErrBusy, err)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("tap %s: open %s: %w: %s", name, path, err, permHint)
		}
		return nil, fmt.Errorf("tap %s: open %s: %w", name, path, err)
	}
	w, err := newKQWaiter(fd)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	f := newWaitFile(fd, w)
	mtu, err := setMTU(name, cfg.MTU)
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &Device{f: f, name: name, mtu: mtu, created: true, log: cfg.logger()}
	d.log.WithFields(logrus.Fields{"port": name, "created": true, "mtu": mtu}).Info("tap opened")
	return d, nil
}

// kqWaiter waits in a kqueue of its own for a tuntaposx device to become
// readable. The runtime poller cannot watch such a device: XNU attaches a
// read filter to a character device that is not kqueue-aware only when it
// asks for NOTE_LOWAT with data 1 (filt_specattach), which the poller does
// not. An EVFILT_USER event wakes the wait for Close.
type kqWaiter struct{ kq int }

func newKQWaiter(fd int) (*kqWaiter, error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, fmt.Errorf("kqueue: %w", err)
	}
	unix.CloseOnExec(kq)
	changes := []unix.Kevent_t{
		{Ident: uint64(fd), Filter: unix.EVFILT_READ, Flags: unix.EV_ADD, Fflags: unix.NOTE_LOWAT, Data: 1},
		{Ident: 0, Filter: unix.EVFILT_USER, Flags: unix.EV_ADD | unix.EV_CLEAR},
	}
	if _, err := unix.Kevent(kq, changes, nil, nil); err != nil {
		unix.Close(kq)
		return nil, fmt.Errorf("kevent: watch device: %w", err)
	}
	return &kqWaiter{kq: kq}, nil
}

func (w *kqWaiter) wait() error {
	var ev [2]unix.Kevent_t
	for {
		_, err := unix.Kevent(w.kq, nil, ev[:], nil)
		if !errors.Is(err, unix.EINTR) {
			return os.NewSyscallError("kevent", err)
		}
	}
}

func (w *kqWaiter) wake() error {
	trigger := []unix.Kevent_t{{Ident: 0, Filter: unix.EVFILT_USER, Fflags: unix.NOTE_TRIGGER}}
	_, err := unix.Kevent(w.kq, trigger, nil, nil)
	return os.NewSyscallError("kevent", err)
}

func (w *kqWaiter) close() error { return unix.Close(w.kq) }

// setMTU sets the interface's MTU to mtu unless mtu is 0 or already set,
// and returns the MTU in force.
func setMTU(name string, mtu int) (int, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("tap %s: get MTU: %w", name, err)
	}
	if mtu == 0 || mtu == ifi.MTU {
		return ifi.MTU, nil
	}
	s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return 0, fmt.Errorf("tap %s: set MTU: socket: %w", name, err)
	}
	defer unix.Close(s)
	// The kernel copies a whole struct ifreq (32 bytes) in; IfreqMTU is
	// shorter, so it is given room to read past it.
	var req struct {
		unix.IfreqMTU
		_ [16]byte
	}
	copy(req.Name[:], name)
	req.MTU = int32(mtu)
	if err := unix.IoctlSetIfreqMTU(s, &req.IfreqMTU); err != nil {
		if errors.Is(err, unix.EPERM) {
			return 0, fmt.Errorf("tap %s: set MTU %d: %w: %s", name, mtu, err, permHint)
		}
		return 0, fmt.Errorf("tap %s: set MTU %d: %w", name, mtu, err)
	}
	return mtu, nil
}

// isGone reports whether err is what tuntaposx returns for I/O on a device
// whose interface has gone.
// batchSize is Device.BatchSize: ReadFrames reads one frame per call.
const batchSize = 1

func isGone(err error) bool {
	return errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV)
}

// IsNamed reports whether the tap is called name: a tuntaposx device
// keeps its name.
func (d *Device) IsNamed(name string) bool { return d.name == name }
