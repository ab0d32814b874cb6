//go:build linux

package guest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/internal/testproc"
)

// ReadyMarker is the line the guest prints on its serial console once its
// shell reads commands.
const ReadyMarker = "TSGUEST-READY"

// DefaultBootTimeout is how long Boot waits for ReadyMarker. A guest usually
// boots in about 5 s under TCG; the margin is for busy 2-core CI machines.
const DefaultBootTimeout = 60 * time.Second

// A boot that has not finished after its timeout gets more time, up to
// starvedFactor times the timeout, while QEMU's CPU time keeps rising (by
// more than progressCPU in the last progressWindow): it is booting, slowly
// for want of CPU on a busy 2-core machine. A guest whose CPU time has
// stopped rising is hung (an idle or paused guest costs QEMU next to
// nothing), and more time would not help it: it fails at the timeout.
const (
	starvedFactor       = 3
	progressWindow      = 5 * time.Second
	progressCPU         = 500 * time.Millisecond
	clockTicksPerSecond = 100 // USER_HZ, the unit of /proc/PID/stat times
)

// MaxCommandLen bounds the command text given to Run: the guest reads it
// through a serial tty whose line buffer holds 4095 bytes.
const MaxCommandLen = 3500

// ErrTimeout is wrapped by Run's error when the command did not finish in
// time, and by Boot when the guest did not come up.
var ErrTimeout = errors.New("timed out")

// ErrExited is wrapped by Run's error when QEMU exited.
var ErrExited = errors.New("qemu exited")

// Config describes one guest.
type Config struct {
	// Name labels the guest in logs, QEMU's -name and the guest hostname
	// (characters other than [A-Za-z0-9-] become '-'). Default "tsguest-N".
	Name string

	// Netdev holds extra QEMU arguments, usually the network backend, e.g.
	// DgramNetdev("n0", guestSock, switchSock) or
	// {"-netdev", "stream,id=n0,server=off,addr.type=unix,addr.path=/x"}.
	// If it has a -netdev but no -device/-nic, a virtio-net NIC with MAC is
	// attached to the first -netdev (see NIC).
	Netdev []string

	// MAC of the automatically attached NIC. Empty: NewMAC().
	MAC string

	// IP is a static IPv4 address with prefix length for eth0, e.g.
	// "198.18.1.10/24" (kernel parameter ts.ip).
	IP string
	// Gateway is the IPv4 default route (ts.gw).
	Gateway string
	// DHCP runs udhcpc on eth0 before the guest reports ready (ts.dhcp=1).
	// udhcpc tries for about 10 s, then goes on in the background (retrying
	// every 3 s) and stays there to renew. The guest's hook writes the bound
	// ADDR/PLEN to /run/tsguest-dhcp-lease (removed on deconfig) and its
	// events to /run/tsguest-dhcp.log (and to the console before ready). It
	// sends the hostname (Name) as option 12.
	DHCP bool
	// IPv6 keeps IPv6 enabled. By default the guest disables it so that it
	// sends no DAD/router solicitation/MLD frames of its own.
	IPv6 bool
	// MTU of eth0 (ts.mtu); 0 keeps the default 1500.
	MTU int
	// Append is added to the kernel command line.
	Append string

	// Memory is QEMU's -m (default "256M").
	Memory string
	// ExtraFiles are passed to the QEMU process (or Wrapper) as fd 3, 4, ...
	ExtraFiles []*os.File
	// Wrapper is a command prefix QEMU runs under, e.g.
	// {"/path/tapswitch", "qemu", "--socket", p, "--"}; QEMU's path and
	// arguments follow it. To run a guest in a network namespace use e.g.
	// {"ip", "netns", "exec", "ns1"}.
	Wrapper []string
	// Env is added to the environment of QEMU (or Wrapper).
	Env []string
	// BootTimeout is how long Boot waits for the guest; default
	// $TAPSWITCH_GUEST_BOOT_TIMEOUT or DefaultBootTimeout, +15 s with DHCP.
	// Past it, Boot waits on (up to three times as long) only while QEMU's
	// CPU time keeps rising: a guest slowed by a busy machine gets more
	// time, a hung one fails at BootTimeout.
	BootTimeout time.Duration
}

// VM is a running guest. Its methods may be called from several goroutines;
// Run calls are serialised.
type VM struct {
	t    testing.TB
	name string
	mac  string
	args []string
	cmd  *exec.Cmd
	pid  int

	stdin *os.File

	mu        sync.Mutex // guards the fields below
	console   []byte     // serial output, \r removed
	qstderr   []byte     // QEMU's stderr
	changed   chan struct{}
	eof       bool
	logFile   *os.File
	dumped    bool
	procMu    sync.Mutex // held while signalling or reaping the process
	reaped    bool
	done      chan struct{} // closed once QEMU has been reaped
	waitErr   error
	runMu     sync.Mutex
	seq       int
	readersWG sync.WaitGroup
}

var vmCounter atomic.Int64

// NIC returns the QEMU arguments for a virtio-net PCI NIC on netdev
// netdevID. Its option ROM (iPXE) is disabled, which shortens boot.
func NIC(netdevID, mac string) []string {
	return []string{"-device", "virtio-net-pci,netdev=" + netdevID + ",mac=" + mac + ",romfile="}
}

// DgramNetdev returns a -netdev over unix datagram sockets: QEMU binds
// localPath and sends every frame to remotePath (one frame a datagram).
func DgramNetdev(id, localPath, remotePath string) []string {
	return []string{"-netdev", "dgram,id=" + id +
		",local.type=unix,local.path=" + localPath +
		",remote.type=unix,remote.path=" + remotePath}
}

// StreamNetdev returns a -netdev that connects to the unix stream socket at
// path (frames prefixed by a 4-byte big-endian length, as QEMU's
// -netdev stream/socket do).
func StreamNetdev(id, path string) []string {
	return []string{"-netdev", "stream,id=" + id + ",server=off,addr.type=unix,addr.path=" + path}
}

var (
	macMu   sync.Mutex
	macUsed = map[string]bool{}
)

// NewMAC returns a random locally administered unicast MAC 52:54:00:xx:xx:xx,
// distinct from every other one this process returned and from QEMU's
// default 52:54:00:12:34:56.
func NewMAC() string {
	macMu.Lock()
	defer macMu.Unlock()
	for {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			panic(err)
		}
		mac := fmt.Sprintf("52:54:00:%02x:%02x:%02x", b[0], b[1], b[2])
		if mac == "52:54:00:12:34:56" || macUsed[mac] {
			continue
		}
		macUsed[mac] = true
		return mac
	}
}

var nameSanitizer = regexp.MustCompile(`[^A-Za-z0-9-]`)

// Boot starts a guest and waits until its shell is ready. The guest is
// killed when the test ends; if the test failed, its console is logged.
func Boot(t testing.TB, cfg Config) *VM {
	t.Helper()
	kernel, initrd := Artifacts(t)
	vm, err := start(t, kernel, initrd, cfg)
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	t.Cleanup(vm.cleanup)
	timeout := bootTimeout(cfg)
	begin := time.Now()
	ready := func(c []byte) bool {
		return bytes.Contains(c, []byte("\n"+ReadyMarker+"\n")) || bytes.HasPrefix(c, []byte(ReadyMarker+"\n"))
	}
	fail := func(elapsed time.Duration, err error) {
		if errors.Is(err, ErrTimeout) {
			vm.diagnose()
		}
		vm.dump(fmt.Sprintf("did not come up in %v: %v", elapsed.Round(time.Millisecond), err))
		t.Fatalf("guest %s: did not print %s within %v: %v; QEMU used %v of CPU; %s", vm.name, ReadyMarker,
			elapsed.Round(time.Millisecond), err, groupCPU(vm.pid), procState(vm.pid))
	}
	// QEMU's CPU time (with a Wrapper's), sampled at most progressWindow
	// apart before the timeout and every second after it.
	type sample struct {
		at  time.Time
		cpu time.Duration
	}
	samples := []sample{{begin, groupCPU(vm.pid)}}
	for {
		wait := min(timeout-time.Since(begin), progressWindow)
		if wait <= 0 {
			wait = time.Second
		}
		err = vm.waitFor(wait, ready)
		if err == nil {
			break
		}
		now := sample{time.Now(), groupCPU(vm.pid)}
		samples = append(samples, now)
		elapsed := now.at.Sub(begin)
		switch {
		case !errors.Is(err, ErrTimeout):
			fail(elapsed, err)
		case elapsed < timeout:
			continue
		case elapsed >= starvedFactor*timeout:
			fail(elapsed, fmt.Errorf("%w: still busy at %d times its boot timeout %v", ErrTimeout, starvedFactor, timeout))
		}
		// The gain since the latest sample at least progressWindow old.
		i := len(samples) - 1
		for i >= 0 && now.at.Sub(samples[i].at) < progressWindow {
			i--
		}
		if i < 0 {
			continue // too soon to tell (a timeout under progressWindow)
		}
		gain, span := now.cpu-samples[i].cpu, now.at.Sub(samples[i].at)
		if gain <= progressCPU {
			fail(elapsed, fmt.Errorf("%w: QEMU's CPU time stopped rising (%v in the last %v)",
				ErrTimeout, gain, span.Round(time.Millisecond)))
		}
		samples = samples[i:] // still booting
	}
	t.Logf("guest %s: up in %v, %v of CPU (pid %d, mac %s)", vm.name, time.Since(begin).Round(time.Millisecond),
		groupCPU(vm.pid), vm.pid, vm.mac)
	return vm
}

// bootTimeout is Config.BootTimeout, else $TAPSWITCH_GUEST_BOOT_TIMEOUT
// (a Go duration), else DefaultBootTimeout; DHCP guests get 15 s more, as
// udhcpc may try for 10 s before the guest reports ready.
func bootTimeout(cfg Config) time.Duration {
	if cfg.BootTimeout > 0 {
		return cfg.BootTimeout
	}
	d := DefaultBootTimeout
	if v := os.Getenv("TAPSWITCH_GUEST_BOOT_TIMEOUT"); v != "" {
		if e, err := time.ParseDuration(v); err == nil && e > 0 {
			d = e
		}
	}
	if cfg.DHCP {
		d += 15 * time.Second
	}
	return d
}

func start(t testing.TB, kernel, initrd string, cfg Config) (*VM, error) {
	n := vmCounter.Add(1)
	name := cfg.Name
	if name == "" {
		name = fmt.Sprintf("tsguest-%d", n)
	}
	host := strings.Trim(nameSanitizer.ReplaceAllString(name, "-"), "-")
	if host == "" {
		host = fmt.Sprintf("tsguest-%d", n)
	}
	if len(host) > 63 {
		host = host[:63]
	}

	// loglevel=4: kernel errors (an oops, a hung task, an RCU stall) reach
	// the console, which is logged should the boot fail. A good boot on a
	// busy machine may print some too (the 8254 timer check's complaint,
	// RCU stalls while QEMU waited for a CPU), before the ready marker.
	// /init lowers the level to 1 before the shell starts, so that they
	// stay out of Run's output.
	// no_timer_check: the kernel checks that the 8254 timer's interrupt
	// comes through the IO-APIC by counting ticks over a short delay, which
	// a TCG guest on a busy host misses. It then tries other routings, and
	// failing those it panics ("IO-APIC + timer doesn't work!"): under a
	// load average of 13 on 2 cores, 34 boots of 150 failed the check and
	// one panicked. QEMU's routing works.
	cmdline := []string{"console=ttyS0", "quiet", "loglevel=4", "panic=-1", "sysrq_always_enabled", "no_timer_check",
		"ts.hostname=" + host}
	if cfg.IP != "" {
		p, err := netip.ParsePrefix(cfg.IP)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("Config.IP %q: want IPv4 ADDR/PLEN", cfg.IP)
		}
		cmdline = append(cmdline, "ts.ip="+p.String())
	}
	if cfg.Gateway != "" {
		a, err := netip.ParseAddr(cfg.Gateway)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("Config.Gateway %q: want an IPv4 address", cfg.Gateway)
		}
		cmdline = append(cmdline, "ts.gw="+a.String())
	}
	if cfg.DHCP {
		cmdline = append(cmdline, "ts.dhcp=1")
	}
	if cfg.IPv6 {
		cmdline = append(cmdline, "ts.ipv6=1")
	}
	if cfg.MTU > 0 {
		cmdline = append(cmdline, "ts.mtu="+strconv.Itoa(cfg.MTU))
	}
	if cfg.Append != "" {
		cmdline = append(cmdline, cfg.Append)
	}

	mem := cfg.Memory
	if mem == "" {
		mem = "256M"
	}
	qemu, err := exec.LookPath(QEMUBinary)
	if err != nil {
		return nil, err
	}
	args := []string{qemu,
		"-name", "guest=" + strings.ReplaceAll(name, ",", ",,") + ",debug-threads=on", // threads named in procState
		"-nodefaults", "-no-user-config", "-nographic", "-display", "none",
		// The monitor shares the console (^A c switches), and ^A b sends a
		// break: see diagnose.
		"-serial", "mon:stdio", "-no-reboot",
		"-m", mem, "-smp", "1", "-accel", "tcg",
		"-kernel", kernel, "-initrd", initrd,
		"-append", strings.Join(cmdline, " "),
	}
	mac := cfg.MAC
	netArgs := append([]string(nil), cfg.Netdev...)
	firstNetdev, hasDevice := "", false
	for i := 0; i+1 < len(netArgs); i++ {
		switch netArgs[i] {
		case "-netdev":
			if firstNetdev == "" {
				firstNetdev = optValue(netArgs[i+1], "id")
			}
		case "-device", "-nic":
			hasDevice = true
			if mac == "" {
				mac = optValue(netArgs[i+1], "mac")
			}
		}
	}
	if firstNetdev != "" && !hasDevice {
		if mac == "" {
			mac = NewMAC()
		}
		netArgs = append(netArgs, NIC(firstNetdev, mac)...)
	}
	args = append(args, netArgs...)
	if len(cfg.Wrapper) > 0 {
		args = append(append([]string(nil), cfg.Wrapper...), args...)
	}

	vm := &VM{
		t:       t,
		name:    name,
		mac:     mac,
		args:    args,
		changed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if dir := os.Getenv("TAPSWITCH_GUEST_CONSOLE_DIR"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err == nil {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d-%d.log", host, os.Getpid(), n)))
			if err == nil {
				vm.logFile = f
			}
		}
	}

	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin = inR
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.ExtraFiles = cfg.ExtraFiles
	cmd.Env = append(os.Environ(), cfg.Env...)
	// Own process group, so that cleanup also reaches QEMU when it runs
	// under a Wrapper; SIGKILL when the test binary dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = testproc.Start(cmd)
	inR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		errR.Close()
		return nil, fmt.Errorf("start %s: %w", strings.Join(args, " "), err)
	}
	vm.cmd = cmd
	vm.pid = cmd.Process.Pid
	vm.stdin = inW

	vm.readersWG.Add(2)
	go vm.readConsole(outR)
	go vm.readStderr(errR)
	go vm.reap()
	return vm, nil
}

// optValue returns the value of key in a QEMU option string "a,k=v,...".
func optValue(opts, key string) string {
	for _, kv := range strings.Split(opts, ",") {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

func (vm *VM) readConsole(r *os.File) {
	defer vm.readersWG.Done()
	defer r.Close()
	buf := make([]byte, 32*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			chunk := bytes.ReplaceAll(buf[:n], []byte("\r"), nil)
			vm.mu.Lock()
			vm.console = append(vm.console, chunk...)
			if vm.logFile != nil {
				vm.logFile.Write(chunk) //nolint:errcheck
			}
			close(vm.changed)
			vm.changed = make(chan struct{})
			vm.mu.Unlock()
		}
		if err != nil {
			vm.mu.Lock()
			vm.eof = true
			close(vm.changed)
			vm.changed = make(chan struct{})
			vm.mu.Unlock()
			return
		}
	}
}

func (vm *VM) readStderr(r *os.File) {
	defer vm.readersWG.Done()
	defer r.Close()
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			vm.mu.Lock()
			if len(vm.qstderr) < 1<<20 {
				vm.qstderr = append(vm.qstderr, buf[:n]...)
			}
			vm.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}

// reap waits for the process to exit without reaping it, kills whatever is
// left of its process group (e.g. QEMU under a Wrapper) while its pid cannot
// be reused, then reaps it.
func (vm *VM) reap() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, vm.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	vm.procMu.Lock()
	_ = unix.Kill(-vm.pid, unix.SIGKILL)
	err := vm.cmd.Wait()
	vm.reaped = true
	vm.procMu.Unlock()
	vm.mu.Lock()
	vm.waitErr = err
	vm.mu.Unlock()
	close(vm.done)
}

// waitFor waits until cond holds for the console output.
func (vm *VM) waitFor(timeout time.Duration, cond func(console []byte) bool) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		vm.mu.Lock()
		ok := cond(vm.console)
		ch, eof := vm.changed, vm.eof
		vm.mu.Unlock()
		if ok {
			return nil
		}
		if eof {
			select {
			case <-vm.done:
			case <-time.After(5 * time.Second):
			}
			vm.mu.Lock()
			werr := vm.waitErr
			vm.mu.Unlock()
			return fmt.Errorf("%w (%v)", ErrExited, werr)
		}
		select {
		case <-ch:
		case <-timer.C:
			return fmt.Errorf("%w after %v", ErrTimeout, timeout)
		}
	}
}

// muxEscape is the escape character of QEMU's console multiplexer (-serial
// mon:stdio), ^A.
const muxEscape = 0x01

// diagnose asks a guest that did not come up what it is doing. The answers
// land on the console, which the failure logs: QEMU's monitor shows the
// CPU's registers (HLT=1: halted, waiting for an interrupt; CPL=3: in a
// user program), and the kernel, through SysRq after a serial break, shows
// at console log level 9 its blocked tasks (w), the CPU's backtrace (l) and
// every task with its stack (t). The kernel listens for SysRq on the
// console once /init has opened it; before, only the registers come.
func (vm *VM) diagnose() {
	steps := []string{"\x01c", "info registers\n", "\x01c"}
	for _, k := range "9wlt" {
		steps = append(steps, "\x01b", string(k))
	}
	for _, s := range steps {
		if vm.write([]byte(s), time.Second) != nil {
			return
		}
		// The break and the key must not arrive together, and a TCG guest
		// under load takes its time.
		time.Sleep(300 * time.Millisecond)
	}
	// The output takes a moment: wait until 1 s passes without any, for at
	// most 10 s.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		vm.mu.Lock()
		n := len(vm.console)
		vm.mu.Unlock()
		time.Sleep(time.Second)
		vm.mu.Lock()
		quiet := len(vm.console) == n
		vm.mu.Unlock()
		if quiet {
			return
		}
	}
}

// ExitError is Run's error for a command that exited with a nonzero status.
type ExitError struct {
	Cmd    string
	Status int
	Output string
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("guest command %q exited with status %d; output:\n%s", e.Cmd, e.Status, e.Output)
}

// Run types cmd into the guest's shell and returns its output (stdout and
// stderr, trailing newlines removed). The error is an *ExitError if the
// command's exit status is nonzero, wraps ErrTimeout if it did not finish
// within timeout (the foreground job is then sent ^C), or wraps ErrExited
// if QEMU is gone. cmd is run as a brace group with stdin from /dev/null; it
// may span several lines but must be at most MaxCommandLen bytes, and not
// hold ^A (QEMU's console escape: ^A x ends QEMU). Output of
// background jobs started by earlier commands may show up in any later
// command's output.
func (vm *VM) Run(cmd string, timeout time.Duration) (string, error) {
	vm.runMu.Lock()
	defer vm.runMu.Unlock()
	if len(cmd) > MaxCommandLen {
		return "", fmt.Errorf("guest %s: command of %d bytes is longer than %d", vm.name, len(cmd), MaxCommandLen)
	}
	if strings.IndexByte(cmd, muxEscape) >= 0 {
		return "", fmt.Errorf("guest %s: command %q holds ^A, QEMU's console escape", vm.name, cmd)
	}
	vm.seq++
	n := vm.seq
	// The quotes keep the typed text from containing the markers should the
	// tty ever echo it.
	input := fmt.Sprintf("echo __TS_BEGIN_%d\"__\"\n{\n%s\n} </dev/null 2>&1\necho __TS_END_%d\"__\" $?\n", n, cmd, n)
	beginMark := []byte(fmt.Sprintf("__TS_BEGIN_%d__\n", n))
	endMark := []byte(fmt.Sprintf("__TS_END_%d__ ", n))

	vm.mu.Lock()
	from := len(vm.console)
	vm.mu.Unlock()

	select {
	case <-vm.done:
		return "", fmt.Errorf("guest %s: %q: %w", vm.name, cmd, ErrExited)
	default:
	}
	if err := vm.write([]byte(input), timeout); err != nil {
		return "", fmt.Errorf("guest %s: %q: writing to the console: %w", vm.name, cmd, err)
	}

	var out []byte
	status := -1
	started := false
	err := vm.waitFor(timeout, func(c []byte) bool {
		c = c[from:]
		i := bytes.Index(c, beginMark)
		if i < 0 {
			return false
		}
		started = true
		rest := c[i+len(beginMark):]
		out = rest
		j := bytes.Index(rest, endMark)
		if j < 0 {
			return false
		}
		tail := rest[j+len(endMark):]
		k := bytes.IndexByte(tail, '\n')
		if k < 0 {
			return false
		}
		out = rest[:j]
		s, err := strconv.Atoi(string(bytes.TrimSpace(tail[:k])))
		if err != nil {
			s = -1
		}
		status = s
		return true
	})
	output := strings.TrimRight(string(out), "\n")
	if err != nil {
		if errors.Is(err, ErrTimeout) {
			_ = vm.write([]byte{0x03}, time.Second) // ^C the foreground job
		}
		if !started {
			output = ""
		}
		return output, fmt.Errorf("guest %s: %q: %w; output so far:\n%s", vm.name, cmd, err, output)
	}
	if status != 0 {
		return output, &ExitError{Cmd: cmd, Status: status, Output: output}
	}
	return output, nil
}

// MustRun is Run that fails the test on any error.
func (vm *VM) MustRun(t testing.TB, cmd string, timeout time.Duration) string {
	t.Helper()
	out, err := vm.Run(cmd, timeout)
	if err != nil {
		t.Fatalf("guest %s: %v", vm.name, err)
	}
	return out
}

// write sends p to the serial console.
func (vm *VM) write(p []byte, timeout time.Duration) error {
	if err := vm.stdin.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	_, err := vm.stdin.Write(p)
	return err
}

// MAC is the guest NIC's MAC address ("" if unknown, e.g. no NIC).
func (vm *VM) MAC() string { return vm.mac }

// Name is Config.Name or the generated name.
func (vm *VM) Name() string { return vm.name }

// Exited is closed once the QEMU process (PID) has exited and been reaped.
func (vm *VM) Exited() <-chan struct{} { return vm.done }

// Kill sends SIGKILL to PID, as a crash would, and waits up to 10 s for it
// to be reaped. Once PID is gone, whatever is left of its process group
// (QEMU under a Wrapper) is killed too. It does nothing if PID is already
// gone.
func (vm *VM) Kill() {
	vm.signal(unix.SIGKILL, false)
	select {
	case <-vm.done:
	case <-time.After(10 * time.Second):
	}
}

// signal sends sig to the process (group) unless it has been reaped, so
// that a recycled pid is never signalled.
func (vm *VM) signal(sig unix.Signal, group bool) {
	vm.procMu.Lock()
	defer vm.procMu.Unlock()
	if vm.reaped {
		return
	}
	pid := vm.pid
	if group {
		pid = -pid
	}
	_ = unix.Kill(pid, sig)
}

func (vm *VM) cleanup() {
	if vm.t.Failed() {
		vm.dump("test failed")
	}
	vm.signal(unix.SIGKILL, true)
	select {
	case <-vm.done:
	case <-time.After(15 * time.Second):
		vm.t.Errorf("guest %s: pid %d did not exit after SIGKILL", vm.name, vm.pid)
	}
	vm.stdin.Close()
	waitCh := make(chan struct{})
	go func() { vm.readersWG.Wait(); close(waitCh) }()
	select {
	case <-waitCh:
	case <-time.After(5 * time.Second):
	}
	vm.mu.Lock()
	if vm.logFile != nil {
		vm.logFile.Close()
		vm.logFile = nil
	}
	vm.mu.Unlock()
}

// maxDump bounds the console excerpt logged on failure.
const maxDump = 256 << 10

// dump logs the console and QEMU's stderr once.
func (vm *VM) dump(why string) {
	vm.mu.Lock()
	if vm.dumped {
		vm.mu.Unlock()
		return
	}
	vm.dumped = true
	console, qerr := vm.console, vm.qstderr
	if len(console) > maxDump {
		console = append([]byte("[...]\n"), console[len(console)-maxDump:]...)
	}
	vm.mu.Unlock()
	vm.t.Logf("guest %s (pid %d) %s\ncommand: %s\n----- console -----\n%s\n----- qemu stderr -----\n%s\n-----",
		vm.name, vm.pid, why, strings.Join(vm.args, " "), console, qerr)
}

// procState describes the processes of process group pgid (the Wrapper and
// QEMU) and their threads (state, wait channel, CPU ticks), for failure
// messages.
func procState(pgid int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "process group %d:", pgid)
	pids := groupPIDs(pgid)
	if len(pids) == 0 {
		b.WriteString(" no process left")
	}
	for _, pid := range pids {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		fmt.Fprintf(&b, " process %d (%s) threads:", pid, bytes.TrimSpace(comm))
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			fmt.Fprintf(&b, " %v;", err)
			continue
		}
		for _, task := range tasks {
			dir := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
			comm, _ := os.ReadFile(dir + "comm")
			wchan, _ := os.ReadFile(dir + "wchan")
			state, ticks := "?", "?"
			if f := statFields(dir + "stat"); len(f) > 12 {
				state, ticks = f[0], f[11]+"+"+f[12]
			}
			fmt.Fprintf(&b, " [%s %s %s wchan=%s cpu=%s]", task.Name(), bytes.TrimSpace(comm), state, wchan, ticks)
		}
		b.WriteString(";")
	}
	return b.String()
}

// groupCPU sums the user+system CPU time of the live processes in process
// group pgid (QEMU, and a Wrapper if any).
func groupCPU(pgid int) time.Duration {
	var ticks int64
	for _, pid := range groupPIDs(pgid) {
		if f := statFields(fmt.Sprintf("/proc/%d/stat", pid)); len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / clockTicksPerSecond
}

// groupPIDs returns the live processes in process group pgid.
func groupPIDs(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields("/proc/" + e.Name() + "/stat"); len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// statFields returns the fields of a /proc stat file after "pid (comm)":
// state ppid pgrp ... utime(11) stime(12), counted from 0.
func statFields(path string) []string {
	stat, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(stat[i+1:]))
}
