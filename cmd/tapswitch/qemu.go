package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/tapswitch/tapswitch/qemu"
)

func newQEMUCmd() *cobra.Command {
	var socket, printURL, id string
	cmd := &cobra.Command{
		Use:   "qemu (--socket PATH -- COMMAND [ARGS...] | --print-netdev URL)",
		Short: "Connect QEMU to the switch",
		Long: `With --socket, connect to the switch's stream listener at PATH and run
COMMAND with the connection as file descriptor 3, for QEMU releases older
than 7.2: give QEMU "-netdev socket,id=n0,fd=3". tapswitch exits with
COMMAND's exit status.

With --print-netdev, print the QEMU arguments that attach a guest to the
listener at URL (unix://, tcp://, unixgram://, udp://).`,
		Example: `  tapswitch qemu --socket /run/tapswitch/tapswitch.sock -- \
      qemu-system-x86_64 -netdev socket,id=n0,fd=3 -device virtio-net-pci,netdev=n0 ...
  tapswitch qemu --print-netdev unixgram:///run/tapswitch/tapswitch-dgram.sock --id vm1`,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case printURL != "" && socket == "":
				if len(args) > 0 {
					return errors.New("--print-netdev takes no command")
				}
				return qemu.PrintNetdev(cmd.OutOrStdout(), printURL, qemu.NetdevOptions{ID: id})
			case socket != "" && printURL == "":
				if cmd.ArgsLenAtDash() != 0 || len(args) == 0 {
					return errors.New("usage: tapswitch qemu --socket PATH -- COMMAND [ARGS...]")
				}
				// SIGINT and SIGTERM are the child's to act on (RunWithSocket
				// forwards them); the context they cancel must not also
				// send it SIGTERM and then SIGKILL.
				code, err := qemu.RunWithSocket(context.WithoutCancel(cmd.Context()), socket, args, qemu.RunConfig{})
				if err != nil {
					return err
				}
				if code != 0 {
					return exitError{code: code}
				}
				return nil
			default:
				return errors.New("give exactly one of --socket and --print-netdev")
			}
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "stream socket of the switch, e.g. the default setup's "+filepath.Join(runDir(), defaultStreamSock))
	cmd.Flags().StringVar(&printURL, "print-netdev", "", "print the QEMU arguments for this listener URL")
	cmd.Flags().StringVar(&id, "id", "", fmt.Sprintf("netdev id for --print-netdev (default %q)", qemu.DefaultID))
	return cmd
}
