package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/backend/stream"
	"github.com/tapswitch/tapswitch/backend/tap"
	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/metrics"
	"github.com/tapswitch/tapswitch/internal/regfile"
	"github.com/tapswitch/tapswitch/qemu"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/dhcp"
	"github.com/tapswitch/tapswitch/vmnet"
)

// Defaults of `tapswitch serve` without port flags. 192.168.109.0/24 is
// clear of lima's 192.168.105.0/24, gvproxy's 192.168.127.0/24 and the
// ranges vmnet.framework hands out by default (192.168.64.0/24 and up).
const (
	defaultGateway    = "192.168.109.1/24"
	defaultStreamSock = "tapswitch.sock"
	defaultDgramSock  = "tapswitch-dgram.sock"
)

// defaultWarmInterval is --warm-interval's default. On Linux, on the 2-core
// virtual machines docs/performance.md measures, 2 ms brings a 10 ms ping's
// round trip through two taps below vde_switch's, for about 2.4 % of a core
// while the wakeups last (1 and 5 ms measured within the noise of it, for
// 2.9 and 1.5 %). Elsewhere (macOS) it is off: not measured there, and a
// laptop's battery weighs more.
func defaultWarmInterval() time.Duration {
	if hostOS == "linux" {
		return 2 * time.Millisecond
	}
	return 0
}

// serveOptions holds every flag of tapswitch serve; each flag is also a key
// of the --config file.
type serveOptions struct {
	config string
	// configKeys is how many keys the --config file set at start (not a
	// flag).
	configKeys int

	taps       []string
	host       []string
	hostIfname string
	hostBridge string
	mtu        int
	// macOS: the vmnet.framework host interface.
	hostMode        string
	hostInterfaceID string
	hostNetworkID   string

	listen      []string
	connect     []string
	socketGroup string
	allowUID    []int
	allowGID    []int

	lockMAC    bool
	maxMACs    int
	newMACRate float64
	maxPorts   int

	dhcp          optionalBool
	gateway       string
	dhcpRange     string
	dhcpStatic    []string
	dns           []string
	domain        string
	dhcpLeaseFile string
	dhcpLeaseTime time.Duration

	ctl     string
	metrics string
	pidfile string

	logLevel  string
	logFormat string

	fdbSize    int
	fdbAge     time.Duration
	maxFrame   int
	queueLen   int
	queueBytes int
	tapOffload bool
	warm       time.Duration
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the switch",
		Long: `Run the switch until SIGINT or SIGTERM.

Without --listen, --tap, --connect, --host, --host-bridge or --host-mode,
serve runs its default setup:
a stream listener (QEMU -netdev stream, socket_vmnet clients) at
RUNDIR/` + defaultStreamSock + `, a datagram listener (QEMU -netdev dgram, vfkit,
vz) at RUNDIR/` + defaultDgramSock + `, the DHCP responder on ` + defaultGateway + `
and, with CAP_NET_ADMIN, a host interface (` + vmnet.DefaultName + `) holding the gateway
address; on macOS the host's leg is a vmnet.framework interface in shared
mode, which serves DHCP itself, in place of the responder. RUNDIR is /run/tapswitch as root
(/var/run/tapswitch on macOS), $XDG_RUNTIME_DIR/tapswitch otherwise
($TMPDIR/tapswitch-UID without XDG_RUNTIME_DIR). At start it prints the
QEMU and vfkit arguments to connect.

Every flag but --config is also a key of the YAML file given with --config
(flags on the command line win).`,
		Example: `  sudo tapswitch serve
  tapswitch serve --listen unix:///tmp/ts.sock --listen unixgram:///tmp/ts-dgram.sock
  sudo tapswitch serve --tap tap0 --tap tap1 --host 198.18.0.1/24
  sudo tapswitch serve --listen unix:///run/vm.sock --dhcp --gateway 198.18.0.1/24 --dhcp-static 52:54:00:00:00:01=198.18.0.10
  tapswitch serve --config /etc/tapswitch.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var lines configLines
			if o.config != "" {
				var err error
				if lines, err = applyConfigFile(cmd.Flags(), o.config); err != nil {
					return err
				}
				o.configKeys = len(lines.line)
			}
			if err := runServe(cmd.Context(), cmd, &o); err != nil {
				return lines.locate(err)
			}
			return nil
		},
	}
	o.addFlags(cmd.Flags())
	return cmd
}

// addFlags defines serve's flags on f, bound to o.
func (o *serveOptions) addFlags(f *pflag.FlagSet) {
	f.StringVar(&o.config, "config", "", "YAML file setting any of these flags (flag names as keys)")
	f.StringArrayVar(&o.taps, "tap", nil, "attach a tap device by name, creating it if missing (repeatable)")
	f.StringArrayVar(&o.host, "host", nil, "give the host an interface on the segment with this address, e.g. 198.18.0.1/24 (repeatable)")
	f.StringVar(&o.hostIfname, "host-ifname", vmnet.DefaultName, "name of the host interface")
	f.StringVar(&o.hostBridge, "host-bridge", "", "enslave the host interface to this existing bridge instead of giving it an address")
	f.StringVar(&o.hostMode, "host-mode", "", "macOS: give the host a vmnet.framework interface in this mode: shared, host or bridged (--host-bridge names the physical interface); vmnet then serves DHCP for --gateway/--dhcp-range itself")
	f.StringVar(&o.hostInterfaceID, "host-interface-id", "", "macOS: vmnet interface UUID, for a stable MAC address")
	f.StringVar(&o.hostNetworkID, "host-network-id", "", "macOS: vmnet network UUID of an isolated host-mode network, where macOS serves no DHCP (add --dhcp for tapswitch's)")
	f.IntVar(&o.mtu, "mtu", 0, "MTU of the taps and host interface tapswitch opens (0: leave as it is; a tap that existed before gets its own back at exit)")
	f.StringArrayVar(&o.listen, "listen", nil, "accept VMs at unix:///PATH, tcp://HOST:PORT, unixgram:///PATH or udp://HOST:PORT (repeatable)")
	f.StringArrayVar(&o.connect, "connect", nil, "connect to a QEMU listening with -netdev stream,server=on at unix:///PATH or tcp://HOST:PORT, reconnecting (repeatable)")
	f.StringVar(&o.socketGroup, "socket-group", "", "group owning the VM sockets (mode 0660); default: tapswitch's own group")
	f.IntSliceVar(&o.allowUID, "allow-uid", nil, "admit to unix sockets (datagram ones on Linux only) only these user IDs (and --allow-gid groups)")
	f.IntSliceVar(&o.allowGID, "allow-gid", nil, "admit to unix sockets (datagram ones on Linux only) only these primary group IDs (and --allow-uid users)")
	f.BoolVar(&o.lockMAC, "lock-mac", false, "bind each VM port to the first source MAC it uses; drop frames from other MACs")
	f.IntVar(&o.maxMACs, "max-macs-per-port", 0, "learn at most this many MAC addresses per VM port (0: no limit)")
	f.Float64Var(&o.newMACRate, "new-mac-rate", 0, "learn at most this many new MAC addresses per second per VM port (0: no limit)")
	f.IntVar(&o.maxPorts, "max-ports", 0, "accept at most this many ports in all (0: no limit)")
	f.VarPF(&o.dhcp, "dhcp", "", "answer DHCP on the segment (on by default in the default setup on Linux, --dhcp=false turns it off there; on macOS vmnet serves the default setup's DHCP and --dhcp is refused there)").NoOptDefVal = "true"
	f.StringVar(&o.gateway, "gateway", "", "gateway address and subnet for DHCP, e.g. 198.18.0.1/24 (default: the first IPv4 --host address, else "+defaultGateway+")")
	f.StringVar(&o.dhcpRange, "dhcp-range", "", "dynamic DHCP pool START-END (default: the whole gateway subnet)")
	f.StringArrayVar(&o.dhcpStatic, "dhcp-static", nil, "static lease MAC=IP (repeatable)")
	f.StringArrayVar(&o.dns, "dns", nil, "DNS server offered by DHCP (repeatable)")
	f.StringVar(&o.domain, "domain", "", "domain name offered by DHCP")
	f.StringVar(&o.dhcpLeaseFile, "dhcp-lease-file", "", "lease file (default: STATEDIR/dhcp-leases-SUBNET, STATEDIR being $TAPSWITCH_STATE_DIR, else /var/lib/tapswitch as root, else $XDG_STATE_HOME/tapswitch or ~/.local/state/tapswitch, else RUNDIR/state)")
	f.DurationVar(&o.dhcpLeaseTime, "dhcp-lease-time", dhcp.DefaultLeaseTime, "DHCP lease time")
	f.StringVar(&o.ctl, "ctl", "", "control socket (default RUNDIR/ctl.sock); \"none\" disables the control API")
	f.StringVar(&o.metrics, "metrics", "", "serve Prometheus metrics at this address, e.g. 127.0.0.1:9141")
	f.StringVar(&o.pidfile, "pidfile", "", "write the process ID to this file")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.IntVar(&o.fdbSize, "fdb-size", vswitch.DefaultFDBSize, "maximum number of learned MAC addresses")
	f.DurationVar(&o.fdbAge, "fdb-age", vswitch.DefaultFDBAge, "how long a MAC address stays learned after its last frame")
	f.IntVar(&o.maxFrame, "max-frame", vswitch.DefaultMaxFrame, "largest frame accepted, Ethernet header included")
	f.IntVar(&o.queueLen, "queue-len", vswitch.DefaultQueueLen, "transmit queue length of each port, in frames")
	f.IntVar(&o.queueBytes, "queue-bytes", vswitch.DefaultQueueBytes, "buffer memory each port's transmit queue may hold, in bytes")
	f.DurationVar(&o.warm, "warm-interval", defaultWarmInterval(), "while frames have crossed the switch in the last second, wake this often (and poll the taps that received) so that the next frame finds the CPU awake and its path cached: lower latency for sparse traffic, for a few % of a core (0: off; off by default on macOS)")
	f.BoolVar(&o.tapOffload, "tap-offload", true, "open taps (and the Linux host interface) with TCP segmentation and checksum offloads (IFF_VNET_HDR)")
}

func newLogger(level, format string) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	l.SetLevel(lv)
	switch format {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{TimestampFormat: "2006-01-02T15:04:05.000Z07:00"}) // as the text format's
	default:
		return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
	}
	return l, nil
}

// plan is serve's configuration after validation: everything that can be
// wrong with the flags is found before anything is created.
type plan struct {
	defaults    bool
	host        *vmnet.Config // nil: no host interface
	hostAddrs   []netip.Prefix
	listens     []listen.Addr
	socketGID   int // -1: leave the group alone
	dhcp        *dhcp.Config
	ctl         string
	leaseDir    string
	defaultHost bool // default setup: try the host interface, fall back without CAP_NET_ADMIN
}

func (o *serveOptions) plan() (*plan, error) {
	p, err := o.planConfig()
	if err != nil {
		return nil, err
	}
	// The ports the configuration makes itself must fit under
	// --max-ports (the switch refused the last of them at start-up, with
	// an error that did not name the flag).
	own := len(o.taps) + len(o.connect)
	if p.host != nil {
		own++
	}
	if p.dhcp != nil {
		own++
	}
	if o.maxPorts > 0 && own > o.maxPorts {
		return nil, fmt.Errorf("--max-ports %d: the configuration itself has %d ports (its taps, --connect URLs, host interface and DHCP responder)", o.maxPorts, own)
	}
	return p, nil
}

func (o *serveOptions) planConfig() (*plan, error) {
	p := &plan{socketGID: -1, ctl: o.ctl}
	if err := o.checkLimits(); err != nil {
		return nil, err
	}
	if err := o.checkTaps(); err != nil {
		return nil, err
	}
	p.defaults = len(o.listen) == 0 && len(o.taps) == 0 && len(o.connect) == 0 && len(o.host) == 0 && o.hostBridge == "" && o.hostMode == ""
	if err := p.planListens(o); err != nil {
		return nil, err
	}
	if err := o.checkConnects(p.listens); err != nil {
		return nil, err
	}
	if err := p.planHostAddrs(o); err != nil {
		return nil, err
	}
	if err := p.planSockets(o); err != nil {
		return nil, err
	}
	if err := p.planHostLeg(o); err != nil {
		return nil, err
	}
	return p, nil
}

// checkLimits checks --max-frame, the switch's and the VM ports' limits,
// and --mtu against --max-frame.
func (o *serveOptions) checkLimits() error {
	if o.maxFrame < 14 || o.maxFrame > 65535 {
		return fmt.Errorf("--max-frame %d: must be between 14 and 65535", o.maxFrame)
	}
	for _, c := range []struct {
		flag string
		val  any
		bad  bool
		want string
	}{
		{"fdb-size", o.fdbSize, o.fdbSize < 1, "positive"},
		{"fdb-age", o.fdbAge, o.fdbAge <= 0, "positive"},
		// A channel of that many frames is made per port: past a million
		// it is memory for nothing (a huge value ran the daemon out of
		// memory at the first client).
		{"queue-len", o.queueLen, o.queueLen < 1 || o.queueLen > maxQueueLen, "between 1 and 1048576"},
		// Below one buffer of the largest class every queued frame of
		// that size is dropped.
		{"queue-bytes", o.queueBytes, o.queueBytes < vswitch.MinQueueBytes, fmt.Sprintf("at least %d (one TCP super-frame's buffer)", vswitch.MinQueueBytes)},
		{"max-macs-per-port", o.maxMACs, o.maxMACs < 0, "0 (no limit) or more"},
		{"new-mac-rate", o.newMACRate, !(o.newMACRate >= 0), "0 (no limit) or more"}, // NaN too
		{"max-ports", o.maxPorts, o.maxPorts < 0, "0 (no limit) or more"},
		{"warm-interval", o.warm, o.warm < 0, "0 (off) or more"},
	} {
		if c.bad {
			return fmt.Errorf("--%s %v: must be %s", c.flag, c.val, c.want)
		}
	}
	if o.mtu != 0 && (o.mtu < 68 || o.mtu > o.maxFrame-14) {
		return fmt.Errorf("--mtu %d: must be between 68 and --max-frame minus 14 (%d)", o.mtu, o.maxFrame-14)
	}
	return nil
}

// checkTaps checks the --tap names: each valid, given once, and not the
// host interface's.
func (o *serveOptions) checkTaps() error {
	// Tap names are checked as tap.Open checks them, so that a reload
	// refuses a bad one before it changes anything (it used to fail at
	// the tap, after the file's other changes had been made).
	for i, name := range o.taps {
		if err := cmp.Or(tap.CheckName(name), api.CheckTapName(name)); err != nil {
			return fmt.Errorf("--tap: %w", err)
		}
		if slices.Contains(o.taps[:i], name) {
			return fmt.Errorf("--tap %s: given twice", name)
		}
		if name == o.hostIfname && (len(o.host) > 0 || o.hostBridge != "") {
			return fmt.Errorf("--tap %s: also the host interface's name (--host-ifname); give one of them another", name)
		}
	}
	return nil
}

// planListens plans the listeners: the --listen URLs, or the default
// setup's two sockets in runDir.
func (p *plan) planListens(o *serveOptions) error {
	rawListens := o.listen
	if p.defaults {
		rawListens = []string{
			"unix://" + filepath.Join(runDir(), defaultStreamSock),
			"unixgram://" + filepath.Join(runDir(), defaultDgramSock),
		}
		p.defaultHost = true
	}
	for _, u := range rawListens {
		a, err := listen.Parse(u)
		if err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
		if a.IsUnix() && len(a.Address) > listen.MaxSocketPath {
			// Found here rather than at bind, so that a configuration is
			// refused before anything is set up. (A path dialled, by
			// --connect, may be as long as the system allows.)
			return fmt.Errorf("--listen %s: socket path longer than %d bytes", u, listen.MaxSocketPath)
		}
		// (Port 0 asks for a port the system chooses, a new one each time.)
		anyPort := !a.IsUnix() && strings.HasSuffix(a.Address, ":0")
		if !anyPort && slices.ContainsFunc(p.listens, func(b listen.Addr) bool { return socketKey(a) == socketKey(b) }) {
			return fmt.Errorf("--listen %s: given twice", u)
		}
		p.listens = append(p.listens, a)
	}
	return nil
}

// checkConnects checks the --connect URLs: stream ones, each given once,
// and none the switch's own listener among listens.
func (o *serveOptions) checkConnects(listens []listen.Addr) error {
	var connects []listen.Addr
	for _, u := range o.connect {
		a, err := listen.Parse(u)
		if err != nil {
			return fmt.Errorf("--connect: %w", err)
		}
		if a.Kind() != listen.KindStream {
			return fmt.Errorf("--connect %s: only stream URLs (unix://, tcp://) can be dialled", u)
		}
		if slices.ContainsFunc(connects, func(b listen.Addr) bool { return socketKey(a) == socketKey(b) }) {
			return fmt.Errorf("--connect %s: given twice", u)
		}
		if l, ok := ownListen(listens, a); ok {
			return fmt.Errorf("--connect %s is this switch's own --listen %s: %s", u, l, loopReason)
		}
		connects = append(connects, a)
	}
	return nil
}

// planHostAddrs parses the --host addresses.
func (p *plan) planHostAddrs(o *serveOptions) error {
	for _, h := range o.host {
		pfx, err := netip.ParsePrefix(h)
		if err != nil {
			return fmt.Errorf("--host %q: want an address with prefix length, e.g. 198.18.0.1/24: %w", h, err)
		}
		if pfx.Addr().Is6() && o.mtu != 0 && o.mtu < 1280 {
			// Linux turns IPv6 off on the interface, and refuses the
			// address with a bare "invalid argument".
			return fmt.Errorf("--host %s: IPv6 needs an MTU of 1280 or more, and --mtu is %d", h, o.mtu)
		}
		p.hostAddrs = append(p.hostAddrs, pfx)
	}
	return nil
}

// planSockets plans the VM sockets' group (--socket-group) and the
// control socket's path (--ctl), and checks the --metrics address.
func (p *plan) planSockets(o *serveOptions) error {
	if o.socketGroup != "" {
		g, err := lookupGroup(o.socketGroup)
		if err != nil {
			return fmt.Errorf("--socket-group: %w", err)
		}
		p.socketGID = g
	}
	if p.ctl == "" {
		p.ctl = defaultCtlPath()
	}
	if len(p.ctl) > listen.MaxSocketPath {
		return fmt.Errorf("--ctl %s: socket path longer than %d bytes", p.ctl, listen.MaxSocketPath)
	}
	if o.metrics != "" {
		// Checked here, not only when it is listened on, so that a reload
		// refuses a file a restart would refuse.
		_, port, err := net.SplitHostPort(o.metrics)
		if err == nil {
			_, err = net.LookupPort("tcp", port)
		}
		if err != nil {
			return fmt.Errorf("--metrics %s: want HOST:PORT, e.g. 127.0.0.1:9141: %w", o.metrics, err)
		}
	}
	return nil
}

// planHostLeg plans the host's leg on the segment and the DHCP responder:
// a vmnet.framework interface (planVmnet) with --host-mode or in macOS's
// default setup, else planHostAndDHCP.
func (p *plan) planHostLeg(o *serveOptions) error {
	vmnetMode := o.hostMode
	if vmnetMode == "" && p.defaults && hostOS == "darwin" {
		if o.hostNetworkID != "" {
			return errors.New("--host-network-id: an isolated network needs --host-mode host")
		}
		f := o.dhcpOnly(false, false)
		if o.dhcp.val {
			f = "--dhcp"
		}
		if f != "" {
			return fmt.Errorf("%s: the default host leg on macOS is vmnet's shared mode, which serves DHCP itself; drop %s, or give --listen for a switch without a host leg, whose guests tapswitch's --dhcp serves", f, f)
		}
		vmnetMode = "shared" // macOS's host leg is vmnet, which serves DHCP
	}
	if vmnetMode != "" {
		if err := p.planVmnet(o, vmnetMode); err != nil {
			return err
		}
		if !o.dhcp.val {
			return nil
		}
		// An isolated network (planVmnet admits --dhcp only there): macOS
		// serves no DHCP on it, so tapswitch does.
		return p.planDHCP(o)
	}
	return p.planHostAndDHCP(o)
}

// planHostAndDHCP plans, without vmnet.framework, the host interface
// (--host, --host-bridge, the default setup's) and the DHCP responder
// (--dhcp, on by default in the default setup).
func (p *plan) planHostAndDHCP(o *serveOptions) error {
	if o.hostInterfaceID != "" || o.hostNetworkID != "" {
		return errors.New("--host-interface-id and --host-network-id need --host-mode (macOS)")
	}
	if o.hostBridge != "" && len(o.host) > 0 {
		return errors.New("--host-bridge and --host exclude each other: a bridged host interface has no address of its own (put it on the bridge)")
	}

	wantDHCP := o.dhcp.val || p.defaults && !o.dhcp.set
	// (The default setup's host leg takes --gateway's address without DHCP.)
	if f := o.dhcpOnly(!p.defaults, true); !wantDHCP && f != "" {
		return needsDHCP(f, "--gateway", "--dhcp-range", "--dhcp-static", "--dns", "--domain", "--dhcp-lease-time", "--dhcp-lease-file")
	}
	if len(p.hostAddrs) > 0 || o.hostBridge != "" {
		p.host = &vmnet.Config{Name: o.hostIfname, MTU: o.mtu, Bridge: o.hostBridge}
	}
	if !wantDHCP {
		if p.defaults {
			// The default setup with --dhcp=false: the host leg still
			// holds the gateway address.
			gw, err := parseGateway(cmp.Or(o.gateway, defaultGateway))
			if err != nil {
				return err
			}
			p.hostAddrs = []netip.Prefix{gw}
			p.host = &vmnet.Config{Name: o.hostIfname, MTU: o.mtu}
		}
		p.setHostAddrs()
		return nil
	}
	return p.planDHCP(o)
}

// socketKey names the socket a is: its file for unix sockets, of either
// kind, which one file cannot be twice.
func socketKey(a listen.Addr) string {
	if a.IsUnix() {
		return "file:" + filepath.Clean(a.Address)
	}
	return a.Network + ":" + a.Address
}

// dialledAddrs returns the addresses a dial to host may reach: host's own;
// for "localhost", either loopback address; for an empty host, 127.0.0.1
// (Go's dial of "the local system"); for 0.0.0.0, 127.0.0.1, where the
// system connects it; for ::, either loopback address (::1, where the
// system connects it, and 127.0.0.1, which Go tries next). A name other
// than localhost reaches nothing it tells.
func dialledAddrs(host string) []netip.Addr {
	loopbacks := []netip.Addr{netip.IPv6Loopback(), netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	switch {
	case strings.EqualFold(host, "localhost"):
		return loopbacks
	case host == "":
		return loopbacks[1:]
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return nil
	}
	switch ip = ip.Unmap(); {
	case ip.IsUnspecified() && ip.Is4():
		return loopbacks[1:] // an IPv4 socket, connected to 127.0.0.1
	case ip.IsUnspecified():
		return loopbacks // ::1, then Go's fallback to 0.0.0.0
	}
	return []netip.Addr{ip}
}

// loopReason says why a --connect to the switch's own listener is refused.
const loopReason = "every flooded frame would loop between the two ends"

// ownListen returns the stream listener among listens that dialling
// target would reach, as far as the addresses tell, and whether there is
// one: for unix, the same cleaned absolute path, or the same file when
// both exist (a symlink); for tcp, the same port and the same host name,
// or an address target may reach (dialledAddrs) that the listener takes:
// its own (127.0.0.1 for localhost), or a loopback one when it listens on
// every address (IPv4 only for 0.0.0.0). A listener on port 0 has no port
// to compare until it is open.
// What the addresses do not tell (another address of this host, a
// listener added later) is found by stream.Dial once connected.
func ownListen(listens []listen.Addr, target listen.Addr) (listen.Addr, bool) {
	for _, l := range listens {
		if l.Network != target.Network {
			continue
		}
		switch l.Network {
		case "unix":
			if absPath(l.Address) == absPath(target.Address) {
				return l, true
			}
			lfi, err1 := os.Stat(l.Address)
			tfi, err2 := os.Stat(target.Address)
			if err1 == nil && err2 == nil && os.SameFile(lfi, tfi) {
				return l, true
			}
		case "tcp":
			lh, lp, err1 := net.SplitHostPort(l.Address)
			th, tp, err2 := net.SplitHostPort(target.Address)
			if err1 != nil || err2 != nil {
				continue
			}
			lport, err1 := net.LookupPort("tcp", lp)
			tport, err2 := net.LookupPort("tcp", tp)
			if err1 != nil || err2 != nil || lport == 0 || lport != tport {
				continue
			}
			if strings.EqualFold(lh, th) {
				return l, true
			}
			if strings.EqualFold(lh, "localhost") {
				lh = "127.0.0.1" // what net.Listen takes: its first IPv4 address
			}
			lip, lerr := netip.ParseAddr(lh)
			lip = lip.Unmap()
			// Every address the listener takes: any host, or 0.0.0.0,
			// which takes IPv4 only (see listen.Addr.ListenNetwork).
			wild := lh == "" || lerr == nil && lip.IsUnspecified()
			for _, r := range dialledAddrs(th) {
				if wild && r.IsLoopback() && (lerr != nil || !lip.Is4() || r.Is4()) || lerr == nil && lip == r {
					return l, true
				}
			}
		}
	}
	return listen.Addr{}, false
}

// planDHCP plans the DHCP responder: --gateway (else the first --host
// address, else the default subnet), --dhcp-range and the other --dhcp
// options; the host's own addresses are kept out of the pool.
func (p *plan) planDHCP(o *serveOptions) error {
	dc := &dhcp.Config{LeaseTime: o.dhcpLeaseTime, Domain: o.domain, MTU: o.mtu, LeaseFile: o.dhcpLeaseFile}
	gw := o.gateway
	if gw == "" {
		gw = defaultGateway
		// The first IPv4 --host address: an IPv6 one before it was taken,
		// and refused as a --gateway the user never gave.
		if i := slices.IndexFunc(p.hostAddrs, func(h netip.Prefix) bool { return h.Addr().Is4() }); i >= 0 {
			gw = p.hostAddrs[i].String()
		}
	}
	var err error
	if dc.Gateway, err = parseGateway(gw); err != nil {
		return err
	}
	if p.defaults {
		p.hostAddrs = []netip.Prefix{dc.Gateway}
		p.host = &vmnet.Config{Name: o.hostIfname, MTU: o.mtu}
	}
	if o.dhcpRange != "" {
		if dc.Range, err = dhcp.ParseRange(o.dhcpRange); err != nil {
			return fmt.Errorf("--dhcp-range: %w", err)
		}
	}
	for _, s := range o.dhcpStatic {
		sl, err := dhcp.ParseStaticLease(s)
		if err != nil {
			return fmt.Errorf("--dhcp-static: %w", err)
		}
		dc.Static = append(dc.Static, sl)
	}
	for _, s := range o.dns {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return fmt.Errorf("--dns %q: want an IPv4 address", s)
		}
		dc.DNS = append(dc.DNS, a)
	}
	for _, h := range p.hostAddrs {
		if h.Addr().Is4() && h.Addr() != dc.Gateway.Addr() {
			dc.Reserved = append(dc.Reserved, h.Addr())
		}
	}
	if dc.LeaseFile == "" {
		p.leaseDir = stateDir()
		dc.LeaseFile = filepath.Join(p.leaseDir, "dhcp-leases-"+strings.ReplaceAll(dc.Gateway.Masked().String(), "/", "_"))
	}
	// Checked now, as a start and a reload check a configuration before
	// they change anything (a reload used to accept what a restart then
	// refused).
	if err := dc.Check(); err != nil {
		return dhcpFlagError(err, o)
	}
	if slices.Contains(o.taps, dhcpPortName) {
		// Two ports of one name: ctl detach could not tell them apart,
		// and a reload that drops the tap would find both.
		return fmt.Errorf("--tap %s: the DHCP responder's port has that name; give the tap another", dhcpPortName)
	}
	p.dhcp = dc
	p.setHostAddrs()
	return nil
}

// maxQueueLen bounds --queue-len.
const maxQueueLen = 1 << 20

// dhcpPortName is the DHCP responder's port name (dhcp.Server.String).
const dhcpPortName = "dhcp"

// dhcpFlags names the flag that sets each dhcp.Config field.
var dhcpFlags = map[string]string{
	"Gateway": "gateway", "Range": "dhcp-range", "Static": "dhcp-static", "DNS": "dns",
	"Domain": "domain", "LeaseTime": "dhcp-lease-time", "MTU": "mtu", "Reserved": "host", "Options": "dns",
}

// dhcpFlagError puts the flag that set the refused field in front of the
// responder's refusal err, as every other plan error starts with its flag.
func dhcpFlagError(err error, o *serveOptions) error {
	var ce *dhcp.ConfigError
	if !errors.As(err, &ce) || dhcpFlags[ce.Field] == "" {
		return err
	}
	flag := dhcpFlags[ce.Field]
	switch {
	case flag == "gateway" && o.gateway == "" && len(o.host) > 0:
		flag = "host" // the gateway is the first IPv4 --host address
	case ce.Field == "Options" && len(o.dns) == 0:
		flag = "domain" // the reply is too long with --dns and --domain together
	}
	return fmt.Errorf("--%s: %w", flag, err)
}

// parseGateway parses a --gateway value.
func parseGateway(s string) (netip.Prefix, error) {
	gw, err := netip.ParsePrefix(s)
	if err != nil || !gw.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("--gateway %q: want an IPv4 address with prefix length, e.g. 198.18.0.1/24", s)
	}
	return gw, nil
}

// optionalBool is a boolean flag that knows whether it was given, so that
// --dhcp=false can turn off what the default setup turns on.
type optionalBool struct{ set, val bool }

// String is "" while the flag is not given, so that a reload sees a file
// that adds or drops "dhcp: false" as a change.
func (b *optionalBool) String() string {
	if !b.set {
		return ""
	}
	return strconv.FormatBool(b.val)
}
func (b *optionalBool) Type() string     { return "bool" }
func (b *optionalBool) IsBoolFlag() bool { return true }

func (b *optionalBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	b.set, b.val = true, v
	return nil
}

func (p *plan) setHostAddrs() {
	if p.host != nil {
		p.host.Addrs = p.hostAddrs
		if hostOS != "darwin" {
			p.host.MAC = hostMAC(p.host.Name, p.hostAddrs)
		}
	}
}

// hostMAC is the Linux host interface's hardware address: derived from its
// name and first address, so that it is the same at every start. A new
// random one at each start left the guests' ARP entries for the gateway,
// which the host leg holds, pointing at the last one: the host was
// unreachable until they expired (seconds on Linux, 20 minutes on BSD).
func hostMAC(name string, addrs []netip.Prefix) net.HardwareAddr {
	seed := "tapswitch host " + name
	if len(addrs) > 0 {
		seed += " " + addrs[0].String()
	}
	mac := vswitch.DerivedMAC([]byte(seed))
	return mac[:]
}

// absPath returns path made absolute, for hints a user runs elsewhere; path
// itself if that fails.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// dhcpOnly returns the first flag given that only the DHCP responder uses,
// or "": --gateway only if gateway is set, --dhcp-range only if dhcpRange
// is (vmnet takes those two too). Errors start with it, so that
// configLines.locate finds its line.
func (o *serveOptions) dhcpOnly(gateway, dhcpRange bool) string {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"--gateway", gateway && o.gateway != ""},
		{"--dhcp-range", dhcpRange && o.dhcpRange != ""},
		{"--dhcp-static", len(o.dhcpStatic) > 0},
		{"--dns", len(o.dns) > 0},
		{"--domain", o.domain != ""},
		{"--dhcp-lease-time", o.dhcpLeaseTime != dhcp.DefaultLeaseTime},
		{"--dhcp-lease-file", o.dhcpLeaseFile != ""},
	} {
		if f.set {
			return f.name
		}
	}
	return ""
}

// needsDHCP is the error for option f, one of opts, given without --dhcp;
// it names the other options that need it too.
func needsDHCP(f string, opts ...string) error {
	others := slices.DeleteFunc(slices.Clone(opts), func(o string) bool { return o == f })
	list := others[len(others)-1]
	if len(others) > 1 {
		list = strings.Join(others[:len(others)-1], ", ") + " and " + list
	}
	return fmt.Errorf("%s: needs --dhcp, as do %s", f, list)
}

// planVmnet plans a vmnet.framework host interface (macOS): --gateway is
// its start address and subnet, the end of --dhcp-range the end of the
// pool macOS's DHCP server hands out.
func (p *plan) planVmnet(o *serveOptions, modeName string) error {
	if hostOS != "darwin" {
		return fmt.Errorf("--host-mode %s: vmnet.framework exists only on macOS; on Linux use --host CIDR or --host-bridge BR", modeName)
	}
	// On an isolated network (--host-network-id) macOS serves no DHCP:
	// there --dhcp is tapswitch's, with its --gateway and --dhcp-range.
	isolated := o.hostNetworkID != ""
	f := o.dhcpOnly(false, false)
	if !isolated && (o.dhcp.val || f != "") {
		return errors.New("--host-mode: vmnet serves DHCP itself; drop --dhcp and the --dhcp-static, --dns, --domain, --dhcp-lease-time and --dhcp-lease-file options (only an isolated network, --host-network-id, takes tapswitch's --dhcp)")
	}
	if isolated && !o.dhcp.val && f != "" {
		return needsDHCP(f, "--dhcp-static", "--dns", "--domain", "--dhcp-lease-time", "--dhcp-lease-file")
	}
	mode, err := vmnet.ParseMode(modeName)
	if err != nil {
		return fmt.Errorf("--host-mode: %w", err)
	}
	hc := &vmnet.Config{Mode: mode, Bridge: o.hostBridge, MTU: o.mtu}
	gw := o.gateway
	if gw == "" && p.defaults {
		gw = defaultGateway
	}
	if o.dhcp.val {
		gw = "" // tapswitch's DHCP subnet, not vmnet's start address
	}
	if gw != "" {
		pfx, err := netip.ParsePrefix(gw)
		if err != nil || !pfx.Addr().Is4() {
			return fmt.Errorf("--gateway %q: want an IPv4 address with prefix length, e.g. 192.168.105.1/24", gw)
		}
		hc.StartAddr, hc.Mask = pfx.Addr(), net.CIDRMask(pfx.Bits(), 32)
	}
	if o.dhcpRange != "" && !o.dhcp.val {
		r, err := dhcp.ParseRange(o.dhcpRange)
		if err != nil {
			return fmt.Errorf("--dhcp-range: %w", err)
		}
		if !hc.StartAddr.IsValid() || r.Start != hc.StartAddr.Next() {
			return errors.New("--dhcp-range with --host-mode must start right after the --gateway address (vmnet's pool follows its start address)")
		}
		hc.EndAddr = r.End
	}
	if o.hostInterfaceID != "" {
		if hc.InterfaceID, err = vmnet.ParseUUID(o.hostInterfaceID); err != nil {
			return fmt.Errorf("--host-interface-id: %w", err)
		}
	}
	if o.hostNetworkID != "" {
		if hc.NetworkID, err = vmnet.ParseUUID(o.hostNetworkID); err != nil {
			return fmt.Errorf("--host-network-id: %w", err)
		}
	}
	for _, h := range o.host {
		pfx, err := netip.ParsePrefix(h)
		if err != nil {
			return fmt.Errorf("--host %q: %w", h, err)
		}
		hc.Addrs = append(hc.Addrs, pfx)
	}
	p.host = hc
	p.defaultHost = p.defaults
	return nil
}

func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(g.Gid)
}

// cleanup runs undo steps in reverse order.
type cleanup []func()

func (c *cleanup) add(f func()) { *c = append(*c, f) }

func (c cleanup) run() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i]()
	}
}

// serveRun holds what runServe's steps share: the configuration, the
// switch, the undo steps and the errgroup its goroutines run in, and the
// servers and listeners later steps use.
type serveRun struct {
	cmd *cobra.Command
	o   *serveOptions
	p   *plan
	log *logrus.Logger
	// undo is run when runServe returns, last step first.
	undo cleanup

	sw         *vswitch.Switch
	vmPort     vswitch.PortConfig
	streamConn stream.ConnConfig
	dial       stream.DialConfig

	g    *errgroup.Group
	gctx context.Context

	srv     *dhcp.Server // nil without the DHCP responder
	streams []*stream.Listener
	dgrams  []*dgram.Listener
	dl      *dials
}

func runServe(ctx context.Context, cmd *cobra.Command, o *serveOptions) (err error) {
	// SIGHUP re-reads --config (see reloader). Caught from the start, as
	// one during set-up or shutdown would otherwise end the process
	// without its cleanup; one during set-up is applied once running.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Ignore(syscall.SIGHUP) // after the cleanup (deferred below)
	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	p, err := o.plan()
	if err != nil {
		return err
	}
	if sharedRunDirFallback() && usesRunDir(p) {
		if err := checkPrivateDir(runDir()); err != nil {
			return err
		}
	}
	s := &serveRun{cmd: cmd, o: o, p: p, log: log}
	defer func() { s.undo.run() }()

	if err := s.prepareFiles(); err != nil {
		return err
	}
	if err := s.lockLeaseFile(); err != nil {
		return err
	}
	s.newSwitch()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.g, s.gctx = errgroup.WithContext(ctx)

	// The host interface first: whether it holds the gateway address
	// decides whether the DHCP responder answers ARP for it.
	if err := s.openHost(); err != nil {
		return err
	}
	if err := s.startDHCP(); err != nil {
		return err
	}
	for _, name := range o.taps {
		if err := attachTap(s.sw, name, o, log); err != nil {
			return fmt.Errorf("--tap: %w", err)
		}
	}
	if err := s.openListeners(); err != nil {
		return err
	}

	s.dl = newDials(s.gctx, s.g, s.sw, s.dial)
	s.dl.connectAll(o.connect)

	if err := s.serveCtl(); err != nil {
		return err
	}
	if err := s.serveMetrics(); err != nil {
		return err
	}

	printSummary(cmd, p, s.streams, s.dgrams, s.srv)

	s.reloadOnSIGHUP(hup)

	<-s.gctx.Done()
	log.Info("shutting down")
	cancel()
	return s.g.Wait()
}

// prepareFiles writes the pidfile and makes the directories of the unix
// listeners and of the lease file.
func (s *serveRun) prepareFiles() error {
	o, p := s.o, s.p
	if o.pidfile != "" {
		if err := writePidfile(o.pidfile); err != nil {
			return err
		}
		s.undo.add(func() { removePidfile(o.pidfile) })
	}
	for _, a := range p.listens {
		if a.IsUnix() {
			if err := os.MkdirAll(filepath.Dir(a.Address), 0o755); err != nil {
				return fmt.Errorf("--listen %s: %w", a, err)
			}
		}
	}
	if p.leaseDir != "" {
		if err := os.MkdirAll(p.leaseDir, 0o700); err != nil {
			return fmt.Errorf("lease file directory: %w (set TAPSWITCH_STATE_DIR, or --dhcp-lease-file)", err)
		}
	}
	return nil
}

// lockLeaseFile follows the DHCP lease file's links and takes its lock,
// which the responder holds (p.dhcp.LeaseLock).
func (s *serveRun) lockLeaseFile() error {
	p := s.p
	if p.dhcp != nil && p.dhcp.LeaseFile != "" {
		// A symlink (to persistent storage, say) leads to the file that is
		// written: the writes rename a new file over the old, and would
		// replace the link itself. The lock is taken next to that file.
		target, err := ownLinks(p.dhcp.LeaseFile)
		if err != nil {
			return fmt.Errorf("--dhcp-lease-file: %w", err)
		}
		p.dhcp.LeaseFile = target
		// Before the host interface: a second switch given the same lease
		// file fails without touching the network. Released after the
		// switch has closed the responder (its last write).
		lock, err := dhcp.LockLeaseFile(p.dhcp.LeaseFile)
		if err != nil {
			return fmt.Errorf("dhcp server: %w", err)
		}
		s.undo.add(lock.Close)
		p.dhcp.LeaseLock = lock
	}
	return nil
}

// newSwitch makes the switch, closed at cleanup, and the configuration of
// its VM ports.
func (s *serveRun) newSwitch() {
	o, log := s.o, s.log
	sw := vswitch.New(vswitch.Config{
		Logger:     log,
		FDBSize:    o.fdbSize,
		FDBAge:     o.fdbAge,
		MaxFrame:   o.maxFrame,
		QueueLen:   o.queueLen,
		QueueBytes: o.queueBytes,
		MaxPorts:   o.maxPorts,

		WarmInterval: o.warm,
	})
	// VM ports (listeners and --connect) get the port security limits;
	// taps and the host interface may carry many stations legitimately.
	vmPort := vswitch.PortConfig{LockMAC: o.lockMAC, MaxMACs: o.maxMACs, NewMACRate: o.newMACRate}
	streamConn := stream.ConnConfig{MaxFrame: o.maxFrame}
	dial := stream.DialConfig{Logger: log, Conn: streamConn, Port: vmPort}
	s.undo.add(func() { sw.Close() })
	s.sw, s.vmPort, s.streamConn, s.dial = sw, vmPort, streamConn, dial
}

// openHost opens the host interface, if the plan has one, and adds it to
// the switch; in the default setup a missing privilege leaves the switch
// without it (hostOptional).
func (s *serveRun) openHost() error {
	p, o, log, sw, g, gctx := s.p, s.o, s.log, s.sw, s.g, s.gctx
	if p.host != nil {
		hc := *p.host
		hc.Logger = log
		hc.NoOffload = !o.tapOffload
		hi, err := vmnet.Open(hc)
		switch {
		case err != nil && p.defaultHost && hostOptional(err) && hostOS == "darwin":
			log.WithError(err).Warn("no host interface (vmnet needs root and cgo): guests reach each other, but not the host, and no DHCP serves them (vmnet's would); run as root, or give --listen and --dhcp for tapswitch's")
		case err != nil && p.defaultHost && hostOptional(err):
			log.WithError(err).Warn("no host interface (needs CAP_NET_ADMIN): guests reach each other, but not the host")
		case err != nil:
			return fmt.Errorf("host interface: %w", err)
		default:
			var own vswitch.MAC
			copy(own[:], hi.MAC())
			ha, err := sw.AddPort(hi, vswitch.PortConfig{Kind: api.KindHost, OwnMAC: own})
			if err != nil {
				hi.Close()
				return err
			}
			// Only its deletion ends it while the switch runs (it cannot
			// be detached): the host is then off the segment, and with
			// --dhcp guests lose the gateway, until a restart.
			g.Go(func() error {
				select {
				case <-gctx.Done():
				case <-ha.Done():
					if gctx.Err() == nil {
						log.WithField("port", ha.Name()).Error("host interface gone (deleted?): the host is off the segment until tapswitch restarts")
					}
				}
				return nil
			})
		}
	}
	return nil
}

// startDHCP makes the DHCP responder, if the plan has one, and adds it to
// the switch.
func (s *serveRun) startDHCP() error {
	p, log, sw := s.p, s.log, s.sw
	if p.dhcp != nil {
		// The host's own addresses in the subnet (the host interface's, a
		// bridge's it is enslaved to) are never leased, and the responder
		// answers ARP and ping for the gateway only if the host does not
		// hold it: two answers to one ARP request are a conflict.
		local := hostAddrsIn(p.dhcp.Gateway.Masked())
		p.dhcp.AnswerGateway = !slices.Contains(local, p.dhcp.Gateway.Addr())
		if !p.dhcp.AnswerGateway && p.host == nil {
			log.WithField("gateway", p.dhcp.Gateway.Addr()).Warn("an interface of this host holds the gateway address, and there is no host interface: " +
				"the responder leaves ARP and ping for it to the host, which answers only through a tap that is up in this namespace; " +
				"without one, choose a gateway address the host does not have (--gateway)")
		}
		for _, a := range local {
			if a != p.dhcp.Gateway.Addr() && !slices.Contains(p.dhcp.Reserved, a) {
				p.dhcp.Reserved = append(p.dhcp.Reserved, a)
			}
		}
		p.dhcp.Logger = log
		srv, err := dhcp.New(*p.dhcp)
		if err != nil {
			return err
		}
		if _, err := sw.AddPort(srv, vswitch.PortConfig{Kind: api.KindDHCP, DHCPServer: true, DHCPAddr: p.dhcp.Gateway.Addr(), OwnMAC: srv.MAC()}); err != nil {
			srv.Close()
			return err
		}
		s.srv = srv
		// Flush lazily kept lease changes before the switch closes the port.
		s.undo.add(func() {
			if err := srv.Flush(); err != nil {
				log.WithError(err).Error("flushing DHCP leases")
			}
		})
	}
	return nil
}

// openListeners opens the --listen sockets, with the group --socket-group
// gives them and the warnings --allow-uid and --allow-gid call for.
func (s *serveRun) openListeners() error {
	o, p, log, sw, gctx := s.o, s.p, s.log, s.sw, s.gctx
	var group *int // given to unix socket files before they appear
	if p.socketGID >= 0 {
		group = &p.socketGID
	}
	for _, a := range p.listens {
		switch a.Kind() {
		case listen.KindStream:
			l, err := stream.ListenAddr(gctx, a, stream.ListenerConfig{Logger: log, Conn: s.streamConn, Port: s.vmPort,
				Group: group, AllowUIDs: o.allowUID, AllowGIDs: o.allowGID}, sw)
			if err != nil {
				return listenError(o, a, err)
			}
			s.undo.add(func() { l.Close() })
			s.streams = append(s.streams, l)
			a = l.Addr() // a TCP port of 0 is the one chosen now
		case listen.KindDgram:
			l, err := dgram.ListenAddr(gctx, a, dgram.Config{Logger: log, MaxFrame: o.maxFrame, Port: s.vmPort,
				Group: group, AllowUIDs: o.allowUID, AllowGIDs: o.allowGID}, sw)
			if err != nil {
				return listenError(o, a, err)
			}
			s.undo.add(func() { l.Close() })
			s.dgrams = append(s.dgrams, l)
			a = l.Addr()
		}
		if len(o.allowUID)+len(o.allowGID) > 0 {
			// A unix stream socket tells who connected, a unixgram one on
			// Linux who sent (SO_PASSCRED).
			switch a.Network {
			case "unixgram":
				if runtime.GOOS == "linux" {
					break // checked with each sender's credentials
				}
				log.WithField("listen", a.String()).Warn("--allow-uid and --allow-gid do not apply to datagram sockets: " +
					"anyone who may write this socket (its mode 0660 and --socket-group) can send frames to the switch")
			case "tcp", "udp":
				log.WithField("listen", a.String()).Warn("--allow-uid and --allow-gid do not apply to " + a.Network +
					" sockets: anyone who can reach " + a.Address + " can send frames to the switch")
			}
		}
	}
	return nil
}

// listenError names the flag at fault in a listener's error, first (for
// configLines.locate): --socket-group when the socket could not be given
// its group, else --listen.
func listenError(o *serveOptions, a listen.Addr, err error) error {
	if errors.Is(err, listen.ErrGroup) {
		return fmt.Errorf("--socket-group %s: --listen %s: %w", o.socketGroup, a, err)
	}
	return fmt.Errorf("--listen %s: %w", a, err)
}

// listeners describes the listeners (GET /v1/listeners, metrics).
func (s *serveRun) listeners() []api.Listener {
	out := make([]api.Listener, 0, len(s.streams)+len(s.dgrams))
	for _, l := range s.streams {
		st := l.Stats()
		out = append(out, api.Listener{URL: l.String(), Kind: "stream", Ports: len(l.Ports()), Stream: &st})
	}
	for _, l := range s.dgrams {
		st := l.Stats()
		out = append(out, api.Listener{URL: l.String(), Kind: "datagram", Ports: st.Peers, Datagram: &st})
	}
	return out
}

// serveCtl serves the control API on the --ctl socket, unless it is
// "none".
func (s *serveRun) serveCtl() error {
	p, log, sw, srv, g, gctx := s.p, s.log, s.sw, s.srv, s.g, s.gctx
	if p.ctl != "none" {
		if err := os.MkdirAll(filepath.Dir(p.ctl), 0o755); err != nil {
			return fmt.Errorf("--ctl: %w", err)
		}
		ln, sf, err := listen.ListenUnix(p.ctl, 0o600, nil)
		if err != nil {
			return fmt.Errorf("--ctl: %w", err)
		}
		s.undo.add(func() { sf.Remove() })
		as := &api.Server{Switch: sw, Logger: log, Listeners: s.listeners, Dials: s.dl.list, Attach: s.attach, StopDial: s.dl.stop}
		if srv != nil {
			as.Leases = func() []api.Lease { return apiLeases(srv.Leases()) }
		}
		g.Go(func() error { return as.Serve(gctx, ln) })
	}
	return nil
}

// attach attaches a tap or dials a QEMU stream server for ctl attach
// (api.Server.Attach).
func (s *serveRun) attach(req api.AttachRequest) error {
	if req.Tap != "" {
		return attachTap(s.sw, req.Tap, s.o, s.log)
	}
	a, err := listen.Parse(req.Connect)
	if err != nil {
		return fmt.Errorf("%w: connect: %w", api.ErrBadRequest, err)
	}
	if a.Kind() != listen.KindStream {
		return fmt.Errorf("%w: connect %q: want unix:///PATH or tcp://HOST:PORT", api.ErrBadRequest, req.Connect)
	}
	own := make([]listen.Addr, 0, len(s.streams))
	for _, l := range s.streams {
		own = append(own, l.Addr())
	}
	if l, ok := ownListen(own, a); ok {
		return fmt.Errorf("%w: connect %s is this switch's own listener %s: %s", api.ErrBadRequest, req.Connect, l, loopReason)
	}
	return s.dl.attach(req.Connect, a)
}

// serveMetrics serves Prometheus metrics at --metrics, if given.
func (s *serveRun) serveMetrics() error {
	o, log, sw, srv, g, gctx := s.o, s.log, s.sw, s.srv, s.g, s.gctx
	if o.metrics != "" {
		reg := prometheus.NewRegistry()
		var ds func() metrics.DHCPStats
		if srv != nil {
			ds = func() metrics.DHCPStats {
				st := srv.Stats()
				return metrics.DHCPStats{LeasesInUse: st.LeasesInUse, PoolSize: st.PoolSize}
			}
		}
		reg.MustRegister(metrics.New(sw, ds, s.listeners), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		// On 0.0.0.0, IPv4 only, as the VM listeners.
		ln, err := net.Listen(listen.Addr{Network: "tcp", Address: o.metrics}.ListenNetwork(), o.metrics)
		if err != nil {
			return fmt.Errorf("--metrics: %w", err)
		}
		g.Go(func() error {
			if err := metrics.Serve(gctx, ln, mux, log); err != nil {
				return fmt.Errorf("--metrics: %w", err)
			}
			return nil
		})
		log.WithField("addr", ln.Addr().String()).Info("serving metrics")
	}
	return nil
}

// reloadOnSIGHUP starts the goroutine that answers each SIGHUP on hup,
// until the switch stops: it re-reads --config and applies what can change
// at runtime; it also writes the lease file.
func (s *serveRun) reloadOnSIGHUP(hup <-chan os.Signal) {
	log, srv, gctx := s.log, s.srv, s.gctx
	r := &reloader{cmd: s.cmd, o: s.o, sw: s.sw, log: log, taps: append([]string(nil), s.o.taps...), fileKeys: s.o.configKeys, dials: s.dl}
	s.g.Go(func() error {
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-hup:
				flushed := false
				if srv != nil {
					if err := srv.Flush(); err != nil {
						log.WithError(err).Error("SIGHUP: lease file not written")
					} else {
						flushed = true
					}
				}
				r.reload(flushed)
			}
		}
	})
}

// hostOptional says whether an error opening the default host interface
// (no --host flags) leaves serve running without one: a missing privilege,
// or a build without vmnet (macOS without cgo).
func hostOptional(err error) bool {
	return errors.Is(err, fs.ErrPermission) || errors.Is(err, errors.ErrUnsupported) || errors.Is(err, tap.ErrNoTunDevice)
}

// hostAddrsIn returns the addresses the interfaces of this network
// namespace have in subnet.
func hostAddrsIn(subnet netip.Prefix) []netip.Addr {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, ia := range addrs {
		if ipn, ok := ia.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(ipn.IP); ok && subnet.Contains(x.Unmap()) {
				out = append(out, x.Unmap())
			}
		}
	}
	return out
}

// attachMu serialises attachTap and guards tapPorts.
var attachMu sync.Mutex

// tapPorts holds the port attachTap made for each tap, by name, while the
// port is live or being removed.
var tapPorts = map[string]*vswitch.Attachment{}

// attachTap opens the tap name with o's --mtu and --tap-offload and adds
// it to the switch.
func attachTap(sw *vswitch.Switch, name string, o *serveOptions, log logrus.FieldLogger) error {
	// One at a time, from open to AddPort: a second attach of the tap
	// then finds the first's port, not a tap busy with no port to show.
	attachMu.Lock()
	defer attachMu.Unlock()
	for n, a := range tapPorts {
		select {
		case <-a.Done(): // removed, and its tap closed
			delete(tapPorts, n)
		default:
		}
	}
	cfg := tap.Config{Name: name, MTU: o.mtu, Logger: log, NoOffload: !o.tapOffload}
	d, err := tap.Open(cfg)
	if old := tapPorts[name]; errors.Is(err, syscall.EBUSY) && old != nil && !slices.Contains(sw.Ports(), old) {
		// Being detached: its port is gone from the switch, but not yet
		// its descriptor, which is closed before Done.
		select {
		case <-old.Done():
		case <-time.After(2 * time.Second):
		}
		d, err = tap.Open(cfg)
	}
	if errors.Is(err, tap.ErrBusy) {
		// Busy with this switch: attached by a request (or a reload) just
		// before this one, or under the name it had when attached?
		for _, a := range sw.Ports() {
			if t, ok := a.Port().(*tap.Device); ok && t.IsNamed(name) {
				if a.Name() == name {
					return fmt.Errorf("%w: tap %s is already attached (port %d)", api.ErrConflict, name, a.ID())
				}
				return fmt.Errorf("%w: tap %s is already attached: it is port %s, renamed since", api.ErrConflict, name, a.Name())
			}
		}
	}
	if errors.Is(err, tap.ErrInvalidName) {
		return fmt.Errorf("%w: %w", api.ErrBadRequest, err) // answered 400, as other bad names are
	}
	if err != nil {
		return err
	}
	if d.MTU()+14 > o.maxFrame {
		// A tap made before the switch keeps its own MTU without --mtu.
		log.WithFields(logrus.Fields{"port": name, "mtu": d.MTU(), "max_frame": o.maxFrame}).
			Warn("the tap's MTU is above --max-frame minus 14: its longer frames will be dropped (too_long); give --mtu or raise --max-frame")
	}
	a, err := sw.AddPort(d, vswitch.PortConfig{Kind: api.KindTap})
	if err != nil {
		d.Close()
		return err
	}
	tapPorts[name] = a
	return nil
}

func apiLeases(ls []dhcp.Lease) []api.Lease {
	out := make([]api.Lease, len(ls))
	for i, l := range ls {
		out[i] = api.Lease{MAC: l.MAC, IP: l.IP, Expiry: l.Expiry, Static: l.Static, Hostname: l.Hostname, State: l.State.String()}
	}
	return out
}

// writePidfile writes this process's ID to path, unless path names
// another tapswitch that is running.
func writePidfile(path string) error {
	if pid, ok := pidfileOwner(path); ok && pid != os.Getpid() && sameProgramRunning(pid) {
		return fmt.Errorf("--pidfile %s: process %d, which wrote it, is running: stop it first, or give this one another --pidfile", path, pid)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--pidfile: %w", err)
	}
	// A new file renamed over path: a symlink planted at path is
	// replaced, not followed (root would write through it).
	f, err := os.CreateTemp(dir, ".tapswitch-pid-")
	if err != nil {
		return fmt.Errorf("--pidfile: %w", err)
	}
	_, err = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("--pidfile: %w", err)
	}
	return nil
}

// removePidfile removes path if it still holds this process's ID.
func removePidfile(path string) {
	if pid, ok := pidfileOwner(path); ok && pid == os.Getpid() {
		os.Remove(path)
	}
}

// pidfileOwner returns the process ID path holds.
func pidfileOwner(path string) (int, bool) {
	b, err := regfile.Read(path, 64)
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// sameProgramRunning reports whether process pid runs and, where /proc
// tells (Linux), runs this program: a PID reused by another program after
// a crash does not block a restart, nor does a killed switch its parent
// has not reaped yet (a zombie, which signal 0 still reaches).
func sameProgramRunning(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	if st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
		// "PID (comm) S ...": the state follows the last ')'.
		if i := bytes.LastIndexByte(st, ')'); i >= 0 && i+2 < len(st) && (st[i+2] == 'Z' || st[i+2] == 'X') {
			return false
		}
	}
	theirs, err1 := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	ours, err2 := os.ReadFile("/proc/self/comm")
	return err1 != nil || err2 != nil || string(theirs) == string(ours)
}

// printSummary tells the user what was set up and how to connect VMs.
func printSummary(cmd *cobra.Command, p *plan, streams []*stream.Listener, dgrams []*dgram.Listener, srv *dhcp.Server) {
	w := cmd.OutOrStdout()
	fmt.Fprintln(w, "tapswitch is running.")
	if p.ctl != "none" {
		fmt.Fprintf(w, "  control:  tapswitch ctl --ctl %s ports\n", absPath(p.ctl))
	}
	if p.dhcp != nil {
		fmt.Fprintf(w, "  DHCP:     gateway %s, %d addresses in the pool\n", p.dhcp.Gateway, srv.Stats().PoolSize)
	}
	for _, l := range streams {
		fmt.Fprintf(w, "\nStream listener %s — connect a QEMU guest with:\n", l.Addr())
		if err := qemu.PrintNetdev(w, l.Addr().String(), qemu.NetdevOptions{}); err != nil {
			fmt.Fprintf(w, "# %v\n", err)
		}
	}
	for _, l := range dgrams {
		fmt.Fprintf(w, "\nDatagram listener %s — connect a QEMU guest with:\n", l.Addr())
		if err := qemu.PrintNetdev(w, l.Addr().String(), qemu.NetdevOptions{ID: "vm1"}); err != nil {
			// An IPv6 UDP listener, which QEMU's dgram netdev cannot reach.
			fmt.Fprintf(w, "# %v\n", err)
		}
		if l.Addr().Network == "unixgram" {
			fmt.Fprintf(w, "# vfkit:\nvfkit ... --device virtio-net,unixSocketPath=%s,mac=%s\n", absPath(l.Addr().Address), qemu.RandomMAC())
		}
	}
}

// reloader applies a changed configuration file on SIGHUP: the log level
// and taps or --connect URLs added or removed take effect at once, and
// those it lists that were detached since are attached again; any other
// change is reported as needing a restart.
type reloader struct {
	cmd      *cobra.Command
	o        *serveOptions
	sw       *vswitch.Switch
	log      *logrus.Logger
	taps     []string // the taps the file (or command line) attached
	dials    *dials
	fileKeys int // the keys the file in force sets
}

// reload applies the --config file, after a SIGHUP that wrote the lease
// file if flushed.
func (r *reloader) reload(flushed bool) {
	if r.o.config == "" {
		if flushed {
			r.log.Info("SIGHUP: leases written; no --config to reload")
		} else {
			r.log.Info("SIGHUP: no --config to reload")
		}
		return
	}
	fo, fresh, lines, err := r.readConfig()
	if err != nil {
		r.log.WithError(err).Error("SIGHUP: configuration not reloaded")
		return
	}
	r.fileKeys = len(lines.line)
	restart := r.restartFlags(fresh)
	if lv, _ := logrus.ParseLevel(fo.logLevel); lv != r.log.GetLevel() {
		r.log.SetLevel(lv)
		r.log.WithField("new_level", lv).Info("SIGHUP: log level changed")
	}
	taps, _ := fresh.GetStringArray("tap")
	attached := map[string]bool{}
	for _, a := range r.sw.Ports() {
		attached[a.Name()] = true
	}
	failed := r.attachTaps(taps, attached)
	r.detachTaps(taps)
	connects, _ := fresh.GetStringArray("connect")
	r.dials.reload(connects, attached, r.log)
	if len(restart) > 0 {
		r.log.WithField("flags", restart).Warn("SIGHUP: these changes take effect after a restart")
	}
	if failed > 0 {
		// The file was fine; the system refused (a tap busy, gone).
		r.log.WithField("failed_taps", failed).Warn("SIGHUP: configuration reloaded, but taps could not be attached (see above); another SIGHUP retries them")
		return
	}
	r.log.Info("SIGHUP: configuration reloaded")
}

// readConfig reads the --config file into a fresh flag set (bound to the
// options returned) over the command line's flags, and checks it as a
// start does; the error names the file's line where it can.
func (r *reloader) readConfig() (*serveOptions, *pflag.FlagSet, configLines, error) {
	// A fresh flag set with the command line's flags, then the file.
	var fo serveOptions
	fresh := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fo.addFlags(fresh)
	var err error
	var lines configLines
	r.cmd.Flags().Visit(func(fl *pflag.Flag) {
		if err != nil {
			return
		}
		if sv, ok := fl.Value.(pflag.SliceValue); ok {
			err = fresh.Lookup(fl.Name).Value.(pflag.SliceValue).Replace(sv.GetSlice())
		} else {
			err = fresh.Set(fl.Name, fl.Value.String())
		}
		fresh.Lookup(fl.Name).Changed = true
	})
	if err == nil {
		lines, err = applyConfigFile(fresh, r.o.config)
	}
	if err == nil && len(lines.line) == 0 && r.fileKeys > 0 {
		// At start the default setup; here it would detach every tap
		// (deleting those the switch made, with their addresses) and
		// connection: more likely a file caught half-written. (A file
		// that set nothing before changes nothing now.)
		err = fmt.Errorf("%s sets nothing (empty, or comments only): a file being written in place is read half-done; "+
			"write the new one beside it and rename it over the old (to detach everything, say so: tap: [])", r.o.config)
	}
	// Checked as at start, so that a file with any error changes nothing.
	if err == nil {
		_, err = fo.plan()
	}
	if err == nil {
		_, err = newLogger(fo.logLevel, fo.logFormat)
	}
	if err != nil {
		err = lines.locate(err)
	}
	return &fo, fresh, lines, err
}

// restartFlags returns the flags whose change in fresh takes effect only
// after a restart (all but --tap, --connect, --log-level and --config).
func (r *reloader) restartFlags(fresh *pflag.FlagSet) []string {
	var restart []string
	fresh.VisitAll(func(fl *pflag.Flag) {
		old := r.cmd.Flags().Lookup(fl.Name)
		switch fl.Name {
		case "tap", "connect", "log-level", "config":
		default:
			if fl.Value.String() != old.Value.String() {
				restart = append(restart, "--"+fl.Name)
			}
		}
	})
	return restart
}

// attachTaps attaches the taps the reloaded configuration lists that are
// not attached (attached holds the port names in use), and records them
// as the configuration's; it returns how many could not be attached.
func (r *reloader) attachTaps(taps []string, attached map[string]bool) int {
	failed := 0 // taps the file adds that could not be attached
	for _, name := range taps {
		// A tap the file lists is attached again if it was detached
		// (tapswitch ctl detach) or deleted since.
		if !attached[name] {
			if err := attachTap(r.sw, name, r.o, r.log); err != nil {
				r.log.WithError(err).WithField("port", name).Error("SIGHUP: attaching tap")
				failed++
				continue
			}
		}
		if !slices.Contains(r.taps, name) {
			r.taps = append(r.taps, name)
		}
	}
	return failed
}

// detachTaps detaches the taps the configuration attached that the
// reloaded one, taps, no longer lists.
func (r *reloader) detachTaps(taps []string) {
	r.taps = slices.DeleteFunc(r.taps, func(name string) bool {
		if slices.Contains(taps, name) {
			return false
		}
		for _, a := range r.sw.Ports() {
			if _, isTap := a.Port().(*tap.Device); isTap && a.Name() == name {
				a.Close()
			}
		}
		r.log.WithField("port", name).Info("SIGHUP: tap detached")
		return true
	})
}
