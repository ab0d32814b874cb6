package main

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
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
