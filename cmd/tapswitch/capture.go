package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/pcap"
)

func newCaptureCmd() *cobra.Command {
	var (
		ctlPath, port, out string
		count              int
		duration           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "capture -w FILE|-",
		Short: "Capture frames from the running switch as pcap",
		Long: `Capture streams the frames crossing a running switch (or one of its ports)
in pcap format, which tcpdump and Wireshark read. Frames are captured as
they enter the switch, once each. A capture of one port (--port) ends when
the port leaves the switch, with an error saying so.`,
		Example: `  tapswitch capture -c 10 -w icmp.pcap
  tapswitch capture --port tap0 -w - | tcpdump -n -r -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// A negative count wrote a header-only file, a negative
			// duration meant no limit.
			if count < 0 {
				return fmt.Errorf("--count %d: must be 0 (no limit) or more", count)
			}
			if duration < 0 {
				return fmt.Errorf("--duration %s: must be 0 (no limit) or more", duration)
			}
			ctx := cmd.Context()
			if duration > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, duration)
				defer cancel()
			}
			rc, err := api.NewClient(ctlPath).Capture(ctx, port)
			if err != nil {
				return err
			}
			defer rc.Close()
			// Only now: a switch that is not running or a bad --port
			// leaves an existing FILE as it was.
			var w io.Writer = cmd.OutOrStdout()
			if out != "-" {
				// 0600: the frames of every VM, not for every user.
				f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			n, err := copyCapture(w, rc, count)
			if ctx.Err() != nil {
				err = nil // --duration elapsed or interrupted: a normal end
			}
			if out != "-" {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d frames captured\n", n)
			}
			if err == nil && rc.PortLeft() {
				// As tcpdump ends when its interface goes away.
				return fmt.Errorf("port %s left the switch: capture ended", port)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&ctlPath, "ctl", defaultCtlPath(), "control socket of the running switch")
	f.StringVar(&port, "port", "", "capture only this port (name or ID, or the URL of a port the switch dialled)")
	f.StringVarP(&out, "write", "w", "", `write pcap to FILE ("-" for standard output)`)
	f.IntVarP(&count, "count", "c", 0, "stop after this many frames (0: no limit)")
	f.DurationVar(&duration, "duration", 0, "stop after this long (0: no limit)")
	_ = cmd.MarkFlagRequired("write")
	return cmd
}

// copyCapture copies the pcap stream r to w, record by record, stopping
// after count records (0: until r ends).
func copyCapture(w io.Writer, r io.Reader, count int) (int, error) {
	pr, err := pcap.NewReader(r)
	if err != nil {
		return 0, err
	}
	if _, err := w.Write(pr.Header()); err != nil {
		return 0, err
	}
	var rec []byte
	n := 0
	for count == 0 || n < count {
		rec, err = pr.Next(rec)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			return n, err
		}
		if _, err := w.Write(rec); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}
