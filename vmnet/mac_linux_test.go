//go:build linux

package vmnet_test

import (
	"net"
	"strings"
	"testing"

	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/vmnet"
)

// TestAttachPersistentRestoresMAC: a persistent tap given a MAC (--host-mac)
// gets its own back at Close, as its addresses and state are restored.
func TestAttachPersistentRestoresMAC(t *testing.T) {
	host := testnet.NewNS(t)
	name := testnet.UniqueName("host")
	host.IP(t, "tuntap", "add", name, "mode", "tap")
	mac := func() string {
		t.Helper()
		f := strings.Fields(host.IP(t, "-br", "link", "show", "dev", name))
		if len(f) < 3 {
			t.Fatalf("ip -br link: %q", f)
		}
		return f[2]
	}
	before := mac()
	want := net.HardwareAddr{0x02, 0x74, 0x73, 0x00, 0x06, 0x02}
	i := mustOpenIn(t, host, vmnet.Config{Name: name, MAC: want})
	if got := mac(); got != want.String() {
		t.Fatalf("MAC after Open %s, want %s", got, want)
	}
	if err := i.Close(); err != nil {
		t.Fatal(err)
	}
	if got := mac(); got != before {
		t.Errorf("MAC after Close %s, want the tap's own %s back", got, before)
	}
}
