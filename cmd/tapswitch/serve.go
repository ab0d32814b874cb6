package main

import (
	"fmt"
	"os"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	vswitch "github.com/tapswitch/tapswitch/switch"
)

// serveOptions holds every flag of tapswitch serve.
type serveOptions struct {
	logLevel  string
	logFormat string

	fdbSize  int
	fdbAge   time.Duration
	maxFrame int
	queueLen int
}

func newServeCmd() *cobra.Command {
	var o serveOptions
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the switch",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServe(cmd, &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.IntVar(&o.fdbSize, "fdb-size", vswitch.DefaultFDBSize, "maximum number of learned MAC addresses")
	f.DurationVar(&o.fdbAge, "fdb-age", vswitch.DefaultFDBAge, "how long a MAC address stays learned after its last frame")
	f.IntVar(&o.maxFrame, "max-frame", vswitch.DefaultMaxFrame, "largest frame accepted, Ethernet header included")
	f.IntVar(&o.queueLen, "queue-len", vswitch.DefaultQueueLen, "transmit queue length of each port, in frames")
	return cmd
}

func newLogger(level, format string) (*logrus.Logger, error) {
	l := logrus.New()
	l.SetOutput(os.Stderr)
	lv, err := logrus.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	l.SetLevel(lv)
	switch format {
	case "text":
		l.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		l.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, fmt.Errorf("--log-format: %q is neither text nor json", format)
	}
	return l, nil
}

func runServe(cmd *cobra.Command, o *serveOptions) error {
	log, err := newLogger(o.logLevel, o.logFormat)
	if err != nil {
		return err
	}
	if o.maxFrame < 14 || o.maxFrame > 65535 {
		return fmt.Errorf("--max-frame %d: must be between 14 and 65535", o.maxFrame)
	}
	sw := vswitch.New(vswitch.Config{
		Logger:   log,
		FDBSize:  o.fdbSize,
		FDBAge:   o.fdbAge,
		MaxFrame: o.maxFrame,
		QueueLen: o.queueLen,
	})
	defer sw.Close()
	log.Info("switch running; stop with SIGINT or SIGTERM")
	<-cmd.Context().Done()
	log.Info("shutting down")
	return nil
}
