package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tapswitch/tapswitch/internal/api"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestCtlUnknownCommand: ctl answers a subcommand it does not know as the
// root command does, with an error (exit 1), and prints its help without
// one. A typo printed the help and exited 0.
func TestCtlUnknownCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string // the error, "" for none
	}{
		{[]string{"bogus"}, `unknown command "bogus" for "tapswitch"`},
		{[]string{"ctl", "bogus"}, `unknown command "bogus" for "tapswitch ctl"`},
		{[]string{"ctl", "port"}, "Did you mean this?\n\tports"},
		{[]string{"ctl"}, ""},
	} {
		out, err := runCmd(c.args...)
		switch {
		case c.want == "" && (err != nil || !strings.Contains(out, "Available Commands:")):
			t.Errorf("%q: %v, printed %q; want the help", c.args, err, out)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}

// TestCtlAttachJSON: ctl attach prints the new port, as JSON with --json,
// as detach prints the port it removed. --json was accepted and ignored.
func TestCtlAttachJSON(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	sock := serveAPI(t, &api.Server{Switch: sw, Attach: func(req api.AttachRequest) error {
		_, err := sw.AddPort(porttest.New(porttest.Config{Name: req.Tap}), vswitch.PortConfig{Kind: "tap"})
		return err
	}})
	out, err := runCmd("ctl", "--ctl", sock, "attach", "--tap", "tap9", "--json")
	var ps vswitch.PortStats
	if err != nil || json.Unmarshal([]byte(out), &ps) != nil || ps.Name != "tap9" || ps.ID != 1 || ps.Kind != "tap" {
		t.Errorf("attach --json: %v, printed %q; want tap9's port as JSON", err, out)
	}
	if out, err := runCmd("ctl", "--ctl", sock, "attach", "--tap", "tap10"); err != nil || out != "attached tap10 (id 2)\n" {
		t.Errorf("attach: %v, printed %q", err, out)
	}
}

// TestCtlTablesEscapeNames: a datagram peer names its port with the path
// it binds, which may hold terminal escape sequences, a newline (a fake
// table line) or bytes that are not UTF-8; ctl ports and ctl fdb print
// such a name quoted.
func TestCtlTablesEscapeNames(t *testing.T) {
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	name := "unixgram:/tmp/\x1b]0;pwned\a\x1b[31mred\nfake\xff"
	p := porttest.New(porttest.Config{Name: name})
	if _, err := sw.AddPort(p, vswitch.PortConfig{Kind: "dgram", Peer: name}); err != nil {
		t.Fatal(err)
	}
	p.Send(porttest.Frame(porttest.Broadcast, porttest.MAC(1), 0x0806, nil))
	porttest.WaitFor(t, "the MAC learned", func() bool { return len(sw.FDB()) == 1 })
	sock := serveAPI(t, &api.Server{Switch: sw})
	for _, sub := range []string{"ports", "fdb"} {
		out, err := runCmd("ctl", "--ctl", sock, sub)
		if err != nil {
			t.Fatal(err)
		}
		// JSON has made the byte that is not UTF-8 U+FFFD.
		if strings.ContainsAny(out, "\x1b\a") || strings.Count(out, "\n") != 2 || !strings.Contains(out, `"unixgram:/tmp/\x1b]0;pwned\a\x1b[31mred\nfake`+"\uFFFD\"") {
			t.Errorf("ctl %s printed %q; want the name quoted, on one line", sub, out)
		}
	}
	if got, want := cell("tap0 x"), "tap0 x"; got != want {
		t.Errorf("cell(%q) = %q", want, got)
	}
}
