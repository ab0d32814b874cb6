package loadgen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/stream"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// Switch is an in-process switch with a stream and a datagram listener,
// configured as `tapswitch serve --listen unix://... --listen
// unixgram://...` configures them (default limits, no port security).
type Switch struct {
	// Switch is the switch itself, for its statistics.
	Switch *vswitch.Switch
	// StreamPath and DgramPath are the listeners' socket files.
	StreamPath, DgramPath string

	cancel context.CancelFunc
	sl     *stream.Listener
	dl     *dgram.Listener
}

// StartSwitch starts a switch listening in dir (which must exist).
// cfg configures the switch; its zero value is serve's defaults.
func StartSwitch(dir string, cfg vswitch.Config) (*Switch, error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Switch{
		Switch:     vswitch.New(cfg),
		StreamPath: filepath.Join(dir, "stream.sock"),
		DgramPath:  filepath.Join(dir, "dgram.sock"),
		cancel:     cancel,
	}
	maxFrame := cfg.MaxFrame
	if maxFrame == 0 {
		maxFrame = vswitch.DefaultMaxFrame
	}
	var err error
	s.sl, err = stream.Listen(ctx, "unix://"+s.StreamPath, stream.ListenerConfig{Conn: stream.ConnConfig{MaxFrame: maxFrame}}, s.Switch)
	if err == nil {
		s.dl, err = dgram.Listen(ctx, "unixgram://"+s.DgramPath, dgram.Config{MaxFrame: maxFrame}, s.Switch)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("loadgen: start switch: %w", err)
	}
	return s, nil
}

// Drops returns the frames the switch has dropped, all ports and reasons.
func (s *Switch) Drops() uint64 {
	st := s.Switch.Stats()
	return st.Totals.Drops.Total()
}

// Close stops the listeners and the switch.
func (s *Switch) Close() error {
	s.cancel()
	if s.sl != nil {
		s.sl.Close()
	}
	if s.dl != nil {
		s.dl.Close()
	}
	err := s.Switch.Close()
	os.Remove(s.StreamPath)
	os.Remove(s.DgramPath)
	return err
}
