package regfile

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNotOpened: what is not a regular file is refused without being
// opened (watched with inotify's IN_OPEN), since opening a device can act
// (a watchdog arms); a regular file is read.
func TestNotOpened(t *testing.T) {
	dir := t.TempDir()
	fifo, file, link := filepath.Join(dir, "fifo"), filepath.Join(dir, "file"), filepath.Join(dir, "link")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(in)
	if _, err := unix.InotifyAddWatch(in, fifo, unix.IN_OPEN); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, link, dir} {
		if _, err := Read(p, 1<<20); err == nil || !strings.Contains(err.Error(), p+": not a regular file") {
			t.Errorf("Read(%s): %v, want not a regular file", p, err)
		}
	}
	buf := make([]byte, 4096)
	if n, err := unix.Read(in, buf); n > 0 {
		t.Errorf("the FIFO was opened (%d bytes of inotify events)", n)
	} else if err != unix.EAGAIN {
		t.Fatal(err)
	}
	if b, err := Read(file, 1<<20); err != nil || string(b) != "data" {
		t.Errorf("Read(%s) = %q, %v", file, b, err)
	}
	if _, err := Read(filepath.Join(dir, "missing"), 1); !os.IsNotExist(err) {
		t.Errorf("missing file: %v, want ErrNotExist", err)
	}
	if _, err := Read(file, 3); err == nil {
		t.Error("a file over the limit was read")
	}
}

// TestReadWithoutProc: without /proc (a chroot, a container), a file is
// still read; the reopen through /proc/self/fd failed with ENOENT there,
// which the lease file's load took for a missing file and replaced.
func TestReadWithoutProc(t *testing.T) {
	if path := os.Getenv("REGFILE_TEST_NOPROC"); path != "" {
		if _, err := os.Stat("/proc/self/fd"); !os.IsNotExist(err) {
			t.Fatalf("/proc is still mounted: %v", err)
		}
		if b, err := Read(path, 1<<20); err != nil || string(b) != "data" {
			t.Fatalf("Read(%s) without /proc = %q, %v", path, b, err)
		}
		if _, err := Read(filepath.Dir(path), 1<<20); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Fatalf("Read of a directory without /proc: %v", err)
		}
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: unmounts /proc in a mount namespace of its own")
	}
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
		`umount -l /proc && exec "$0" -test.run '^TestReadWithoutProc$' -test.v`, exe)
	cmd.Env = append(os.Environ(), "REGFILE_TEST_NOPROC="+path)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestReadWithoutProc") {
		t.Fatalf("%v\n%s", err, out)
	}
}
