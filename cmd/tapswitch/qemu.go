package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/qemu"
)

func newQEMUCmd() *cobra.Command {
	var socket, printURL, id string
	cmd := &cobra.Command{
		Use:   "qemu (--socket PATH [--] COMMAND [ARGS...] | --print-netdev URL [--id ID])",
		Short: "Connect QEMU to the switch",
		Long: `With --socket, connect to the switch's stream listener at PATH (or
unix:///PATH) and run COMMAND with the connection as file descriptor 3, for
QEMU releases older than 7.2: give QEMU "-netdev socket,id=n0,fd=3", with
an id of your choosing. Flags end at COMMAND, with or without "--" before it,
as socket_vmnet_client takes it. tapswitch exits with COMMAND's exit status (128+N
if signal N killed it), or, as a shell does, 127 if COMMAND was not found
and 126 if it could not be executed.

With --print-netdev, print the QEMU arguments that attach a guest to the
listener at URL (unix://, tcp://, unixgram://, udp://), with netdev id ID.`,
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
				if len(args) == 0 {
					return errors.New("usage: tapswitch qemu --socket PATH [--] COMMAND [ARGS...]")
				}
				if cmd.Flags().Changed("id") {
					return errors.New("--id is for --print-netdev: with --socket, the netdev id is the one COMMAND gives in -netdev socket,id=ID,fd=3")
				}
				path, err := qemuSocketPath(socket)
				if err != nil {
					return err
				}
				// SIGINT and SIGTERM are the child's to act on (RunWithSocket
				// forwards them); the context they cancel must not also
				// send it SIGTERM and then SIGKILL.
				code, err := qemu.RunWithSocket(context.WithoutCancel(cmd.Context()), path, args, qemu.RunConfig{})
				if err != nil {
					if code == 126 || code == 127 {
						// COMMAND could not be run: a shell's status.
						return exitError{code: code, err: err}
					}
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
	cmd.Flags().StringVar(&socket, "socket", "", "stream socket of the switch, a path or unix:///PATH, e.g. the default setup's "+filepath.Join(runDir(), defaultStreamSock))
	cmd.Flags().StringVar(&printURL, "print-netdev", "", "print the QEMU arguments for this listener URL")
	cmd.Flags().StringVar(&id, "id", "", fmt.Sprintf("netdev id for --print-netdev (default %q)", qemu.DefaultID))
	// Flags end at COMMAND, "--" or not (socket_vmnet_client SOCK COMMAND
	// ...): COMMAND's own flags are not ours.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// qemuSocketPath returns the socket path that --socket names: s itself, or
// the path of a unix:// URL. Other listener URLs are refused, with the way
// to reach them.
func qemuSocketPath(s string) (string, error) {
	for _, scheme := range []string{"unix:", "unixgram:", "tcp:", "udp:"} {
		if !strings.HasPrefix(s, scheme) {
			continue
		}
		a, err := listen.Parse(s)
		if err != nil {
			return "", fmt.Errorf("--socket: %w", err)
		}
		if a.Network != "unix" {
			return "", fmt.Errorf("--socket %s: want the switch's unix stream socket, as a path or unix:///PATH; "+
				"QEMU reaches a %s listener without tapswitch qemu: tapswitch qemu --print-netdev %[1]s prints how", s, a.Network)
		}
		return a.Address, nil
	}
	return s, nil
}
