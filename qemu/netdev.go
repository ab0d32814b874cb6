// Package qemu joins QEMU guests to a tapswitch switch: it builds the
// -netdev and -device arguments that point a guest at a switch listener,
// and runs QEMU releases older than 7.2 (which have no unix-socket
// -netdev) with a connection to the switch on file descriptor 3, as
// socket_vmnet_client does.
//
// It depends on backend/listen for the URL syntax only; the switch side of
// each transport lives in backend/stream and backend/dgram.
package qemu

import (
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"

	"github.com/tapswitch/tapswitch/backend/listen"
)

// DefaultID is the netdev id used when none is given.
const DefaultID = "n0"

// DefaultDevice is the NIC model DeviceArgs uses when none is given.
const DefaultDevice = "virtio-net-pci"

// NetdevOptions refines Netdev. The zero value is usable.
type NetdevOptions struct {
	// ID is the netdev id, which -device refers to (default DefaultID).
	// With unixgram it also names the guest's own socket, so give each
	// guest on a switch its own ID (a VM name, say).
	ID string
	// Local is the guest's own address, which QEMU's dgram netdev must
	// bind. For unixgram it is a socket path (default: next to the
	// switch's socket, "<dir>/<name>-<ID>.sock"; QEMU replaces a file
	// left there, and the directory must be writable by QEMU), made
	// absolute as the switch's is (see Netdev). For udp it
	// is host:port (default "127.0.0.1:0": a free port, which the switch
	// learns from the first datagram). Stream transports ignore it.
	Local string
}

// Netdev returns QEMU's -netdev option, as two arguments, that connects a
// guest to the switch listener at rawURL, for QEMU 7.2 and later:
//
//	unix:///run/ts.sock   -netdev stream,id=n0,addr.type=unix,addr.path=/run/ts.sock
//	tcp://127.0.0.1:5555  -netdev stream,id=n0,addr.type=inet,addr.host=127.0.0.1,addr.port=5555
//	unixgram:///run/vz.sock
//	                      -netdev dgram,id=n0,local.type=unix,local.path=/run/vz-n0.sock,remote.type=unix,remote.path=/run/vz.sock
//	udp://127.0.0.1:5556  -netdev dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=0,remote.type=inet,remote.host=127.0.0.1,remote.port=5556
//
// A listener bound to every address (tcp://:5555, tcp://0.0.0.0:5555,
// tcp://[::]:5555) is reached at 127.0.0.1. QEMU's dgram netdev resolves IPv4
// addresses only, so an IPv6 udp URL is an error. Commas in paths are
// doubled, as QEMU's option syntax requires.
//
// Socket paths are made absolute against this process's working
// directory (unixgram:rd.sock gives /DIR/rd.sock and /DIR/rd-n0.sock): QEMU
// would resolve a relative path against its own, and the switch drops
// datagrams from a guest socket bound to a relative path, as it cannot
// answer them. A path whose absolute form is longer than a socket address
// holds (listen.MaxSocketPath) is an error.
func Netdev(rawURL string, o NetdevOptions) ([]string, error) {
	a, err := listen.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	id := o.ID
	if id == "" {
		id = DefaultID
	}
	if err := checkID(id); err != nil {
		return nil, err
	}
	var opt string
	switch a.Network {
	case "unix":
		path, err := absSocketPath(rawURL, "switch socket", a.Address)
		if err != nil {
			return nil, err
		}
		opt = fmt.Sprintf("stream,id=%s,addr.type=unix,addr.path=%s", id, escape(path))
	case "tcp":
		host, port, err := connectHostPort(a.Address)
		if err != nil {
			return nil, err
		}
		opt = fmt.Sprintf("stream,id=%s,addr.type=inet,addr.host=%s,addr.port=%s", id, host, port)
	case "unixgram":
		remote, err := absSocketPath(rawURL, "switch socket", a.Address)
		if err != nil {
			return nil, err
		}
		local := o.Local
		if local == "" {
			local = DefaultLocalPath(remote, id)
		}
		if local, err = absSocketPath(rawURL, "guest's local socket", local); err != nil {
			return nil, err
		}
		if local == remote {
			return nil, fmt.Errorf("netdev %s: the guest's local socket cannot be the switch's", rawURL)
		}
		opt = fmt.Sprintf("dgram,id=%s,local.type=unix,local.path=%s,remote.type=unix,remote.path=%s", id, escape(local), escape(remote))
	case "udp":
		host, port, err := connectHostPort(a.Address)
		if err != nil {
			return nil, err
		}
		local := o.Local
		if local == "" {
			local = "127.0.0.1:0"
		}
		lhost, lport, err := net.SplitHostPort(local)
		if err != nil {
			return nil, fmt.Errorf("netdev %s: local address %q: %w", rawURL, local, err)
		}
		for _, h := range []string{host, lhost} {
			if ip := net.ParseIP(h); ip != nil && ip.To4() == nil {
				return nil, fmt.Errorf("netdev %s: QEMU's dgram netdev supports IPv4 only, not %s", rawURL, h)
			}
		}
		opt = fmt.Sprintf("dgram,id=%s,local.type=inet,local.host=%s,local.port=%s,remote.type=inet,remote.host=%s,remote.port=%s", id, lhost, lport, host, port)
	}
	return []string{"-netdev", opt}, nil
}

// DefaultLocalPath is the guest's own unixgram socket that Netdev suggests
// for the switch socket at switchPath: "<dir>/<name>-<id>.sock", where
// name is switchPath's file name without its extension. A relative
// switchPath is made absolute against the working directory first, as the
// switch cannot answer a guest bound to a relative path.
func DefaultLocalPath(switchPath, id string) string {
	if abs, err := filepath.Abs(switchPath); err == nil {
		switchPath = abs
	}
	base := filepath.Base(switchPath)
	stem := strings.TrimSuffix(base, filepath.Ext(base))
	return filepath.Join(filepath.Dir(switchPath), stem+"-"+id+".sock")
}

// SocketFDArgs returns the -netdev option for a stream connection QEMU
// inherits as file descriptor fd: "-netdev socket,id=n0,fd=3". It works
// with every QEMU release; RunWithSocket provides the descriptor.
func SocketFDArgs(id string, fd int) []string {
	if id == "" {
		id = DefaultID
	}
	return []string{"-netdev", fmt.Sprintf("socket,id=%s,fd=%d", id, fd)}
}

// DeviceArgs returns the -device option, as two arguments, for a NIC
// (model "" for DefaultDevice) on netdev id with the given MAC address
// ("" lets QEMU choose, which gives every guest 52:54:00:12:34:56: give
// each guest on a switch its own, see RandomMAC).
func DeviceArgs(id, model, mac string) ([]string, error) {
	if id == "" {
		id = DefaultID
	}
	if err := checkID(id); err != nil {
		return nil, err
	}
	if model == "" {
		model = DefaultDevice
	}
	opt := model + ",netdev=" + id
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("device %s: bad MAC address %q", id, mac)
		}
		if hw[0]&1 != 0 {
			return nil, fmt.Errorf("device %s: MAC address %s is multicast", id, hw)
		}
		opt += ",mac=" + hw.String()
	}
	return []string{"-device", opt}, nil
}

// RandomMAC returns a random address in QEMU's range, 52:54:00:xx:xx:xx
// (locally administered, unicast).
func RandomMAC() string {
	var b [3]byte
	rand.Read(b[:])
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}.String()
}

// PrintNetdev writes, for the switch listener at rawURL, the QEMU options
// that attach a guest to it: for QEMU 7.2 and later, and for older
// releases where they can (through `tapswitch qemu --socket` for a unix
// socket). It is the text of `tapswitch qemu --print-netdev URL`.
func PrintNetdev(w io.Writer, rawURL string, o NetdevOptions) error {
	a, err := listen.Parse(rawURL)
	if err != nil {
		return err
	}
	if o.ID == "" {
		o.ID = DefaultID
	}
	nd, err := Netdev(rawURL, o)
	if err != nil {
		return err
	}
	dev, _ := DeviceArgs(o.ID, "", RandomMAC())
	var b strings.Builder
	fmt.Fprintf(&b, "# QEMU 7.2 or later:\n%s %s \\\n  %s %s\n", nd[0], shellQuote(nd[1]), dev[0], dev[1])
	if a.Kind() == listen.KindStream {
		// -netdev stream's option; the older socket netdev has none.
		fmt.Fprintf(&b, "# To reconnect by itself if tapswitch restarts, add to that -netdev: reconnect=1 (QEMU 8.0 to 9.1) or reconnect-ms=1000 (9.2 and later).\n")
	}
	switch a.Network {
	case "unix":
		// Netdev has checked the path.
		path, _ := absSocketPath(rawURL, "switch socket", a.Address)
		fd := SocketFDArgs(o.ID, SocketFD)
		fmt.Fprintf(&b, "# Before QEMU 7.2 (tapswitch connects and passes the socket as fd 3):\ntapswitch qemu --socket %s -- qemu-system-x86_64 ... \\\n  %s %s %s %s\n",
			shellQuote(path), fd[0], fd[1], dev[0], dev[1])
	case "tcp":
		host, port, _ := connectHostPort(a.Address)
		if strings.Contains(host, ":") {
			fmt.Fprintf(&b, "# Before QEMU 7.2: not supported (the socket netdev takes IPv4 addresses only).\n")
			break
		}
		fmt.Fprintf(&b, "# Before QEMU 7.2:\n-netdev socket,id=%s,connect=%s %s %s\n", o.ID, net.JoinHostPort(host, port), dev[0], dev[1])
	case "unixgram":
		fmt.Fprintf(&b, "# Give each guest its own id: it names the guest's socket (local.path).\n# Before QEMU 7.2: not supported (no unix datagram netdev).\n")
	case "udp":
		host, port, _ := connectHostPort(a.Address)
		fmt.Fprintf(&b, "# Before QEMU 7.2:\n-netdev socket,id=%s,udp=%s,localaddr=127.0.0.1:0 %s %s\n", o.ID, net.JoinHostPort(host, port), dev[0], dev[1])
	}
	_, err = io.WriteString(w, b.String())
	return err
}

// connectHostPort turns a listen address into one a guest on this host
// can connect to: an unspecified host (none, 0.0.0.0, ::) becomes
// 127.0.0.1. A Go listener on [::] is dual-stack, so it is reached over
// IPv4 too, which QEMU's dgram and socket netdevs require.
func connectHostPort(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		return "", "", fmt.Errorf("address %q: %w", addr, err)
	}
	if port == "0" {
		return "", "", fmt.Errorf("address %q: port 0 is not a port a guest can reach", addr)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return host, port, nil
}

// absSocketPath returns the socket path p (what says whose it is) made
// absolute against the working directory, for a QEMU that may run
// elsewhere and a switch that answers only absolute senders.
func absSocketPath(rawURL, what, p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("netdev %s: %s %s: make it absolute: %w; give an absolute path", rawURL, what, p, err)
	}
	if len(abs) > listen.MaxSocketPath {
		return "", fmt.Errorf("netdev %s: %s %s is %d bytes long, and a socket path holds at most %d: use a shorter path",
			rawURL, what, abs, len(abs), listen.MaxSocketPath)
	}
	return abs, nil
}

// checkID rejects ids QEMU would not take (its ids are letters, digits,
// '-', '.', '_', starting with a letter).
func checkID(id string) error {
	for i, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' ||
			i > 0 && (r >= '0' && r <= '9' || r == '-' || r == '.' || r == '_')
		if !ok {
			return fmt.Errorf("netdev id %q: QEMU ids are letters, digits, '-', '.' and '_', starting with a letter", id)
		}
	}
	return nil
}

// escape doubles commas, QEMU's escape inside an option value.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,@%+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
