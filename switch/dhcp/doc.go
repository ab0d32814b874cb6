// Package dhcp is tapswitch's built-in DHCP responder: an in-process
// vswitch.Port with its own MAC address that leases IPv4 addresses of one
// subnet to the guests on the segment.
//
// The switch hands the responder the DHCP requests entering it that are
// broadcast or addressed to the gateway's IP address, whatever their
// destination MAC (the port is added with vswitch.PortConfig.DHCPServer
// and DHCPAddr set to the gateway), plus the broadcast and unknown-unicast
// traffic it floods to every port and the frames sent to its own MAC. WriteFrames answers
// each frame synchronously, on the switch's transmit goroutine for the
// port: there is no goroutine per packet. Replies wait in a bounded queue
// that ReadFrames drains, so the switch forwards them like any frame, and
// learns the responder's MAC from them.
//
// Protocol: RFC 2131 server behaviour for DISCOVER, REQUEST (SELECTING,
// INIT-REBOOT, RENEWING, REBINDING), DECLINE, RELEASE and INFORM, with the
// reply addressed per RFC 2131 §4.1 (NAK broadcast; ciaddr unicast;
// broadcast flag; else unicast to chaddr/yiaddr). Leases are keyed by the
// client hardware address (chaddr) only; a client identifier option (sent
// by dhcpcd) is echoed back (RFC 6842; not one longer than 255 bytes)
// but does not select the lease, so a guest keeps its address whichever
// DHCP client it boots with. The
// responder is authoritative for its subnet: it NAKs a REQUEST for an
// address the client may not have, and grants an INIT-REBOOT or RENEWING
// request for a free pool address it has no record of, so that a lost
// lease file costs no guest its address. Relayed
// requests (giaddr set) are not served: the responder serves its own
// segment. With Config.AnswerGateway it also answers ARP and ICMP echo for
// the gateway address. github.com/insomniacslk/dhcp/dhcpv4 is the DHCP
// codec; the Ethernet, IPv4, UDP, ARP and ICMP headers are built here.
//
// Durability: a new MAC→IP binding (and a release, a decline, an eviction)
// is written to the lease file, atomically and fsynced, before the DHCPACK
// that announces it is queued; if the write fails the ACK is withheld, so
// no acknowledged binding is ever lost. A renewal that only extends the
// expiry of an existing binding (or changes its host name) is written
// lazily: with the next durable write, when a frame arrives more than a
// minute after the change, by Flush, or by Close. A crash therefore loses
// at most some expiry extensions, never a mapping; the next renewal
// restores them.
package dhcp
