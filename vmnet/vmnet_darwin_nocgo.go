//go:build darwin && !cgo

package vmnet

import (
	"errors"
	"fmt"
)

// Open checks cfg, then returns an error wrapping errors.ErrUnsupported:
// vmnet.framework is reached through cgo, and this build has none.
func Open(cfg Config) (*Interface, error) {
	if _, err := darwinParams(cfg); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("host interface %s: open: %w: vmnet needs cgo: build with CGO_ENABLED=1",
		darwinName(cfg), errors.ErrUnsupported)
}
