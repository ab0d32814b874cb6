package dgram

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestSwappedPathNotFollowed: a peer that replaces its socket file after
// its first datagram, with a symlink to another program's socket or to the
// switch's own, gets nothing sent there. The switch used to send to the
// path afresh every time: it delivered the peer's flood to the other
// socket (as root: to sockets the peer may not write), and to its own
// socket it looped every frame for ever.
func TestSwappedPathNotFollowed(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	victimPath := filepath.Join(e.dir, "victim.sock")
	victim, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: victimPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	toVictim, toSelf, b := e.vm("a.sock"), e.vm("c.sock"), e.vm("b.sock")
	toVictim.send(frame(porttest.Broadcast, porttest.MAC(1), "a"))
	toSelf.send(frame(porttest.Broadcast, porttest.MAC(3), "c"))
	porttest.WaitFor(t, "two peers", func() bool { return e.ports() == 2 })
	for _, s := range []struct {
		v      *vm
		target string
	}{{toVictim, victimPath}, {toSelf, e.l.Addr().Address}} {
		path := s.v.c.LocalAddr().String()
		s.v.c.Close()
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(s.target, path); err != nil {
			t.Fatal(err)
		}
	}

	// b's broadcasts are flooded to the two swapped peers: their sockets
	// are closed, so the sends fail and the peers go.
	for range 5 {
		b.send(frame(porttest.Broadcast, porttest.MAC(2), "flood"))
	}
	porttest.WaitFor(t, "the swapped peers removed", func() bool { return e.l.Stats().PeersGone == 2 })
	victim.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := victim.ReadFrom(make([]byte, 2048)); err == nil {
		t.Errorf("the other program's socket received a %d-byte datagram from the switch", n)
	}
	if st := e.l.Stats(); st.Datagrams > 10 {
		t.Errorf("the listener received %d datagrams for the 7 sent: frames loop through its own socket", st.Datagrams)
	}
}

// TestPinPeer: the socket a peer is sent to must be a socket, owned by the
// sender (unless root sent), not a symlink, and not the listener's own;
// the path returned reaches that socket.
func TestPinPeer(t *testing.T) {
	dir := porttest.SocketDir(t)
	self, f, err := listen.ListenUnixgram(filepath.Join(dir, "sw.sock"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	defer f.Remove()
	peerPath := filepath.Join(dir, "vm.sock")
	peer, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: peerPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	owner := uint32(os.Getuid())
	other := owner + 4242
	if err := os.Symlink(peerPath, filepath.Join(dir, "link.sock")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what, path string
		src        source
		want       string // an error containing this, or "" for none
	}{
		{"the sender's socket", peerPath, source{uid: owner, cred: true}, ""},
		{"root sending from another's socket", peerPath, source{uid: 0, cred: true}, ""},
		{"another user's socket", peerPath, source{uid: other, cred: true}, "owned by uid"},
		{"no credentials", peerPath, source{}, "no sender credentials"},
		{"a symlink", filepath.Join(dir, "link.sock"), source{uid: owner, cred: true}, "not a socket"},
		{"not a socket", filepath.Join(dir, "file"), source{uid: owner, cred: true}, "not a socket"},
		{"the listener's own socket", filepath.Join(dir, "dirlink", "sw.sock"), source{uid: owner, cred: true}, "own socket"},
		{"gone", filepath.Join(dir, "none.sock"), source{uid: owner, cred: true}, "no such file"},
	} {
		dst, keep, err := pinPeer(tc.path, &tc.src, f)
		if tc.want != "" {
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: pinPeer = %q, %v; want an error saying %q", tc.what, dst, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.what, err)
			continue
		}
		// What is sent to dst reaches the socket, whatever its path
		// names now.
		if !strings.HasPrefix(dst, "/proc/self/fd/") {
			t.Errorf("%s: send path %q, want /proc/self/fd/N", tc.what, dst)
		}
		if _, err := self.WriteTo([]byte(tc.what), &net.UnixAddr{Name: dst, Net: "unixgram"}); err != nil {
			t.Fatalf("%s: send to %s: %v", tc.what, dst, err)
		}
		peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 100)
		if n, _, err := peer.ReadFrom(b); err != nil || string(b[:n]) != tc.what {
			t.Errorf("%s: the socket got %q, %v", tc.what, b[:n], err)
		}
		keep.Close()
	}
}

// TestAllowUIDs: with allow lists, a unixgram sender is admitted by the
// user or group its datagram's credentials name, and any other is dropped
// and counted as refused (the lists applied to stream sockets only).
func TestAllowUIDs(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	for _, tc := range []struct {
		cfg   Config
		admit bool
	}{
		{Config{AllowUIDs: []int{uid + 4242}}, false},
		{Config{AllowUIDs: []int{uid + 4242}, AllowGIDs: []int{gid + 4242}}, false},
		{Config{AllowUIDs: []int{uid}}, true},
		{Config{AllowUIDs: []int{uid + 4242}, AllowGIDs: []int{gid}}, true},
	} {
		e := setup(t, "unixgram", tc.cfg)
		e.vm("a.sock").send(frame(porttest.Broadcast, porttest.MAC(1), "hi"))
		porttest.WaitFor(t, "the datagram handled", func() bool { st := e.l.Stats(); return st.Peers+int(st.Refused) == 1 })
		if st := e.l.Stats(); (st.Peers == 1) != tc.admit || (st.Refused == 1) == tc.admit {
			t.Errorf("uids %v gids %v, sender %d/%d: %d peers, %d refused; want admitted: %v",
				tc.cfg.AllowUIDs, tc.cfg.AllowGIDs, uid, gid, st.Peers, st.Refused, tc.admit)
		}
	}
}
