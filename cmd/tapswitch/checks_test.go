package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/stream"
	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// TestCheckPrivateDirGroupWritable: a run directory its group may write is
// refused as one others may: a member of the group could swap the sockets.
func TestCheckPrivateDirGroupWritable(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "group")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o770); err != nil {
		t.Fatal(err)
	}
	if err := checkPrivateDir(dir); err == nil || !strings.Contains(err.Error(), "is writable by others (drwxrwx---)") {
		t.Errorf("a group-writable directory: %v, want it refused", err)
	}
}

// TestConfigKeysRefused: a key given twice (the second silently won) and
// the config key itself (a file naming another file) are refused with
// their line.
func TestConfigKeysRefused(t *testing.T) {
	for _, c := range []struct{ file, want string }{
		{"listen: unix:///tmp/a.sock\nmtu: 1400\nmtu: 9000\n", `:3: key "mtu" given twice`},
		{"listen: unix:///tmp/a.sock\nconfig: /etc/other.yaml\n", `:2: unknown key "config"`},
	} {
		cfg := filepath.Join(t.TempDir(), "ts.yaml")
		if err := os.WriteFile(cfg, []byte(c.file), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := applyConfigFile(newServeCmd().Flags(), cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want an error containing %q", c.file, err, c.want)
		}
	}
}

// TestCtlListenersDropped: ctl listeners shows every non-zero drop count
// under DROPPED, ones included.
func TestCtlListenersDropped(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	sock := serveAPI(t, &api.Server{Switch: sw, Listeners: func() []api.Listener {
		return []api.Listener{
			{URL: "unix:///run/vm.sock", Kind: "stream", Stream: &stream.ListenerStats{Accepted: 4, Refused: 1}},
			{URL: "unixgram:///run/vz.sock", Kind: "datagram", Datagram: &dgram.Stats{Datagrams: 9, Unbound: 1, TooLong: 3}},
		}
	}})
	out, err := runCmd("ctl", "--ctl", sock, "listeners")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"refused=1", "unbound=1,too_long=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("ctl listeners printed\n%s\nwant %q in it", out, want)
		}
	}
}
