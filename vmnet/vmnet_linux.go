//go:build linux

package vmnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"github.com/sirupsen/logrus"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/tap"
	"github.com/tapswitch/tapswitch/internal/logx"
)

const permHint = "CAP_NET_ADMIN is missing: run tapswitch as root or with CAP_NET_ADMIN"

// Open creates the host interface (or attaches to the persistent tap
// cfg.Name) in the network namespace of the calling thread, configures it
// and sets it up. To put it in another namespace, call Open from a
// goroutine locked to a thread in that namespace; the interface stays
// there, and may be used and closed from any goroutine.
func Open(cfg Config) (*Interface, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	name := cfg.Name
	if err := checkLinux(cfg); err != nil {
		return nil, err
	}
	if len(cfg.Addrs) > 0 && cfg.Bridge != "" {
		return nil, fmt.Errorf("host interface %s: both addresses and bridge %s given: "+
			"put the addresses on the bridge instead", name, cfg.Bridge)
	}
	for _, p := range cfg.Addrs {
		if !p.IsValid() {
			return nil, fmt.Errorf("host interface %s: invalid address prefix %v", name, p)
		}
	}
	log := logx.OrDiscard(cfg.Logger)

	// The handle's socket stays in this namespace, whichever thread later
	// uses it, so Close undoes the configuration where it was made.
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("host interface %s: netlink: %w", name, err)
	}
	var br netlink.Link
	if cfg.Bridge != "" {
		if br, err = findBridge(h, name, cfg.Bridge); err != nil {
			h.Close()
			return nil, err
		}
	}
	dev, err := tap.Open(tap.Config{Name: name, MTU: cfg.MTU, Logger: log, NoOffload: cfg.NoOffload})
	if err != nil {
		h.Close()
		return nil, err
	}
	name = dev.Name() // the kernel's, for a template such as "ts%d"
	c := &config{h: h, dev: dev, name: name, log: log}
	mac, err := c.apply(cfg, br)
	if err != nil {
		if uerr := c.undo(); uerr != nil {
			log.WithField("port", name).WithError(uerr).Warn("undoing host interface configuration")
		}
		return nil, err
	}
	c.warnSharedSubnets(cfg.Addrs)
	log.WithFields(logrus.Fields{
		"port": name, "mac": mac.String(), "addrs": cfg.Addrs, "bridge": cfg.Bridge, "created": dev.Created(),
	}).Info("host interface up")
	return &Interface{port: dev, name: name, mac: mac, close: c.undo}, nil
}

func findBridge(h *netlink.Handle, name, bridge string) (netlink.Link, error) {
	br, err := h.LinkByName(bridge)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil, fmt.Errorf("host interface %s: bridge %s: %w: create it "+
			"(ip link add %[2]s type bridge && ip link set %[2]s up) or name an existing one", name, bridge, ErrNoBridge)
	}
	if err != nil {
		return nil, nlError(name, "look up bridge "+bridge, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("host interface %s: bridge %s: %w (its link type is %s)", name, bridge, ErrNotBridge, br.Type())
	}
	return br, nil
}

// config is what Open did to the interface, so that Close can undo it.
type config struct {
	h    *netlink.Handle
	dev  *tap.Device
	name string
	log  logrus.FieldLogger

	link     netlink.Link
	oldMAC   net.HardwareAddr // restored if set
	enslaved bool
	// oldMaster is the index of the bridge the tap was in before it was
	// enslaved (0: none), which undo puts it back into.
	oldMaster int
	raised    bool
	addrs     []*netlink.Addr
}

// apply configures the opened tap and returns its hardware address.
func (c *config) apply(cfg Config, br netlink.Link) (net.HardwareAddr, error) {
	h := c.h
	l, err := h.LinkByName(c.name)
	if err != nil {
		return nil, nlError(c.name, "look up", err)
	}
	c.link = l
	if cfg.MAC != nil && !slices.Equal(cfg.MAC, l.Attrs().HardwareAddr) {
		if err := h.LinkSetHardwareAddr(l, cfg.MAC); err != nil {
			return nil, nlError(c.name, "set MAC "+cfg.MAC.String(), err)
		}
		c.oldMAC = l.Attrs().HardwareAddr
	}
	if br != nil && l.Attrs().MasterIndex != br.Attrs().Index {
		if err := h.LinkSetMaster(l, br); err != nil {
			return nil, nlError(c.name, "enslave to bridge "+br.Attrs().Name, err)
		}
		c.enslaved, c.oldMaster = true, l.Attrs().MasterIndex
	}
	for _, p := range cfg.Addrs {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		err := h.AddrAdd(l, a)
		if errors.Is(err, unix.EEXIST) {
			continue // already there: not ours to remove
		}
		if err != nil {
			return nil, nlError(c.name, "add address "+p.String(), err)
		}
		c.addrs = append(c.addrs, a)
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return nil, nlError(c.name, "set up", err)
		}
		c.raised = true
	}
	l, err = h.LinkByIndex(l.Attrs().Index)
	if err != nil {
		return nil, nlError(c.name, "look up", err)
	}
	return l.Attrs().HardwareAddr, nil
}

// warnSharedSubnets warns when the kernel routes one of the subnets of
// addrs through another interface: one that had an address in the same
// subnet first (or a narrower one) keeps its route, so the host's replies
// to guests leave through it and the host leg looks dead, with nothing
// said.
func (c *config) warnSharedSubnets(addrs []netip.Prefix) {
	for _, p := range addrs {
		if p.Addr().IsLinkLocalUnicast() || p.Bits() >= p.Addr().BitLen()-1 {
			continue // every interface has fe80::/64; a /31 or /32 has no guest to ask about
		}
		// A guest's address: among the subnet's first, one that is not
		// this host's (the kernel routes that to itself).
		var routes []netlink.Route
		guest := p.Masked().Addr()
		for range 8 {
			guest = guest.Next()
			rs, err := c.h.RouteGet(guest.AsSlice())
			if err == nil && len(rs) > 0 && rs[0].Type != unix.RTN_LOCAL {
				routes = rs
				break
			}
		}
		if len(routes) == 0 || routes[0].LinkIndex == c.link.Attrs().Index {
			continue
		}
		on := strconv.Itoa(routes[0].LinkIndex)
		if l, err := c.h.LinkByIndex(routes[0].LinkIndex); err == nil {
			on = l.Attrs().Name
		}
		c.log.WithFields(logrus.Fields{"port": c.name, "addr": p.String(), "guest": guest.String(), "other": on}).
			Warn("host interface: the kernel routes its subnet through another interface (an address in the same subnet " +
				"was there first): replies to guests leave through that one; remove one of the two addresses")
	}
}

// undo reverts what apply did and closes the tap. A tap tapswitch created
// vanishes with its descriptor, taking its configuration along; a
// persistent one is restored step by step. A tap that is already gone has
// nothing left to undo.
func (c *config) undo() error {
	var errs []error
	if !c.dev.Created() && c.link != nil {
		h, l := c.h, c.link
		for _, a := range c.addrs {
			errs = append(errs, ignoreGone(h.AddrDel(l, a), c.name, "delete address "+a.IPNet.String()))
		}
		if c.enslaved && c.oldMaster != 0 {
			errs = append(errs, ignoreGone(h.LinkSetMasterByIndex(l, c.oldMaster), c.name, "go back to its bridge"))
		} else if c.enslaved {
			errs = append(errs, ignoreGone(h.LinkSetNoMaster(l), c.name, "leave bridge"))
		}
		if c.raised {
			errs = append(errs, ignoreGone(h.LinkSetDown(l), c.name, "set down"))
		}
		if c.oldMAC != nil {
			errs = append(errs, ignoreGone(h.LinkSetHardwareAddr(l, c.oldMAC), c.name, "restore MAC"))
		}
	}
	errs = append(errs, c.dev.Close())
	c.h.Close()
	return errors.Join(errs...)
}

func ignoreGone(err error, name, op string) error {
	if err == nil || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EADDRNOTAVAIL) {
		return nil
	}
	return nlError(name, op, err)
}

func nlError(name, op string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("host interface %s: %s: %w: %s", name, op, err, permHint)
	}
	return fmt.Errorf("host interface %s: %s: %w", name, op, err)
}
