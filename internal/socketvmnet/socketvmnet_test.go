package socketvmnet

import (
	"errors"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tapswitch/tapswitch/vmnet"
)

const (
	sock  = "/var/run/socket_vmnet"
	id1   = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
	id2   = "0f0e0d0c-0b0a-0908-0706-050403020100"
	limaS = "/private/var/run/lima/socket_vmnet.shared"
)

func uuid(s string) vmnet.UUID {
	u, err := vmnet.ParseUUID(s)
	if err != nil {
		panic(err)
	}
	return u
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func mask(s string) net.IPMask { return net.IPMask(net.ParseIP(s).To4()) }

// defaults is what Parse gives for SOCKET alone.
func defaults(socket string) Options {
	return Options{SocketGroup: "staff", Mode: vmnet.ModeShared, SocketPath: socket}
}

// gw is defaults with socket_vmnet's gateway defaults filled in.
func gw(o Options, gateway, end, m string) Options {
	o.Gateway, o.DHCPEnd, o.Mask = ip(gateway), ip(end), mask(m)
	return o
}

func with(o Options, f func(*Options)) Options { f(&o); return o }

func equal(a, b Options) bool {
	return a.SocketGroup == b.SocketGroup && a.Mode == b.Mode && a.Interface == b.Interface &&
		a.Gateway == b.Gateway && a.DHCPEnd == b.DHCPEnd && a.Mask.String() == b.Mask.String() &&
		a.InterfaceID == b.InterfaceID && a.NetworkID == b.NetworkID && a.PIDFile == b.PIDFile &&
		a.SocketPath == b.SocketPath && a.Help == b.Help && a.Version == b.Version
}

func TestParse(t *testing.T) {
	d := defaults(sock)
	for _, tc := range []struct {
		name string
		args []string
		want Options
	}{
		{"socket only", []string{sock}, d},
		{"lima shared", []string{"--pidfile=/private/var/run/lima/shared_socket_vmnet.pid", "--socket-group=everyone",
			"--vmnet-mode=shared", "--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end=192.168.105.254",
			"--vmnet-mask=255.255.255.0", limaS},
			with(gw(defaults(limaS), "192.168.105.1", "192.168.105.254", "255.255.255.0"), func(o *Options) {
				o.PIDFile, o.SocketGroup = "/private/var/run/lima/shared_socket_vmnet.pid", "everyone"
			})},
		{"lima bridged", []string{"--pidfile=/p.pid", "--socket-group=everyone", "--vmnet-mode=bridged",
			"--vmnet-interface=en0", "/s.bridged"},
			with(defaults("/s.bridged"), func(o *Options) {
				o.PIDFile, o.SocketGroup, o.Mode, o.Interface = "/p.pid", "everyone", vmnet.ModeBridged, "en0"
			})},
		{"launchd plist", []string{"--vmnet-gateway=192.168.105.1", sock},
			gw(d, "192.168.105.1", "192.168.105.254", "255.255.255.0")},

		// Every option in both forms.
		{"socket-group =", []string{"--socket-group=wheel", sock}, with(d, func(o *Options) { o.SocketGroup = "wheel" })},
		{"socket-group space", []string{"--socket-group", "wheel", sock}, with(d, func(o *Options) { o.SocketGroup = "wheel" })},
		{"mode host =", []string{"--vmnet-mode=host", sock}, with(d, func(o *Options) { o.Mode = vmnet.ModeHost })},
		{"mode host space", []string{"--vmnet-mode", "host", sock}, with(d, func(o *Options) { o.Mode = vmnet.ModeHost })},
		{"mode shared", []string{"--vmnet-mode=shared", sock}, d},
		{"mode bridged =", []string{"--vmnet-mode=bridged", "--vmnet-interface=en1", sock},
			with(d, func(o *Options) { o.Mode, o.Interface = vmnet.ModeBridged, "en1" })},
		{"mode bridged space", []string{"--vmnet-mode", "bridged", "--vmnet-interface", "en1", sock},
			with(d, func(o *Options) { o.Mode, o.Interface = vmnet.ModeBridged, "en1" })},
		{"interface outside bridged mode is kept, unused", []string{"--vmnet-interface=en0", sock},
			with(d, func(o *Options) { o.Interface = "en0" })},
		{"gateway space", []string{"--vmnet-gateway", "10.1.2.1", sock}, gw(d, "10.1.2.1", "10.1.2.254", "255.255.255.0")},
		{"dhcp-end =", []string{"--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end=192.168.105.100", sock},
			gw(d, "192.168.105.1", "192.168.105.100", "255.255.255.0")},
		{"dhcp-end space", []string{"--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end", "192.168.105.100", sock},
			gw(d, "192.168.105.1", "192.168.105.100", "255.255.255.0")},
		{"mask =, end still x.y.z.254", []string{"--vmnet-gateway=172.16.8.1", "--vmnet-mask=255.255.0.0", sock},
			gw(d, "172.16.8.1", "172.16.8.254", "255.255.0.0")},
		{"mask space", []string{"--vmnet-gateway=172.16.8.1", "--vmnet-mask", "255.255.0.0", sock},
			gw(d, "172.16.8.1", "172.16.8.254", "255.255.0.0")},
		{"gateway in a /16, end given", []string{"--vmnet-gateway=10.0.0.1", "--vmnet-dhcp-end=10.0.200.1", "--vmnet-mask=255.255.0.0", sock},
			gw(d, "10.0.0.1", "10.0.200.1", "255.255.0.0")},
		{"interface-id =", []string{"--vmnet-interface-id=" + id1, sock}, with(d, func(o *Options) { o.InterfaceID = uuid(id1) })},
		{"interface-id space, upper case", []string{"--vmnet-interface-id", strings.ToUpper(id1), sock},
			with(d, func(o *Options) { o.InterfaceID = uuid(id1) })},
		{"network-identifier =", []string{"--vmnet-mode=host", "--vmnet-network-identifier=" + id2, sock},
			with(d, func(o *Options) { o.Mode, o.NetworkID = vmnet.ModeHost, uuid(id2) })},
		{"network-identifier space", []string{"--vmnet-mode=host", "--vmnet-network-identifier", id2, sock},
			with(d, func(o *Options) { o.Mode, o.NetworkID = vmnet.ModeHost, uuid(id2) })},
		{"network-identifier empty", []string{"--vmnet-network-identifier=", sock}, d},
		{"network-identifier cleared", []string{"--vmnet-mode=host", "--vmnet-network-identifier=" + id2, "--vmnet-network-identifier", "", sock},
			with(d, func(o *Options) { o.Mode = vmnet.ModeHost })},
		{"pidfile =", []string{"--pidfile=/run/p", sock}, with(d, func(o *Options) { o.PIDFile = "/run/p" })},
		{"pidfile space", []string{"--pidfile", "/run/p", sock}, with(d, func(o *Options) { o.PIDFile = "/run/p" })},
		{"-p space", []string{"-p", "/run/p", sock}, with(d, func(o *Options) { o.PIDFile = "/run/p" })},
		{"-p attached", []string{"-p/run/p", sock}, with(d, func(o *Options) { o.PIDFile = "/run/p" })},
		{"pidfile value starting with a dash", []string{"--pidfile", "-h", sock}, with(d, func(o *Options) { o.PIDFile = "-h" })},
		{"-p value starting with a dash", []string{"-p", "--vmnet-mode=host", sock}, with(d, func(o *Options) { o.PIDFile = "--vmnet-mode=host" })},

		// getopt_long's ways.
		{"socket first (permuted)", []string{sock, "--vmnet-mode=host", "-p", "/p"},
			with(d, func(o *Options) { o.Mode, o.PIDFile = vmnet.ModeHost, "/p" })},
		{"socket in the middle", []string{"--vmnet-mode=host", sock, "--socket-group=admin"},
			with(d, func(o *Options) { o.Mode, o.SocketGroup = vmnet.ModeHost, "admin" })},
		{"-- ends options", []string{"--vmnet-mode=host", "--", "-odd"}, with(defaults("-odd"), func(o *Options) { o.Mode = vmnet.ModeHost })},
		{"lone dash is a socket", []string{"-"}, defaults("-")},
		{"abbreviation", []string{"--vmnet-gate=192.168.105.1", "--pid", "/p", "--socket=admin", "--vmnet-mo=host", sock},
			with(gw(d, "192.168.105.1", "192.168.105.254", "255.255.255.0"), func(o *Options) {
				o.PIDFile, o.SocketGroup, o.Mode = "/p", "admin", vmnet.ModeHost
			})},
		{"exact name beats a longer one", []string{"--vmnet-mode=bridged", "--vmnet-interface", "en0", sock},
			with(d, func(o *Options) { o.Mode, o.Interface = vmnet.ModeBridged, "en0" })},
		{"abbreviation of the longer name", []string{"--vmnet-interface-=" + id1, sock},
			with(d, func(o *Options) { o.InterfaceID = uuid(id1) })},
		{"last wins", []string{"--vmnet-mode=bridged", "--vmnet-mode=host", "--socket-group=a", "--socket-group=b", sock},
			with(d, func(o *Options) { o.Mode, o.SocketGroup = vmnet.ModeHost, "b" })},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, tc.want) {
				t.Errorf("Parse(%q)\n got %+v\nwant %+v", tc.args, got, tc.want)
			}
		})
	}
}

func TestParseRandomNetworkID(t *testing.T) {
	o, err := Parse([]string{"--vmnet-mode=host", "--vmnet-network-identifier=random", sock})
	if err != nil {
		t.Fatal(err)
	}
	if o.NetworkID.IsZero() || o.NetworkID[6]>>4 != 4 {
		t.Errorf("NetworkID %v, want a random (version 4) UUID", o.NetworkID)
	}
	p, _ := Parse([]string{"--vmnet-mode=host", "--vmnet-network-identifier=random", sock})
	if p.NetworkID == o.NetworkID {
		t.Error("two random network identifiers are equal")
	}
}

func TestParseHelpVersion(t *testing.T) {
	help, version := Options{Help: true}, Options{Version: true}
	for _, tc := range []struct {
		args []string
		want Options
	}{
		{[]string{"-h"}, help},
		{[]string{"--help"}, help},
		{[]string{"--he"}, help},
		{[]string{"-v"}, version},
		{[]string{"--version"}, version},
		{[]string{"--vers"}, version},
		{[]string{"-hv"}, help},
		{[]string{"-hx"}, help}, // -h exits before -x is looked at
		{[]string{"-vh"}, version},
		{[]string{"-h", "extra", "args"}, help},
		{[]string{sock, "--vmnet-mode=host", "-h"}, help},
		{[]string{"-h", "--vmnet-mode=bogus"}, help},          // socket_vmnet exits at -h
		{[]string{"--vmnet-gateway=nonsense", "-v"}, version}, // the gateway is checked after parsing
		{[]string{"-p", "/pid", "-v"}, version},
	} {
		got, err := Parse(tc.args)
		if err != nil || !equal(got, tc.want) {
			t.Errorf("Parse(%q) = %+v, %v, want %+v", tc.args, got, err, tc.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "exactly one SOCKET argument, got 0"},
		{[]string{"--vmnet-mode=host"}, "exactly one SOCKET argument, got 0"},
		{[]string{"/a", "/b"}, "exactly one SOCKET argument, got 2 (/a /b)"},
		{[]string{"--bogus", sock}, "unrecognized option '--bogus'"},
		{[]string{"--", sock, "x"}, "got 2"},
		{[]string{"--=x", sock}, "unrecognized option '--'"},
		{[]string{"-x", sock}, "invalid option -- 'x'"},
		{[]string{"--vmnet-m=host", sock}, "ambiguous; possibilities: '--vmnet-mode' '--vmnet-mask'"},
		{[]string{"--vmnet-in=en0", sock}, "ambiguous"},
		{[]string{"--vmnet", sock}, "ambiguous"},
		{[]string{sock, "--pidfile"}, "option '--pidfile' requires an argument"},
		{[]string{sock, "-p"}, "option requires an argument -- 'p'"},
		{[]string{"--help=yes", sock}, "option '--help' doesn't allow an argument"},
		{[]string{"--version=1", sock}, "option '--version' doesn't allow an argument"},
		{[]string{"--vmnet-mode=nat", sock}, `Unknown vmnet mode "nat"`},
		{[]string{"--vmnet-mode=Shared", sock}, `Unknown vmnet mode "Shared"`},
		{[]string{"--vmnet-mode=bogus", "-h"}, `Unknown vmnet mode "bogus"`}, // checked before -h is seen
		{[]string{"--vmnet-interface-id=nope", sock}, `Failed to parse UUID "nope"`},
		{[]string{"--vmnet-interface-id=", sock}, `Failed to parse UUID ""`},
		{[]string{"--vmnet-interface-id=random", sock}, `Failed to parse UUID "random"`},
		{[]string{"--vmnet-network-identifier=123", sock}, `Failed to parse UUID "123"`},
		{[]string{"--vmnet-mode=bridged", sock}, `vmnet mode "bridged" require --vmnet-interface`},
		{[]string{"--vmnet-mode=bridged", "--vmnet-interface=en0", "--vmnet-gateway=192.168.105.1", sock}, `"bridged" conflicts with --vmnet-gateway`},
		{[]string{"--vmnet-dhcp-end=192.168.105.254", sock}, "--vmnet-dhcp-end=IP requires --vmnet-gateway=IP"},
		{[]string{"--vmnet-mask=255.255.255.0", sock}, "--vmnet-mask=MASK requires --vmnet-gateway=IP"},
		{[]string{"--vmnet-gateway=192.168.105", sock}, `invalid address "192.168.105" was specified for --vmnet-gateway`},
		{[]string{"--vmnet-gateway=", sock}, `invalid address "" was specified for --vmnet-gateway`},
		{[]string{"--vmnet-gateway=fd00::1", sock}, `invalid address "fd00::1"`},
		{[]string{"--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end=x", sock}, `invalid address "x" was specified for --vmnet-dhcp-end`},
		{[]string{"--vmnet-gateway=192.168.105.1", "--vmnet-mask=255.255.255", sock}, `invalid mask "255.255.255"`},
		{[]string{"--vmnet-gateway=192.168.105.1", "--vmnet-mask=255.0.255.0", sock}, "not a contiguous mask"},
		{[]string{"--vmnet-gateway=192.168.105.1", "--vmnet-mask=255.255.255.128", sock}, "end address 192.168.105.254 is outside the subnet 192.168.105.0/25"},
		{[]string{"--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end=192.168.106.9", sock}, "outside the subnet"},
		{[]string{"--vmnet-gateway=192.168.105.100", "--vmnet-dhcp-end=192.168.105.50", sock}, "does not come after"},
		{[]string{"--vmnet-gateway=192.168.105.0", sock}, "network or broadcast"},
		{[]string{"--vmnet-gateway=192.168.105.1", "--vmnet-mask=255.255.255.254", sock}, "no room"},
		{[]string{"--vmnet-nat66-prefix=fd00:1::", sock}, "--vmnet-nat66-prefix is not supported"},
		{[]string{"--vmnet-disable-dhcp", sock}, "--vmnet-disable-dhcp is not supported"},
		{[]string{"--vmnet-disable-dhcp=1", sock}, "doesn't allow an argument"},
		{[]string{""}, "SOCKET argument is empty"},
		{[]string{"--socket-group=", sock}, "--socket-group is empty"},
		{[]string{"--pidfile=", sock}, "--pidfile is empty"},
		{[]string{"-p", "", sock}, "--pidfile is empty"},
		{[]string{"--vmnet-mode=bridged", "--vmnet-interface=", sock}, "--vmnet-interface is empty"},
		{[]string{"--vmnet-network-identifier=" + id2, sock}, "applies to --vmnet-mode=host only, not shared"},
		{[]string{"--vmnet-mode=bridged", "--vmnet-interface=en0", "--vmnet-network-identifier=random", sock}, "not bridged"},
	} {
		_, err := Parse(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			continue
		}
		if !errors.Is(err, ErrUsage) {
			t.Errorf("Parse(%q) error %v does not wrap ErrUsage", tc.args, err)
		}
	}
}

// serveFlags are the `tapswitch serve` flags, as fixed by the CLI, with
// whether they take a value.
var serveFlags = map[string]bool{
	"--listen": true, "--host": true, "--host-ifname": true, "--host-bridge": true, "--host-mode": true,
	"--host-interface-id": true, "--host-network-id": true, "--dhcp": false, "--gateway": true,
	"--dhcp-range": true, "--socket-group": true, "--pidfile": true,
}

func TestServeArgs(t *testing.T) {
	tsv := HostIfname(sock)
	for _, tc := range []struct {
		name string
		args []string
		goos string
		want []string
	}{
		{"darwin launchd plist", []string{"--vmnet-gateway=192.168.105.1", sock}, "darwin", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff",
			"--host-mode", "shared", "--gateway", "192.168.105.1/24", "--dhcp-range", "192.168.105.2-192.168.105.254",
		}},
		{"darwin lima shared", []string{"--pidfile=/p.pid", "--socket-group=everyone", "--vmnet-mode=shared",
			"--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end=192.168.105.254", "--vmnet-mask=255.255.255.0", limaS}, "darwin", []string{
			"--listen", "unix://" + limaS, "--socket-group", "everyone", "--pidfile", "/p.pid",
			"--host-mode", "shared", "--gateway", "192.168.105.1/24", "--dhcp-range", "192.168.105.2-192.168.105.254",
		}},
		{"darwin macOS chooses", []string{sock}, "darwin", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--host-mode", "shared",
		}},
		{"darwin host, /16, ids", []string{"--vmnet-mode=host", "--vmnet-gateway=10.9.0.1", "--vmnet-dhcp-end=10.9.3.254",
			"--vmnet-mask=255.255.0.0", "--vmnet-interface-id=" + id1, "--vmnet-network-identifier=" + id2, sock}, "darwin", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--host-mode", "host",
			"--gateway", "10.9.0.1/16", "--dhcp-range", "10.9.0.2-10.9.3.254",
			"--host-interface-id", id1, "--host-network-id", id2,
		}},
		{"darwin bridged", []string{"--vmnet-mode=bridged", "--vmnet-interface=en0", "--vmnet-interface-id=" + id1, sock}, "darwin", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--host-mode", "bridged",
			"--host-bridge", "en0", "--host-interface-id", id1,
		}},
		{"darwin shared ignores the interface", []string{"--vmnet-interface=en0", sock}, "darwin", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--host-mode", "shared",
		}},

		{"linux launchd plist", []string{"--vmnet-gateway=192.168.105.1", sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff",
			"--host", "192.168.105.1/24", "--gateway", "192.168.105.1/24", "--dhcp", "--dhcp-range", "192.168.105.2-192.168.105.254", "--host-ifname", tsv,
		}},
		{"linux short range, pidfile", []string{"-p", "/run/p.pid", "--vmnet-gateway=192.168.105.1", "--vmnet-dhcp-end=192.168.105.100", sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--pidfile", "/run/p.pid",
			"--host", "192.168.105.1/24", "--gateway", "192.168.105.1/24", "--dhcp", "--dhcp-range", "192.168.105.2-192.168.105.100", "--host-ifname", tsv,
		}},
		{"linux default shared", []string{sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff",
			"--host", "192.168.105.1/24", "--gateway", "192.168.105.1/24", "--dhcp", "--dhcp-range", "192.168.105.2-192.168.105.254", "--host-ifname", tsv,
		}},
		{"linux default host", []string{"--vmnet-mode=host", sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff",
			"--host", "192.168.106.1/24", "--gateway", "192.168.106.1/24", "--dhcp", "--dhcp-range", "192.168.106.2-192.168.106.254", "--host-ifname", tsv,
		}},
		{"linux bridged", []string{"--vmnet-mode=bridged", "--vmnet-interface=br0", sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--host-bridge", "br0", "--host-ifname", tsv,
		}},
		{"linux isolated with gateway: no DHCP", []string{"--vmnet-mode=host", "--vmnet-network-identifier=" + id2,
			"--vmnet-gateway=192.168.107.1", sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff", "--host", "192.168.107.1/24", "--host-ifname", tsv,
		}},
		{"linux isolated without gateway", []string{"--vmnet-mode=host", "--vmnet-network-identifier=" + id2, sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff",
		}},
		{"linux interface id ignored", []string{"--vmnet-interface-id=" + id1, "--vmnet-gateway=192.168.105.1", sock}, "linux", []string{
			"--listen", "unix:///var/run/socket_vmnet", "--socket-group", "staff",
			"--host", "192.168.105.1/24", "--gateway", "192.168.105.1/24", "--dhcp", "--dhcp-range", "192.168.105.2-192.168.105.254", "--host-ifname", tsv,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := Parse(tc.args)
			if err != nil {
				t.Fatal(err)
			}
			got := o.ServeArgs(tc.goos)
			// The control socket sits beside the VM socket.
			if i := slices.Index(got, "--ctl"); i < 0 || i+1 == len(got) || got[i+1] != CtlPath(o.SocketPath) {
				t.Errorf("ServeArgs(%s) = %q: want --ctl %s", tc.goos, got, CtlPath(o.SocketPath))
			} else {
				got = slices.Delete(got, i, i+2)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("ServeArgs(%s)\n got %q\nwant %q", tc.goos, got, tc.want)
			}
			for i := 0; i < len(got); i++ {
				takes, ok := serveFlags[got[i]]
				if !ok {
					t.Fatalf("%q is not a serve flag", got[i])
				}
				if takes {
					i++
				}
			}
		})
	}
}

// TestHostIfname: two instances (lima runs one per network) get host
// interfaces of their own, with names Linux takes; both were tapswitch0,
// so the second could not start.
func TestHostIfname(t *testing.T) {
	a, b := HostIfname("/var/run/socket_vmnet.shared"), HostIfname("/var/run/socket_vmnet.host")
	if a == b || len(a) > 15 || len(b) > 15 || !strings.HasPrefix(a, "tsv") {
		t.Errorf("host interfaces %q and %q", a, b)
	}
}

func TestServeArgsSocketPaths(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"rel/socket_vmnet":        filepath.Join(wd, "rel/socket_vmnet"),
		"/tmp/a b#c?d%41":         "/tmp/a b#c?d%41",
		"/var/run/../run/vmnet":   "/var/run/vmnet",
		"/opt/homebrew/var/run/x": "/opt/homebrew/var/run/x",
	} {
		o, err := Parse([]string{path})
		if err != nil {
			t.Fatal(err)
		}
		args := o.ServeArgs("darwin")
		u, err := url.Parse(args[1])
		if err != nil || u.Scheme != "unix" || u.Host != "" || u.Path != want || u.RawQuery != "" || u.Fragment != "" {
			t.Errorf("socket %q: --listen %q parses to %+v, %v; want path %q", path, args[1], u, err, want)
		}
	}
}

func TestUsage(t *testing.T) {
	u := Usage("socket_vmnet")
	for _, o := range longOpts {
		if !strings.Contains(u, "--"+o.name) {
			t.Errorf("usage does not mention --%s", o.name)
		}
	}
	if !strings.HasPrefix(u, "Usage: socket_vmnet [OPTION]... SOCKET") {
		t.Errorf("usage starts %q", u[:40])
	}
}
