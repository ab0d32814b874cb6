package listen

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/switch/porttest"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Addr
		kind    string
		wantErr string
	}{
		{in: "unix:///run/x.sock", want: Addr{"unix", "/run/x.sock"}, kind: KindStream},
		{in: "unix:/run/x.sock", want: Addr{"unix", "/run/x.sock"}, kind: KindStream},
		{in: "unix:rel/x.sock", want: Addr{"unix", "rel/x.sock"}, kind: KindStream},
		{in: "unix:///run/100%25 x.sock", want: Addr{"unix", "/run/100% x.sock"}, kind: KindStream},
		{in: "unix:///run/a%3Fb%23c.sock", want: Addr{"unix", "/run/a?b#c.sock"}, kind: KindStream},
		{in: "unixgram:rel/100%25.sock", want: Addr{"unixgram", "rel/100%.sock"}, kind: KindDgram},
		{in: "unix:///run/100%.sock", wantErr: "invalid URL escape"},
		{in: "tcp://127.0.0.1:5555", want: Addr{"tcp", "127.0.0.1:5555"}, kind: KindStream},
		{in: "tcp://:5555", want: Addr{"tcp", ":5555"}, kind: KindStream},
		{in: "tcp://[::1]:5555", want: Addr{"tcp", "[::1]:5555"}, kind: KindStream},
		{in: "unixgram:///run/vz.sock", want: Addr{"unixgram", "/run/vz.sock"}, kind: KindDgram},
		{in: "udp://127.0.0.1:5556", want: Addr{"udp", "127.0.0.1:5556"}, kind: KindDgram},
		{in: "udp://127.0.0.1:5556/", want: Addr{"udp", "127.0.0.1:5556"}, kind: KindDgram},
		{in: "http://x", wantErr: "unsupported scheme"},
		{in: "/run/x.sock", wantErr: "missing scheme"},
		{in: "unix://run/x.sock", wantErr: "has host"},
		{in: "unix://", wantErr: "missing socket path"},
		{in: "tcp://127.0.0.1", wantErr: "want tcp://host:port"},
		{in: "tcp://127.0.0.1:", wantErr: "want tcp://host:port"},
		{in: "udp://h:1/path", wantErr: "want udp://host:port"},
		{in: "tcp://h:1?x=y", wantErr: "query"},
		{in: "unix:///x#frag", wantErr: "fragment"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want || got.Kind() != tt.kind {
				t.Fatalf("Parse(%q) = %+v (kind %q); want %+v (kind %q)", tt.in, got, got.Kind(), tt.want, tt.kind)
			}
			again, err := Parse(got.String())
			if err != nil || again != got {
				t.Fatalf("Parse(%q.String() = %q) = %+v, %v", tt.in, got.String(), again, err)
			}
		})
	}
	if _, err := Parse("ftp://x:1"); !errors.Is(err, ErrScheme) {
		t.Fatalf("Parse(ftp) error %v does not match ErrScheme", err)
	}
}

func TestListenUnixModeAndStale(t *testing.T) {
	path := filepath.Join(porttest.SocketDir(t), "s.sock")

	// A stale socket file: bound, then closed without unlinking.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("stale socket not left behind: %v", err)
	}

	l, f, err := ListenUnix(path, 0, nil)
	if err != nil {
		t.Fatalf("ListenUnix over stale socket: %v", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != DefaultMode || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket mode %v, want socket %v", fi.Mode(), DefaultMode)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want only the socket (temp dir left behind?)", len(entries))
	}

	// The listener works at the final path.
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial renamed socket: %v", err)
	}
	buf := make([]byte, 2)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()

	// A live socket is not replaced.
	if _, _, err := ListenUnix(path, 0, nil); !errors.Is(err, ErrInUse) {
		t.Fatalf("ListenUnix over live socket: %v, want ErrInUse", err)
	}
	if _, _, err := ListenUnixgram(path, 0, nil); !errors.Is(err, ErrInUse) {
		t.Fatalf("ListenUnixgram over live stream socket: %v, want ErrInUse", err)
	}

	l.Close()
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("closing the listener removed the socket file: %v", err)
	}
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("socket file still there after Remove: %v", err)
	}
	if err := f.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

func TestListenUnixRefusesNonSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ListenUnix(path, 0, nil); !errors.Is(err, ErrNotSocket) {
		t.Fatalf("ListenUnix over a regular file: %v, want ErrNotSocket", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("regular file was touched")
	}
}

func TestRemoveLeavesReplacedFile(t *testing.T) {
	path := filepath.Join(porttest.SocketDir(t), "g.sock")
	c, f, err := ListenUnixgram(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, _ := os.Lstat(path)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", fi.Mode().Perm())
	}
	// Someone else replaces the file; Remove must leave theirs alone.
	os.Remove(path)
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("Remove deleted a file it did not create: %v", err)
	}
}

// deepDir returns a directory deep enough that the private temp
// directory's path would exceed the limit while DIR/s does not.
func deepDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for len(dir) < MaxSocketPath-12 {
		dir = filepath.Join(dir, "dddddddd")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestListenUnixLongDirFallsBack(t *testing.T) {
	path := filepath.Join(deepDir(t), "s")
	if len(path) > MaxSocketPath {
		t.Skipf("temp dir too deep for this test: %d", len(path))
	}
	l, f, err := ListenUnix(path, 0, nil)
	if err != nil {
		t.Fatalf("ListenUnix with long path: %v", err)
	}
	defer l.Close()
	defer f.Remove()
	fi, _ := os.Lstat(path)
	if fi.Mode().Perm() != DefaultMode {
		t.Fatalf("mode %v", fi.Mode())
	}
}

// TestListenUnixLongSharedDir: the fallback (bind at the path, then
// chmod it) is refused in a directory others may write and rename in,
// where the chmod could be made to follow a symlink put in the socket's
// place; a sticky one (/tmp) is fine.
func TestListenUnixLongSharedDir(t *testing.T) {
	dir := deepDir(t)
	path := filepath.Join(dir, "s")
	for _, c := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o777, false}, {0o777 | os.ModeSticky, true}} {
		if err := os.Chmod(dir, c.mode); err != nil {
			t.Fatal(err)
		}
		l, f, err := ListenUnix(path, 0, nil)
		if err == nil {
			l.Close()
			f.Remove()
		}
		if ok := err == nil; ok != c.ok || !ok && !strings.Contains(err.Error(), "writable by others and not sticky") {
			t.Errorf("directory mode %v: %v", c.mode, err)
		}
	}
	// At the limit, the same every time: whether the private directory
	// fits went by the length of its random name.
	base := t.TempDir()
	for _, c := range []struct {
		dirLen int
		ok     bool
	}{{79, true}, {80, false}} {
		dir := filepath.Join(base, strings.Repeat("d", c.dirLen-len(base)-1))
		if err := os.Mkdir(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		for range 20 {
			l, f, err := ListenUnix(filepath.Join(dir, "s.sock"), 0, nil)
			if err == nil {
				l.Close()
				f.Remove()
			}
			if ok := err == nil; ok != c.ok {
				t.Fatalf("directory of %d bytes, mode 0777: %v, want ok=%v", len(dir), err, c.ok)
			}
		}
	}
}

func TestListenNetwork(t *testing.T) {
	for url, want := range map[string]string{
		"tcp://0.0.0.0:5555":   "tcp4",
		"udp://127.0.0.1:5556": "udp4",
		"tcp://[::]:5555":      "tcp",
		"udp://[::1]:5556":     "udp",
		"tcp://:5555":          "tcp",
		"tcp://localhost:5555": "tcp",
		"unix:///run/t.sock":   "unix",
	} {
		a, err := Parse(url)
		if err != nil {
			t.Fatal(err)
		}
		if got := a.ListenNetwork(); got != want {
			t.Errorf("%s: ListenNetwork %q, want %q", url, got, want)
		}
	}
}

// otherGroup returns a group this process may give its files other than
// its own: any as root, else a supplementary one.
func otherGroup(t *testing.T) int {
	t.Helper()
	if os.Geteuid() == 0 {
		return 65534
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if g != os.Getegid() {
			return g
		}
	}
	t.Skip("not root and in no supplementary group: no other group to give a socket")
	return 0
}

// TestListenUnixGroup: the group is given with the mode, in the private
// directory and in the fallback for long paths, to both kinds of socket.
func TestListenUnixGroup(t *testing.T) {
	gid := otherGroup(t)
	for _, dir := range []string{porttest.SocketDir(t), deepDir(t)} {
		for _, network := range []string{"unix", "unixgram"} {
			path := filepath.Join(dir, "s")
			var (
				c   interface{ Close() error }
				f   *SocketFile
				err error
			)
			if network == "unix" {
				c, f, err = ListenUnix(path, 0o640, &gid)
			} else {
				c, f, err = ListenUnixgram(path, 0o640, &gid)
			}
			if err != nil {
				t.Fatalf("%s %s: %v", network, path, err)
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(path, &st); err != nil {
				t.Fatal(err)
			}
			if int(st.Gid) != gid || st.Mode&0o777 != 0o640 {
				t.Errorf("%s %s: group %d mode %o, want %d and 640", network, path, st.Gid, st.Mode&0o777, gid)
			}
			c.Close()
			f.Remove()
		}
	}
}
