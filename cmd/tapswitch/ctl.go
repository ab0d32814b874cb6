package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

func newCtlCmd() *cobra.Command {
	var ctlPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ctl",
		Short: "Inspect and change a running switch",
		Example: `  tapswitch ctl ports
  tapswitch ctl fdb --json
  tapswitch ctl listeners
  tapswitch ctl dials
  tapswitch ctl attach --tap tap3
  tapswitch ctl detach tap3
  tapswitch ctl flush-fdb`,
		// As the root command does: help without a subcommand, an error
		// for one it does not know (a command without Run printed help and
		// exited 0 for a typo).
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t") + "\n"
			}
			return errors.New(msg)
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.PersistentFlags().StringVar(&ctlPath, "ctl", defaultCtlPath(), "control socket of the running switch")
	cmd.PersistentFlags().BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	client := func() *api.Client { return api.NewClient(ctlPath) }

	// show fetches path into v and prints it as JSON or with table.
	show := func(cmd *cobra.Command, path string, v any, table func(w io.Writer)) error {
		if err := client().Do(cmd.Context(), "GET", path, nil, v); err != nil {
			return err
		}
		out := cmd.OutOrStdout()
		if asJSON {
			return printJSON(out, v)
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		table(tw)
		return tw.Flush()
	}

	cmd.AddCommand(&cobra.Command{
		Use:   "ports",
		Short: "List ports: kind, peer, MACs, counters, drops",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ports []api.Port
			return show(cmd, "/v1/ports", &ports, func(w io.Writer) {
				fmt.Fprintln(w, "ID\tNAME\tKIND\tPEER\tMACS\tRX FRAMES\tRX BYTES\tTX FRAMES\tTX BYTES\tDROPS")
				for _, p := range ports {
					macs := make([]string, len(p.MACs))
					for i, m := range p.MACs {
						macs[i] = m.String()
					}
					fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", p.ID, cell(p.Name), p.Kind, dash(p.Peer),
						dash(strings.Join(macs, ",")), p.RxFrames, p.RxBytes, p.TxFrames, p.TxBytes, p.Drops)
				}
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "fdb",
		Short: "List learned MAC addresses: MAC, port, age",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var fdb []vswitch.FDBEntry
			return show(cmd, "/v1/fdb", &fdb, func(w io.Writer) {
				fmt.Fprintln(w, "MAC\tPORT\tID\tAGE")
				for _, e := range fdb {
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", e.MAC, cell(e.Port), e.PortID, e.Age.Truncate(100*time.Millisecond))
				}
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "leases",
		Short: "List DHCP leases: MAC, IP, state, expiry, static",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var leases []api.Lease
			return show(cmd, "/v1/leases", &leases, func(w io.Writer) {
				fmt.Fprintln(w, "MAC\tIP\tSTATE\tEXPIRES\tSTATIC\tHOSTNAME")
				for _, l := range leases {
					exp := "never"
					if !l.Static {
						exp = l.Expiry.Local().Format(time.DateTime)
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%t\t%s\n", l.MAC, l.IP, dash(l.State), exp, l.Static, dash(l.Hostname))
				}
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "stats",
		Short: "Show switch-wide counters",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st vswitch.Stats
			return show(cmd, "/v1/stats", &st, func(w io.Writer) {
				t := st.Totals
				for _, row := range [][2]any{
					{"ports", len(st.Ports)},
					{"ports departed (last 64 kept)", len(st.Departed)},
					{"rx frames", t.RxFrames}, {"rx bytes", t.RxBytes},
					{"tx frames", t.TxFrames}, {"tx bytes", t.TxBytes},
					{"forwarded", st.Forwarded}, {"flooded", st.Flooded},
					{"warm wakeups", st.Wakeups},
					{"drops", t.Drops},
					{"fdb entries", fmt.Sprintf("%d of %d", st.FDB.Size, st.FDB.Max)},
					{"fdb learned", st.FDB.Learned}, {"fdb moved", st.FDB.Moved},
					{"fdb refused (full)", st.FDB.Refused}, {"fdb expired", st.FDB.Expired},
					{"fdb age limit", st.FDB.AgeLimit},
					{"max ports", limit(st.Limits.MaxPorts)},
					{"queue length", st.Limits.QueueLen},
					{"max frame", st.Limits.MaxFrame},
				} {
					fmt.Fprintf(w, "%s\t%v\n", row[0], row[1])
				}
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "listeners",
		Short: "List listening sockets: ports made, datagrams received and dropped",
		Long: `List the switch's listening sockets with the ports each made. A stream
listener counts the clients it refused (not in --allow-uid/--allow-gid,
1024 clients connected already, or --max-ports reached), shown as
refused=N under DROPPED. A datagram listener also counts the datagrams it
received and those it dropped before they reached a port: unbound (the
sender's socket is bound to no absolute path, so it cannot be answered),
invalid (shorter than an Ethernet header, from an address that is not a
peer), too_long (over --max-frame) and refused (no port could be made for a new sender: 1024 peers on the socket
already or --max-ports reached, and none of the socket's peers silent for
a minute; the switch out of file descriptors for the peer's socket; or, on
Linux, the sender is not in --allow-uid/--allow-gid, its socket file is
not a socket it owns, it is bound to an abstract name but is not root or
the switch's user, or its socket cannot be reached from the switch: gone
already, an abstract name in another network namespace, a socket the
switch may not write). --json adds the rest of its counters.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ls []api.Listener
			return show(cmd, "/v1/listeners", &ls, func(w io.Writer) {
				fmt.Fprintln(w, "LISTENER\tKIND\tPORTS\tDATAGRAMS\tDROPPED")
				for _, l := range ls {
					datagrams, dropped := "-", "-"
					if s := l.Stream; s != nil {
						dropped = countSummary([]string{"refused"}, []uint64{s.Refused})
					}
					if d := l.Datagram; d != nil {
						datagrams = strconv.FormatUint(d.Datagrams, 10)
						dropped = countSummary([]string{"unbound", "invalid", "too_long", "refused"},
							[]uint64{d.Unbound, d.Invalid, d.TooLong, d.Refused})
					}
					fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", l.URL, l.Kind, l.Ports, datagrams, dropped)
				}
			})
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "dials",
		Short: "List the QEMU stream servers the switch connects to, and how it goes",
		Long: `List the stream servers the switch connects to as a client (--connect,
the connect config key, ctl attach --connect): connected, or being dialled
with the number of failed attempts since it began and the last one's
error. A server the switch is connected to is also a port (ctl ports).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ds []api.Dial
			return show(cmd, "/v1/dials", &ds, func(w io.Writer) {
				fmt.Fprintln(w, "URL\tFROM\tSTATE\tSINCE\tFAILURES\tLAST ERROR")
				for _, d := range ds {
					state, lastErr := "dialling", d.LastError
					if d.Connected {
						state = "connected"
					}
					if lastErr == "" {
						lastErr = "-"
					}
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%s\n", d.URL, d.Origin, state,
						d.Since.Local().Format(time.DateTime), d.Failures, lastErr)
				}
			})
		},
	})
	var tap, connect string
	attach := &cobra.Command{
		Use:   "attach (--tap NAME | --connect URL)",
		Short: "Attach a tap device or connect to a QEMU stream server",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := api.AttachRequest{Tap: tap, Connect: connect}
			var ps vswitch.PortStats
			if err := client().Do(cmd.Context(), "POST", "/v1/ports", req, &ps); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ps)
			}
			if connect != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "connecting to %s: the switch dials until it connects, and again after the connection ends "+
					"(tapswitch ctl dials shows how it goes, tapswitch ctl ports lists the port once it is connected; tapswitch ctl detach %s stops it)\n", connect, connect)
				return nil
			}
			if ps.ID == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "attached %s\n", ps.Name) // and already gone
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "attached %s (id %d)\n", ps.Name, ps.ID)
			return nil
		},
	}
	attach.Flags().StringVar(&tap, "tap", "", "tap device to open (created when missing)")
	attach.Flags().StringVar(&connect, "connect", "", "stream URL of a QEMU listening with server=on")
	attach.MarkFlagsOneRequired("tap", "connect")
	attach.MarkFlagsMutuallyExclusive("tap", "connect")
	cmd.AddCommand(attach)
	cmd.AddCommand(&cobra.Command{
		Use:   "detach PORT",
		Short: "Detach a port, by ID, name or dialled URL",
		Long: `Detach a port, by ID or name: the port with that ID, else the one port
with that name (a name two ports have is refused: give the ID), else the
port the switch dialled at that URL. A port the switch dialled (serve
--connect, ctl attach --connect) is not dialled again until it is attached
again or the switch restarts; a tap or --connect URL that serve's --config
file lists, or its command line gives, comes back when SIGHUP re-reads the
file.
A URL that is being dialled and has not connected is stopped by its URL or
port name (unix:PATH, tcp:HOST:PORT).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] == "" {
				return errors.New("detach: give a port's ID or name (tapswitch ctl ports lists them)")
			}
			ps, err := client().Detach(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ps)
			}
			if ps.ID == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "stopped dialling %s (it had not connected)\n", ps.Name)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %s (id %d)\n", ps.Name, ps.ID)
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "flush-fdb",
		Short: "Forget every learned MAC address",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r api.FlushResult
			if err := client().Do(cmd.Context(), "POST", "/v1/fdb/flush", nil, &r); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "flushed %d entries\n", r.Flushed)
			return nil
		},
	})
	return cmd
}

// limit prints a bound, 0 meaning none.
func limit(n int) string {
	if n == 0 {
		return "none"
	}
	return strconv.Itoa(n)
}

// dash returns s for a table (see cell), "-" when it is empty.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return cell(s)
}

// cell returns s for a table, quoted with Go escapes if it is not valid
// UTF-8 or has a character that is not printable: a datagram peer's name
// is the path it chose, and a terminal would act on escape sequences in it,
// a tab or newline would break the table.
func cell(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return s
	}
	return strconv.Quote(s)
}

// countSummary prints the non-zero counts as name=n,... and "0" when
// there are none.
func countSummary(names []string, counts []uint64) string {
	var parts []string
	for i, n := range counts {
		if n != 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", names[i], n))
		}
	}
	if parts == nil {
		return "0"
	}
	return strings.Join(parts, ",")
}

// printJSON prints v as indented JSON (--json).
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
