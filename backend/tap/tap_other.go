//go:build !linux && !darwin

package tap

import (
	"errors"
	"fmt"
	"runtime"
)

// Open returns an error wrapping errors.ErrUnsupported: taps are
// implemented on Linux and macOS only.
func Open(cfg Config) (*Device, error) {
	if err := CheckName(cfg.Name); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("tap %s: open: %w on %s", cfg.Name, errors.ErrUnsupported, runtime.GOOS)
}

// batchSize is Device.BatchSize: ReadFrames reads one frame per call.
const batchSize = 1

func isGone(error) bool { return false }

// IsNamed reports whether the tap is called name (Open makes none here).
func (d *Device) IsNamed(name string) bool { return d.name == name }
