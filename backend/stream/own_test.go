package stream

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestDialRefusesOwnListener: Dial to a listener of its own switch, by its
// path, by a symlink to it, by its TCP address, or at 127.0.0.1 to a
// wildcard listener, closes the connection before it becomes a port, logs
// it and returns nil without dialling again. It used to attach the
// connection: the switch held both of its ends as ports, and one
// broadcast went round between them for ever (hundreds of thousands of
// frames a second, every other port's queue full). A listener of another
// switch in the same process is dialled as any server.
func TestDialRefusesOwnListener(t *testing.T) {
	log, hooks := testLogger(t)
	sw, unixL, path := setup(t, ListenerConfig{Logger: log})
	listenTCP := func(sw *vswitch.Switch, url string) *Listener {
		l, err := Listen(context.Background(), url, ListenerConfig{Logger: log}, sw)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	tcpL := listenTCP(sw, "tcp://127.0.0.1:0")
	wild := listenTCP(sw, "tcp://:0")
	_, wildPort, _ := net.SplitHostPort(wild.Addr().Address)
	link := filepath.Join(t.TempDir(), "link.sock")
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}

	const msg = "connected to this switch's own listener: every flooded frame would loop between the two ends; connection closed, no longer dialled"
	for i, c := range []struct{ url, listener string }{
		{"unix://" + path, unixL.String()},
		{"unix://" + link, unixL.String()},
		{"tcp://" + tcpL.Addr().Address, tcpL.String()},
		{"tcp://127.0.0.1:" + wildPort, wild.String()},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		errc := make(chan error, 1)
		go func() {
			errc <- Dial(ctx, c.url, DialConfig{Logger: log, MinBackoff: 10 * time.Millisecond}, sw)
		}()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Dial %s: %v, want nil", c.url, err)
			}
			if ctx.Err() != nil {
				t.Errorf("Dial %s returned only when its context ended", c.url)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Dial %s to its own switch's listener still running after 5 s (%d stream ports)", c.url, streamPorts(sw))
			cancel()
			<-errc
		}
		cancel()
		if n := hooks.count(msg); n != i+1 {
			t.Errorf("Dial %s: %d refusals logged, want %d", c.url, n, i+1)
		}
		hooks.mu.Lock()
		for _, e := range hooks.entries {
			if e.Message == msg && e.Data["connect"] == c.url && e.Data["listener"] != c.listener {
				t.Errorf("Dial %s: the refusal names listener %v, want %s", c.url, e.Data["listener"], c.listener)
			}
		}
		hooks.mu.Unlock()
		// The listener's end goes too, once the dialled end is closed.
		porttest.WaitFor(t, "no stream ports after "+c.url, func() bool { return streamPorts(sw) == 0 })
	}

	// Another switch's listeners: connected, one port on each switch.
	sw2, _, path2 := setup(t, ListenerConfig{Logger: log})
	tcp2 := listenTCP(sw2, "tcp://127.0.0.1:0")
	for _, url := range []string{"unix://" + path2, "tcp://" + tcp2.Addr().Address} {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() { errc <- Dial(ctx, url, DialConfig{Logger: log}, sw) }()
		porttest.WaitFor(t, "a port on each switch for "+url, func() bool { return streamPorts(sw) == 1 && streamPorts(sw2) == 1 })
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Dial %s after cancel: %v", url, err)
		}
		porttest.WaitFor(t, "the ports gone", func() bool { return streamPorts(sw) == 0 && streamPorts(sw2) == 0 })
	}
	if n := hooks.count(msg); n != 4 {
		t.Errorf("%d refusals logged in all, want 4 (none for another switch's listeners)", n)
	}

	// A closed listener is no longer the switch's: its path may be
	// another server's.
	unixL.Close()
	conns := porttest.StreamServer(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Dial(ctx, "unix://"+path, DialConfig{Logger: log}, sw) }()
	select {
	case c := <-conns:
		porttest.WaitFor(t, "the port to a server at a closed listener's path", func() bool { return streamPorts(sw) == 1 })
		c.Close()
	case err := <-errc:
		t.Errorf("Dial to a server at a closed listener's path: %v", err)
	case <-time.After(10 * time.Second):
		t.Error("Dial to a server at a closed listener's path did not connect")
	}
	cancel()
	<-errc
}

func TestTCPReaches(t *testing.T) {
	addr := func(s string) *net.TCPAddr {
		a, err := net.ResolveTCPAddr("tcp", s)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	for _, c := range []struct {
		listener, remote, local string
		want                    bool
	}{
		{"127.0.0.1:5599", "127.0.0.1:5599", "127.0.0.1:40000", true},
		{"127.0.0.1:5599", "127.0.0.1:5598", "127.0.0.1:40000", false},
		{"127.0.0.1:5599", "127.0.0.2:5599", "127.0.0.1:40000", false},
		{"[::]:5599", "127.0.0.1:5599", "127.0.0.1:40000", true},
		{"[::]:5599", "[::1]:5599", "[::1]:40000", true},
		{"[::]:5599", "198.18.0.5:5599", "198.18.0.5:40000", true},  // an address of this host
		{"[::]:5599", "198.18.0.5:5599", "198.18.0.9:40000", false}, // another host
		{"0.0.0.0:5599", "127.0.0.1:5599", "127.0.0.1:40000", true},
		{"0.0.0.0:5599", "[::1]:5599", "[::1]:40000", false}, // an IPv4-only wildcard
		{"[::1]:5599", "[::1]:5599", "[::1]:40000", true},
		{"[::1]:5599", "127.0.0.1:5599", "127.0.0.1:40000", false},
	} {
		if got := tcpReaches(addr(c.listener), addr(c.remote), addr(c.local)); got != c.want {
			t.Errorf("listener %s, connection %s -> %s: %v, want %v", c.listener, c.local, c.remote, got, c.want)
		}
	}
}
