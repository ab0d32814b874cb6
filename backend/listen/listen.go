// Package listen holds what the socket backends share: the listener URL
// syntax (unix://, tcp://, unixgram://, udp://), the life cycle of unix
// socket files (stale file replaced, mode set before anyone can connect,
// removed on close) and a limiter for log lines about repeated trouble.
//
// It sits under backend/stream (QEMU stream framing) and backend/dgram (one
// frame per datagram); it knows nothing of frames or of the switch.
package listen

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Kinds of transport, as returned by Addr.Kind.
const (
	// KindStream is a byte stream carrying QEMU's length-prefixed frames.
	KindStream = "stream"
	// KindDgram is a datagram socket carrying one frame per datagram.
	KindDgram = "dgram"
)

// ErrScheme is returned, wrapped, by Parse for a URL whose scheme is not
// one of unix, tcp, unixgram, udp.
var ErrScheme = errors.New("unsupported scheme (want unix, tcp, unixgram or udp)")

// Addr is a parsed listener or peer address.
type Addr struct {
	// Network is "unix", "tcp", "unixgram" or "udp", as the net package
	// names them.
	Network string
	// Address is a socket file path for unix and unixgram, host:port for
	// tcp and udp.
	Address string
}

// Parse parses a socket URL:
//
//	unix:///run/tapswitch.sock     stream over a unix socket (absolute path)
//	unix:relative/tapswitch.sock   stream over a unix socket (relative path)
//	tcp://127.0.0.1:5555           stream over TCP; tcp://:5555 is every address
//	unixgram:///run/vz.sock        datagrams over a unix socket
//	udp://127.0.0.1:5556           datagrams over UDP
//
// Query strings, fragments and user information are rejected so that a
// typo is not silently ignored.
func Parse(s string) (Addr, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Addr{}, fmt.Errorf("parse address %q: %w", s, err)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return Addr{}, fmt.Errorf("parse address %q: query, fragment and user information are not supported", s)
	}
	a := Addr{Network: u.Scheme}
	switch u.Scheme {
	case "unix", "unixgram":
		switch {
		case u.Opaque != "":
			// A relative path: url.Parse leaves it escaped.
			if a.Address, err = url.PathUnescape(u.Opaque); err != nil {
				return Addr{}, fmt.Errorf("parse address %q: %w", s, err)
			}
		case u.Host != "":
			return Addr{}, fmt.Errorf("parse address %q: %s URL has host %q; write %s:///absolute/path", s, u.Scheme, u.Host, u.Scheme)
		default:
			a.Address = u.Path
		}
		if a.Address == "" {
			return Addr{}, fmt.Errorf("parse address %q: missing socket path", s)
		}
	case "tcp", "udp":
		if u.Opaque != "" || (u.Path != "" && u.Path != "/") {
			return Addr{}, fmt.Errorf("parse address %q: want %s://host:port", s, u.Scheme)
		}
		if _, port, err := net.SplitHostPort(u.Host); err != nil || port == "" {
			return Addr{}, fmt.Errorf("parse address %q: want %s://host:port", s, u.Scheme)
		}
		a.Address = u.Host
	case "":
		return Addr{}, fmt.Errorf("parse address %q: missing scheme: %w", s, ErrScheme)
	default:
		return Addr{}, fmt.Errorf("parse address %q: %q: %w", s, u.Scheme, ErrScheme)
	}
	return a, nil
}

// Kind returns KindStream for unix and tcp, KindDgram for unixgram and udp,
// and "" for anything else.
func (a Addr) Kind() string {
	switch a.Network {
	case "unix", "tcp":
		return KindStream
	case "unixgram", "udp":
		return KindDgram
	}
	return ""
}

// IsUnix reports whether a names a unix socket file.
func (a Addr) IsUnix() bool { return a.Network == "unix" || a.Network == "unixgram" }

// ListenNetwork is the network to listen on at a: "tcp4" or "udp4" for an
// IPv4 address, so that 0.0.0.0 takes IPv4 only (with "tcp" or "udp", Go
// listens on 0.0.0.0 with an IPv6 socket that takes IPv6 too), Network
// otherwise.
func (a Addr) ListenNetwork() string {
	if a.IsUnix() {
		return a.Network
	}
	if host, _, err := net.SplitHostPort(a.Address); err == nil {
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() {
			return a.Network + "4"
		}
	}
	return a.Network
}

// pathEscaper escapes what Parse would read as an escape, a query or a
// fragment in a socket path.
var pathEscaper = strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23")

// PortName is the name of the port a connection dialled to a gets
// (stream.Dial's default), by which the control API and a reload find it:
// NETWORK:ADDRESS, nothing escaped.
func (a Addr) PortName() string { return a.Network + ":" + a.Address }

// String returns a in URL form, which Parse accepts and reads back as a.
func (a Addr) String() string {
	if a.IsUnix() {
		if strings.HasPrefix(a.Address, "/") {
			return a.Network + "://" + pathEscaper.Replace(a.Address)
		}
		return a.Network + ":" + pathEscaper.Replace(a.Address)
	}
	return a.Network + "://" + a.Address
}
