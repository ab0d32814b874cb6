package main

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestQEMUSocket: tapswitch qemu --socket takes a unix:// URL as well as a
// path, as --listen and --connect do (it took the URL for a file name);
// refuses other URLs and --id (which it ignored), and a datagram socket
// with a hint; and a COMMAND that cannot be run gives a shell's status
// with the error printed (it exited 1).
func TestQEMUSocket(t *testing.T) {
	dir := porttest.SocketDir(t)
	path := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dg := filepath.Join(dir, "d.sock")
	dc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: dg, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()

	for _, s := range []string{path, "unix://" + path} {
		if out, err := runCmd("qemu", "--socket", s, "--", "true"); err != nil {
			t.Errorf("qemu --socket %s -- true: %v\n%s", s, err, out)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", "unixgram://" + dg, "--", "true"}, "--print-netdev unixgram://" + dg},
		{[]string{"--socket", "tcp://127.0.0.1:5555", "--", "true"}, "want the switch's unix stream socket"},
		{[]string{"--socket", dg, "--", "true"}, "that is a datagram socket"},
		{[]string{"--socket", path, "--id", "vm1", "--", "true"}, "--id is for --print-netdev"},
	} {
		_, err := runCmd(append([]string{"qemu"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("qemu %q: %v; want an error containing %q", c.args, err, c.want)
		}
	}

	for _, c := range []struct {
		prog string
		code int
	}{
		{filepath.Join(dir, "none"), 127},
		{dir, 126},
	} {
		_, err := runCmd("qemu", "--socket", path, "--", c.prog)
		var b strings.Builder
		code := exitStatus(err, &b)
		if code != c.code || !strings.Contains(b.String(), c.prog) {
			t.Errorf("qemu --socket -- %s: exit %d, printed %q; want %d and the error", c.prog, code, b.String(), c.code)
		}
	}
	// A command's own status is not an error to print. The command may
	// follow without "--", as with socket_vmnet_client: its flags are its
	// own (-c was taken for one of ours).
	for _, dash := range [][]string{{"--"}, nil} {
		args := append(append([]string{"qemu", "--socket", path}, dash...), "sh", "-c", "exit 3")
		_, err = runCmd(args...)
		var b strings.Builder
		if code := exitStatus(err, &b); code != 3 || b.Len() != 0 || !errors.As(err, new(exitError)) {
			t.Errorf("%q: exit %d, printed %q; want 3 and nothing", args, code, b.String())
		}
	}
}
