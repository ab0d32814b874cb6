//go:build !unix

package dhcp

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// lockLeaseFile is not implemented without flock: a lease file is refused
// rather than shared unprotected.
func lockLeaseFile(path string) (*os.File, error) {
	return nil, fmt.Errorf("lock lease file %s: %w on %s", path, errors.ErrUnsupported, runtime.GOOS)
}
