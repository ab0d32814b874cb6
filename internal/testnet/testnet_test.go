package testnet

import (
	"net"
	"os"
	"strings"
	"testing"
)

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{"", "ts", "tapswitch-long-prefix"} {
		for range 100 {
			n := UniqueName(prefix)
			if len(n) > MaxNameLen || !strings.HasPrefix(prefix, n[:len(n)-6]) || seen[n] {
				t.Fatalf("UniqueName(%q) = %q: too long, wrong prefix or repeated", prefix, n)
			}
			seen[n] = true
		}
	}
}

func TestNS(t *testing.T) {
	ns := NewNS(t)
	if _, err := os.Stat("/run/netns/" + ns.Name()); err != nil {
		t.Fatal(err)
	}
	// A link made in the namespace is visible from a thread inside it and
	// not from the test's own.
	link := UniqueName("veth")
	ns.IP(t, "link", "add", link, "type", "veth", "peer", "name", UniqueName("veth"))
	var inside bool
	if err := ns.Do(func() error {
		_, err := net.InterfaceByName(link)
		inside = err == nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.InterfaceByName(link); !inside || err == nil {
		t.Errorf("link %s: seen inside %v, outside %v", link, inside, err == nil)
	}
	if out := ns.Output(t, "ip", "-br", "link", "show", "dev", link); !strings.HasPrefix(out, link+"@") {
		t.Errorf("ip netns exec %s ip link: %q", ns, out)
	}

	other := NewNS(t)
	MoveLink(t, link, ns, other)
	other.AddAddr(t, link, "198.18.9.1/24")
	other.SetUp(t, link)
	other.Ping(t, "198.18.9.1")

	other.Delete(t)
	if _, err := os.Stat("/run/netns/" + other.Name()); err == nil {
		t.Errorf("namespace %s still exists after Delete", other)
	}
}
