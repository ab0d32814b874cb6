package dgram

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/listen"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// nobody is the user the tests' unprivileged senders run as.
const nobody = 65534

// boundAs binds a unixgram socket at path and sends frame to the
// listener at to, both as user uid, on a thread of its own that ends with
// it (the credentials of one thread only are changed, with raw system
// calls: Go's Setresuid would change every thread's). The caller must be
// root.
func boundAs(t *testing.T, uid int, path, to string, frame []byte) *net.UnixConn {
	t.Helper()
	return sendAs(t, uid, path, to, frame, 1)
}

// sendAs is boundAs sending frame n times.
func sendAs(t *testing.T, uid int, path, to string, frame []byte, n int) *net.UnixConn {
	t.Helper()
	type result struct {
		c   *net.UnixConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		for _, call := range []uintptr{unix.SYS_SETRESGID, unix.SYS_SETRESUID} {
			if _, _, e := unix.RawSyscall(call, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
				done <- result{err: e}
				return
			}
		}
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		for i := 0; err == nil && i < n; i++ {
			_, err = c.WriteTo(frame, &net.UnixAddr{Name: to, Net: "unixgram"})
		}
		done <- result{c, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("bind %s and send as uid %d: %v", path, uid, r.err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r.c
}

// TestSwappedPathNotFollowed: a peer that is not root or the switch's
// user, and replaces its socket file after its first datagram with a
// symlink to another program's socket or to the switch's own, gets nothing
// sent there. The switch used to send to the path afresh every time: it
// delivered the peer's flood to the other socket (as root: to sockets the
// peer may not write), and to its own socket it looped every frame for
// ever.
func TestSwappedPathNotFollowed(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sends as another user: needs root")
	}
	e := setup(t, "unixgram", Config{Mode: 0o666})
	victimPath := filepath.Join(e.dir, "victim.sock")
	victim, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: victimPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	att := filepath.Join(e.dir, "att")
	if err := os.Chmod(e.dir, 0o711); err != nil { // nobody reaches att
		t.Fatal(err)
	}
	if err := os.Mkdir(att, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(att, 0o777); err != nil { // past the umask
		t.Fatal(err)
	}
	sw := e.l.Addr().Address
	toVictim := boundAs(t, nobody, filepath.Join(att, "a.sock"), sw, frame(porttest.Broadcast, porttest.MAC(1), "a"))
	toSelf := boundAs(t, nobody, filepath.Join(att, "c.sock"), sw, frame(porttest.Broadcast, porttest.MAC(3), "c"))
	b := e.vm("b.sock")
	porttest.WaitFor(t, "two peers", func() bool { return e.ports() == 2 })
	for _, s := range []struct {
		c      *net.UnixConn
		target string
	}{{toVictim, victimPath}, {toSelf, sw}} {
		path := s.c.LocalAddr().String()
		s.c.Close()
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

// TestPinPeer: the socket a peer that is not root or the switch's user is
// sent to must be a socket, owned by the sender, not a symlink, and not
// the listener's own; the path returned reaches that socket. Root and the
// switch's user are sent to by path.
func TestPinPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chowns files to other users: needs root")
	}
	dir := porttest.SocketDir(t)
	self, f, err := listen.ListenUnixgram(filepath.Join(dir, "sw.sock"), 0, nil)
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
	const owner, other = 4242, 4343
	if err := os.Chown(peerPath, owner, owner); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(peerPath, filepath.Join(dir, "link.sock")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(dir, "file"), owner, owner); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dir, filepath.Join(dir, "dirlink")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		what, path string
		src        source
		want       string // an error containing this, "/proc" for a pinned socket, else the path returned
	}{
		{"the sender's socket", peerPath, source{uid: owner, cred: true}, "/proc"},
		{"root, from another's socket", peerPath, source{uid: 0, cred: true}, peerPath},
		{"another user's socket", peerPath, source{uid: other, cred: true}, "owned by uid"},
		{"no credentials", peerPath, source{}, "no sender credentials"},
		{"a symlink", filepath.Join(dir, "link.sock"), source{uid: owner, cred: true}, "not a socket"},
		{"not a socket", filepath.Join(dir, "file"), source{uid: owner, cred: true}, "not a socket"},
		{"the listener's own socket", filepath.Join(dir, "dirlink", "sw.sock"), source{uid: owner, cred: true}, "own socket"},
		{"gone", filepath.Join(dir, "none.sock"), source{uid: owner, cred: true}, "no such file"},
	} {
		dst, keep, err := pinPeer(tc.path, &tc.src, f)
		switch {
		case tc.want == peerPath:
			if err != nil || dst != peerPath || keep != nil {
				t.Errorf("%s: pinPeer = %q, %v, %v; want the path itself", tc.what, dst, keep, err)
			}
			continue
		case tc.want != "/proc":
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: pinPeer = %q, %v; want an error saying %q", tc.what, dst, err, tc.want)
			}
			continue
		case err != nil:
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

// TestPathTakenByAnotherUser: a datagram from a peer's path but another
// user is never the old peer's: one from a user outside --allow-uid is
// refused and leaves the old peer alone (it went through the old peer's
// port, and then, for a while, evicted it); one from an admitted user
// takes the path over once the old peer's pinned socket is closed.
func TestPathTakenByAnotherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sends as other users: needs root")
	}
	const alice, bob = 4242, 4343
	e := setup(t, "unixgram", Config{Mode: 0o666, AllowUIDs: []int{0, alice, bob}})
	if err := os.Chmod(e.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	sw := e.l.Addr().Address
	b := e.vm("b.sock") // root
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "b's peer", func() bool { return e.ports() == 1 })

	// Alice's VM (pinned), then its socket closed and its file removed.
	path := filepath.Join(e.dir, "vm.sock")
	c := boundAs(t, alice, path, sw, frame(porttest.Broadcast, porttest.MAC(1), "alice"))
	b.expect(frame(porttest.Broadcast, porttest.MAC(1), "alice"))
	c.Close()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// nobody binds the path: refused, not forwarded, alice's peer kept.
	boundAs(t, nobody, path, sw, frame(porttest.MAC(2), porttest.MAC(1), "from nobody"))
	porttest.WaitFor(t, "nobody refused", func() bool { return e.l.Stats().Refused == 1 })
	b.expectNothing()
	if st := e.l.Stats(); st.Peers != 2 || st.PeersGone != 0 {
		t.Errorf("after nobody: %d peers, %d gone; want alice's and b's, none gone", st.Peers, st.PeersGone)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	// Bob, admitted, binds it: alice's socket is closed, so bob takes over.
	bobc := boundAs(t, bob, path, sw, frame(porttest.Broadcast, porttest.MAC(3), "bob"))
	b.expect(frame(porttest.Broadcast, porttest.MAC(3), "bob"))
	if st := e.l.Stats(); st.Peers != 2 || st.PeersGone != 1 {
		t.Errorf("after bob: %d peers, %d gone; want bob's and b's, alice's gone", st.Peers, st.PeersGone)
	}
	toBob := frame(porttest.MAC(3), porttest.MAC(2), "for bob")
	b.send(toBob)
	bobc.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 100)
	if n, err := bobc.Read(got); err != nil || !bytes.Equal(got[:n], toBob) {
		t.Errorf("bob's socket got %q, %v; want the frame for bob", got[:n], err)
	}
}

// TestRefusedSendersKeepNoDescriptor: a sender refused a port (the switch
// is full) after its socket was opened to pin it leaves no descriptor
// open; each refused datagram used to leave one for the garbage collector.
func TestRefusedSendersKeepNoDescriptor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sends as another user: needs root")
	}
	dir := porttest.SocketDir(t)
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	sw := vswitch.New(vswitch.Config{Logger: logger(), MaxPorts: 1})
	defer sw.Close()
	l, err := Listen(context.Background(), "unixgram://"+filepath.Join(dir, "sw.sock"), Config{Logger: logger(), Mode: 0o666}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e := &env{t: t, sw: sw, l: l, dir: dir}
	e.vm("first.sock").send(frame(porttest.Broadcast, porttest.MAC(1), "first"))
	porttest.WaitFor(t, "the one port", func() bool { return e.ports() == 1 })
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no finalizer closes them meanwhile
	before := openFDs(t)
	const n = 200
	sendAs(t, nobody, filepath.Join(dir, "late.sock"), l.Addr().Address, frame(porttest.Broadcast, porttest.MAC(2), "late"), n)
	porttest.WaitFor(t, "the datagrams refused", func() bool { return l.Stats().Refused == n })
	if after := openFDs(t); after > before+5 {
		t.Errorf("%d descriptors open after %d refused datagrams, %d before", after, n, before)
	}
}

// TestGonePinnedPeersKeepNoDescriptor: a pinned peer (another user's)
// that leaves closes the descriptor that pinned its socket. It was left
// to the garbage collector: with a large heap, thousands of departed VMs'
// descriptors piled up until new senders were refused for want of them.
func TestGonePinnedPeersKeepNoDescriptor(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sends as another user: needs root")
	}
	e := setup(t, "unixgram", Config{Mode: 0o666})
	if err := os.Chmod(e.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	dir, l := e.dir, e.l
	first := e.vm("first.sock")
	first.send(frame(porttest.Broadcast, porttest.MAC(1), "first"))
	porttest.WaitFor(t, "the first port", func() bool { return e.ports() == 1 })
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // no finalizer closes them meanwhile
	before := openFDs(t)
	const n = 50
	for i := range n {
		c := sendAs(t, nobody, filepath.Join(dir, fmt.Sprintf("vm%d.sock", i)), l.Addr().Address, frame(porttest.Broadcast, porttest.MAC(2+i), "hello"), 1)
		porttest.WaitFor(t, "the peer's port", func() bool { return e.ports() == 2 })
		c.Close()
		// A flood finds the peer's socket closed and removes it.
		first.send(frame(porttest.Broadcast, porttest.MAC(1), "flood"))
		porttest.WaitFor(t, "the peer gone", func() bool { return e.ports() == 1 })
	}
	if st := l.Stats(); st.PeersAdded != n+1 {
		t.Fatalf("%d peers added, want %d: %d pinned ones and the first", st.PeersAdded, n+1, n)
	}
	// Ports' goroutines end after the port is gone.
	porttest.WaitFor(t, "the descriptors closed", func() bool { return openFDs(t) <= before+5 })
}

// TestProbeClosedPinnedPeer: a pinned peer closed (its port detached)
// while its VM's socket stays open is not reported gone by a probe that
// comes after: its closed pin read as a gone socket.
func TestProbeClosedPinnedPeer(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sends as another user: needs root")
	}
	e := setup(t, "unixgram", Config{Mode: 0o666})
	if err := os.Chmod(e.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	dir, l := e.dir, e.l
	sendAs(t, nobody, filepath.Join(dir, "b.sock"), l.Addr().Address, frame(porttest.Broadcast, porttest.MAC(2), "b"), 1)
	porttest.WaitFor(t, "the peer's port", func() bool { return e.ports() == 1 })
	var p *peer
	l.mu.Lock()
	for _, q := range l.peers {
		p = q
	}
	l.mu.Unlock()
	if p == nil || p.pin == nil {
		t.Fatalf("peer %v not pinned", p)
	}
	p.Close()
	gone := l.Stats().PeersGone
	p.Probe()
	if now := l.Stats().PeersGone; now != gone {
		t.Errorf("a probe of the closed peer counted it gone (%d to %d), its socket open", gone, now)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestNameRetakenGetsNothing: once a peer's socket is closed, another
// socket bound to its name gets none of the peer's frames, and the peer is
// removed at the first send. With an abstract name (no file, no
// permissions) any user could bind it; with a path, whoever may write the
// directory. Peers sent to by name (abstract ones; root's and the switch's
// own user's, which are not pinned) used to have their unicast frames and
// floods delivered to the new socket, a stranger's included.
func TestNameRetakenGetsNothing(t *testing.T) {
	for _, how := range []string{"abstract", "path"} {
		t.Run(how, func(t *testing.T) {
			e := setup(t, "unixgram", Config{})
			// A directory such as /tmp.
			if err := os.Chmod(e.dir, 0o1777); err != nil {
				t.Fatal(err)
			}
			name := filepath.Join(e.dir, "vm.sock")
			if how == "abstract" {
				name = "@" + filepath.Base(e.dir) + "-vm"
			}
			to := e.l.Addr().Address
			vm := boundAs(t, 0, name, to, frame(porttest.Broadcast, porttest.MAC(1), "hello"))
			b := e.vm("b.sock")
			b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
			porttest.WaitFor(t, "two peers", func() bool { return e.ports() == 2 })

			vm.Close()
			if how == "path" {
				os.Remove(name)
			}
			// Another user binds the name and sends nothing.
			thief := sendAs(t, nobody, name, "", nil, 0)
			b.send(frame(porttest.MAC(1), porttest.MAC(2), "for the vm"))
			b.send(frame(porttest.Broadcast, porttest.MAC(2), "for all"))
			porttest.WaitFor(t, "the closed peer's removal", func() bool { return e.ports() == 1 })
			thief.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := thief.ReadFrom(make([]byte, 2000)); err == nil {
				t.Fatalf("the socket that took the peer's name got a %d-byte frame", n)
			}
			if st := e.l.Stats(); st.PeersGone != 1 {
				t.Errorf("peers gone %d, want 1", st.PeersGone)
			}
		})
	}
}

// TestGoneSenderRefused: a datagram from a socket whose file is already
// removed makes no peer (no answer could reach it); each such datagram
// used to add a port that the next frame sent to it removed, with three
// log lines per frame.
func TestGoneSenderRefused(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	a := e.vm("a.sock")
	os.Remove(a.c.LocalAddr().String())
	for range 3 {
		a.send(frame(porttest.Broadcast, porttest.MAC(1), "from nowhere"))
	}
	porttest.WaitFor(t, "the datagrams refused", func() bool { return e.l.Stats().Refused == 3 })
	if st := e.l.Stats(); st.PeersAdded != 0 || e.ports() != 0 {
		t.Errorf("peers added %d, ports %d; want none", st.PeersAdded, e.ports())
	}
}

// TestFullLengthPath: a sender bound to a path of the full 108 bytes
// (no room for a NUL, which Linux takes) is a peer like any other; the
// connection of its port's socket to it was refused (EINVAL) by x/sys.
func TestFullLengthPath(t *testing.T) {
	e := setup(t, "unixgram", Config{})
	var sa unix.RawSockaddrUnix
	// In e.dir, removed at the end (filepath.Join would drop the
	// separator and leave the socket file next to it in the temp dir).
	name := e.dir + string(filepath.Separator)
	name += strings.Repeat("x", len(sa.Path)-len(name))
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	open := true
	defer func() {
		if open {
			unix.Close(fd)
		}
	}()
	sa.Family = unix.AF_UNIX
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&sa.Path[0])), len(sa.Path)), name)
	if _, _, e := unix.Syscall(unix.SYS_BIND, uintptr(fd), uintptr(unsafe.Pointer(&sa)), unsafe.Sizeof(sa)); e != 0 {
		t.Fatalf("bind a %d-byte path: %v", len(name), e)
	}
	if err := unix.Sendto(fd, frame(porttest.Broadcast, porttest.MAC(1), "long"), 0, &unix.SockaddrUnix{Name: e.l.Addr().Address}); err != nil {
		t.Fatal(err)
	}
	b := e.vm("b.sock")
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "to the long one"))
	porttest.WaitFor(t, "both peers", func() bool { return e.ports() == 2 })
	unix.SetNonblock(fd, false)
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 100)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil || !bytes.Equal(buf[:n], frame(porttest.Broadcast, porttest.MAC(2), "to the long one")) {
		t.Fatalf("the peer on a %d-byte path got %q, %v", len(name), buf[:max(n, 0)], err)
	}
	// Asked (Probe), the peer is there, and once its socket closes, gone
	// (the probe's connect was refused as EINVAL: never gone).
	e.l.mu.Lock()
	p := e.l.peers[peerKey{path: name}]
	e.l.mu.Unlock()
	if p == nil || p.socketGone() {
		t.Fatalf("the peer on the long path: %v, gone %v; want it there", p, p != nil && p.socketGone())
	}
	unix.Close(fd)
	open = false
	if !p.socketGone() {
		t.Error("the peer on the long path is not seen gone once its socket closed")
	}
}

// TestPathOfLiveVMFromAnotherMountNS: a sender of another user that
// reports a live unpinned VM's path (its own socket there, in a mount
// namespace of its own with a tmpfs over the directory, which an
// unprivileged user namespace allows) is refused, and the VM keeps its
// port; the VM's port was removed for it, one datagram a second kept the
// VM off the switch.
func TestPathOfLiveVMFromAnotherMountNS(t *testing.T) {
	e := setup(t, "unixgram", Config{Mode: 0o666})
	if err := os.Chmod(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	vmDir := filepath.Join(e.dir, "vms")
	if err := os.Mkdir(vmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(vmDir, "vm.sock")
	vm, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	sw := e.l.Addr().Address
	if _, err := vm.WriteTo(frame(porttest.Broadcast, porttest.MAC(1), "root vm"), &net.UnixAddr{Name: sw, Net: "unixgram"}); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the VM's peer", func() bool { return e.ports() == 1 })

	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		err := unix.Unshare(unix.CLONE_NEWNS)
		if err == nil {
			err = unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		}
		if err == nil {
			err = unix.Mount("tmpfs", vmDir, "tmpfs", 0, "mode=0777")
		}
		for _, call := range []uintptr{unix.SYS_SETRESGID, unix.SYS_SETRESUID} {
			if err == nil {
				if _, _, e := unix.RawSyscall(call, nobody, nobody, nobody); e != 0 {
					err = e
				}
			}
		}
		if err != nil {
			done <- err
			return
		}
		c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
		if err == nil {
			_, err = c.WriteTo(frame(porttest.Broadcast, porttest.MAC(2), "the vm's path"), &net.UnixAddr{Name: sw, Net: "unixgram"})
			c.Close()
		}
		done <- err
	}()
	if err := <-done; err != nil {
		t.Fatalf("send as nobody from a mount namespace of its own: %v", err)
	}
	porttest.WaitFor(t, "the datagram refused", func() bool { return e.l.Stats().Refused == 1 })
	if st := e.l.Stats(); st.Peers != 1 || st.PeersGone != 0 {
		t.Errorf("%d peers, %d gone; want the VM's kept", st.Peers, st.PeersGone)
	}
}

// TestReconnectNotElsewhere: a root VM's port reconnects to a new socket
// at the VM's path only in the directory the path led to when the peer
// was added. A directory replaced by a symlink to another with a root
// socket of the same name (a user who may rename the directory above could
// do that), or a ".." in the path through a directory replaced so, leads
// elsewhere, and the VM's frames must not follow it.
func TestReconnectNotElsewhere(t *testing.T) {
	for _, c := range []struct {
		name string
		// dirs are made under the test's directory; path is the VM's
		// socket, not cleaned (the kernel resolves it); swap replaces a
		// directory of it so that it leads to other/x.sock.
		dirs []string
		path string
		swap func(dir string) error
	}{
		{"replaced directory", []string{"vm", "other"}, "vm/x.sock", func(dir string) error {
			if err := os.Rename(filepath.Join(dir, "vm"), filepath.Join(dir, "vm.old")); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(dir, "other"), filepath.Join(dir, "vm"))
		}},
		{"dot-dot", []string{"vm/sub", "other/sub2"}, "vm/sub/../x.sock", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "vm", "sub")); err != nil {
				return err
			}
			return os.Symlink(filepath.Join(dir, "other", "sub2"), filepath.Join(dir, "vm", "sub"))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := setup(t, "unixgram", Config{})
			for _, d := range c.dirs {
				if err := os.MkdirAll(filepath.Join(e.dir, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			to := &net.UnixAddr{Name: e.l.Addr().Address, Net: "unixgram"}
			bind := func(path string) *net.UnixConn {
				conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { conn.Close() })
				return conn
			}
			vm := bind(e.dir + "/" + c.path)
			victim := bind(filepath.Join(e.dir, "other", "x.sock"))
			if _, err := vm.WriteTo(frame(porttest.Broadcast, porttest.MAC(1), "vm"), to); err != nil {
				t.Fatal(err)
			}
			b := e.vm("b.sock")
			b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
			porttest.WaitFor(t, "two peers", func() bool { return e.ports() == 2 })
			vm.Close()
			if err := c.swap(e.dir); err != nil {
				t.Fatal(err)
			}
			b.send(frame(porttest.MAC(1), porttest.MAC(2), "for the vm"))
			porttest.WaitFor(t, "the VM's peer gone", func() bool { return e.ports() == 1 })
			victim.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := victim.ReadFrom(make([]byte, 100)); err == nil {
				t.Fatalf("the socket in the other directory got a %d-byte frame for the VM", n)
			}
		})
	}
}

// TestAbstractNameOfOtherUserRefused: a sender of another user bound to an
// abstract name is refused. Such a name has no owner, and a sender in a
// network namespace of its own could name another program's socket in the
// switch's, which then got the switch's frames, sent as root.
func TestAbstractNameOfOtherUserRefused(t *testing.T) {
	e := setup(t, "unixgram", Config{Mode: 0o666})
	if err := os.Chmod(e.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sendAs(t, nobody, "@"+filepath.Base(e.dir)+"-nobody", e.l.Addr().Address, frame(porttest.Broadcast, porttest.MAC(1), "hi"), 1)
	porttest.WaitFor(t, "the datagram refused", func() bool { return e.l.Stats().Refused == 1 })
	if n := e.ports(); n != 0 {
		t.Errorf("%d ports, want none", n)
	}
}

// TestLivePinnedPathKept: a pinned VM (not root's) whose socket file was
// removed while its socket stays open keeps its port: another admitted
// user binding the path anew is refused, not given the VM's port.
func TestLivePinnedPathKept(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sends as other users: needs root")
	}
	const alice, bob = 4242, 4343
	e := setup(t, "unixgram", Config{Mode: 0o666, AllowUIDs: []int{0, alice, bob}})
	if err := os.Chmod(e.dir, 0o777); err != nil {
		t.Fatal(err)
	}
	sw := e.l.Addr().Address
	b := e.vm("b.sock")
	b.send(frame(porttest.Broadcast, porttest.MAC(2), "b"))
	porttest.WaitFor(t, "b's peer", func() bool { return e.ports() == 1 })
	path := filepath.Join(e.dir, "vm.sock")
	c := boundAs(t, alice, path, sw, frame(porttest.Broadcast, porttest.MAC(1), "alice"))
	defer c.Close()
	b.expect(frame(porttest.Broadcast, porttest.MAC(1), "alice"))
	if err := os.Remove(path); err != nil { // alice's socket stays open
		t.Fatal(err)
	}
	bc := boundAs(t, bob, path, sw, frame(porttest.Broadcast, porttest.MAC(3), "bob"))
	defer bc.Close()
	porttest.WaitFor(t, "bob refused", func() bool { return e.l.Stats().Refused == 1 })
	b.expectNothing()
	if st := e.l.Stats(); st.Peers != 2 || st.PeersGone != 0 {
		t.Errorf("%d peers, %d gone; want alice's live peer kept", st.Peers, st.PeersGone)
	}
}
