//go:build !darwin || !cgo

// Command vz boots a Linux VM with Apple's Virtualization framework on a
// tapswitch datagram listener. It needs macOS and cgo; elsewhere it says so.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "examples/vz needs macOS and cgo (CGO_ENABLED=1): it uses Apple's Virtualization framework")
	os.Exit(1)
}
