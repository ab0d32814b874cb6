package testnet

import "golang.org/x/sys/unix"

// DropNetAdmin removes CAP_NET_ADMIN from the effective capabilities of
// the calling thread, so that a test running as root sees what an
// unprivileged tapswitch would. Capabilities belong to threads: call it
// inside NS.Do, whose thread ends with the function, so the rest of the
// test process keeps its privileges.
func DropNetAdmin() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
	return unix.Capset(&hdr, &data[0])
}
