//go:build darwin && cgo

// Package bad holds one mistake of each kind cgocheck must report.
package bad

/*
#include "bad.h"
*/
import "C"

import (
	"os"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"
)

func f() {
	_, _ = vz.NewFileHandleNetworkDeviceAttachment("not a file") // wrong argument type
	_ = unix.Kqueue(1)                                           // wrong arity and result count
	C.shim_two(1)                                                // shim prototype has two parameters
	C.not_declared()                                             // not in the shim
	_ = os.Stdin
}
