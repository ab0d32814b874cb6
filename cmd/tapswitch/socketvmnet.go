package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/tapswitch/tapswitch/internal/socketvmnet"
)

// socketVmnetName is the program name under which tapswitch behaves as
// socket_vmnet (a symlink or copy named socket_vmnet).
const socketVmnetName = "socket_vmnet"

func newSocketVmnetCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "socket-vmnet [OPTIONS] SOCKET",
		Short: "Run as a drop-in replacement for socket_vmnet",
		Long: `socket-vmnet accepts socket_vmnet's command line (--vmnet-mode,
--vmnet-interface, --vmnet-gateway, --vmnet-dhcp-end, --vmnet-mask,
--vmnet-interface-id, --vmnet-network-identifier, --socket-group,
-p/--pidfile and the socket path) and runs tapswitch serve accordingly, so
lima's networks.yaml and launchd plists written for socket_vmnet work
unchanged. The same happens when the binary is invoked as socket_vmnet.

On macOS the host leg is a vmnet.framework interface and macOS serves DHCP;
on Linux it is a tap holding the gateway address and tapswitch's DHCP
responder serves gateway+1 to the DHCP end. Run "tapswitch socket-vmnet
--help" for socket_vmnet's own usage text.`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := socketvmnet.Parse(args)
			switch {
			case err != nil:
				fmt.Fprint(cmd.ErrOrStderr(), socketvmnet.Usage(socketVmnetName))
				return err
			case o.Help:
				fmt.Fprint(cmd.OutOrStdout(), socketvmnet.Usage(socketVmnetName))
				return nil
			case o.Version:
				fmt.Fprintln(cmd.OutOrStdout(), versionString())
				return nil
			}
			serve := newServeCmd()
			serve.SetArgs(o.ServeArgs(runtime.GOOS))
			serve.SetOut(cmd.OutOrStdout())
			serve.SetErr(cmd.ErrOrStderr())
			serve.SilenceErrors, serve.SilenceUsage = true, true
			if err := serve.ExecuteContext(cmd.Context()); err != nil {
				return fmt.Errorf("socket-vmnet: %w", err)
			}
			return nil
		},
	}
}
