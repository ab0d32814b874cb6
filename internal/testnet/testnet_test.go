package testnet

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
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

// TestRemoveStale: the namespace of a test process that is gone is
// removed; this process's, and one NewNS did not name, are not.
func TestRemoveStale(t *testing.T) {
	live := NewNS(t)
	// A PID that no longer runs: a child that has been reaped.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	dead := c.Process.Pid
	if processExists(dead) {
		t.Skipf("pid %d was reused at once", dead)
	}
	stale := fmt.Sprintf("ts%d-%s", dead, UniqueName(""))
	foreign := fmt.Sprintf("tsx%d-%s", dead, UniqueName(""))
	for _, name := range []string{stale, foreign} {
		ns := &NS{name: name}
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { ns.delete() })
	}
	removed, err := RemoveStale()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(removed, stale) {
		t.Errorf("RemoveStale removed %v, not %s", removed, stale)
	}
	for _, name := range []string{live.Name(), foreign} {
		if slices.Contains(removed, name) {
			t.Errorf("RemoveStale removed %s", name)
		}
	}
	for name, want := range map[string]bool{stale: false, live.Name(): true, foreign: true} {
		if _, err := os.Stat("/run/netns/" + name); (err == nil) != want {
			t.Errorf("namespace %s: exists %v, want %v", name, err == nil, want)
		}
	}
}
