// Package testproc starts the long-running helper processes of tests
// (switches, QEMU guests, DHCP clients, traffic generators) so that they
// die with the test binary. A test binary that is killed (a CI timeout, ^C
// twice, go test's own -timeout) runs no cleanup: its children would go on
// running, reparented to init, holding their network namespaces, taps and
// sockets.
//
// On Linux, Start gives the child SIGKILL as its parent-death signal
// (PR_SET_PDEATHSIG). The kernel sends it when the *thread* that forked the
// child exits, not the process, and the Go runtime ends a thread whenever a
// goroutine locked to it returns without unlocking (testnet.NS.Do does so
// on purpose): a child forked from whichever thread a test's goroutine ran
// on could be killed in the middle of the test. Start therefore forks every
// child from one OS thread that is locked for good and lives as long as
// the process.
package testproc

import (
	"os/exec"
	"runtime"
	"sync"

	"go.uber.org/goleak"
)

// Start starts cmd, as cmd.Start does, from the package's spawning thread,
// with SIGKILL as its parent-death signal on Linux (elsewhere the child
// outlives a killed test binary, as with cmd.Start). Other SysProcAttr
// settings are kept. The signal reaches cmd's own process only: a child
// that starts processes of its own should be put in a process group
// (SysProcAttr.Setpgid) that the test kills as a whole, and the kernel
// clears the setting when the child executes a set-user-ID program.
//
// Use it for commands that run while the test goes on; cmd.Run, Output
// and CombinedOutput, which wait for the command, need not.
func Start(cmd *exec.Cmd) error {
	setDeathSignal(cmd)
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnReq)
		go spawn()
	})
	res := make(chan error, 1)
	spawnCh <- spawnReq{cmd, res}
	return <-res
}

// IgnoreSpawner is the goleak option that ignores the goroutine that
// Start's children are forked from, which runs as long as the process:
// goleak.VerifyTestMain(m, testproc.IgnoreSpawner).
var IgnoreSpawner = goleak.IgnoreTopFunction("github.com/tapswitch/tapswitch/internal/testproc.spawn")

// spawn starts the commands sent on spawnCh, on its own thread.
func spawn() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for r := range spawnCh {
		r.res <- r.cmd.Start()
	}
}

type spawnReq struct {
	cmd *exec.Cmd
	res chan error
}

var (
	spawnOnce sync.Once
	spawnCh   chan spawnReq
)
