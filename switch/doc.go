// Package vswitch is the learning Ethernet switch at the centre of tapswitch.
//
// It is named vswitch because switch is a Go keyword; it lives in the
// repository's switch/ directory. The package knows nothing of sockets,
// devices or operating systems: everything outside the process reaches it
// through the Port interface, implemented by the packages under backend/
// (taps, QEMU stream and datagram sockets), vmnet/ (the host interface) and
// switch/dhcp (the built-in DHCP responder).
//
// Data path: each port has one receive loop that reads batches of frames,
// checks them, learns their source MAC address in the forwarding database
// (FDB) and copies each frame into the bounded transmit queue of the port
// that owns the destination address, or of every other port for broadcast,
// multicast and unknown unicast. Each port has one transmit goroutine that
// drains its queue in batches. A full queue drops the frame and counts it on
// that port only, so a port that stops reading never slows the others, and no
// lock is held across I/O.
package vswitch
