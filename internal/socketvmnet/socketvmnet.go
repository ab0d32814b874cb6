// Package socketvmnet lets tapswitch stand in for socket_vmnet
// (github.com/lima-vm/socket_vmnet): it parses socket_vmnet's command line
// exactly as socket_vmnet's cli.c does — getopt_long with its long options,
// -p/-h/-v, both --flag=value and --flag value, unique-prefix
// abbreviations, options after the socket path — applies the same
// defaults and checks, and translates the result into the arguments of
// `tapswitch serve`. So `tapswitch socket-vmnet ARGS...` accepts whatever
// lima, a launchd plist or a user passes to socket_vmnet.
//
// It is plain Go, with no I/O, and sits between the CLI (cmd/tapswitch)
// and nothing else: serve does the work.
//
// The translation keeps socket_vmnet's behaviour where tapswitch can:
//
//   - The socket is a unix stream socket speaking QEMU's length-prefixed
//     framing, as socket_vmnet's, owned by --socket-group (default
//     "staff"), with mode 0660 where socket_vmnet's is 0770 (the execute
//     bits mean nothing on a socket).
//   - macOS: the host interface is a vmnet interface with the same mode,
//     bridged interface, gateway (start address), DHCP end, mask,
//     interface ID and network identifier. vmnet's own DHCP server
//     (macOS's bootpd) serves the range, as it does for socket_vmnet, so
//     tapswitch's DHCP responder stays off: two servers on one segment
//     would answer the same clients.
//   - Linux, where there is no vmnet: the host interface is a tap holding
//     the gateway address, named after the socket path (HostIfname), so
//     that one instance per network can run side by side, and tapswitch's
//     DHCP responder serves the range vmnet's would have. Shared mode does no NAT on Linux (add a
//     masquerade rule if the VMs need to get out); bridged mode enslaves
//     the host interface to the Linux bridge named by --vmnet-interface.
//   - A network identifier (an isolated host network) means no DHCP, as
//     with vmnet, on both systems.
package socketvmnet

import (
	"errors"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/tapswitch/tapswitch/vmnet"
)

// DefaultSocketGroup is socket_vmnet's default --socket-group.
const DefaultSocketGroup = "staff"

// ErrUsage is wrapped by every error Parse returns: the command line is
// wrong, and socket_vmnet would print its usage and exit 1.
var ErrUsage = errors.New("invalid socket_vmnet arguments")

// Options are socket_vmnet's options after its defaults and checks.
type Options struct {
	// SocketGroup owns the socket (--socket-group; default "staff").
	SocketGroup string
	// Mode is the vmnet mode (--vmnet-mode; default shared).
	Mode vmnet.Mode
	// Interface is the physical interface of bridged mode
	// (--vmnet-interface). socket_vmnet passes it to vmnet in every mode;
	// outside bridged mode it has no effect, and ServeArgs leaves it out.
	Interface string
	// Gateway is the host's address and the start of the subnet
	// (--vmnet-gateway); zero lets macOS choose. DHCPEnd and Mask are set
	// whenever Gateway is: socket_vmnet's defaults are the gateway's
	// x.y.z.254 and 255.255.255.0.
	Gateway netip.Addr
	DHCPEnd netip.Addr
	Mask    net.IPMask
	// InterfaceID is --vmnet-interface-id. socket_vmnet draws a random one
	// when none is given; here zero stands for that, and vmnet draws it.
	InterfaceID vmnet.UUID
	// NetworkID is --vmnet-network-identifier ("random" draws one, "" or
	// absent means none): an isolated host-mode network without DHCP.
	NetworkID vmnet.UUID
	// PIDFile is -p/--pidfile; empty means none.
	PIDFile string
	// SocketPath is the positional SOCKET argument.
	SocketPath string
	// Help and Version are -h/--help and -v/--version. Parsing stops at
	// the first of them, as socket_vmnet exits there; the other fields are
	// then incomplete and unchecked.
	Help, Version bool
}

// Option identifiers, one per long option.
const (
	optSocketGroup = iota + 1
	optMode
	optInterface
	optGateway
	optDHCPEnd
	optMask
	optInterfaceID
	optNAT66Prefix
	optNetworkID
	optDisableDHCP
	optPIDFile
	optHelp
	optVersion
)

type longOpt struct {
	name   string
	hasArg bool
	id     int
}

// longOpts is socket_vmnet's longopts table (cli.c), and
// --vmnet-disable-dhcp, which later versions added; tapswitch refuses the
// options it cannot honour with an error that says so.
var longOpts = []longOpt{
	{"socket-group", true, optSocketGroup},
	{"vmnet-mode", true, optMode},
	{"vmnet-interface", true, optInterface},
	{"vmnet-gateway", true, optGateway},
	{"vmnet-dhcp-end", true, optDHCPEnd},
	{"vmnet-mask", true, optMask},
	{"vmnet-interface-id", true, optInterfaceID},
	{"vmnet-nat66-prefix", true, optNAT66Prefix},
	{"vmnet-network-identifier", true, optNetworkID},
	{"vmnet-disable-dhcp", false, optDisableDHCP},
	{"pidfile", true, optPIDFile},
	{"help", false, optHelp},
	{"version", false, optVersion},
}

// shortOpts is socket_vmnet's optstring "hvp:".
var shortOpts = map[byte]longOpt{
	'h': {"h", false, optHelp},
	'v': {"v", false, optVersion},
	'p': {"p", true, optPIDFile},
}

func usageError(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, a...))
}

// lookupLong finds a long option as getopt_long does: an exact name, or
// else a prefix of exactly one name.
func lookupLong(name string) (longOpt, error) {
	var matches []longOpt
	for _, o := range longOpts {
		if o.name == name {
			return o, nil
		}
		if name != "" && strings.HasPrefix(o.name, name) {
			matches = append(matches, o)
		}
	}
	switch len(matches) {
	case 0:
		return longOpt{}, usageError("unrecognized option '--%s'", name)
	case 1:
		return matches[0], nil
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = "'--" + m.name + "'"
	}
	return longOpt{}, usageError("option '--%s' is ambiguous; possibilities: %s", name, strings.Join(names, " "))
}

// raw holds the option values as given, before defaults and checks.
type raw struct {
	set                        map[int]bool
	mode                       vmnet.Mode
	interfaceID, networkID     vmnet.UUID
	group, iface, gateway, end string
	mask, nat66, pidfile       string
	disableDHCP, help, version bool
	positional                 []string
}

// Parse parses socket_vmnet's arguments (without the program name) and
// applies its defaults and checks. Every error about the arguments wraps
// ErrUsage.
func Parse(args []string) (Options, error) {
	r := raw{set: map[int]bool{}}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			r.positional = append(r.positional, args[i+1:]...)
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			o, err := lookupLong(name)
			if err != nil {
				return Options{}, err
			}
			switch {
			case o.hasArg && !hasVal:
				if i+1 >= len(args) {
					return Options{}, usageError("option '--%s' requires an argument", o.name)
				}
				i++
				val = args[i] // taken whatever it looks like, as getopt does
			case !o.hasArg && hasVal:
				return Options{}, usageError("option '--%s' doesn't allow an argument", o.name)
			}
			if stop, err := r.apply(o.id, val); err != nil || stop {
				return r.early(), err
			}
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				o, ok := shortOpts[a[j]]
				if !ok {
					return Options{}, usageError("invalid option -- '%c'", a[j])
				}
				var val string
				if o.hasArg {
					val = a[j+1:]
					if val == "" {
						if i+1 >= len(args) {
							return Options{}, usageError("option requires an argument -- '%c'", a[j])
						}
						i++
						val = args[i]
					}
					j = len(a)
				}
				if stop, err := r.apply(o.id, val); err != nil || stop {
					return r.early(), err
				}
			}
		default:
			r.positional = append(r.positional, a) // getopt_long permutes
		}
	}
	return r.options()
}

// apply records one option, as the switch in cli_options_parse does: the
// mode and the UUIDs are checked at once, the rest later; the last of a
// repeated option wins. It reports whether parsing stops here (help,
// version).
func (r *raw) apply(id int, val string) (bool, error) {
	r.set[id] = true
	switch id {
	case optSocketGroup:
		r.group = val
	case optMode:
		m, err := vmnet.ParseMode(val)
		if err != nil {
			return false, usageError("Unknown vmnet mode %q", val)
		}
		r.mode = m
	case optInterface:
		r.iface = val
	case optGateway:
		r.gateway = val
	case optDHCPEnd:
		r.end = val
	case optMask:
		r.mask = val
	case optInterfaceID:
		u, err := vmnet.ParseUUID(val)
		if err != nil {
			return false, usageError("Failed to parse UUID %q (--vmnet-interface-id)", val)
		}
		r.interfaceID = u
	case optNAT66Prefix:
		r.nat66 = val
	case optNetworkID:
		switch val {
		case "random":
			u, err := vmnet.RandomUUID()
			if err != nil {
				return false, err
			}
			r.networkID = u
		case "":
			r.networkID = vmnet.UUID{}
		default:
			u, err := vmnet.ParseUUID(val)
			if err != nil {
				return false, usageError("Failed to parse UUID %q (--vmnet-network-identifier)", val)
			}
			r.networkID = u
		}
	case optDisableDHCP:
		r.disableDHCP = true
	case optPIDFile:
		r.pidfile = val
	case optHelp:
		r.help = true
		return true, nil
	case optVersion:
		r.version = true
		return true, nil
	}
	return false, nil
}

func (r *raw) early() Options {
	if r.help || r.version {
		return Options{Help: r.help, Version: r.version}
	}
	return Options{}
}

// options applies the defaults and checks the values, in socket_vmnet's
// order, then with tapswitch's own checks.
func (r *raw) options() (Options, error) {
	o := Options{Mode: vmnet.ModeShared, InterfaceID: r.interfaceID, NetworkID: r.networkID}
	if r.set[optMode] {
		o.Mode = r.mode
	}
	if len(r.positional) != 1 {
		return Options{}, usageError("want exactly one SOCKET argument, got %d (%s)",
			len(r.positional), strings.Join(r.positional, " "))
	}
	o.SocketPath = r.positional[0]

	// Defaults.
	o.SocketGroup = DefaultSocketGroup
	if r.set[optSocketGroup] {
		o.SocketGroup = r.group
	}
	o.Interface = r.iface
	o.PIDFile = r.pidfile
	gwSet := r.set[optGateway]
	if gwSet {
		gw, err := netip.ParseAddr(r.gateway)
		if err != nil || !gw.Is4() {
			return Options{}, usageError("invalid address %q was specified for --vmnet-gateway", r.gateway)
		}
		o.Gateway = gw
		if !r.set[optDHCPEnd] {
			a := gw.As4()
			a[3] = 254 // socket_vmnet: gateway & 0xFFFFFF00 | 0xFE, whatever the mask
			r.end = netip.AddrFrom4(a).String()
			r.set[optDHCPEnd] = true
		}
		if !r.set[optMask] {
			r.mask = "255.255.255.0"
			r.set[optMask] = true
		}
	}

	// socket_vmnet's checks.
	if o.Mode == vmnet.ModeBridged && !r.set[optInterface] {
		return Options{}, usageError(`vmnet mode "bridged" require --vmnet-interface to be specified`)
	}
	if !gwSet {
		if r.set[optDHCPEnd] {
			return Options{}, usageError("--vmnet-dhcp-end=IP requires --vmnet-gateway=IP")
		}
		if r.set[optMask] {
			return Options{}, usageError("--vmnet-mask=MASK requires --vmnet-gateway=IP")
		}
	} else if o.Mode == vmnet.ModeBridged {
		return Options{}, usageError(`vmnet mode "bridged" conflicts with --vmnet-gateway`)
	}

	// tapswitch's: what socket_vmnet leaves to vmnet or to a failure at
	// run time, and what tapswitch does not do.
	switch {
	case r.set[optNAT66Prefix]:
		return Options{}, usageError("--vmnet-nat66-prefix is not supported by tapswitch")
	case r.disableDHCP:
		return Options{}, usageError("--vmnet-disable-dhcp is not supported by tapswitch " +
			"(on macOS it needs the macOS 26 vmnet network API; on Linux DHCP is tapswitch's own)")
	case o.SocketPath == "":
		return Options{}, usageError("the SOCKET argument is empty")
	case o.SocketGroup == "":
		return Options{}, usageError("--socket-group is empty")
	case r.set[optPIDFile] && o.PIDFile == "":
		return Options{}, usageError("--pidfile is empty")
	case o.Mode == vmnet.ModeBridged && o.Interface == "":
		return Options{}, usageError("--vmnet-interface is empty")
	case !o.NetworkID.IsZero() && o.Mode != vmnet.ModeHost:
		return Options{}, usageError("--vmnet-network-identifier applies to --vmnet-mode=host only, not %s", o.Mode)
	}
	if gwSet {
		end, err := netip.ParseAddr(r.end)
		if err != nil || !end.Is4() {
			return Options{}, usageError("invalid address %q was specified for --vmnet-dhcp-end", r.end)
		}
		m, err := netip.ParseAddr(r.mask)
		if err != nil || !m.Is4() {
			return Options{}, usageError("invalid mask %q was specified for --vmnet-mask", r.mask)
		}
		mask := net.IPMask(m.AsSlice())
		if _, bits := mask.Size(); bits == 0 {
			return Options{}, usageError("--vmnet-mask=%s is not a contiguous mask", r.mask)
		}
		// A subnet vmnet would refuse as not private is fine on Linux;
		// on macOS vmnet refuses it when the host interface starts.
		if _, err := vmnet.CheckSubnet(o.Gateway, end, mask); err != nil && !errors.Is(err, vmnet.ErrNotPrivate) {
			return Options{}, usageError("--vmnet-gateway=%s --vmnet-dhcp-end=%s --vmnet-mask=%s: %v", o.Gateway, end, m, err)
		}
		o.DHCPEnd, o.Mask = end, mask
	}
	return o, nil
}

// Linux defaults when no --vmnet-gateway is given: macOS would choose a
// subnet; Linux has no vmnet to ask, so tapswitch takes lima's
// (networks.yaml: shared 192.168.105.0/24, host 192.168.106.0/24).
var (
	linuxSharedGateway = netip.MustParseAddr("192.168.105.1")
	linuxHostGateway   = netip.MustParseAddr("192.168.106.1")
)

// ServeArgs returns the arguments of `tapswitch serve` that do what
// socket_vmnet would with o, for goos ("darwin" or "linux"; see the
// package comment for the differences). o must come from Parse, without
// Help or Version.
func (o Options) ServeArgs(goos string) []string {
	// The control socket sits beside the VM socket (socket_vmnet has none).
	args := []string{"--listen", listenURL(o.SocketPath), "--socket-group", o.SocketGroup, "--ctl", CtlPath(o.SocketPath)}
	if o.PIDFile != "" {
		args = append(args, "--pidfile", o.PIDFile)
	}
	gw, end, mask := o.Gateway, o.DHCPEnd, o.Mask
	if goos != "darwin" && !gw.IsValid() && o.Mode != vmnet.ModeBridged && o.NetworkID.IsZero() {
		gw = linuxSharedGateway
		if o.Mode == vmnet.ModeHost {
			gw = linuxHostGateway
		}
		a := gw.As4()
		a[3] = 254
		end, mask = netip.AddrFrom4(a), net.CIDRMask(24, 32)
	}
	var gwCIDR, dhcpRange string
	if gw.IsValid() {
		ones, _ := mask.Size()
		gwCIDR = netip.PrefixFrom(gw, ones).String()
		dhcpRange = gw.Next().String() + "-" + end.String()
	}

	if goos == "darwin" {
		args = append(args, "--host-mode", o.Mode.String())
		if o.Mode == vmnet.ModeBridged {
			args = append(args, "--host-bridge", o.Interface)
		}
		if gw.IsValid() {
			// vmnet's start address, mask and end address; macOS's DHCP
			// server serves the range, so no --dhcp.
			args = append(args, "--gateway", gwCIDR, "--dhcp-range", dhcpRange)
		}
		if !o.InterfaceID.IsZero() {
			args = append(args, "--host-interface-id", o.InterfaceID.String())
		}
		if !o.NetworkID.IsZero() {
			args = append(args, "--host-network-id", o.NetworkID.String())
		}
		return args
	}

	switch {
	case o.Mode == vmnet.ModeBridged:
		args = append(args, "--host-bridge", o.Interface)
	case !gw.IsValid():
		// An isolated network with no gateway: no host address, no DHCP.
		return args
	case !o.NetworkID.IsZero():
		// An isolated network: the host holds the gateway, nobody serves
		// DHCP (vmnet would not).
		args = append(args, "--host", gwCIDR)
	default:
		args = append(args, "--host", gwCIDR, "--gateway", gwCIDR, "--dhcp", "--dhcp-range", dhcpRange)
	}
	return append(args, "--host-ifname", HostIfname(o.SocketPath))
}

// HostIfname is the name of the host interface of a socket_vmnet stand-in
// serving socketPath on Linux: "tsv" and 8 hex digits of a hash of the
// absolute path. Each instance (lima runs one per network) needs its own,
// and socket_vmnet's command line has no flag to name it.
func HostIfname(socketPath string) string {
	if abs, err := filepath.Abs(socketPath); err == nil {
		socketPath = abs
	}
	return fmt.Sprintf("tsv%08x", crc32.ChecksumIEEE([]byte(socketPath)))
}

// CtlPath is where the control socket of a socket_vmnet stand-in serving
// socketPath lives: beside it, with ".ctl" appended.
func CtlPath(socketPath string) string {
	if abs, err := filepath.Abs(socketPath); err == nil {
		socketPath = abs
	}
	return socketPath + ".ctl"
}

// listenURL returns the unix:// listener URL of a socket path, made
// absolute (a relative path stays relative to the working directory of
// this process) and escaped so that any path survives the round trip.
func listenURL(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return (&url.URL{Scheme: "unix", Path: path}).String()
}

// Usage returns the help text, socket_vmnet's with tapswitch's notes.
func Usage(prog string) string {
	return fmt.Sprintf(`Usage: %s [OPTION]... SOCKET
vmnet.framework support for rootless QEMU, as socket_vmnet, run by tapswitch:
a learning switch, not a hub, with one vmnet (macOS) or tap (Linux) host interface.

--socket-group=GROUP                socket group name (default: "staff")
--vmnet-mode=(host|shared|bridged)  vmnet mode (default: "shared")
--vmnet-interface=INTERFACE         interface used for --vmnet=bridged, e.g., "en0"
                                    (Linux: an existing Linux bridge)
--vmnet-gateway=IP                  gateway used for --vmnet=(host|shared), e.g., "192.168.105.1"
                                    (default: decided by macOS; Linux: 192.168.105.1, host mode 192.168.106.1)
                                    the next IP (e.g., "192.168.105.2") is used as the first DHCP address
--vmnet-dhcp-end=IP                 end of the DHCP range (default: XXX.XXX.XXX.254)
                                    requires --vmnet-gateway to be specified
--vmnet-mask=MASK                   subnet mask (default: "255.255.255.0")
                                    requires --vmnet-gateway to be specified
--vmnet-interface-id=UUID           vmnet interface ID (default: random)
--vmnet-network-identifier=UUID     vmnet network identifier (UUID string, "random", or "")
                                    an isolated host-mode network, without DHCP
-p, --pidfile=PIDFILE               save pid to PIDFILE
-h, --help                          display this help and exit
-v, --version                       display version information and exit

Not supported: --vmnet-nat66-prefix, --vmnet-disable-dhcp.
`, prog)
}
