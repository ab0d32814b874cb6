package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// hostOS is the system serve plans for: runtime.GOOS, except in tests,
// which plan macOS setups on Linux too.
var hostOS = runtime.GOOS

// runDir is where tapswitch keeps its sockets and pidfile by default:
// /run/tapswitch as root (/var/run/tapswitch on macOS, which has no /run),
// $XDG_RUNTIME_DIR/tapswitch otherwise (falling back to the temporary
// directory when XDG_RUNTIME_DIR is unset).
func runDir() string {
	if os.Geteuid() == 0 {
		if hostOS == "darwin" {
			return "/var/run/tapswitch"
		}
		return "/run/tapswitch"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "tapswitch")
	}
	return filepath.Join(os.TempDir(), "tapswitch-"+strconv.Itoa(os.Geteuid()))
}

// stateDir is where the DHCP lease file lives by default:
// $TAPSWITCH_STATE_DIR if set, else /var/lib/tapswitch as root,
// $XDG_STATE_HOME/tapswitch (or ~/.local/state/tapswitch) otherwise.
func stateDir() string {
	if d := os.Getenv("TAPSWITCH_STATE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/tapswitch"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "tapswitch")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "tapswitch")
	}
	return filepath.Join(runDir(), "state")
}

func defaultCtlPath() string { return filepath.Join(runDir(), "ctl.sock") }

// sharedRunDirFallback reports whether runDir is the fallback under the
// temporary directory, which other users may write.
func sharedRunDirFallback() bool {
	return os.Geteuid() != 0 && os.Getenv("XDG_RUNTIME_DIR") == ""
}

// usesRunDir reports whether p puts a socket in runDir, or the lease file
// (stateDir's last fallback is in runDir).
func usesRunDir(p *plan) bool {
	dir := runDir()
	if filepath.Dir(p.ctl) == dir || p.leaseDir != "" && filepath.Dir(p.leaseDir) == dir {
		return true
	}
	for _, a := range p.listens {
		if a.IsUnix() && filepath.Dir(a.Address) == dir {
			return true
		}
	}
	return false
}

// checkPrivateDir makes dir (mode 0700) unless it exists, and refuses it
// unless it is a directory of this user's that nobody else may write: in
// a shared temporary directory another user could have made it first and
// then swap the sockets put in it for their own.
func checkPrivateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	var why string
	switch {
	case !fi.IsDir() || !ok:
		why = fmt.Sprintf("is not a directory (%v)", fi.Mode())
	case int(st.Uid) != os.Geteuid():
		why = fmt.Sprintf("is not this user's own (owned by uid %d)", st.Uid)
	case fi.Mode().Perm()&0o022 != 0:
		why = fmt.Sprintf("is writable by others (%v)", fi.Mode())
	default:
		return nil
	}
	return fmt.Errorf("run directory %s %s: remove it, or set XDG_RUNTIME_DIR, or give --ctl and --listen paths (and, with --dhcp and no home directory, --dhcp-lease-file or TAPSWITCH_STATE_DIR) elsewhere", dir, why)
}

// ownLinks follows path while it is a symlink that root or this user owns,
// and returns the file it leads to; path itself when that does not exist
// (the first write replaces a dangling link). A link someone else owns is
// refused: whoever may write its directory (/tmp) could have put it there,
// to have the switch read, write and lock files of their choosing.
// (filepath.EvalSymlinks reads links itself, so the kernel's
// protected_symlinks never sees them.)
func ownLinks(path string) (string, error) {
	p := path
	for range 40 {
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return path, nil
		}
		if err != nil {
			return "", err
		}
		if fi.Mode().Type() != fs.ModeSymlink {
			return p, nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 && int(st.Uid) != os.Geteuid() {
			return "", fmt.Errorf("%s is a symlink owned by uid %d, neither root nor this user: not followed", p, st.Uid)
		}
		t, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(t) {
			// p's directory as written: filepath.Dir and Join clean
			// "dir/link/../x" to "dir/x", where the system goes up from
			// where link leads.
			t = p[:strings.LastIndexByte(p, '/')+1] + t
		}
		p = t
	}
	return "", fmt.Errorf("%s: too many levels of symbolic links", path)
}
