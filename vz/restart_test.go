//go:build unix

package vz

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/backend/dgram"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestSwitchRestart: a VM's socket dialled to a real datagram listener is
// a port again on the listener that replaces it (a restarted switch), and
// the new switch's frames reach it.
func TestSwitchRestart(t *testing.T) {
	dir := porttest.SocketDir(t)
	path := filepath.Join(dir, "vz.sock")
	listen := func() (*vswitch.Switch, *dgram.Listener) {
		sw := vswitch.New(vswitch.Config{})
		l, err := dgram.Listen(context.Background(), "unixgram://"+path, dgram.Config{}, sw)
		if err != nil {
			t.Fatal(err)
		}
		return sw, l
	}
	sw1, l1 := listen()
	c, err := Dial(Config{Switch: path, Local: filepath.Join(dir, "vm.sock"), Reconnect: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	porttest.WaitFor(t, "the VM's port on the first switch", func() bool { return len(sw1.Ports()) == 1 })
	l1.Close()
	sw1.Close()

	sw2, l2 := listen()
	defer sw2.Close()
	defer l2.Close()
	porttest.WaitFor(t, "the VM's port on the restarted switch", func() bool { return len(sw2.Ports()) == 1 })
	host := porttest.New(porttest.Config{Name: "host"})
	if _, err := sw2.AddPort(host, vswitch.PortConfig{Kind: "mem"}); err != nil {
		t.Fatal(err)
	}
	frame := porttest.Frame(porttest.Broadcast, porttest.MAC(7), 0x0806, make([]byte, 28))
	if err := host.Send(frame); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 100)
	c.File().SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.File().Read(got); err != nil || n != len(frame) {
		t.Fatalf("VM read %d bytes, %v; want the new switch's frame", n, err)
	}
}
