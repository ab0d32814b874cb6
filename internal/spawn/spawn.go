// Package spawn starts child processes that get a signal when this process
// dies, however it dies (SIGKILL included), so that they are not left
// running unwatched: QEMU under `tapswitch qemu`, the helper processes of
// tests.
//
// On Linux the child gets the signal as its parent-death signal
// (PR_SET_PDEATHSIG). The kernel sends it when the *thread* that forked the
// child exits, not the process, and the Go runtime ends a thread whenever a
// goroutine locked to it returns without unlocking (a goroutine that enters
// another network namespace does so on purpose): a child forked from
// whichever thread a goroutine ran on could be signalled while this process
// goes on. Start therefore forks every child from one OS thread that is
// locked for good and lives as long as the process. Elsewhere the child
// outlives a killed parent, as with exec.Cmd.Start.
package spawn

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// Start starts cmd, as cmd.Start does, from the package's spawning thread,
// with sig as its parent-death signal on Linux. Other SysProcAttr settings
// are kept. The signal reaches cmd's own process only, and the kernel
// clears the setting when the child executes a set-user-ID program.
func Start(cmd *exec.Cmd, sig syscall.Signal) error {
	setDeathSignal(cmd, sig)
	once.Do(func() {
		reqs = make(chan req)
		go loop()
	})
	res := make(chan error, 1)
	reqs <- req{cmd, res}
	return <-res
}

// LoopFunc names the function of the goroutine that forks Start's
// children, which runs as long as the process once started, for leak
// checks to ignore.
const LoopFunc = "github.com/tapswitch/tapswitch/internal/spawn.loop"

// loop starts the commands sent on reqs, on its own thread.
func loop() {
	runtime.LockOSThread() // never unlocked: the thread lives as long as the process
	for r := range reqs {
		r.res <- r.cmd.Start()
	}
}

type req struct {
	cmd *exec.Cmd
	res chan error
}

var (
	once sync.Once
	reqs chan req
)
