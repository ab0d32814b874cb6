package main

import (
	"bytes"
	"strings"
	"testing"
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
		root := newRootCmd()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(c.args)
		err := root.Execute()
		switch {
		case c.want == "" && (err != nil || !strings.Contains(out.String(), "Available Commands:")):
			t.Errorf("%q: %v, printed %q; want the help", c.args, err, out.String())
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%q: %v, want an error containing %q", c.args, err, c.want)
		}
	}
}
