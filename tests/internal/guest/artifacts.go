//go:build linux

// Package guest boots tiny QEMU guests (Debian kernel + busybox initramfs,
// built by tests/guest/build.sh) for tapswitch's end-to-end tests and drives
// them through their serial console.
//
// Typical use:
//
//	vm := guest.Boot(t, guest.Config{
//		Name:   "a",
//		Netdev: guest.DgramNetdev("n0", guestSock, switchSock),
//		IP:     "198.18.1.10/24",
//	})
//	out := vm.MustRun(t, "ping -c 1 -W 2 198.18.1.11", 10*time.Second)
//
// Guests always run under TCG (-accel tcg), never KVM, and boot in about
// 5 s on an idle 2-core machine (15-30 s when several QEMUs compete).
//
// The guest: Debian's kernel with virtio_net/virtio_pci loaded from the
// initramfs, busybox-static (ip, ping, udhcpc, udhcpd, nc, arping, ...),
// iperf3 if the host had it when the guest was built, IPv6 disabled unless
// Config.IPv6, and a shell on ttyS0 with echo and prompts turned off.
//
// Environment:
//
//	TAPSWITCH_GUEST_CACHE         build cache directory (see Artifacts)
//	TAPSWITCH_GUEST_BOOT_TIMEOUT  default boot timeout, a Go duration
//	TAPSWITCH_GUEST_CONSOLE_DIR   if set, every guest's console is also
//	                              written to a file there
package guest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// QEMUBinary is the QEMU system emulator the harness runs.
const QEMUBinary = "qemu-system-x86_64"

// buildTimeout bounds one run of build.sh (it downloads the kernel package).
const buildTimeout = 10 * time.Minute

var (
	artifactsOnce sync.Once
	artKernel     string
	artInitrd     string
	artErr        error
)

// Artifacts returns the guest kernel and initramfs, building them with
// tests/guest/build.sh on first use. The build is cached in
// $TAPSWITCH_GUEST_CACHE, else $XDG_CACHE_HOME/tapswitch-guest, else
// ~/.cache/tapswitch-guest, under a subdirectory keyed by the contents of
// build.sh, so editing the script rebuilds. Concurrent test binaries
// serialise on a flock in the cache directory.
//
// If QEMU is not installed the test is skipped when not running as root, and
// fails when running as root (CI must have it).
func Artifacts(t testing.TB) (kernel, initrd string) {
	t.Helper()
	requireQEMU(t)
	artifactsOnce.Do(func() {
		start := time.Now()
		artKernel, artInitrd, artErr = buildArtifacts()
		if artErr == nil {
			if d := time.Since(start); d > 2*time.Second {
				t.Logf("guest: artifacts ready in %v (%s)", d.Round(time.Millisecond), filepath.Dir(artKernel))
			}
		}
	})
	if artErr != nil {
		t.Fatalf("guest: cannot build the test guest: %v", artErr)
	}
	return artKernel, artInitrd
}

// requireQEMU skips (non-root) or fails (root) the test when QEMU is absent.
func requireQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath(QEMUBinary); err != nil {
		msg := fmt.Sprintf("guest: %s not found (install qemu-system-x86: apt-get install -y qemu-system-x86): %v", QEMUBinary, err)
		if os.Geteuid() != 0 {
			t.Skip(msg)
		}
		t.Fatal(msg)
	}
}

// cacheRoot is the directory holding the cached builds.
func cacheRoot() (string, error) {
	if d := os.Getenv("TAPSWITCH_GUEST_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "tapswitch-guest"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return "", fmt.Errorf("no cache directory: set TAPSWITCH_GUEST_CACHE (%v)", err)
	}
	return filepath.Join(home, ".cache", "tapswitch-guest"), nil
}

// BuildScript returns the path of tests/guest/build.sh.
func BuildScript() (string, error) {
	var tried []string
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		p := filepath.Join(filepath.Dir(file), "..", "..", "guest", "build.sh")
		if fileExists(p) {
			return filepath.Clean(p), nil
		}
		tried = append(tried, p)
	}
	// -trimpath builds: walk up from the working directory (go test runs in
	// the package directory) to the module root.
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if data, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil &&
				bytes.Contains(data, []byte("module github.com/tapswitch/tapswitch")) {
				p := filepath.Join(d, "tests", "guest", "build.sh")
				if fileExists(p) {
					return p, nil
				}
				tried = append(tried, p)
				break
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	return "", fmt.Errorf("tests/guest/build.sh not found (tried %s)", strings.Join(tried, ", "))
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// cacheKey identifies a build: the script's contents and the optional extra
// programs that it copies from the host when present.
func cacheKey(script []byte) string {
	h := sha256.New()
	h.Write(script)
	for _, bin := range []string{"iperf3"} {
		p, _ := exec.LookPath(bin)
		fmt.Fprintf(h, "\x00%s=%s", bin, p)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func buildArtifacts() (kernel, initrd string, err error) {
	script, err := BuildScript()
	if err != nil {
		return "", "", err
	}
	body, err := os.ReadFile(script)
	if err != nil {
		return "", "", err
	}
	root, err := cacheRoot()
	if err != nil {
		return "", "", err
	}
	outDir := filepath.Join(root, cacheKey(body))
	kernel = filepath.Join(outDir, "vmlinuz")
	initrd = filepath.Join(outDir, "initramfs.cpio.gz")
	if fileExists(kernel) && fileExists(initrd) {
		return kernel, initrd, nil
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", "", err
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", "", err
	}
	defer lock.Close()
	if err := flock(lock); err != nil {
		return "", "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN) //nolint:errcheck
	// Another process may have built it while we waited for the lock.
	if fileExists(kernel) && fileExists(initrd) {
		return kernel, initrd, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script, outDir)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		return "", "", fmt.Errorf("%s %s: %v\n%s", script, outDir, err, out.String())
	}
	if !fileExists(kernel) || !fileExists(initrd) {
		return "", "", fmt.Errorf("%s did not produce %s and %s\n%s", script, kernel, initrd, out.String())
	}
	return kernel, initrd, nil
}

// flock takes an exclusive lock on f, retrying on EINTR.
func flock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
