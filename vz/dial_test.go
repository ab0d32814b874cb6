//go:build unix

package vz

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/dgram"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// fakeSwitch binds a unixgram socket as the switch's datagram listener.
func fakeSwitch(t *testing.T, dir string) (*net.UnixConn, string) {
	t.Helper()
	path := filepath.Join(dir, "sw.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, path
}

func recv(t *testing.T, c *net.UnixConn) ([]byte, *net.UnixAddr) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 70000)
	n, from, err := c.ReadFromUnix(b)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n], from
}

func TestDialHelloAndFrames(t *testing.T) {
	dir := porttest.SocketDir(t)
	sw, swPath := fakeSwitch(t, dir)
	local := filepath.Join(dir, "vm.sock")
	c, err := Dial(Config{Switch: swPath, Local: local})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.LocalPath() != local {
		t.Errorf("LocalPath = %q, want %q", c.LocalPath(), local)
	}

	hello, from := recv(t, sw)
	if string(hello) != Hello || from == nil || from.Name != local {
		t.Fatalf("switch got %q from %v, want %q from %s", hello, from, Hello, local)
	}

	// Switch to VM: the learned address reaches the socket the VM holds.
	frame := bytes.Repeat([]byte{0xab}, 1514)
	if _, err := sw.WriteToUnix(frame, from); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2000)
	n, err := c.File().Read(got)
	if err != nil || !bytes.Equal(got[:n], frame) {
		t.Fatalf("VM read %d bytes, %v; want the 1514-byte frame", n, err)
	}
	// VM to switch: one datagram per frame.
	if _, err := c.File().Write(frame[:60]); err != nil {
		t.Fatal(err)
	}
	if b, _ := recv(t, sw); !bytes.Equal(b, frame[:60]) {
		t.Fatalf("switch got %d bytes, want the 60-byte frame", len(b))
	}

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
	if _, err := os.Lstat(local); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("local socket still there after Close: %v", err)
	}
}

func TestDialNoHelloAndTempPath(t *testing.T) {
	dir := porttest.SocketDir(t)
	sw, swPath := fakeSwitch(t, dir)
	t.Setenv("TMPDIR", dir)
	c, err := Dial(Config{Switch: swPath, NoHello: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if filepath.Dir(c.LocalPath()) != dir || !strings.HasPrefix(filepath.Base(c.LocalPath()), "tapswitch-vz-") {
		t.Errorf("LocalPath = %q, want tapswitch-vz-* in %s", c.LocalPath(), dir)
	}
	if _, err := c.File().Write(make([]byte, 60)); err != nil {
		t.Fatal(err)
	}
	if b, _ := recv(t, sw); len(b) != 60 {
		t.Fatalf("first datagram is %d bytes, want the 60-byte frame (no hello)", len(b))
	}
}

// TestDialRelativeLocal: a relative Config.Local is bound as an absolute
// path, so the switch sees a sender it can answer (it drops senders bound
// to relative paths).
func TestDialRelativeLocal(t *testing.T) {
	dir := porttest.SocketDir(t)
	sw, swPath := fakeSwitch(t, dir)
	t.Chdir(dir)
	c, err := Dial(Config{Switch: swPath, Local: "vm.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !filepath.IsAbs(c.LocalPath()) || filepath.Base(c.LocalPath()) != "vm.sock" {
		t.Errorf("LocalPath = %q, want an absolute path to vm.sock", c.LocalPath())
	}
	if _, from := recv(t, sw); from == nil || from.Name != c.LocalPath() {
		t.Errorf("hello from %v, want from %s", from, c.LocalPath())
	}
}

func TestDialBuffers(t *testing.T) {
	dir := porttest.SocketDir(t)
	_, swPath := fakeSwitch(t, dir)
	c, err := Dial(Config{Switch: swPath, Local: filepath.Join(dir, "vm.sock")})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc, err := c.File().SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var snd, rcv int
	rc.Control(func(fd uintptr) {
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	})
	// Linux caps the sizes at net.core.[wr]mem_max and reports twice what
	// it grants; macOS grants up to kern.ipc.maxsockbuf (8 MiB).
	wantSnd, wantRcv := DefaultSendBuffer, DefaultReceiveBuffer
	if runtime.GOOS == "linux" {
		wantSnd = min(wantSnd, sysctl(t, "/proc/sys/net/core/wmem_max"))
		wantRcv = min(wantRcv, sysctl(t, "/proc/sys/net/core/rmem_max"))
	}
	if snd < wantSnd || rcv < wantRcv {
		t.Errorf("SO_SNDBUF %d, SO_RCVBUF %d; want at least %d and %d", snd, rcv, wantSnd, wantRcv)
	}
}

func sysctl(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestDialStaleAndBusyLocal(t *testing.T) {
	dir := porttest.SocketDir(t)
	_, swPath := fakeSwitch(t, dir)
	local := filepath.Join(dir, "vm.sock")

	// A socket file nobody is bound to, as a crashed VM leaves behind.
	stale, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: local, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	stale.Close()
	c, err := Dial(Config{Switch: swPath, Local: local})
	if err != nil {
		t.Fatalf("Dial over a stale socket: %v", err)
	}
	// The same path while c holds it.
	if _, err := Dial(Config{Switch: swPath, Local: local}); !errors.Is(err, unix.EADDRINUSE) {
		t.Errorf("Dial on a path in use = %v, want EADDRINUSE", err)
	}
	c.Close()
}

func TestDialErrors(t *testing.T) {
	dir := porttest.SocketDir(t)
	streamPath := filepath.Join(dir, "stream.sock")
	l, err := net.Listen("unix", streamPath)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	long := "/" + strings.Repeat("x", 120)
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no switch", Config{}, "no switch socket"},
		{"missing switch", Config{Switch: filepath.Join(dir, "none.sock"), Local: filepath.Join(dir, "a.sock")}, "is `tapswitch serve"},
		{"stream switch", Config{Switch: streamPath, Local: filepath.Join(dir, "b.sock")}, "listen with unixgram://"},
		{"long local", Config{Switch: streamPath, Local: long}, "at most 103"},
		{"buffers", Config{Switch: streamPath, SendBuffer: 1 << 20, ReceiveBuffer: 1 << 20}, "at least twice"},
		{"mtu low", Config{Switch: streamPath, MTU: 1000}, "MTU 1000"},
		{"mtu high", Config{Switch: streamPath, MTU: 70000}, "MTU 70000"},
		// 65535+14 bytes is over the switch's largest frame: it counted
		// every full-size frame as too_long.
		{"mtu over max frame", Config{Switch: streamPath, MTU: 65535}, "MTU 65535 outside 1500 to 65521"},
		{"mtu one over", Config{Switch: streamPath, MTU: MaxMTU + 1}, "MTU 65522"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(tc.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("Dial succeeded, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Dial error %q, want it to contain %q", err, tc.want)
			}
		})
	}
	// A failed Dial leaves no socket file behind.
	for _, n := range []string{"a.sock", "b.sock"} {
		if _, err := os.Lstat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind: %v", n, err)
		}
	}
}

// TestDialMaxMTUFrame: a VM at MaxMTU sends frames of MaxMTU+14 bytes,
// which a datagram listener with its default largest frame takes whole.
// (Config.MTU allowed 65535, whose full-size frames the switch counted as
// too_long.)
func TestDialMaxMTUFrame(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	path := filepath.Join(porttest.SocketDir(t), "sw.sock")
	l, err := dgram.Listen(context.Background(), "unixgram://"+path, dgram.Config{}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := Dial(Config{Switch: path, MTU: MaxMTU})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := make([]byte, MaxMTU+14)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1, 0x88, 0xb5})
	if _, err := c.File().Write(frame); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "the VM's frame", func() bool {
		ps := sw.Ports()
		return len(ps) == 1 && ps[0].Stats().RxFrames == 1
	})
	if st := l.Stats(); st.TooLong != 0 {
		t.Errorf("listener counted %d datagrams too long", st.TooLong)
	}
	if d := sw.Ports()[0].Stats().Drops[vswitch.DropTooLong]; d != 0 {
		t.Errorf("port counted %d frames too long", d)
	}
}

// TestReconnectAfterSwitchRestart: when the switch's socket is replaced (the
// switch restarted), the Conn connects to the new one and says Hello, and
// frames flow both ways again; the VM's socket stayed connected to the old
// socket, and every send failed until the VM restarted.
func TestReconnectAfterSwitchRestart(t *testing.T) {
	dir := porttest.SocketDir(t)
	sw, swPath := fakeSwitch(t, dir)
	c, err := Dial(Config{Switch: swPath, Local: filepath.Join(dir, "vm.sock"), Reconnect: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if hello, _ := recv(t, sw); string(hello) != Hello {
		t.Fatalf("first datagram %q", hello)
	}
	time.Sleep(100 * time.Millisecond) // checks of an unchanged switch: no reconnect
	if n := c.Reconnects(); n != 0 {
		t.Fatalf("%d reconnects to the same switch", n)
	}

	sw.Close()
	os.Remove(swPath)
	if _, err := c.File().Write([]byte("frame to a switch that is gone")); err == nil {
		t.Error("a write with the switch gone succeeded")
	}
	sw2, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: swPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sw2.Close()
	hello, from := recv(t, sw2)
	if string(hello) != Hello || from == nil || from.Name != c.LocalPath() {
		t.Fatalf("new switch got %q from %v, want %q from %s", hello, from, Hello, c.LocalPath())
	}
	porttest.WaitFor(t, "Reconnects to count it", func() bool { return c.Reconnects() == 1 })
	frame := porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, nil)
	if _, err := c.File().Write(frame); err != nil {
		t.Fatalf("write after the reconnect: %v", err)
	}
	if got, _ := recv(t, sw2); !bytes.Equal(got, frame) {
		t.Fatalf("new switch got %x", got)
	}
	if _, err := sw2.WriteToUnix(frame, &net.UnixAddr{Name: c.LocalPath(), Net: "unixgram"}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100)
	c.File().SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.File().Read(got); err != nil || !bytes.Equal(got[:n], frame) {
		t.Fatalf("VM read %x, %v", got[:n], err)
	}
}

// TestReconnectOff: a negative Config.Reconnect leaves the socket alone.
func TestReconnectOff(t *testing.T) {
	dir := porttest.SocketDir(t)
	sw, swPath := fakeSwitch(t, dir)
	c, err := Dial(Config{Switch: swPath, Local: filepath.Join(dir, "vm.sock"), Reconnect: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	recv(t, sw)
	sw.Close()
	os.Remove(swPath)
	sw2, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: swPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer sw2.Close()
	sw2.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := sw2.ReadFromUnix(make([]byte, 100)); err == nil {
		t.Fatalf("the new switch got %d bytes with Reconnect off", n)
	}
}
