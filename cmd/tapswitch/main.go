// Command tapswitch is a virtual Ethernet switch for VM hosts: it joins tap
// devices, the host's own interface and QEMU / Apple Virtualization VM
// sockets into one learning L2 segment, with an optional DHCP responder.
//
// The command only wires flags and configuration to the constructors of the
// switch/, backend/, vmnet/ and qemu/ packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRootCmd()
	if filepath.Base(os.Args[0]) == socketVmnetName {
		root.SetArgs(append([]string{"socket-vmnet"}, os.Args[1:]...))
	}
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		os.Exit(exitStatus(err, os.Stderr))
	}
}

// exitStatus prints err to w, unless it only carries a child's exit
// status, and returns the status tapswitch exits with.
func exitStatus(err error, w io.Writer) int {
	var ee exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(w, "tapswitch:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(w, "tapswitch:", err)
	return 1
}

// exitError carries an exit status other than 1 through cobra: a child's
// (tapswitch qemu), or a shell's 126 or 127 for a command that could not
// be run, with err saying why.
type exitError struct {
	code int
	err  error // printed, if not nil
}

func (e exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func (e exitError) Unwrap() error { return e.err }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "tapswitch",
		Short: "A virtual Ethernet switch for QEMU, vz/vfkit and tap devices",
		Long: `tapswitch joins every kind of virtual NIC on a host — Linux tap devices, the
host's own interface, QEMU -netdev stream/socket/dgram clients and Apple
Virtualization (vz, vfkit) datagram sockets — into one learning Ethernet
segment, with an optional built-in DHCP responder.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newServeCmd(), newCtlCmd(), newCaptureCmd(), newQEMUCmd(), newSocketVmnetCmd())
	return root
}
