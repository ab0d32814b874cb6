package testproc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const helperEnv = "TESTPROC_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helper()
		return
	}
	os.Exit(m.Run())
}

// helper starts `sleep 600` with Start from a goroutine locked to its
// thread, which then exits (as the goroutines of testnet.NS.Do do), prints
// the sleep's pid and waits to be killed.
func helper() {
	// The main thread is never ended (the runtime wedges it instead): keep
	// the goroutine below off it.
	runtime.LockOSThread()
	pid := make(chan int)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		cmd := exec.Command("sleep", "600")
		if err := Start(cmd); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		pid <- cmd.Process.Pid
	}()
	fmt.Println(<-pid)
	time.Sleep(time.Hour)
}

// alive reports whether pid runs (exists and is not a zombie).
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && !strings.HasPrefix(string(stat[i+1:]), " Z")
}

// TestStart: a child started with Start outlives the thread that asked for
// it and dies with the process that started it.
func TestStart(t *testing.T) {
	h := exec.Command(os.Args[0], "-test.run=^$")
	h.Env = append(os.Environ(), helperEnv+"=1")
	h.Stderr = os.Stderr
	out, err := h.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		h.Process.Kill()
		h.Wait()
		t.Fatalf("helper: %q, %v", line, err)
	}
	t.Cleanup(func() {
		if alive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	// The thread that called Start has exited by now, or will soon.
	time.Sleep(500 * time.Millisecond)
	if !alive(pid) {
		h.Process.Kill()
		h.Wait()
		t.Fatal("the child died with the thread that called Start")
	}
	h.Process.Kill()
	h.Wait()
	for deadline := time.Now().Add(10 * time.Second); alive(pid); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the child outlived its killed parent by 10 s")
		}
	}
}
