// Package vz connects Apple Virtualization (Virtualization.framework, via
// github.com/Code-Hex/vz/v3) virtual machines to a tapswitch datagram
// listener: a VM's virtio-net device gets a VZFileHandleNetworkDeviceAttachment
// whose file handle is a unixgram socket connected to the switch.
//
// It sits outside the switch, in the VM's process: the switch side is an
// ordinary datagram listener (tapswitch serve --listen unixgram://PATH),
// one raw Ethernet frame per datagram, that learns each VM from the address
// its datagrams come from. When the switch restarts, a Conn connects its
// socket to the new switch socket by itself (Config.Reconnect), so the VM
// keeps its network.
//
// Dial, which makes and connects the socket, is plain Go on every Unix so
// that it is tested on Linux; NewAttachment, which hands the socket to
// Virtualization.framework, builds only on macOS with cgo. Nothing here has
// run on macOS hardware: it is built and type-checked only.
package vz
