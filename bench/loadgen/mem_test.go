package loadgen

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// memChildEnv makes the test binary a switch for TestMemory64Ports: it
// serves in the directory the variable names and answers "report" lines
// on stdin with a memReport, until stdin closes.
const memChildEnv = "LOADGEN_MEM_CHILD"

// memQueueEnv sets the child switch's Config.QueueLen (default: the
// switch's default, 512).
const memQueueEnv = "LOADGEN_MEM_QUEUE_LEN"

func TestMain(m *testing.M) {
	if dir := os.Getenv(memChildEnv); dir != "" {
		os.Exit(memChild(dir))
	}
	os.Exit(m.Run())
}

// memReport is what the child switch says about itself.
type memReport struct {
	Ports, FDB         int
	VmHWM, VmRSS       int64 // bytes, from /proc/self/status after runtime.GC
	HeapInuse, GoSys   uint64
	Goroutines, QDrops uint64 // QDrops: queue-full drops since the start

	// What memScenario's clients sent and received during the traffic,
	// and the queue-full drops meanwhile.
	sent, received, drops uint64
}

func memChild(dir string) int {
	ql, _ := strconv.Atoi(os.Getenv(memQueueEnv))
	sw, err := StartSwitch(dir, vswitch.Config{QueueLen: ql})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer sw.Close()
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		st := sw.Switch.Stats()
		r := memReport{Ports: len(st.Ports), FDB: st.FDB.Size, HeapInuse: ms.HeapInuse, GoSys: ms.Sys,
			Goroutines: uint64(runtime.NumGoroutine()), QDrops: st.Totals.Drops[vswitch.DropQueueFull]}
		r.VmHWM, r.VmRSS = statusBytes("VmHWM"), statusBytes("VmRSS")
		json.NewEncoder(os.Stdout).Encode(r)
	}
	return 0
}

// statusBytes reads a "kB" field of /proc/self/status.
func statusBytes(key string) int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	return -1
}

// memBudget is the target for 64 ports and a full FDB.
const memBudget = 64 << 20

// The traffic phase of TestMemory64Ports: how long, and the rate of each
// port in the paced scenarios (1500 B frames: 64 ports x 2000 frames/s x
// 1500 B = 1.5 Gbit/s in all).
const (
	memPorts    = 64
	trafficTime = 2 * time.Second
	pacedRate   = 2000
)

// TestMemory64Ports measures the switch's memory with 64 stream ports and
// a full FDB. Each scenario runs a switch in a child process of its own
// (so that only the switch's memory is counted, and each peak is its own),
// attaches 64 stream clients that teach it 128 MACs each (8192: the
// default FDB size, full), then has every client send unicast frames to
// the next port's stations for two seconds, and reports the child's peak
// RSS (VmHWM) and its RSS after runtime.GC, the frames sent and received
// and the queue-full drops during the traffic (teaching drops some: every
// port sends its 128 frames to port 0 at once).
//
//   - paced-1500B: 2000 frames/s per port (1.5 Gbit/s in all): the issue's
//     target, peak RSS at most 64 MiB. A client the scheduler held up
//     catches up, so the clients send the 256 000 frames of two seconds
//     even on a loaded machine (they give up at four); the test checks
//     that at least 90 % of them arrived, or the peak was not measured at
//     that load, and that at most 1 % were dropped for a full queue. At
//     this rate a port's queue (512 frames: 256 ms of its traffic) fills
//     only while its reader is held up for longer, which a loaded machine
//     can do, so no drop at all is not asserted (here, at load 8-11: 0
//     drops in most runs, at most 413 of 256 000).
//   - flood-1500B: every client as fast as it can, so that transmit queues
//     fill (reported, not checked).
//   - flood-65535B: the same with maximum-size frames (reported only).
//   - flood-*-queue64: the floods with 64-frame transmit queues
//     (serve --queue-len 64), to show what bounds the peak.
func TestMemory64Ports(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector multiplies memory use; run without -race")
	}
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	for _, sc := range []struct {
		name     string
		size     int
		paced    bool
		queueLen int
	}{
		{"paced-1500B", 1500, true, 0},
		{"flood-1500B", 1500, false, 0},
		{"flood-65535B", 65535, false, 0},
		{"flood-1500B-queue64", 1500, false, 64},
		{"flood-65535B-queue64", 65535, false, 64},
	} {
		t.Run(sc.name, func(t *testing.T) {
			r := memScenario(t, sc.size, sc.paced, sc.queueLen)
			if !sc.paced {
				return
			}
			if r.VmHWM > memBudget {
				t.Errorf("peak RSS %.1f MiB with 64 ports and a full FDB, over the %d MiB budget", mib(r.VmHWM), memBudget>>20)
			}
			if target := uint64(memPorts * pacedRate * trafficTime.Seconds()); r.received < target*9/10 {
				t.Errorf("clients received %d frames, %.0f %% of the %d that %d frames/s per port make in %v: the peak was not measured at that load",
					r.received, 100*float64(r.received)/float64(target), target, pacedRate, trafficTime)
			}
			if r.drops*100 > r.sent {
				t.Errorf("%d queue-full drops of %d frames sent, over 1 %%", r.drops, r.sent)
			}
		})
	}
}

func memScenario(t *testing.T, size int, paced bool, queueLen int) memReport {
	const ports, macsPerPort = memPorts, 128
	dir := porttest.SocketDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), memChildEnv+"="+dir, memQueueEnv+"="+strconv.Itoa(queueLen))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	out := bufio.NewReader(stdout)
	if l, err := out.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("child: %q, %v", l, err)
	}
	report := func(phase string, log bool) memReport {
		t.Helper()
		if _, err := io.WriteString(stdin, "report\n"); err != nil {
			t.Fatal(err)
		}
		var r memReport
		l, err := out.ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(l, &r)
		}
		if err != nil {
			t.Fatalf("child report: %v", err)
		}
		if log {
			t.Logf("%-9s ports=%d fdb=%d VmHWM=%.1f MiB VmRSS=%.1f MiB heap_inuse=%.1f MiB go_sys=%.1f MiB goroutines=%d queue_full_drops=%d",
				phase, r.Ports, r.FDB, mib(r.VmHWM), mib(r.VmRSS), mib(int64(r.HeapInuse)), mib(int64(r.GoSys)), r.Goroutines, r.QDrops)
		}
		return r
	}
	report("started", true)

	mac := func(port, i int) [6]byte { return [6]byte{0x02, 0x4d, 0, byte(port), 0, byte(i)} }
	frame := func(dst, src [6]byte, size int) []byte {
		f := make([]byte, 4+size)
		binary.BigEndian.PutUint32(f, uint32(size))
		copy(f[4:], dst[:])
		copy(f[10:], src[:])
		binary.BigEndian.PutUint16(f[16:], dataType)
		return f
	}
	conns := make([]net.Conn, ports)
	var got atomic.Uint64
	for i := range conns {
		c, err := net.Dial("unix", filepath.Join(dir, "stream.sock"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = c
		go func() {
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				got.Add(uint64(n))
				if err != nil {
					return
				}
			}
		}()
	}
	// Teach: once every port is attached, port 0 broadcasts once; once
	// that is learned, every port sends one frame from each of its MACs to
	// port 0's first: learning without a flood.
	waitFor := func(what string, ok func(memReport) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			r := report("", false)
			if ok(r) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: switch has %d ports and %d FDB entries", what, r.Ports, r.FDB)
			}
		}
	}
	waitFor("attach", func(r memReport) bool { return r.Ports == ports })
	if _, err := conns[0].Write(frame([6]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, mac(0, 0), 60)); err != nil {
		t.Fatal(err)
	}
	waitFor("first MAC", func(r memReport) bool { return r.FDB == 1 })
	for p, c := range conns {
		var b []byte
		for i := range macsPerPort {
			b = append(b, frame(mac(0, 0), mac(p, i), 60)...)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor("learning", func(r memReport) bool { return r.Ports == ports && r.FDB == ports*macsPerPort })
	report("learned", true)

	// Traffic: each port sends from its MACs to the next port's, as fast
	// as it can for trafficTime, or paced: the frames of pacedRate over
	// trafficTime, each due at its time from the start, so that a writer
	// the scheduler held up catches up (16 frames a write at most)
	// instead of losing the time, until twice trafficTime at most.
	var wg sync.WaitGroup
	var sent atomic.Uint64
	before := report("", false)
	got0 := got.Load()
	start := time.Now()
	stop, giveUp := start.Add(trafficTime), start.Add(2*trafficTime)
	quota := int(pacedRate * trafficTime / time.Second)
	for p, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var b []byte
			for i := range 16 {
				b = append(b, frame(mac((p+1)%ports, i*7%macsPerPort), mac(p, i*7%macsPerPort), size)...)
			}
			fl := len(b) / 16
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			n := 0
			for now := time.Now(); ; now = time.Now() {
				k := 16
				if !paced && !now.Before(stop) || paced && (n >= quota || now.After(giveUp)) {
					break
				}
				if paced {
					due := min(quota, int(now.Sub(start)*pacedRate/time.Second))
					if k = min(k, due-n); k <= 0 {
						<-tick.C
						continue
					}
				}
				if _, err := c.Write(b[:k*fl]); err != nil {
					t.Error(err)
					return
				}
				n += k
				sent.Add(uint64(k))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(200 * time.Millisecond)
	r := report("traffic", true)
	r.sent, r.received, r.drops = sent.Load(), (got.Load()-got0)/uint64(4+size), r.QDrops-before.QDrops
	t.Logf("clients sent %d frames in %v (%.2f Gbit/s) and received %d; queue-full drops %d (%.2g %%)",
		r.sent, elapsed.Round(time.Millisecond), gbps(r.sent, size, elapsed), r.received,
		r.drops, 100*float64(r.drops)/float64(max(r.sent, 1)))
	if r.FDB != ports*macsPerPort {
		t.Errorf("FDB has %d entries after traffic, want %d", r.FDB, ports*macsPerPort)
	}
	return r
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// gbps is the rate of frames of size bytes in d, in Gbit/s.
func gbps(frames uint64, size int, d time.Duration) float64 {
	return float64(frames) * float64(size) * 8 / d.Seconds() / 1e9
}
