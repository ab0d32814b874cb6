// Package api is tapswitch's control API: HTTP with JSON bodies on a unix
// socket, served by `tapswitch serve` and used by `tapswitch ctl` and
// `tapswitch capture`.
//
//	GET    /v1/ports          []Port: live ports with counters and MACs
//	POST   /v1/ports          AttachRequest: attach a tap or connect to a QEMU server;
//	                          answers the port's vswitch.PortStats (ID 0 while a
//	                          URL is being dialled)
//	DELETE /v1/ports/{id}     detach a port (by ID or name)
//	GET    /v1/fdb            []vswitch.FDBEntry
//	POST   /v1/fdb/flush      forget every learned address
//	GET    /v1/leases         []Lease (404 when DHCP is off)
//	GET    /v1/stats          vswitch.Stats
//	GET    /v1/listeners      []Listener: listening sockets, datagram counters
//	GET    /v1/dials          []Dial: the stream servers the switch connects to
//	GET    /v1/capture?port=  a pcap stream of the frames crossing the switch
//	                          (of one port: it ends when the port leaves, with
//	                          the trailer Tapswitch-Capture-End: port-left)
//
// A port is named in a path or query by its ID (decimal, as the API writes
// it: "7", not "07") or, when no port has that ID, by its name; a name
// that several ports have is refused with 409. A tap whose name is all
// digits (see CheckTapName) or that the switch has already is not attached.
//
// Errors are JSON objects {"error": "..."} with a 4xx or 5xx status.
package api

import (
	"net/netip"
	"time"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/stream"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Kinds (vswitch.PortConfig.Kind) of the ports serve makes that the API
// treats apart: the responder and the host interface cannot be detached,
// and a tap is told from other ports of its name. Stream and datagram
// ports have stream.PortKind and dgram.PortKind.
const (
	KindTap  = "tap"
	KindHost = "host"
	KindDHCP = "dhcp"
)

// Port is one live port as `ctl ports` shows it.
type Port struct {
	vswitch.PortStats
	// MACs are the addresses learned on the port.
	MACs []vswitch.MAC `json:"macs"`
}

// Lease is one DHCP lease as `ctl leases` shows it.
type Lease struct {
	MAC      vswitch.MAC `json:"mac"`
	IP       netip.Addr  `json:"ip"`
	Expiry   time.Time   `json:"expiry,omitzero"` // none for a static lease
	Static   bool        `json:"static"`
	Hostname string      `json:"hostname,omitempty"`
	// State is "offered", "bound", "released", "static" or "declined"
	// (held out of the pool until Expiry: the MAC found it in use).
	State string `json:"state"`
}

// Listener is one of the switch's listening sockets as `ctl listeners`
// shows it.
type Listener struct {
	// URL is the listener's address, e.g. unixgram:///run/tapswitch/x.sock.
	URL string `json:"url"`
	// Kind is "stream" or "datagram".
	Kind string `json:"kind"`
	// Ports is the number of live ports the listener made (clients,
	// datagram peers).
	Ports int `json:"ports"`
	// Datagram holds a datagram listener's counters, among them the
	// datagrams it dropped before they reached a port (unbound senders,
	// too long, peers refused); nil for a stream listener.
	Datagram *dgram.Stats `json:"datagram,omitempty"`
	// Stream holds a stream listener's counters: clients accepted and
	// refused; nil for a datagram listener.
	Stream *stream.ListenerStats `json:"stream,omitempty"`
}

// Dial is a QEMU stream server the switch connects to (--connect, the
// connect config key, ctl attach --connect), as `ctl dials` shows it.
type Dial struct {
	// URL is the server's address, e.g. unix:///run/vm1.sock.
	URL string `json:"url"`
	// Port is the name of the port it is, or will be once connected.
	Port string `json:"port"`
	// Origin is "connect" (the flag or config key) or "attach" (ctl
	// attach --connect).
	Origin string `json:"origin"`
	stream.DialInfo
}

// AttachRequest asks the switch to add a port: exactly one field is set.
type AttachRequest struct {
	// Tap is the name of a tap device to open (created if missing).
	Tap string `json:"tap,omitempty"`
	// Connect is a stream URL of a QEMU started with server=on.
	Connect string `json:"connect,omitempty"`
}

// FlushResult reports how many FDB entries a flush removed.
type FlushResult struct {
	Flushed int `json:"flushed"`
}

// A capture's stream ends with the trailer captureEndHeader set to
// capturePortLeft when it ended because its port left the switch.
const (
	captureEndHeader = "Tapswitch-Capture-End"
	capturePortLeft  = "port-left"
)

type errorBody struct {
	Error string `json:"error"`
}
