package qemu

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestNetdev(t *testing.T) {
	tests := []struct {
		url     string
		o       NetdevOptions
		want    string
		wantErr string
	}{
		{url: "unix:///run/x.sock", want: "stream,id=n0,addr.type=unix,addr.path=/run/x.sock"},
		{url: "unix:///run/a,b.sock", o: NetdevOptions{ID: "vm1"}, want: "stream,id=vm1,addr.type=unix,addr.path=/run/a,,b.sock"},
		{url: "tcp://127.0.0.1:5555", want: "stream,id=n0,addr.type=inet,addr.host=127.0.0.1,addr.port=5555"},
		{url: "tcp://:5555", want: "stream,id=n0,addr.type=inet,addr.host=127.0.0.1,addr.port=5555"},
		{url: "tcp://0.0.0.0:5555", want: "stream,id=n0,addr.type=inet,addr.host=127.0.0.1,addr.port=5555"},
		// Go's listeners on [::] are dual-stack: reached over IPv4, which
		// every QEMU netdev takes (it was ::1).
		{url: "tcp://[::]:5555", want: "stream,id=n0,addr.type=inet,addr.host=127.0.0.1,addr.port=5555"},
		{url: "udp://[::]:5556",
			want: "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=0,remote.type=inet,remote.host=127.0.0.1,remote.port=5556"},
		{url: "tcp://[::1]:5555", want: "stream,id=n0,addr.type=inet,addr.host=::1,addr.port=5555"},
		{url: "tcp://localhost:5555", want: "stream,id=n0,addr.type=inet,addr.host=localhost,addr.port=5555"},
		{url: "unixgram:///run/vz.sock", o: NetdevOptions{ID: "vm1"},
			want: "dgram,id=vm1,local.type=unix,local.path=/run/vz-vm1.sock,remote.type=unix,remote.path=/run/vz.sock"},
		{url: "unixgram:///run/vz.sock", o: NetdevOptions{Local: "/tmp/guest.sock"},
			want: "dgram,id=n0,local.type=unix,local.path=/tmp/guest.sock,remote.type=unix,remote.path=/run/vz.sock"},
		{url: "udp://127.0.0.1:5556",
			want: "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=0,remote.type=inet,remote.host=127.0.0.1,remote.port=5556"},
		{url: "udp://:5556", o: NetdevOptions{ID: "g", Local: "127.0.0.1:7000"},
			want: "dgram,id=g,local.type=inet,local.host=127.0.0.1,local.port=7000,remote.type=inet,remote.host=127.0.0.1,remote.port=5556"},
		{url: "udp://[::1]:5556", wantErr: "IPv4 only"},
		{url: "udp://127.0.0.1:5556", o: NetdevOptions{Local: "nonsense"}, wantErr: "local address"},
		{url: "unixgram:///run/vz.sock", o: NetdevOptions{Local: "/run/vz.sock"}, wantErr: "cannot be the switch's"},
		{url: "tcp://127.0.0.1:0", wantErr: "port 0"},
		{url: "unix:///x", o: NetdevOptions{ID: "1bad"}, wantErr: "netdev id"},
		{url: "unix:///x", o: NetdevOptions{ID: "a,b"}, wantErr: "netdev id"},
		{url: "http://x:1", wantErr: "unsupported scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.url+"/"+tt.o.ID+tt.o.Local, func(t *testing.T) {
			got, err := Netdev(tt.url, tt.o)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Netdev = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{"-netdev", tt.want}; !reflect.DeepEqual(got, want) {
				t.Fatalf("Netdev(%q) =\n  %q\nwant\n  %q", tt.url, got, want)
			}
		})
	}
	got, err := Netdev("unix:///run/x.sock", NetdevOptions{ID: "vm7"})
	if err != nil || got[1] != "stream,id=vm7,addr.type=unix,addr.path=/run/x.sock" {
		t.Fatalf("Netdev with ID vm7 = %q, %v", got, err)
	}
}

// TestNetdevRelativePaths: socket paths are printed absolute. A relative
// local.path made QEMU bind a socket the switch drops datagrams from (it
// cannot answer them), and a relative remote.path or --socket worked only
// for a QEMU started in the switch's directory.
func TestNetdevRelativePaths(t *testing.T) {
	t.Chdir(t.TempDir())
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	abs := func(name string) string { return filepath.Join(dir, name) }
	for _, tt := range []struct {
		url  string
		o    NetdevOptions
		want string
	}{
		{"unixgram:rd.sock", NetdevOptions{},
			"dgram,id=n0,local.type=unix,local.path=" + abs("rd-n0.sock") + ",remote.type=unix,remote.path=" + abs("rd.sock")},
		{"unixgram:sub/rd.sock", NetdevOptions{ID: "vm1", Local: "g.sock"},
			"dgram,id=vm1,local.type=unix,local.path=" + abs("g.sock") + ",remote.type=unix,remote.path=" + abs("sub/rd.sock")},
		{"unix:rd.sock", NetdevOptions{}, "stream,id=n0,addr.type=unix,addr.path=" + abs("rd.sock")},
	} {
		got, err := Netdev(tt.url, tt.o)
		if err != nil || !reflect.DeepEqual(got, []string{"-netdev", tt.want}) {
			t.Errorf("Netdev(%q, %+v) = %q, %v; want %q", tt.url, tt.o, got, err, tt.want)
		}
	}
	if got := DefaultLocalPath("rd.sock", "vm1"); got != abs("rd-vm1.sock") {
		t.Errorf("DefaultLocalPath = %q, want %q", got, abs("rd-vm1.sock"))
	}
	// The same local socket as the switch's, once both are absolute.
	if _, err := Netdev("unixgram:rd.sock", NetdevOptions{Local: abs("rd.sock")}); err == nil || !strings.Contains(err.Error(), "cannot be the switch's") {
		t.Errorf("Netdev with the switch's socket as local: %v", err)
	}
	var b strings.Builder
	if err := PrintNetdev(&b, "unix:rd.sock", NetdevOptions{}); err != nil || !strings.Contains(b.String(), "tapswitch qemu --socket "+abs("rd.sock")+" --") {
		t.Errorf("PrintNetdev(unix:rd.sock) = %v, want --socket %s:\n%s", err, abs("rd.sock"), b.String())
	}

	// A relative path that is too long once absolute is refused, not
	// printed relative.
	deep := filepath.Join(dir, strings.Repeat("d", 100))
	if err := os.Mkdir(deep, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Chdir(deep)
	for _, url := range []string{"unixgram:rd.sock", "unix:rd.sock"} {
		if got, err := Netdev(url, NetdevOptions{}); err == nil || !strings.Contains(err.Error(), "use a shorter path") {
			t.Errorf("Netdev(%q) in a deep directory = %q, %v; want an error", url, got, err)
		}
	}
}

func TestDeviceArgs(t *testing.T) {
	got, err := DeviceArgs("", "", "52:54:00:AB:cd:01")
	if err != nil || !reflect.DeepEqual(got, []string{"-device", "virtio-net-pci,netdev=n0,mac=52:54:00:ab:cd:01"}) {
		t.Fatalf("DeviceArgs = %q, %v", got, err)
	}
	got, err = DeviceArgs("vm1", "e1000", "")
	if err != nil || !reflect.DeepEqual(got, []string{"-device", "e1000,netdev=vm1"}) {
		t.Fatalf("DeviceArgs = %q, %v", got, err)
	}
	for _, bad := range []string{"nonsense", "01:00:5e:00:00:01", "00:11:22:33:44:55:66:77"} {
		if _, err := DeviceArgs("n0", "", bad); err == nil {
			t.Errorf("DeviceArgs accepted MAC %q", bad)
		}
	}
	if got := SocketFDArgs("", 3); !reflect.DeepEqual(got, []string{"-netdev", "socket,id=n0,fd=3"}) {
		t.Fatalf("SocketFDArgs = %q", got)
	}
}

func TestRandomMAC(t *testing.T) {
	seen := map[string]bool{}
	for range 20 {
		m := RandomMAC()
		hw, err := net.ParseMAC(m)
		if err != nil || len(hw) != 6 || !strings.HasPrefix(m, "52:54:00:") {
			t.Fatalf("RandomMAC() = %q", m)
		}
		seen[m] = true
	}
	if len(seen) < 15 {
		t.Fatalf("only %d distinct MACs in 20", len(seen))
	}
}

func TestPrintNetdev(t *testing.T) {
	tests := []struct {
		url  string
		want []string
	}{
		{"unix:///run/ts.sock", []string{
			"-netdev stream,id=n0,addr.type=unix,addr.path=/run/ts.sock",
			"-device virtio-net-pci,netdev=n0,mac=52:54:00:",
			"tapswitch qemu --socket /run/ts.sock -- qemu-system-x86_64",
			"-netdev socket,id=n0,fd=3",
		}},
		{"tcp://:5555", []string{"addr.host=127.0.0.1,addr.port=5555", "-netdev socket,id=n0,connect=127.0.0.1:5555"}},
		// QEMU's socket netdev cannot parse an IPv6 address ("can't
		// resolve host address '['"): it was printed anyway.
		{"tcp://[::1]:5557", []string{"addr.host=::1", "Before QEMU 7.2: not supported"}},
		{"tcp://[::]:5558", []string{"addr.host=127.0.0.1,addr.port=5558", "-netdev socket,id=n0,connect=127.0.0.1:5558"}},
		{"udp://[::]:5557", []string{"remote.host=127.0.0.1,remote.port=5557", "udp=127.0.0.1:5557,localaddr=127.0.0.1:0"}},
		{"unixgram:///run/vz.sock", []string{"local.path=/run/vz-n0.sock", "not supported"}},
		{"udp://127.0.0.1:5556", []string{"remote.port=5556", "udp=127.0.0.1:5556,localaddr=127.0.0.1:0"}},
	}
	for _, tt := range tests {
		var b strings.Builder
		if err := PrintNetdev(&b, tt.url, NetdevOptions{}); err != nil {
			t.Fatalf("PrintNetdev(%q): %v", tt.url, err)
		}
		for _, w := range tt.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("PrintNetdev(%q) lacks %q:\n%s", tt.url, w, b.String())
			}
		}
	}
	// The reconnect option follows the stream netdev it belongs to, not
	// the socket netdev's line, which has no such option.
	var b strings.Builder
	if err := PrintNetdev(&b, "tcp://127.0.0.1:5555", NetdevOptions{}); err != nil {
		t.Fatal(err)
	}
	if out := b.String(); strings.Index(out, "reconnect=1") > strings.Index(out, "-netdev socket") {
		t.Errorf("the reconnect hint comes after the socket netdev's line:\n%s", out)
	}
	if err := PrintNetdev(&strings.Builder{}, "ftp://x:1", NetdevOptions{}); err == nil {
		t.Fatal("PrintNetdev accepted a bad URL")
	}
}
