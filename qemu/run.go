package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"time"

	"github.com/tapswitch/tapswitch/backend/listen"
	"github.com/tapswitch/tapswitch/internal/spawn"
)

// SocketFD is the file descriptor on which RunWithSocket passes the
// connection to the command, as socket_vmnet_client does.
const SocketFD = 3

// DefaultWaitDelay is how long RunWithSocket waits, after asking the
// command to stop because ctx was cancelled, before killing it.
const DefaultWaitDelay = 10 * time.Second

// RunConfig configures RunWithSocket. The zero value is usable.
type RunConfig struct {
	// Stdin, Stdout and Stderr are the command's (default: this
	// process's own, so that QEMU keeps the terminal).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Env is the command's environment (default: this process's).
	Env []string
	// Signals are forwarded to the command while it runs (default SIGINT,
	// SIGTERM and SIGHUP). This process does not act on them itself.
	Signals []os.Signal
	// WaitDelay is how long to wait after sending SIGTERM on ctx
	// cancellation before killing the command (default DefaultWaitDelay).
	WaitDelay time.Duration
}

// RunWithSocket connects to the switch's stream listener at the unix socket
// socketPath and runs command with the connection as file descriptor 3,
// for `-netdev socket,id=n0,fd=3` (see SocketFDArgs). This is how QEMU
// releases older than 7.2, which cannot connect to a unix socket
// themselves, join the switch.
//
// The connection is the command's alone: RunWithSocket closes its own copy
// once the command has started, so the switch sees the guest leave when
// the command exits. Signals in cfg.Signals are forwarded to the command;
// a terminal's Ctrl-C reaches it twice (directly, as it shares the
// process group, and forwarded), which QEMU takes as one. When ctx is
// cancelled the command gets SIGTERM, and SIGKILL cfg.WaitDelay later.
// On Linux the command also gets SIGTERM if this process dies first
// (SIGKILL included), so that a VM is not left running unwatched.
//
// It returns the command's exit status, 128+N if signal N killed it, as a
// shell reports it. The error is non-nil only if the command could not be
// run (connecting failed, the program was not found) or its I/O failed.
// When the program could not be started the status is, as from a shell,
// 127 if it was not found and 126 if it could not be executed; when
// connecting failed it is 0.
func RunWithSocket(ctx context.Context, socketPath string, command []string, cfg RunConfig) (int, error) {
	if len(command) == 0 {
		return 0, errors.New("run with socket: no command")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		if errors.Is(err, syscall.EPROTOTYPE) {
			dg := listen.Addr{Network: "unixgram", Address: socketPath}
			return 0, fmt.Errorf("run with socket: connect %s: %w: that is a datagram socket (a unixgram:// listener); "+
				"give the switch's stream listener (unix://) instead, or with QEMU 7.2 and later use -netdev dgram "+
				"on this one (tapswitch qemu --print-netdev %s prints it)", socketPath, err, dg)
		}
		return 0, fmt.Errorf("run with socket: connect %s: %w", socketPath, err)
	}
	f, err := c.(*net.UnixConn).File()
	c.Close()
	if err != nil {
		return 0, fmt.Errorf("run with socket: %s: %w", socketPath, err)
	}
	defer f.Close()
	// The copy shares the connection's O_NONBLOCK; a child expects a
	// blocking descriptor (QEMU sets its own mode, a shell's cat does not).
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		return 0, fmt.Errorf("run with socket: %s: set blocking: %w", socketPath, err)
	}

	if cfg.Stdin == nil {
		cfg.Stdin = os.Stdin
	}
	if cfg.Stdout == nil {
		cfg.Stdout = os.Stdout
	}
	if cfg.Stderr == nil {
		cfg.Stderr = os.Stderr
	}
	if len(cfg.Signals) == 0 {
		cfg.Signals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP}
	}
	if cfg.WaitDelay <= 0 {
		cfg.WaitDelay = DefaultWaitDelay
	}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.Env = cfg.Stdin, cfg.Stdout, cfg.Stderr, cfg.Env
	cmd.ExtraFiles = []*os.File{f} // becomes SocketFD (3)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = cfg.WaitDelay

	sigc := make(chan os.Signal, 4)
	signal.Notify(sigc, cfg.Signals...)
	defer signal.Stop(sigc)
	if err := spawn.Start(cmd, syscall.SIGTERM); err != nil {
		code := 126
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			code = 127
		}
		return code, fmt.Errorf("run with socket: %w", err)
	}
	f.Close()

	done := make(chan struct{})
	fwd := make(chan struct{})
	go func() {
		defer close(fwd)
		for {
			select {
			case s := <-sigc:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	<-fwd

	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	case cmd.ProcessState != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
		// Stopped because ctx was cancelled, and exited successfully.
		return cmd.ProcessState.ExitCode(), nil
	default:
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return code, fmt.Errorf("run with socket: %s: %w", command[0], err)
	}
}
