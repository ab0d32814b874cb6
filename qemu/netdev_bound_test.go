package qemu

import (
	"strings"
	"testing"

	"github.com/tapswitch/tapswitch/backend/listen"
)

// TestNetdevLongestPath: a socket path of listen.MaxSocketPath bytes, which
// the switch binds, is one QEMU can be pointed at; one byte more is not.
func TestNetdevLongestPath(t *testing.T) {
	path := "/" + strings.Repeat("s", listen.MaxSocketPath-1)
	if _, err := Netdev("unix://"+path, NetdevOptions{}); err != nil {
		t.Errorf("a path of %d bytes: %v", len(path), err)
	}
	if _, err := Netdev("unix://"+path+"s", NetdevOptions{}); err == nil {
		t.Errorf("a path of %d bytes accepted", len(path)+1)
	}
}
