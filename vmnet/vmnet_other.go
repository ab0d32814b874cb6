//go:build !linux && !darwin

package vmnet

import (
	"errors"
	"fmt"
	"runtime"
)

// Open returns an error wrapping errors.ErrUnsupported: the host interface
// is implemented on Linux (a tap) and macOS (vmnet.framework) only.
func Open(cfg Config) (*Interface, error) {
	return nil, fmt.Errorf("host interface %s: open: %w on %s", cfg.Name, errors.ErrUnsupported, runtime.GOOS)
}
