//go:build darwin && cgo

// Package good uses Code-Hex/vz, x/sys and a C shim correctly: cgocheck
// must find nothing.
package good

/*
#include <stdlib.h>
#include "good.h"
*/
import "C"

import (
	"os"
	"unsafe"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"
)

func f(file *os.File) error {
	a, err := vz.NewFileHandleNetworkDeviceAttachment(file)
	if err != nil {
		return err
	}
	if err := a.SetMaximumTransmissionUnit(9000); err != nil {
		return err
	}
	kq, err := unix.Kqueue()
	if err != nil {
		return err
	}
	unix.Close(kq)
	s := C.CString("x")
	defer C.free(unsafe.Pointer(s))
	var info C.struct_good_info
	_ = C.good_two(C.int(1), s)
	_ = C.good_none()
	_ = info.n + C.GOOD_CONST
	return nil
}
