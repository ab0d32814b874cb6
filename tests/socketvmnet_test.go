//go:build linux

package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/socketvmnet"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/tests/internal/guest"
)

// TestSocketVmnetLinux runs tapswitch under the name socket_vmnet, with
// socket_vmnet's command line, in a namespace: a QEMU guest connects to the
// positional socket path, gets a lease from gateway+1 to --vmnet-dhcp-end
// and pings the gateway, which the Linux host interface holds.
func TestSocketVmnetLinux(t *testing.T) {
	ns := testnet.NewNS(t)
	dir, err := os.MkdirTemp("", "tapswitch-svm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	prog := filepath.Join(dir, "socket_vmnet")
	if err := os.Symlink(bin, prog); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "socket_vmnet.sock")
	pidfile := filepath.Join(dir, "socket_vmnet.pid")
	d := startDaemon(t, ns, socketvmnet.CtlPath(sock), prog,
		"--vmnet-gateway=198.18.53.1", "--vmnet-dhcp-end", "198.18.53.20", "--socket-group=root", "-p", pidfile, sock)
	if _, err := os.Stat(pidfile); err != nil {
		t.Errorf("pidfile: %v", err)
	}
	// A second instance for another network, as lima runs one per
	// network: both host interfaces were named tapswitch0, so it could
	// not start.
	sock2 := filepath.Join(dir, "socket_vmnet.host")
	d2 := startDaemon(t, ns, socketvmnet.CtlPath(sock2), prog,
		"--vmnet-mode=host", "--vmnet-gateway=198.18.54.1", "--socket-group=root", sock2)
	for _, name := range []string{socketvmnet.HostIfname(sock), socketvmnet.HostIfname(sock2)} {
		if out := ns.IP(t, "-br", "link"); !strings.Contains(out, name) {
			t.Errorf("host interface %s missing:\n%s", name, out)
		}
	}
	d2.Stop(t)
	vm := guest.Boot(t, guest.Config{Name: "ts-svm", Netdev: guest.StreamNetdev("n0", sock), DHCP: true})
	out := vm.MustRun(t, "ip -4 -o addr show dev eth0", 10*time.Second)
	f := strings.Fields(out)
	var addr string
	for i := range f {
		if f[i] == "inet" && i+1 < len(f) {
			addr = f[i+1]
		}
	}
	var last int
	if _, err := fmt.Sscanf(addr, "198.18.53.%d/24", &last); err != nil || last < 2 || last > 20 {
		t.Fatalf("guest address %q, want 198.18.53.2-20/24:\n%s", addr, out)
	}
	vm.MustRun(t, "ping -c 3 -W 2 198.18.53.1", 30*time.Second)
	if out := d.ctl(t, "leases"); !strings.Contains(out, strings.TrimSuffix(addr, "/24")) {
		t.Errorf("ctl leases lacks %s:\n%s", addr, out)
	}
	d.Stop(t)
	if d.err != nil {
		t.Errorf("exit after SIGTERM: %v", d.err)
	}
	for _, f := range []string{sock, pidfile, d.Ctl} {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("%s left behind", f)
		}
	}
}
