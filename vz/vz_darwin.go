//go:build darwin && cgo

package vz

import (
	"fmt"
	"sync"

	"github.com/Code-Hex/vz/v3"
)

// live holds every Conn handed to Virtualization.framework until its
// cleanup runs: the framework keeps only the descriptor, so without this a
// caller that dropped the cleanup would let the garbage collector finalize
// the *os.File and close the descriptor under a running VM.
var live sync.Map // *Conn → struct{}

// NewAttachment connects to the switch (see Dial) and returns a
// file-handle network attachment for a VM's virtio-net device, with
// cfg.MTU set on it, and the cleanup that closes the socket and removes its
// path. Call the cleanup once the VM has stopped; until then the socket
// stays open even if the caller keeps no reference to it.
func NewAttachment(cfg Config) (*vz.FileHandleNetworkDeviceAttachment, func() error, error) {
	c, err := Dial(cfg)
	if err != nil {
		return nil, nil, err
	}
	a, err := vz.NewFileHandleNetworkDeviceAttachment(c.File())
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("vz %s: attachment: %w", c.LocalPath(), err)
	}
	if cfg.MTU != 0 {
		if err := a.SetMaximumTransmissionUnit(cfg.MTU); err != nil {
			c.Close()
			return nil, nil, fmt.Errorf("vz %s: set MTU %d: %w", c.LocalPath(), cfg.MTU, err)
		}
	}
	live.Store(c, struct{}{})
	cleanup := func() error {
		live.Delete(c)
		return c.Close()
	}
	return a, cleanup, nil
}
