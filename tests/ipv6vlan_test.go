//go:build linux

package tests

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/internal/api"
	"github.com/tapswitch/tapswitch/internal/testnet"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// TestIPv6AndVLAN checks, with real kernels on both ends, what the other
// end-to-end tests leave out by turning IPv6 off: neighbour discovery,
// DAD, ping and bulk TCP over IPv6, and the same over 802.1Q VLAN 100,
// through offload taps (TSO6 super-frames crossing whole) and through a
// port that takes no offloads (the switch's own segmentation of TCPv6
// super-frames, tagged or not). Topology:
//
//	a [tapA] --\                                  /-- [tapC] c  (no offloads)
//	            sw1 (offload taps) --stream-- sw2
//	b [tapB] --/
//
// sw2 runs with --tap-offload=false and connects to sw1's stream
// listener, so frames from a to c are cut by sw1 for the stream port, and
// frames from c arrive at sw1 as plain segments, which sw1 merges into
// super-frames again for tapA (untagged; tagged segments go one by one).
func TestIPv6AndVLAN(t *testing.T) {
	testnet.RequireRoot(t)
	sw1, sw2 := testnet.NewNS(t), testnet.NewNS(t)
	a, b, c := testnet.NewNS(t), testnet.NewNS(t), testnet.NewNS(t)
	ipv4Only(t, sw1, sw2) // the switches' namespaces stay quiet; a, b, c speak IPv6
	tapA, tapB, tapC := testnet.UniqueName("tsa"), testnet.UniqueName("tsb"), testnet.UniqueName("tsc")
	sock := t.TempDir() + "/vm.sock"
	d1 := startSwitch(t, sw1, "--tap", tapA, "--tap", tapB, "--listen", "unix://"+sock)
	d2 := startSwitch(t, sw2, "--tap", tapC, "--tap-offload=false", "--connect", "unix://"+sock)
	eps := []struct {
		ns, sw *testnet.NS
		link   string
		n      int
	}{{a, sw1, tapA, 1}, {b, sw1, tapB, 2}, {c, sw2, tapC, 3}}
	for _, e := range eps {
		waitLink(t, e.sw, e.link)
		testnet.MoveLink(t, e.link, e.sw, e.ns)
		e.ns.Run(t, "sysctl", "-q", "-w", "net.ipv6.conf."+e.link+".disable_ipv6=0")
		e.ns.AddAddr(t, e.link, fmt.Sprintf("2001:2::%d/64", e.n))
		e.ns.AddAddr(t, e.link, fmt.Sprintf("198.18.61.%d/24", e.n))
		e.ns.SetUp(t, e.link)
	}
	waitPorts(t, d1, 10*time.Second, "sw2 connected", func(ps []api.Port) bool { return len(ps) == 3 })
	for _, e := range eps {
		waitDAD(t, e.ns, e.link)
	}

	check := func(t *testing.T, v6, v4 string) {
		for _, dst := range []string{v6 + "2", v6 + "3", v4 + "2", v4 + "3"} {
			a.Ping(t, dst)
		}
		c.Ping(t, v6+"2")
		const size = 48 << 20
		for _, p := range []struct {
			from, to *testnet.NS
			addr     string
		}{
			{a, b, v6 + "2"}, // offload to offload: super-frames whole
			{a, c, v6 + "3"}, // cut by sw1 for the stream port
			{c, a, v6 + "1"}, // from a tap without offloads: merged by sw1 for tapA
			{a, c, v4 + "3"},
			{c, a, v4 + "1"},
		} {
			before := tcpInCsumErrors(t, p.to)
			tcpTransfer(t, p.from, p.to, p.addr, size)
			if n := tcpInCsumErrors(t, p.to) - before; n != 0 {
				t.Errorf("to %s: %d TCP segments with bad checksums (InCsumErrors)", p.addr, n)
			}
		}
		for _, d := range []*daemon{d1, d2} {
			var st vswitch.Stats
			if err := d.api().Do(t.Context(), "GET", "/v1/stats", nil, &st); err != nil {
				t.Fatal(err)
			}
			if n := st.Totals.Drops[vswitch.DropBadOffload]; n != 0 {
				t.Errorf("switch dropped %d frames as bad_offload\n%s", n, d.ctl(t, "stats"))
			}
		}
	}

	t.Run("untagged", func(t *testing.T) {
		in0 := portCounters(t, d1, tapA)
		check(t, "2001:2::", "198.18.61.")
		// The TCP from a crossed as super-frames: far more bytes per frame
		// than an MTU-sized frame holds.
		in1 := portCounters(t, d1, tapA)
		if frames := in1.RxFrames - in0.RxFrames; frames == 0 || (in1.RxBytes-in0.RxBytes)/frames < 3000 {
			t.Errorf("tap %s: %d frames, %d bytes: no TCP super-frames came from it", tapA, frames, in1.RxBytes-in0.RxBytes)
		}
		// The segments from c (2 × 48 MiB, some 70 000) reached tapA
		// mostly merged into super-frames.
		if n := in1.TxCoalesced - in0.TxCoalesced; n < 35000 {
			t.Errorf("tap %s: %d segments from c merged into TCP super-frames, want most of them", tapA, n)
		}
	})

	t.Run("vlan100", func(t *testing.T) {
		v6, v4 := "2001:2:0:100::", "198.18.62."
		vlanDev := true
		for _, e := range eps {
			sub := e.link + ".v"
			out, err := exec.Command("ip", "-n", e.ns.Name(), "link", "add", "link", e.link, "name", sub, "type", "vlan", "id", "100").CombinedOutput()
			if err != nil {
				if !strings.Contains(string(out), "Unknown device type") {
					t.Fatalf("ip link add type vlan: %v\n%s", err, out)
				}
				vlanDev = false
				break
			}
			e.ns.AddAddr(t, sub, fmt.Sprintf("%s%d/64", v6, e.n))
			e.ns.AddAddr(t, sub, fmt.Sprintf("%s%d/24", v4, e.n))
			e.ns.SetUp(t, sub)
		}
		if !vlanDev {
			// A kernel without 802.1Q (CONFIG_VLAN_8021Q unset): tag
			// every frame of the taps with tc programs instead, and
			// use their own addresses.
			t.Log("no 802.1Q devices in this kernel: tagging the taps' frames with tcx programs")
			for _, e := range eps {
				vlanTCX(t, e.ns, e.link, 100)
				e.ns.IP(t, "neigh", "flush", "dev", e.link)
			}
			v6, v4 = "2001:2::", "198.18.61."
		} else {
			for _, e := range eps {
				waitDAD(t, e.ns, e.link+".v")
			}
		}
		check(t, v6, v4)
	})
}

// waitDAD waits until no IPv6 address of link in ns is tentative, and
// fails if duplicate address detection failed for one.
func waitDAD(t *testing.T, ns *testnet.NS, link string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := ns.IP(t, "-6", "addr", "show", "dev", link)
		if strings.Contains(out, "dadfailed") {
			t.Fatalf("DAD failed on %s:\n%s", link, out)
		}
		if !strings.Contains(out, "tentative") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("addresses of %s still tentative:\n%s", link, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// portCounters returns the counters of d's port name.
func portCounters(t *testing.T, d *daemon, name string) api.Port {
	t.Helper()
	var ps []api.Port
	mustJSON(t, d.ctl(t, "ports", "--json"), &ps)
	for _, p := range ps {
		if p.Name == name {
			return p
		}
	}
	t.Fatalf("no port %s", name)
	return api.Port{}
}

// tcpInCsumErrors returns the Tcp InCsumErrors counter of ns.
func tcpInCsumErrors(t *testing.T, ns *testnet.NS) uint64 {
	t.Helper()
	var head []string
	for _, l := range strings.Split(ns.Output(t, "cat", "/proc/net/snmp"), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, k := range head {
			if k == "InCsumErrors" && i < len(f) {
				n, _ := strconv.ParseUint(f[i], 10, 64)
				return n
			}
		}
	}
	t.Fatal("no Tcp InCsumErrors in /proc/net/snmp")
	return 0
}

// tcpTransfer sends size random bytes over TCP from a socket in from to a
// listener on addr in to, and checks that they arrive intact within 30 s.
func tcpTransfer(t *testing.T, from, to *testnet.NS, addr string, size int) {
	t.Helper()
	data := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{byte(size)})
	_, _ = rng.Read(data)
	took := testnet.TCPTransfer(t, from, to, addr, data, 30*time.Second, nil)
	t.Logf("%d MiB to %s in %v", size>>20, addr, took.Round(time.Millisecond))
}

// vlanTCX makes link in ns a VLAN vid endpoint without an 802.1Q device:
// a tcx egress program pushes the tag on every frame (the kernel inserts
// it into the frame, TSO super-frames included, since a tap has no VLAN
// acceleration) and an ingress program pops it. They stay until the link
// is deleted.
func vlanTCX(t *testing.T, ns *testnet.NS, link string, vid int) {
	t.Helper()
	insn := func(op, dst, src uint8, imm int32) []byte {
		b := make([]byte, 8)
		b[0], b[1] = op, dst|src<<4
		binary.LittleEndian.PutUint32(b[4:], uint32(imm))
		return b
	}
	const movK, movX, call, exit = 0xb7, 0xbf, 0x85, 0x95
	const vlanPush, vlanPop = 18, 19     // BPF_FUNC_skb_vlan_{push,pop}
	const tcxIngress, tcxEgress = 46, 47 // BPF_TCX_{INGRESS,EGRESS}
	const ethP8021QBE = 0x0081           // htons(ETH_P_8021Q) on little-endian
	prog := func(code ...[]byte) []byte { return bytes.Join(code, nil) }
	egress := prog(insn(movK, 2, 0, ethP8021QBE), insn(movK, 3, 0, int32(vid)), insn(call, 0, 0, vlanPush),
		insn(movK, 0, 0, 0), insn(exit, 0, 0, 0))
	ingress := prog(insn(call, 0, 0, vlanPop), insn(movK, 0, 0, 0), insn(exit, 0, 0, 0))
	bpf := func(cmd uintptr, attr []byte) (int, error) {
		r, _, e := unix.Syscall(unix.SYS_BPF, cmd, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return err
		}
		lic := []byte("GPL\x00")
		for _, p := range []struct {
			code []byte
			at   uint32
		}{{egress, tcxEgress}, {ingress, tcxIngress}} {
			load := make([]byte, 128)
			le := binary.LittleEndian
			le.PutUint32(load[0:], unix.BPF_PROG_TYPE_SCHED_CLS)
			le.PutUint32(load[4:], uint32(len(p.code)/8))
			le.PutUint64(load[8:], uint64(uintptr(unsafe.Pointer(&p.code[0]))))
			le.PutUint64(load[16:], uint64(uintptr(unsafe.Pointer(&lic[0]))))
			fd, err := bpf(unix.BPF_PROG_LOAD, load)
			runtime.KeepAlive(p.code) // the kernel read them through load
			runtime.KeepAlive(lic)
			if err != nil {
				return fmt.Errorf("load: %w", err)
			}
			att := make([]byte, 64)
			le.PutUint32(att[0:], uint32(ifi.Index))
			le.PutUint32(att[4:], uint32(fd))
			le.PutUint32(att[8:], p.at)
			_, err = bpf(unix.BPF_PROG_ATTACH, att)
			unix.Close(fd)
			if err != nil {
				return fmt.Errorf("tcx attach: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Skipf("neither 802.1Q devices nor tcx programs in this kernel: %v", err)
	}
}
