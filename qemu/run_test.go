package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/tapswitch/tapswitch/backend/stream"
	"github.com/tapswitch/tapswitch/internal/testproc"
	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

const (
	helperEnv = "TAPSWITCH_QEMU_TEST_HELPER"
	// The "wrapper" helper's socket path and the file its child writes
	// when it gets SIGTERM.
	wrapSocketEnv = "TAPSWITCH_QEMU_TEST_SOCKET"
	wrapMarkerEnv = "TAPSWITCH_QEMU_TEST_MARKER"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(helperEnv); mode != "" {
		os.Exit(helper(mode))
	}
	goleak.VerifyTestMain(m, testproc.IgnoreSpawner)
}

var (
	childMAC = vswitch.MAC{0x02, 0, 0, 0, 0, 7}
	peerMAC  = vswitch.MAC{0x02, 0, 0, 0, 0, 8}
	bcast    = vswitch.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func frame(dst, src vswitch.MAC, payload string) []byte {
	b := make([]byte, 14+len(payload))
	copy(b, dst[:])
	copy(b[6:], src[:])
	binary.BigEndian.PutUint16(b[12:], 0x88b5)
	copy(b[14:], payload)
	return b
}

func framed(fr []byte) []byte {
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(fr))), fr...)
}

func readFramed(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

// helper is the child process RunWithSocket starts in these tests.
func helper(mode string) int {
	switch mode {
	case "frame":
		// A socket_vmnet-style client: the switch connection is fd 3,
		// in blocking mode.
		fl, err := unix.FcntlInt(SocketFD, unix.F_GETFL, 0)
		if err != nil || fl&unix.O_NONBLOCK != 0 {
			return 3
		}
		f := os.NewFile(SocketFD, "switch")
		if _, err := f.Write(framed(frame(bcast, childMAC, "from the child"))); err != nil {
			return 4
		}
		got, err := readFramed(f)
		if err != nil || !bytes.Equal(got, frame(childMAC, peerMAC, "reply")) {
			return 5
		}
		return 7
	case "wait-signal":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		os.Stdout.WriteString("ready\n")
		select {
		case s := <-c:
			if s == syscall.SIGTERM {
				return 42
			}
			return 43
		case <-time.After(20 * time.Second):
			return 1
		}
	case "wrapper":
		// `tapswitch qemu --socket` in short: runs "term-marker" with the
		// connection as fd 3, until it exits or this process is killed.
		exe, err := os.Executable()
		if err != nil {
			return 3
		}
		env := append(os.Environ(), helperEnv+"=term-marker")
		code, err := RunWithSocket(context.Background(), os.Getenv(wrapSocketEnv), []string{exe, "-test.run=^$"},
			RunConfig{Env: env, Stdin: bytes.NewReader(nil)})
		if err != nil {
			return 4
		}
		return code
	case "term-marker":
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Printf("ready %d\n", os.Getpid())
		select {
		case <-c:
			os.WriteFile(os.Getenv(wrapMarkerEnv), []byte("SIGTERM\n"), 0o644)
			return 42
		case <-time.After(30 * time.Second):
			return 1
		}
	case "kill-self":
		syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(10 * time.Second)
		return 1
	}
	return 2
}

func helperCmd(t *testing.T, mode string) ([]string, []string) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return []string{exe, "-test.run=^$"}, append(os.Environ(), helperEnv+"="+mode)
}

// switchWithListener starts a switch with a stream listener on a unix
// socket and one Go client ("the other VM") attached to it.
func switchWithListener(t *testing.T) (*vswitch.Switch, string, net.Conn) {
	t.Helper()
	sw := vswitch.New(vswitch.Config{})
	path := filepath.Join(porttest.SocketDir(t), "ts.sock")
	l, err := stream.Listen(context.Background(), "unix://"+path, stream.ListenerConfig{}, sw)
	if err != nil {
		sw.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		sw.Close()
	})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	porttest.WaitFor(t, "peer port", func() bool { return len(sw.Ports()) == 1 })
	return sw, path, c
}

func TestRunWithSocket(t *testing.T) {
	sw, path, other := switchWithListener(t)
	cmd, env := helperCmd(t, "frame")

	type result struct {
		code int
		err  error
	}
	res := make(chan result, 1)
	go func() {
		code, err := RunWithSocket(context.Background(), path, cmd, RunConfig{Env: env, Stdin: bytes.NewReader(nil)})
		res <- result{code, err}
	}()

	// The child's broadcast reaches the other client of the switch...
	other.SetReadDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(other)
	got, err := readFramed(r)
	if err != nil || !bytes.Equal(got, frame(bcast, childMAC, "from the child")) {
		t.Fatalf("other client got %q, %v", got, err)
	}
	// ...and the reply reaches the child on fd 3.
	if _, err := other.Write(framed(frame(childMAC, peerMAC, "reply"))); err != nil {
		t.Fatal(err)
	}
	rs := <-res
	if rs.err != nil || rs.code != 7 {
		t.Fatalf("RunWithSocket = %d, %v; want the child's status 7", rs.code, rs.err)
	}
	// The child's exit closed the connection: its port goes.
	porttest.WaitFor(t, "child's port removal", func() bool { return len(sw.Ports()) == 1 })
}

func TestRunWithSocketSignals(t *testing.T) {
	_, path, _ := switchWithListener(t)

	t.Run("forwarded", func(t *testing.T) {
		// Keep the test process alive even if the signal arrives before
		// RunWithSocket watches for it.
		guard := make(chan os.Signal, 1)
		signal.Notify(guard, syscall.SIGTERM)
		defer signal.Stop(guard)

		cmd, env := helperCmd(t, "wait-signal")
		pr, pw := io.Pipe()
		res := make(chan int, 1)
		go func() {
			code, err := RunWithSocket(context.Background(), path, cmd, RunConfig{Env: env, Stdout: pw, Stdin: bytes.NewReader(nil)})
			if err != nil {
				t.Error(err)
			}
			pw.Close()
			res <- code
		}()
		line, _ := bufio.NewReader(pr).ReadString('\n')
		if line != "ready\n" {
			t.Fatalf("child said %q", line)
		}
		go io.Copy(io.Discard, pr)
		syscall.Kill(os.Getpid(), syscall.SIGTERM)
		if code := <-res; code != 42 {
			t.Fatalf("exit status %d, want 42 (the child saw SIGTERM)", code)
		}
	})

	t.Run("context", func(t *testing.T) {
		cmd, env := helperCmd(t, "wait-signal")
		pr, pw := io.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := make(chan int, 1)
		go func() {
			code, err := RunWithSocket(ctx, path, cmd, RunConfig{Env: env, Stdout: pw, Stdin: bytes.NewReader(nil)})
			if err != nil {
				t.Error(err)
			}
			pw.Close()
			res <- code
		}()
		bufio.NewReader(pr).ReadString('\n')
		go io.Copy(io.Discard, pr)
		cancel()
		if code := <-res; code != 42 {
			t.Fatalf("exit status %d, want 42 (SIGTERM on cancel)", code)
		}
	})

	t.Run("killed", func(t *testing.T) {
		cmd, env := helperCmd(t, "kill-self")
		code, err := RunWithSocket(context.Background(), path, cmd, RunConfig{Env: env, Stdin: bytes.NewReader(nil)})
		if err != nil || code != 128+9 {
			t.Fatalf("RunWithSocket = %d, %v; want 137", code, err)
		}
	})
}

// TestRunWithSocketWrapperKilled kills the process that called
// RunWithSocket with SIGKILL, which it cannot forward: the command (the
// VM) must not go on running unwatched.
func TestRunWithSocketWrapperKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("only Linux has a parent-death signal")
	}
	sw, path, _ := switchWithListener(t)
	marker := filepath.Join(t.TempDir(), "terminated")
	cmd, env := helperCmd(t, "wrapper")
	w := exec.Command(cmd[0], cmd[1:]...)
	w.Env = append(env, wrapSocketEnv+"="+path, wrapMarkerEnv+"="+marker)
	out, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := testproc.Start(w); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if !strings.HasPrefix(line, "ready ") {
		w.Process.Kill()
		w.Wait()
		t.Fatalf("the command said %q, %v", line, err)
	}
	porttest.WaitFor(t, "the command's port", func() bool { return len(sw.Ports()) == 2 })

	w.Process.Kill()
	w.Wait()
	porttest.WaitFor(t, "the command to get SIGTERM ("+strings.TrimSpace(line)+")", func() bool {
		_, err := os.Stat(marker)
		return err == nil
	})
	// It exits on that signal, which closes the connection.
	porttest.WaitFor(t, "the command's port removal", func() bool { return len(sw.Ports()) == 1 })
}

func TestRunWithSocketErrors(t *testing.T) {
	if _, err := RunWithSocket(context.Background(), "/nonexistent/ts.sock", []string{"true"}, RunConfig{}); err == nil {
		t.Fatal("no error for a missing socket")
	}
	if _, err := RunWithSocket(context.Background(), "/nonexistent/ts.sock", nil, RunConfig{}); err == nil {
		t.Fatal("no error for an empty command")
	}
	_, path, _ := switchWithListener(t)
	// A program that cannot be run gives a shell's status: 127 not found,
	// 126 not executable (it was 0, and the wrapper exited 1).
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		prog string
		code int
	}{
		{"/nonexistent/qemu", 127},
		{"tapswitch-test-no-such-program", 127},
		{plain, 126},
		{dir, 126},
	} {
		code, err := RunWithSocket(context.Background(), path, []string{tc.prog}, RunConfig{})
		if err == nil || code != tc.code {
			t.Errorf("RunWithSocket(%s) = %d, %v; want %d and an error", tc.prog, code, err, tc.code)
		}
	}
}

// TestRunWithSocketDatagram: given the switch's datagram socket, the error
// names the stream listener and -netdev dgram (it was "protocol wrong type
// for socket" alone).
func TestRunWithSocketDatagram(t *testing.T) {
	path := filepath.Join(porttest.SocketDir(t), "dg.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = RunWithSocket(context.Background(), path, []string{"true"}, RunConfig{})
	if err == nil || !strings.Contains(err.Error(), "datagram socket") || !strings.Contains(err.Error(), "-netdev dgram") ||
		!strings.Contains(err.Error(), "--print-netdev unixgram://"+path) {
		t.Fatalf("RunWithSocket on a datagram socket: %v; want a hint naming the stream listener and -netdev dgram", err)
	}
}
