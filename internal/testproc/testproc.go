// Package testproc starts the long-running helper processes of tests
// (switches, QEMU guests, DHCP clients, traffic generators) so that they
// die with the test binary. A test binary that is killed (a CI timeout, ^C
// twice, go test's own -timeout) runs no cleanup: its children would go on
// running, reparented to init, holding their network namespaces, taps and
// sockets.
package testproc

import (
	"os/exec"
	"syscall"

	"go.uber.org/goleak"

	"github.com/tapswitch/tapswitch/internal/spawn"
)

// Start starts cmd, as cmd.Start does, with SIGKILL as its parent-death
// signal on Linux (elsewhere the child outlives a killed test binary, as
// with cmd.Start); see package spawn. The signal reaches cmd's own process
// only: a child that starts processes of its own should be put in a
// process group (SysProcAttr.Setpgid) that the test kills as a whole.
//
// Use it for commands that run while the test goes on; cmd.Run, Output
// and CombinedOutput, which wait for the command, need not.
func Start(cmd *exec.Cmd) error {
	return spawn.Start(cmd, syscall.SIGKILL)
}

// IgnoreSpawner is the goleak option that ignores the goroutine that
// Start's children are forked from, which runs as long as the process:
// goleak.VerifyTestMain(m, testproc.IgnoreSpawner).
var IgnoreSpawner = goleak.IgnoreTopFunction(spawn.LoopFunc)
