package qemu

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/backend/dgram"
	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/backend/stream"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// TestRealQEMU boots a real QEMU (no disk: SeaBIOS network-boots into the
// virtio-net iPXE ROM, which sends DHCP requests) with the options Netdev
// and SocketFDArgs produce, for every transport, and checks that the
// guest's frames reach another client of the switch and that the switch
// can send to the guest.
func TestRealQEMU(t *testing.T) {
	bin := qemuBinary(t)
	for _, tr := range []string{"unix", "tcp", "unixgram", "udp", "fd"} {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			realQEMU(t, bin, tr)
		})
	}
}

// TestRealQEMURelativePath: the options Netdev gives for a unixgram
// listener bound to a relative path work for a QEMU started in another
// directory. They named the relative paths, and the switch dropped every
// datagram from the guest's relatively bound socket. (Not parallel: it
// changes the working directory.)
func TestRealQEMURelativePath(t *testing.T) {
	realQEMU(t, qemuBinary(t), "unixgram-relative")
}

// qemuBinary returns qemu-system-x86_64's path, or skips the test.
func qemuBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("boots QEMU guests; skipped in -short mode")
	}
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		// As root (CI, make test) the packages are installed: fail.
		msg := "qemu-system-x86_64 not found: install qemu-system-x86 (and ipxe-qemu) to run this test (make deps)"
		if os.Geteuid() == 0 {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return bin
}

func realQEMU(t *testing.T, bin, transport string) {
	dir := t.TempDir()
	sw := vswitch.New(vswitch.Config{})
	defer sw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// The other VM: a Go client on a stream listener of the same switch.
	side, err := stream.Listen(ctx, "unix://"+filepath.Join(dir, "side.sock"), stream.ListenerConfig{}, sw)
	if err != nil {
		t.Fatal(err)
	}
	defer side.Close()
	other, err := net.Dial("unix", side.Addr().Address)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()

	var url string
	switch transport {
	case "unix", "fd":
		url = "unix://" + filepath.Join(dir, "vm.sock")
	case "tcp":
		url = "tcp://127.0.0.1:0"
	case "unixgram":
		url = "unixgram://" + filepath.Join(dir, "vm.sock")
	case "unixgram-relative":
		t.Chdir(dir)
		url = "unixgram:vm.sock"
	case "udp":
		url = "udp://127.0.0.1:0"
	}
	a, _ := listen.Parse(url)
	if a.Kind() == listen.KindStream {
		l, err := stream.Listen(ctx, url, stream.ListenerConfig{}, sw)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		url = l.Addr().String()
	} else {
		l, err := dgram.Listen(ctx, url, dgram.Config{}, sw)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		url = l.Addr().String()
	}

	mac := RandomMAC()
	guest, _ := vswitch.ParseMAC(mac)
	dev, err := DeviceArgs("vm1", "", mac)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-machine", "pc,accel=tcg", "-nodefaults", "-display", "none",
		"-monitor", "none", "-serial", "none", "-boot", "n"}
	args = append(args, dev...)
	var stderr bytes.Buffer
	exited := make(chan error, 1)
	if transport == "fd" {
		args = append(args, SocketFDArgs("vm1", SocketFD)...)
		go func() {
			code, err := RunWithSocket(ctx, a.Address, append([]string{bin}, args...), RunConfig{Stdin: bytes.NewReader(nil), Stdout: &stderr, Stderr: &stderr})
			if err == nil && code != 0 {
				err = fmt.Errorf("exit status %d", code)
			}
			exited <- err
		}()
	} else {
		nd, err := Netdev(url, NetdevOptions{ID: "vm1"})
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, nd...)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdout, cmd.Stderr = &stderr, &stderr
		if transport == "unixgram-relative" {
			cmd.Dir = t.TempDir() // elsewhere, and where a relative path harms nothing
		}
		if err := testproc.Start(cmd); err != nil {
			t.Fatal(err)
		}
		go func() { exited <- cmd.Wait() }()
		defer func() {
			cmd.Process.Signal(os.Interrupt)
			<-exited
		}()
	}
	t.Logf("qemu %q", args)

	// The guest's DHCP broadcast reaches the other client.
	r := bufio.NewReader(other)
	other.SetReadDeadline(time.Now().Add(60 * time.Second))
	for {
		fr, err := readFramed(r)
		if err != nil {
			select {
			case err := <-exited:
				t.Fatalf("qemu exited: %v\n%s", err, stderr.String())
			default:
			}
			t.Fatalf("waiting for the guest's first frame: %v\n%s", err, stderr.String())
		}
		if bytes.Equal(fr[6:12], guest[:]) {
			t.Logf("guest frame of %d bytes to %x", len(fr), fr[0:6])
			break
		}
	}
	// And the switch can send to the guest.
	var qport *vswitch.Attachment
	sidePorts := map[*vswitch.Attachment]bool{}
	for _, p := range side.Ports() {
		sidePorts[p] = true
	}
	for _, p := range sw.Ports() {
		if !sidePorts[p] {
			qport = p
		}
	}
	if qport == nil {
		t.Fatal("no port for the guest")
	}
	t.Logf("guest port %s peer %q", qport.Name(), qport.Stats().Peer)
	if _, err := other.Write(framed(frame(bcast, peerMAC, "hello guest"))); err != nil {
		t.Fatal(err)
	}
	porttest.WaitFor(t, "a frame sent to the guest", func() bool { return qport.Stats().TxFrames > 0 })
	if d := qport.Stats().Drops[vswitch.DropTxError]; d != 0 {
		t.Fatalf("%d tx errors towards the guest", d)
	}
	if transport == "fd" {
		cancel()
		if err := <-exited; err != nil {
			t.Fatalf("RunWithSocket: %v\n%s", err, stderr.String())
		}
	}
}
