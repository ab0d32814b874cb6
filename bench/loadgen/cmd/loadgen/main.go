// Command loadgen measures tapswitch's VM socket transports with the
// clients of package loadgen: for each transport and frame size it runs
// two active clients alone and with -idle idle clients attached,
// interleaved over -rounds rounds (alone first in the first, third, ...
// round and second in the others, so that neither configuration always
// runs on the heels of the other), and prints the medians and the
// throughput lost to the idle clients. Its "lost" column is the frames the
// clients sent that had not arrived when their run ended, "late" those
// that arrived after their sender had given up on them (a stall longer
// than loadgen.DefaultLossTimeout), and "switch drops" the frames an
// in-process switch counted as dropped (any port and reason; "-" for a
// running switch): a frame the switch drops is lost too, so the columns
// overlap and are not to be added.
//
// Without -stream or -dgram it starts an in-process switch with serve's
// default limits. With them it drives a running switch, e.g.
//
//	tapswitch serve --listen unix:///tmp/ts.sock --listen unixgram:///tmp/ts-dgram.sock --ctl none &
//	go run ./bench/loadgen/cmd/loadgen -stream /tmp/ts.sock -dgram /tmp/ts-dgram.sock -pid $!
//
// -pid adds the switch process's CPU use and peak RSS (VmHWM) to the
// report.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tapswitch/tapswitch/bench/loadgen"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

func main() {
	var (
		transports = flag.String("transport", "stream,dgram", "transports to measure: stream, dgram")
		sizes      = flag.String("sizes", "64,1500", "frame sizes in bytes (Ethernet header included, no FCS)")
		idle       = flag.Int("idle", 8, "idle clients in the second configuration")
		rounds     = flag.Int("rounds", 5, "interleaved rounds of each configuration")
		duration   = flag.Duration("duration", 2*time.Second, "length of one run")
		window     = flag.Int("window", loadgen.DefaultWindow, "frames in flight per direction (-1: no bound, drops count as lost)")
		streamPath = flag.String("stream", "", "socket file of a running switch's stream listener")
		dgramPath  = flag.String("dgram", "", "socket file of a running switch's datagram listener")
		pid        = flag.Int("pid", 0, "process ID of the running switch, for its CPU time and VmHWM")
	)
	flag.Parse()
	if err := run(*transports, *sizes, *idle, *rounds, *duration, *window, *streamPath, *dgramPath, *pid); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

type sample struct {
	r        loadgen.Result
	swCPU    time.Duration // of the external switch, if -pid
	switchDr uint64        // drops counted by the in-process switch (also in r.Lost if they were the clients' frames)
}

func run(transports, sizeList string, idle, rounds int, d time.Duration, window int, streamPath, dgramPath string, pid int) error {
	if rounds < 1 {
		return fmt.Errorf("-rounds %d: want at least 1", rounds)
	}
	if d <= 0 {
		return fmt.Errorf("-duration %v: want more than 0", d)
	}
	var sizes []int
	for _, s := range strings.Split(sizeList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-sizes: %w", err)
		}
		sizes = append(sizes, n)
	}
	paths := map[string]string{loadgen.Stream: streamPath, loadgen.Dgram: dgramPath}
	var sw *loadgen.Switch
	if streamPath == "" && dgramPath == "" {
		dir, err := os.MkdirTemp("", "loadgen-switch-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		if sw, err = loadgen.StartSwitch(dir, vswitch.Config{}); err != nil {
			return err
		}
		defer sw.Close()
		paths[loadgen.Stream], paths[loadgen.Dgram] = sw.StreamPath, sw.DgramPath
		fmt.Println("switch: in-process, serve's defaults")
	}
	fmt.Printf("load before: %s", loadavg())
	fmt.Printf("%d rounds of %v per configuration (order alternating), window %d\n\n", rounds, d, window)
	fmt.Println("| transport | frame | idle clients | frames/s median (min-max) | Gbit/s median | lost | late | switch drops | idle rx | cpu cores | throughput vs 0 idle |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, tr := range strings.Split(transports, ",") {
		tr = strings.TrimSpace(tr)
		path := paths[tr]
		if path == "" {
			fmt.Fprintf(os.Stderr, "loadgen: no %s socket; skipping %s\n", tr, tr)
			continue
		}
		for _, size := range sizes {
			configs := []int{0, idle}
			res := make([][]sample, len(configs))
			for round := range rounds {
				for _, i := range order(round, len(configs)) {
					n := configs[i]
					s, err := measure(loadgen.Config{Transport: tr, Path: path, Size: size, Idle: n, Window: window}, d, sw, pid)
					if err != nil {
						return err
					}
					res[i] = append(res[i], s)
				}
			}
			base := 0.0
			for i, n := range configs {
				fps := func(s sample) float64 { return s.r.FramesPerSec() }
				m := median(res[i], fps)
				if i == 0 {
					base = m
				}
				var lost, late, drops, sent, idleRx uint64
				var cpu, el float64
				for _, s := range res[i] {
					lost += s.r.Lost
					late += s.r.Late
					drops += s.switchDr
					sent += s.r.Sent
					idleRx += s.r.IdleReceived
					cpu += (s.r.CPU + s.swCPU).Seconds()
					el += s.r.Elapsed.Seconds()
				}
				vs := "-"
				if i > 0 && base > 0 {
					vs = fmt.Sprintf("%+.1f%%", (m/base-1)*100)
				}
				pct := func(x uint64) string { return fmt.Sprintf("%.2g%%", 100*float64(x)/float64(max(sent, 1))) }
				swDrops := "-"
				if sw != nil {
					swDrops = pct(drops)
				}
				fmt.Printf("| %s | %d B | %d | %.0f (%.0f-%.0f) | %.3f | %s | %d | %s | %d | %.2f | %s |\n",
					tr, size, n, m, minOf(res[i], fps), maxOf(res[i], fps), m*float64(size)*8/1e9,
					pct(lost), late, swDrops, idleRx, cpu/max(el, 1e-9), vs)
			}
		}
	}
	fmt.Printf("\nload after: %s", loadavg())
	if pid > 0 {
		fmt.Printf("switch pid %d: %s\n", pid, procStatus(pid, "VmHWM", "VmRSS"))
	} else {
		fmt.Printf("this process: %s\n", procStatus(os.Getpid(), "VmHWM", "VmRSS"))
	}
	return nil
}

// order returns the order in which round (from 0) runs n configurations:
// 0 to n-1 in even rounds, n-1 to 0 in odd ones.
func order(round, n int) []int {
	o := make([]int, n)
	for i := range o {
		o[i] = i
		if round%2 == 1 {
			o[i] = n - 1 - i
		}
	}
	return o
}

// measure runs one configuration with fresh clients.
func measure(cfg loadgen.Config, d time.Duration, sw *loadgen.Switch, pid int) (sample, error) {
	s, err := loadgen.NewSession(cfg)
	if err != nil {
		return sample{}, err
	}
	defer s.Close()
	var drops0 uint64
	if sw != nil {
		drops0 = sw.Drops()
	}
	cpu0 := procCPU(pid)
	r, err := s.Run(0, d)
	out := sample{r: r, swCPU: procCPU(pid) - cpu0}
	if sw != nil {
		out.switchDr = sw.Drops() - drops0
	}
	return out, err
}

func median(s []sample, f func(sample) float64) float64 {
	v := make([]float64, len(s))
	for i := range s {
		v[i] = f(s[i])
	}
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

func minOf(s []sample, f func(sample) float64) float64 {
	m := f(s[0])
	for _, x := range s[1:] {
		m = min(m, f(x))
	}
	return m
}

func maxOf(s []sample, f func(sample) float64) float64 {
	m := f(s[0])
	for _, x := range s[1:] {
		m = max(m, f(x))
	}
	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown\n"
	}
	return string(b)
}

// procCPU is the user and system time of process pid (0: none).
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

func procStatus(pid int, keys ...string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, k := range keys {
			if strings.HasPrefix(l, k+":") {
				out = append(out, k+" "+strings.Join(strings.Fields(l[len(k)+1:]), " "))
			}
		}
	}
	return strings.Join(out, ", ")
}
