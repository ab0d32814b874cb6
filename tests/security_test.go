//go:build linux

package tests

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// nobody is the unprivileged identity the access tests connect as.
const nobody = 65534

// connectAs runs `tapswitch qemu --socket SOCK -- true` as uid nobody with
// the given groups: it exits 0 only if it could connect.
func connectAs(t *testing.T, sock string, gid int, groups ...uint32) error {
	t.Helper()
	cmd := exec.Command(bin, "qemu", "--socket", sock, "--", "/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: uint32(gid), Groups: groups}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// TestSocketAccess checks the VM socket's group and mode (a non-member
// user cannot connect, a member can) and the --allow-uid admission check.
func TestSocketAccess(t *testing.T) {
	ns := testnet.NewNS(t)
	// nobody must be able to reach the socket file's directory, which
	// t.TempDir's private parent would forbid.
	dir, err := os.MkdirTemp("", "tapswitch-access-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const group = 4242
	sock := filepath.Join(dir, "vm.sock")
	d := startSwitch(t, ns, "--listen", "unix://"+sock, "--socket-group", strconv.Itoa(group))
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fi.Mode().Perm() != 0o660 || st.Gid != group {
		t.Fatalf("socket mode %v gid %d, want 0660 gid %d", fi.Mode().Perm(), st.Gid, group)
	}
	if ci, err := os.Stat(d.Ctl); err != nil || ci.Mode().Perm() != 0o600 {
		t.Fatalf("control socket: %v %v, want mode 0600", ci.Mode(), err)
	}
	if err := connectAs(t, sock, nobody); err == nil {
		t.Fatal("a user outside the socket group connected")
	} else if !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("non-member: %v, want permission denied", err)
	}
	if err := connectAs(t, sock, nobody, group); err != nil {
		t.Fatalf("a member of the socket group could not connect: %v", err)
	}
	if err := connectAs(t, d.Ctl, nobody, group); err == nil {
		t.Fatal("a group member connected to the control socket")
	}

	// --allow-uid 0: the member may open the socket but is refused at
	// accept, while root is admitted.
	sock2 := filepath.Join(dir, "vm2.sock")
	d2 := startSwitch(t, ns, "--listen", "unix://"+sock2, "--socket-group", strconv.Itoa(group), "--allow-uid", "0")
	if err := connectAs(t, sock2, nobody, group); err != nil {
		t.Fatalf("tapswitch qemu as a member: %v", err)
	}
	c, err := net.Dial("unix", sock2)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ports := waitPortsWhere(t, d2, func(ps []api.Port) bool { return len(ps) == 1 })
	if !strings.Contains(ports[0].Peer, "uid=0") {
		t.Errorf("admitted port's peer %q, want root's credentials", ports[0].Peer)
	}
	if !strings.Contains(d2.Output(), "client refused") {
		t.Errorf("no log line for the refused client:\n%s", d2.Output())
	}
}

// waitPortsWhere polls the daemon's ports until ok accepts them.
func waitPortsWhere(t *testing.T, d *daemon, ok func([]api.Port) bool) []api.Port {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var ps []api.Port
		if err := d.api().Do(t.Context(), "GET", "/v1/ports", nil, &ps); err != nil {
			t.Fatal(err)
		}
		if ok(ps) {
			return ps
		}
		if time.Now().After(deadline) {
			t.Fatalf("ports never reached the expected state: %+v", ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// streamClient speaks QEMU's stream framing to a unix socket.
type streamClient struct {
	c   net.Conn
	buf []byte
}

func dialStream(t *testing.T, path string) *streamClient {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &streamClient{c: c}
}

// sendBatch writes frames, each prefixed by its length, in one write.
func (s *streamClient) sendBatch(frames [][]byte) error {
	s.buf = s.buf[:0]
	for _, f := range frames {
		s.buf = binary.BigEndian.AppendUint32(s.buf, uint32(len(f)))
		s.buf = append(s.buf, f...)
	}
	_, err := s.c.Write(s.buf)
	return err
}

// vmRSS returns the peak resident set size of process pid, in bytes.
func vmRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestMACFlood sends 300,000 frames from random source MACs through a
// stream client: the FDB stays at its bound, memory stays bounded, and two
// taps keep talking; with --lock-mac the flood is dropped at the port.
func TestMACFlood(t *testing.T) {
	for _, lock := range []bool{false, true} {
		t.Run(fmt.Sprintf("lock-mac=%t", lock), func(t *testing.T) {
			sock := filepath.Join(t.TempDir(), "vm.sock")
			extra := []string{"--listen", "unix://" + sock, "--fdb-size", "4096"}
			if lock {
				extra = append(extra, "--lock-mac")
			}
			n := newTapNet(t, 23, extra...)
			n.a.Ping(t, n.ipB)
			cl := dialStream(t, sock)
			const total, batch = 300000, 100
			frames := make([][]byte, batch)
			for i := range frames {
				frames[i] = make([]byte, 60)
				copy(frames[i], []byte{0x02, 0, 0x5e, 0, 0, 1}) // to an unknown unicast address
				frames[i][12], frames[i][13] = 0x88, 0xb5
			}
			done := make(chan error, 1)
			go func() {
				for sent := 0; sent < total; sent += batch {
					for _, f := range frames {
						rand.Read(f[6:12])
						f[6] &^= 1 // unicast source
					}
					if err := cl.sendBatch(frames); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			n.a.Ping(t, n.ipB) // known ports keep talking during the flood
			if err := <-done; err != nil {
				t.Fatalf("flood: %v", err)
			}
			n.b.Ping(t, n.ipA)
			ports := waitPortsWhere(t, n.d, func(ps []api.Port) bool {
				for _, p := range ps {
					if p.Kind == "stream" && p.RxFrames == total {
						return true
					}
				}
				return false
			})
			var fdb struct {
				FDB struct {
					Size    int    `json:"size"`
					Refused uint64 `json:"refused"`
				} `json:"fdb"`
			}
			mustJSON(t, n.d.ctl(t, "stats", "--json"), &fdb)
			rss := vmRSS(t, n.d.cmd.Process.Pid)
			t.Logf("fdb size %d, refused %d, peak RSS %d MiB", fdb.FDB.Size, fdb.FDB.Refused, rss>>20)
			if rss > 256<<20 {
				t.Errorf("peak RSS %d MiB > 256 MiB", rss>>20)
			}
			for _, p := range ports {
				if p.Kind != "stream" {
					continue
				}
				if lock {
					if p.Drops.Total() != total-1 || p.LearnedMACs != 1 {
						t.Errorf("locked port: %d drops, %d MACs; want %d, 1", p.Drops.Total(), p.LearnedMACs, total-1)
					}
				} else if fdb.FDB.Size != 4096 || fdb.FDB.Refused == 0 {
					t.Errorf("fdb size %d refused %d, want 4096 and refusals", fdb.FDB.Size, fdb.FDB.Refused)
				}
			}
		})
	}
}

// iperfGbps runs a 64 MiB iperf3 TCP transfer from n.a to n.b and returns
// the receiver's rate in Gbit/s.
func iperfGbps(t *testing.T, n *tapNet) float64 {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	srv := n.b.Exec(ctx, "iperf3", "-s", "-1", "-B", n.ipB)
	if err := testproc.Start(srv); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); srv.Wait() }()
	porttest.WaitFor(t, "the iperf3 server", func() bool {
		out, _ := n.b.Exec(ctx, "ss", "-Hltn", "sport = :5201").Output()
		return len(out) > 0
	})
	out, err := n.a.Exec(ctx, "iperf3", "-c", n.ipB, "-n", "64M", "-J").Output()
	if err != nil {
		t.Fatalf("iperf3: %v\n%s", err, out)
	}
	var r struct {
		End struct {
			SumSent struct {
				Bytes float64 `json:"bytes"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	mustJSON(t, string(out), &r)
	if r.End.SumSent.Bytes < 64<<20 {
		t.Fatalf("iperf3 sent %v bytes, want 64 MiB", r.End.SumSent.Bytes)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9
}

// TestStuckClients: three stream clients that never read, under broadcast
// load, must cost the other ports nothing: while the stuck clients' queues
// overflow, 64 MiB TCP transfers between two taps complete and the taps
// and the host interface drop no frame. (Throughputs are logged, not
// compared: a ratio of transfers lasting a fraction of a second failed
// when other test packages loaded the machine. docs/performance.md has the
// measured numbers.)
func TestStuckClients(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vm.sock")
	n := newTapNetBin(t, binFast, 24, "--listen", "unix://"+sock)
	n.a.Ping(t, n.ipB)

	// Broadcast load from a fourth client.
	loud := dialStream(t, sock)
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		f := make([]byte, 200)
		copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0x42, 0x42, 0x88, 0xb5})
		batch := [][]byte{f, f, f, f, f, f, f, f, f, f}
		tick := time.NewTicker(time.Millisecond) // ~10,000 broadcasts/s
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if loud.sendBatch(batch) != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-loadDone }()

	base := iperfGbps(t, n)
	for range 3 { // clients that connect and never read
		dialStream(t, sock)
	}
	waitPortsWhere(t, n.d, func(ps []api.Port) bool { return len(ps) == 7 }) // 2 taps, host, 4 clients
	// Transfer once the stuck clients' queues are full and dropping.
	stuckDropping := func(ps []api.Port) bool {
		n := 0
		for _, p := range ps {
			if p.Kind == "stream" && p.Drops[vswitch.DropQueueFull] > 0 {
				n++
			}
		}
		return n >= 3
	}
	// The other ports' drops: taps count tx_error for what was flooded
	// to them before they were up, so what counts is what changes.
	others := func(ps []api.Port) map[string]vswitch.DropCounts {
		m := map[string]vswitch.DropCounts{}
		for _, p := range ps {
			if p.Kind != "stream" {
				m[p.Name] = p.Drops
			}
		}
		return m
	}
	before := others(waitPortsWhere(t, n.d, stuckDropping))
	var stuck []float64
	for range 3 {
		stuck = append(stuck, iperfGbps(t, n))
	}
	after := others(waitPortsWhere(t, n.d, func([]api.Port) bool { return true }))
	var drops uint64
	for _, p := range waitPortsWhere(t, n.d, func([]api.Port) bool { return true }) {
		if p.Kind == "stream" {
			drops += p.Drops[vswitch.DropQueueFull]
		}
	}
	t.Logf("64 MiB transfers: %.2f Gbit/s without stuck clients, %.2f with three; queue_full drops on the stream clients: %d",
		base, stuck, drops)
	if len(after) != 3 {
		t.Fatalf("ports other than the stream clients: %v, want the two taps and the host interface", after)
	}
	for name, d := range after {
		if d != before[name] {
			t.Errorf("port %s dropped frames while the stuck clients' queues overflowed: %s before, %s after",
				name, before[name], d)
		}
	}
}

// TestShutdownUnderLoad: SIGTERM while a TCP transfer saturates the
// switch ends it within 2 s, with its leases on disk and nothing left.
func TestShutdownUnderLoad(t *testing.T) {
	leases := filepath.Join(t.TempDir(), "leases")
	n := newTapNet(t, 25, "--dhcp", "--gateway", "198.18.25.1/24", "--dhcp-range", "198.18.25.100-198.18.25.150", "--dhcp-lease-file", leases)
	n.a.Ping(t, n.ipB)
	// A lease for a client in namespace b (the script applies nothing).
	n.b.Run(t, "busybox", "udhcpc", "-i", n.tapB, "-n", "-q", "-t", "5", "-T", "1", "-s", "/bin/true")
	mac := linkMAC(t, n.b, n.tapB)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv := n.b.Exec(ctx, "iperf3", "-s", "-1", "-B", n.ipB)
	if err := testproc.Start(srv); err != nil {
		t.Fatal(err)
	}
	defer srv.Wait()
	porttest.WaitFor(t, "the iperf3 server", func() bool {
		out, _ := n.b.Exec(ctx, "ss", "-Hltn", "sport = :5201").Output()
		return len(out) > 0
	})
	cl := n.a.Exec(ctx, "iperf3", "-c", n.ipB, "-t", "20")
	if err := testproc.Start(cl); err != nil {
		t.Fatal(err)
	}
	defer cl.Wait()
	// In full flow: a's tap has sent the switch 256 MiB.
	waitPortsWhere(t, n.d, func(ps []api.Port) bool {
		for _, p := range ps {
			if p.Name == n.tapA && p.RxBytes > 256<<20 {
				return true
			}
		}
		return false
	})
	took := n.d.Stop(t)
	cancel()
	t.Logf("shutdown under load took %v", took)
	if took > 2*time.Second {
		t.Errorf("shutdown took %v, more than 2 s", took)
	}
	if n.d.err != nil {
		t.Errorf("exit: %v", n.d.err)
	}
	b, err := os.ReadFile(leases)
	if err != nil || !strings.Contains(string(b), mac+" 198.18.25.1") {
		t.Errorf("lease of %s not in the lease file (%v):\n%s", mac, err, b)
	}
	if _, err := os.Lstat(n.d.Ctl); !os.IsNotExist(err) {
		t.Errorf("control socket left behind")
	}
	for _, c := range []struct {
		ns   *testnet.NS
		link string
	}{{n.a, n.tapA}, {n.b, n.tapB}, {n.sw, n.host}} {
		if exec.Command("ip", "-n", c.ns.Name(), "link", "show", "dev", c.link).Run() == nil {
			t.Errorf("device %s left behind in %s", c.link, c.ns)
		}
	}
}

// TestAllowUIDWarnings: --allow-uid covers unix sockets only (datagram
// ones with their senders' credentials); serve says so for each TCP or UDP
// listener, naming who can reach it (a TCP listener got no warning, a UDP
// one the unix socket's).
func TestAllowUIDWarnings(t *testing.T) {
	ns := testnet.NewNS(t)
	dir := t.TempDir()
	d := startSwitch(t, ns, "--allow-uid", "0", "--listen", "unix://"+filepath.Join(dir, "vm.sock"),
		"--listen", "tcp://127.0.0.1:0", "--listen", "udp://127.0.0.1:0", "--listen", "unixgram://"+filepath.Join(dir, "vz.sock"))
	porttest.WaitFor(t, "the warnings", func() bool { return strings.Count(d.Output(), "do not apply to") == 2 })
	out := d.Output()
	for _, want := range []string{"do not apply to tcp sockets: anyone who can reach 127.0.0.1:",
		"do not apply to udp sockets: anyone who can reach 127.0.0.1:"} {
		if strings.Contains(out, want+"0 ") {
			t.Errorf("serve's warning names port 0, not the port bound:\n%s", out)
		}
		if !strings.Contains(out, want) {
			t.Errorf("serve's log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "do not apply to datagram sockets") {
		t.Errorf("serve warns that the unixgram socket is not covered; on Linux it is:\n%s", out)
	}
}

// TestSocketGroupRefused: a --socket-group the user may not give is
// refused naming that flag (and its line in --config), and leaves nothing
// at the socket's path: in the private directory the socket is made in,
// and bound in place for a directory too long for one.
func TestSocketGroupRefused(t *testing.T) {
	ns := testnet.NewNS(t)
	base, err := os.MkdirTemp("", "tapswitch-group-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{
		filepath.Join(base, "d"),
		filepath.Join(base, strings.Repeat("d", 88-len(base)-1)), // over 79 bytes: bound in place
	} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, nobody, nobody); err != nil {
			t.Fatal(err)
		}
		cfg := filepath.Join(base, "cfg.yaml")
		sock := "unix://" + dir + "/vm.sock"
		writeFile(t, cfg, "listen: ["+sock+"]\nctl: none\nsocket-group: \"4242\"\n")
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		out, err := ns.Exec(ctx, "setpriv", "--reuid", strconv.Itoa(nobody), "--regid", strconv.Itoa(nobody), "--clear-groups",
			bin, "serve", "--config", cfg).CombinedOutput()
		cancel()
		msg := strings.TrimSpace(string(out))
		want := cfg + ":3: --socket-group 4242: --listen " + sock + ": "
		if err == nil || !strings.HasPrefix(msg, "tapswitch: "+want) || !strings.HasSuffix(msg, "cannot give the socket file group 4242: operation not permitted") {
			t.Errorf("directory of %d bytes: %v, output %q, want %q … group 4242: operation not permitted", len(dir), err, msg, want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("directory of %d bytes: %s left behind", len(dir), entries[0].Name())
		}
	}
}
