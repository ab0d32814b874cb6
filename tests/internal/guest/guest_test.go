//go:build linux

package guest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("guest tests boot QEMU and are run as root (CI); skipping as non-root")
	}
}

// frameSink is the host end of a QEMU "-netdev dgram" link: one Ethernet
// frame per datagram.
type frameSink struct {
	conn      *net.UnixConn
	guestAddr *net.UnixAddr

	mu     sync.Mutex
	frames [][]byte
	// responder answers ARP requests for routerIP and ICMP echo requests
	// to it when set.
	respond  bool
	routerIP netip.Addr
}

var routerMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0xfe, 0xfe, 0x01}

func newFrameSink(t *testing.T, hostPath, guestPath string, routerIP netip.Addr) *frameSink {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: hostPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &frameSink{conn: conn, guestAddr: &net.UnixAddr{Name: guestPath, Net: "unixgram"}, routerIP: routerIP}
	done := make(chan struct{})
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				return
			}
			f := append([]byte(nil), buf[:n]...)
			s.mu.Lock()
			s.frames = append(s.frames, f)
			respond := s.respond
			s.mu.Unlock()
			if respond {
				if reply := s.reply(f); reply != nil {
					_, _ = conn.WriteToUnix(reply, s.guestAddr)
				}
			}
		}
	}()
	return s
}

func (s *frameSink) setRespond(on bool) {
	s.mu.Lock()
	s.respond = on
	s.mu.Unlock()
}

func (s *frameSink) snapshot() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.frames...)
}

// reply answers an ARP request or ICMP echo request for s.routerIP.
func (s *frameSink) reply(f []byte) []byte {
	if len(f) < 14 {
		return nil
	}
	router := s.routerIP.As4()
	switch binary.BigEndian.Uint16(f[12:14]) {
	case 0x0806:
		if len(f) < 42 || binary.BigEndian.Uint16(f[20:22]) != 1 || !bytes.Equal(f[38:42], router[:]) {
			return nil
		}
		r := make([]byte, 42)
		copy(r[0:6], f[6:12])
		copy(r[6:12], routerMAC)
		binary.BigEndian.PutUint16(r[12:14], 0x0806)
		copy(r[14:20], []byte{0, 1, 8, 0, 6, 4})
		binary.BigEndian.PutUint16(r[20:22], 2)
		copy(r[22:28], routerMAC)
		copy(r[28:32], router[:])
		copy(r[32:38], f[22:28])
		copy(r[38:42], f[28:32])
		return r
	case 0x0800:
		if len(f) < 34 {
			return nil
		}
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(ip[2:4]))
		if ip[9] != 1 || ihl < 20 || total > len(ip) || total < ihl+8 || !bytes.Equal(ip[16:20], router[:]) || ip[ihl] != 8 {
			return nil
		}
		r := append([]byte(nil), f[:14+total]...)
		copy(r[0:6], f[6:12])
		copy(r[6:12], routerMAC)
		rip := r[14:]
		copy(rip[12:16], ip[16:20])
		copy(rip[16:20], ip[12:16])
		rip[8] = 64
		binary.BigEndian.PutUint16(rip[10:12], 0)
		binary.BigEndian.PutUint16(rip[10:12], checksum(rip[:ihl]))
		icmp := rip[ihl:total]
		icmp[0] = 0
		binary.BigEndian.PutUint16(icmp[2:4], 0)
		binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
		return r
	}
	return nil
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// arpRequest reports whether f is an ARP request from mac asking for target.
func arpRequest(f []byte, mac net.HardwareAddr, sender, target netip.Addr) bool {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:14]) != 0x0806 {
		return false
	}
	s4, t4 := sender.As4(), target.As4()
	return bytes.Equal(f[6:12], mac) && // Ethernet source
		bytes.Equal(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) &&
		binary.BigEndian.Uint16(f[20:22]) == 1 && // request
		bytes.Equal(f[22:28], mac) && // sender hardware address
		bytes.Equal(f[28:32], s4[:]) &&
		bytes.Equal(f[38:42], t4[:])
}

func TestGuestDgram(t *testing.T) {
	requireRoot(t)
	// Short path: unix socket paths are limited to 107 bytes.
	dir, err := os.MkdirTemp("", "tsguest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	hostSock := filepath.Join(dir, "host.sock")
	guestSock := filepath.Join(dir, "guest.sock")
	guestIP := netip.MustParseAddr("198.18.77.2")
	routerIP := netip.MustParseAddr("198.18.77.1")
	sink := newFrameSink(t, hostSock, guestSock, routerIP)

	vm := Boot(t, Config{
		Name:   "selftest",
		Netdev: DgramNetdev("n0", guestSock, hostSock),
		IP:     guestIP.String() + "/24",
	})
	mac, err := net.ParseMAC(vm.MAC())
	if err != nil || !strings.HasPrefix(vm.MAC(), "52:54:00:") {
		t.Fatalf("MAC() = %q: %v", vm.MAC(), err)
	}

	t.Run("echo", func(t *testing.T) {
		if out, err := vm.Run("echo hello", 10*time.Second); err != nil || out != "hello" {
			t.Fatalf(`Run("echo hello") = %q, %v; want "hello", nil`, out, err)
		}
		out := vm.MustRun(t, "echo one; echo two >&2; printf three", 10*time.Second)
		if out != "one\ntwo\nthree" {
			t.Fatalf("output %q, want one/two/three with stderr merged", out)
		}
		out = vm.MustRun(t, "for i in 1 2 3; do\n  echo line$i\ndone", 10*time.Second)
		if out != "line1\nline2\nline3" {
			t.Fatalf("multi-line command output %q", out)
		}
		// Background jobs: no job-control notices in later output.
		vm.MustRun(t, "sleep 0.2 &", 10*time.Second)
		if out := vm.MustRun(t, "sleep 0.5; echo after", 10*time.Second); out != "after" {
			t.Fatalf("output after a background job ended: %q", out)
		}
	})

	t.Run("exit-status", func(t *testing.T) {
		out, err := vm.Run("echo before; (exit 3)", 10*time.Second)
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Status != 3 || out != "before" {
			t.Fatalf("Run = %q, %v; want \"before\" and an ExitError with status 3", out, err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		_, err := vm.Run("sleep 60", 2*time.Second)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Run(sleep 60) = %v, want ErrTimeout", err)
		}
		// ^C interrupted it: the shell must be usable again.
		if out := vm.MustRun(t, "echo still-here", 20*time.Second); out != "still-here" {
			t.Fatalf("after timeout: %q", out)
		}
	})

	t.Run("config", func(t *testing.T) {
		out := vm.MustRun(t, "ip -4 addr show dev eth0; cat /sys/class/net/eth0/address; hostname", 10*time.Second)
		for _, want := range []string{"inet 198.18.77.2/24", vm.MAC(), "selftest"} {
			if !strings.Contains(out, want) {
				t.Errorf("guest config output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("arp", func(t *testing.T) {
		// Nobody answers: ping fails, but the guest must ARP for the target.
		out, err := vm.Run("ping -c 1 -W 1 "+routerIP.String(), 20*time.Second)
		if err == nil {
			t.Fatalf("ping without a responder succeeded:\n%s", out)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			found := false
			for _, f := range sink.snapshot() {
				if arpRequest(f, mac, guestIP, routerIP) {
					found = true
					break
				}
			}
			if found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no ARP request from %s for %s among %d frames", mac, routerIP, len(sink.snapshot()))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("ping", func(t *testing.T) {
		// With ARP and ICMP echo answered, frames flow both ways.
		sink.setRespond(true)
		defer sink.setRespond(false)
		out := vm.MustRun(t, "ping -c 2 -W 3 "+routerIP.String(), 30*time.Second)
		if !strings.Contains(out, "2 packets received") {
			t.Fatalf("ping output:\n%s", out)
		}
		out = vm.MustRun(t, "ip neigh show "+routerIP.String(), 10*time.Second)
		if !strings.Contains(out, routerMAC.String()) {
			t.Fatalf("neighbour entry lacks %s: %q", routerMAC, out)
		}
	})

	t.Run("kill", func(t *testing.T) {
		vm.Kill()
		select {
		case <-vm.Exited():
		default:
			t.Fatal("Kill returned before QEMU exited")
		}
		if _, err := vm.Run("echo dead", 5*time.Second); !errors.Is(err, ErrExited) {
			t.Fatalf("Run after Kill = %v, want ErrExited", err)
		}
	})
}

// TestGuestToGuestDHCP links two guests back to back over unix datagram
// sockets: one serves DHCP with busybox udhcpd, the other boots with
// Config.DHCP and must be ready with its lease applied by the udhcpc hook.
func TestGuestToGuestDHCP(t *testing.T) {
	requireRoot(t)
	dir, err := os.MkdirTemp("", "tsguest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	a, b := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")

	server := Boot(t, Config{Name: "dhcp-server", Netdev: DgramNetdev("n0", a, b), IP: "198.18.78.1/24"})
	server.MustRun(t, `mkdir -p /var/lib/misc && touch /var/lib/misc/udhcpd.leases
printf '%s\n' 'start 198.18.78.100' 'end 198.18.78.110' 'interface eth0' \
  'opt subnet 255.255.255.0' 'opt router 198.18.78.1' 'opt lease 600' >/etc/udhcpd.conf
udhcpd /etc/udhcpd.conf`, 10*time.Second)

	client := Boot(t, Config{Name: "dhcp-client", Netdev: DgramNetdev("n0", b, a), DHCP: true})
	// udhcpc runs in the foreground until it has a lease, so the lease is
	// normally in place when the guest is ready; allow for a slow exchange.
	deadline := time.Now().Add(30 * time.Second)
	var lease string
	for {
		out, _ := client.Run("cat /run/tsguest-dhcp-lease 2>/dev/null", 10*time.Second)
		if strings.HasPrefix(out, "198.18.78.") {
			lease = out
			break
		}
		if time.Now().After(deadline) {
			log, _ := client.Run("cat /run/tsguest-dhcp.log /run/udhcpc.log", 10*time.Second)
			t.Fatalf("client got no lease; its DHCP logs:\n%s", log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if p, err := netip.ParsePrefix(lease); err != nil || p.Bits() != 24 {
		t.Fatalf("lease %q, want 198.18.78.x/24 (%v)", lease, err)
	}
	out := client.MustRun(t, "ip -4 addr show dev eth0; ip route; hostname", 10*time.Second)
	for _, want := range []string{"inet " + lease, "default via 198.18.78.1", "dhcp-client"} {
		if !strings.Contains(out, want) {
			t.Fatalf("client config after lease %s lacks %q:\n%s", lease, want, out)
		}
	}
	client.MustRun(t, "ping -c 2 -W 3 198.18.78.1", 30*time.Second)
}

func TestNoNetwork(t *testing.T) {
	requireRoot(t)
	vm := Boot(t, Config{})
	if vm.MAC() != "" {
		t.Errorf("MAC() = %q for a guest without NIC", vm.MAC())
	}
	out := vm.MustRun(t, "ls /sys/class/net; uname -r", 10*time.Second)
	if !strings.Contains(out, "lo") || strings.Contains(out, "eth0") {
		t.Fatalf("unexpected output:\n%s", out)
	}
}

func TestNewMAC(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		m := NewMAC()
		hw, err := net.ParseMAC(m)
		if err != nil || hw[0] != 0x52 || hw[1] != 0x54 || hw[2] != 0 || seen[m] {
			t.Fatalf("NewMAC() = %q (%v), seen=%v", m, err, seen[m])
		}
		seen[m] = true
	}
}

func TestOptValue(t *testing.T) {
	if got := optValue("virtio-net-pci,netdev=n0,mac=52:54:00:01:02:03", "mac"); got != "52:54:00:01:02:03" {
		t.Fatalf("optValue = %q", got)
	}
	if got := optValue("dgram,id=n1,local.type=unix", "id"); got != "n1" {
		t.Fatalf("optValue = %q", got)
	}
}

// recTB records Skip/Fatal instead of ending the test, and keeps what is
// logged.
type recTB struct {
	testing.TB
	skipped, fatal string
	mu             sync.Mutex
	logs           strings.Builder
}

func (r *recTB) Logf(f string, a ...any) {
	r.mu.Lock()
	fmt.Fprintf(&r.logs, f+"\n", a...)
	r.mu.Unlock()
	r.TB.Logf(f, a...)
}

func (r *recTB) Helper()                   {}
func (r *recTB) Skip(args ...any)          { r.skipped = fmt.Sprint(args...); runtime.Goexit() }
func (r *recTB) Fatal(args ...any)         { r.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (r *recTB) Skipf(f string, a ...any)  { r.Skip(fmt.Sprintf(f, a...)) }
func (r *recTB) Fatalf(f string, a ...any) { r.Fatal(fmt.Sprintf(f, a...)) }

// bootRec runs Boot(cfg) with a recTB, in a goroutine so that the recTB's
// Fatal and Skip end only that goroutine, waits for it and returns the
// recTB. A guest that did boot is killed when t ends, as with Boot.
func bootRec(t *testing.T, cfg Config) *recTB {
	t.Helper()
	r := &recTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Boot(r, cfg)
	}()
	<-done
	return r
}

func TestRequireQEMUMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	r := &recTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); requireQEMU(r) }()
	<-done
	msg := r.fatal
	if os.Geteuid() != 0 {
		msg = r.skipped
	}
	if !strings.Contains(msg, "install qemu-system-x86") {
		t.Fatalf("root=%v: skipped=%q fatal=%q; want the %s message", os.Geteuid() == 0, r.skipped, r.fatal,
			map[bool]string{true: "Fatal", false: "Skip"}[os.Geteuid() == 0])
	}
	if (os.Geteuid() == 0) != (r.fatal != "") {
		t.Fatalf("root=%v but skipped=%q fatal=%q", os.Geteuid() == 0, r.skipped, r.fatal)
	}
}

// TestBootHung: a guest whose CPU time stops rising fails at its boot
// timeout, not three times later, and the failure shows the threads of
// QEMU, not only those of the Wrapper it runs under.
func TestBootHung(t *testing.T) {
	requireRoot(t)
	const timeout = 5 * time.Second
	begin := time.Now()
	// -S: QEMU starts with its CPU stopped, so nothing boots and its CPU
	// time stays flat. The shell keeps QEMU its child, as tapswitch
	// qemu --socket does.
	r := bootRec(t, Config{Netdev: []string{"-S"}, Wrapper: []string{"sh", "-c", `"$0" "$@"; exit $?`}, BootTimeout: timeout})
	t.Logf("after %v: %s", time.Since(begin).Round(time.Millisecond), r.fatal)
	if !strings.Contains(r.fatal, "stopped rising") {
		t.Fatalf("Boot of a paused guest: %q, want a failure saying QEMU's CPU time stopped rising", r.fatal)
	}
	// The verdict's time (diagnose takes a few more seconds). QEMU's
	// start-up may count as progress in the first window, which delays
	// the verdict by up to one more: the old rule gave up only at
	// starvedFactor times the timeout.
	m := regexp.MustCompile(`within ([0-9.]+m?s):`).FindStringSubmatch(r.fatal)
	if m == nil {
		t.Fatalf("no time in %q", r.fatal)
	}
	if elapsed, _ := time.ParseDuration(m[1]); elapsed >= starvedFactor*timeout-2*time.Second {
		t.Errorf("a hung guest failed after %v, its boot timeout being %v", elapsed, timeout)
	}
	// diagnose reached QEMU's monitor through the console.
	if logs := r.logs.String(); !strings.Contains(logs, " HLT=") {
		t.Errorf("the failure's console lacks the CPU's registers:\n%s", logs)
	}
	if !strings.Contains(r.fatal, "(sh)") || !strings.Contains(r.fatal, "(qemu-system-x86)") {
		t.Errorf("the failure does not describe both the wrapper and QEMU: %s", r.fatal)
	}
}

// TestBootStarved: a guest still using CPU at its boot timeout is given
// more time. The "guest" is a shell that spins for 8 s, then prints the
// ready marker.
func TestBootStarved(t *testing.T) {
	requireRoot(t)
	r := bootRec(t, Config{
		Wrapper:     []string{"bash", "-c", "while [ $SECONDS -lt 8 ]; do :; done; echo " + ReadyMarker + "; exec sleep 600"},
		BootTimeout: 5 * time.Second,
	})
	if r.fatal != "" {
		t.Fatalf("a guest busy past its boot timeout was not given more time: %s", r.fatal)
	}
}

// TestBootDiagnose: a guest whose init hangs (cat reading the console)
// fails with the kernel's list of tasks on its console, cat's among them.
func TestBootDiagnose(t *testing.T) {
	requireRoot(t)
	r := bootRec(t, Config{Append: "rdinit=/bin/cat", BootTimeout: 20 * time.Second})
	logs := r.logs.String()
	if r.fatal == "" || !strings.Contains(logs, "sysrq: Show State") || !regexp.MustCompile(`task:cat +state:S`).MatchString(logs) {
		t.Fatalf("Boot of a guest whose init hangs: %q; want a failure whose console lists the tasks, cat's among them:\n%s", r.fatal, logs)
	}
}
