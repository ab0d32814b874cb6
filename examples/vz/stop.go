package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// vmStopper is what waitStop needs of a VM; on macOS a *vz.VirtualMachine
// behind vzStopper. It is an interface so that the stopping is tested on
// every system.
type vmStopper interface {
	// RequestStop asks the guest to shut down, and fails if the VM cannot
	// take the request. The guest may ignore it.
	RequestStop() error
	// Stop stops the VM at once, as pulling its plug does.
	Stop() error
}

// waitStop waits for the VM to end, which ended reports: nil once it has
// stopped, its failure otherwise. The first signal on sig asks the guest
// to shut down; a second signal, or the guest still running timeout later,
// stops the VM at once, as does the first signal if the request fails or
// timeout is 0. A guest that ignores the request cannot keep this program
// waiting for ever. Progress is written to log.
func waitStop(vm vmStopper, sig <-chan os.Signal, ended <-chan error, timeout time.Duration, log io.Writer) error {
	var deadline <-chan time.Time // nil until the guest is asked to shut down
	for {
		select {
		case <-sig:
			if deadline == nil && timeout > 0 {
				err := vm.RequestStop()
				if err == nil {
					fmt.Fprintf(log, "vm: asked the guest to shut down; stopping the VM in %s, or at once on another signal\r\n", timeout)
					deadline = time.After(timeout)
					continue
				}
				fmt.Fprintf(log, "vm: cannot ask the guest to shut down: %v; stopping the VM\r\n", err)
			}
			return stopNow(vm)
		case <-deadline:
			fmt.Fprintf(log, "vm: the guest did not shut down within %s; stopping the VM\r\n", timeout)
			return stopNow(vm)
		case err := <-ended:
			return err
		}
	}
}

func stopNow(vm vmStopper) error {
	if err := vm.Stop(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}
