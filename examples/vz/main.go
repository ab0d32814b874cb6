//go:build darwin && cgo

// Command vz boots a Linux VM with Apple's Virtualization framework and
// plugs its network device into a tapswitch datagram listener:
//
//	sudo tapswitch serve --listen unixgram:///var/run/tapswitch-vz.sock --socket-group staff ... &
//	go build -o vzdemo ./examples/vz
//	codesign --entitlements examples/vz/vz.entitlements -s - vzdemo
//	./vzdemo -switch /var/run/tapswitch-vz.sock -kernel vmlinuz -initrd initrd.img
//
// The guest's console is on this terminal (hvc0). SIGTERM or SIGINT asks
// the guest to shut down (RequestStop); a second signal, or a guest still
// running -stop-timeout (30 s) later, stops the VM at once (Stop, as
// pulling the plug: macOS 12+). The binary must be signed with the
// com.apple.security.virtualization entitlement (see docs/macos.md). It is
// modelled on Code-Hex/vz's example/linux, and has been built and
// type-checked only, not run.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/Code-Hex/vz/v3"
	"golang.org/x/sys/unix"

	tsvz "github.com/tapswitch/tapswitch/vz"
)

func main() {
	var (
		kernel  = flag.String("kernel", "", "Linux kernel `path` (uncompressed Image on Apple silicon)")
		initrd  = flag.String("initrd", "", "initial ramdisk `path` (optional)")
		disk    = flag.String("disk", "", "raw disk image `path` for /dev/vda (optional)")
		cmdline = flag.String("cmdline", "console=hvc0", "kernel command line")
		sw      = flag.String("switch", "/var/run/tapswitch-vz.sock", "the switch's unixgram socket `path`")
		local   = flag.String("local", "", "`path` of this VM's socket (default: a new file in $TMPDIR)")
		mac     = flag.String("mac", "", "the NIC's MAC `address` (default: random, locally administered)")
		mtu     = flag.Int("mtu", 0, fmt.Sprintf("the NIC's MTU, %d to %d (macOS 13+; 0: 1500); the switch's --max-frame must be at least MTU+14", tsvz.MinMTU, tsvz.MaxMTU))
		cpus    = flag.Uint("cpus", 1, "virtual CPUs")
		memMiB  = flag.Uint64("memory", 512, "memory in MiB")
		stopIn  = flag.Duration("stop-timeout", 30*time.Second, "after SIGTERM or SIGINT, how long the guest has to shut down before the VM is stopped at once (as is done on a second signal; 0: at once)")
	)
	flag.Parse()
	if *kernel == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*kernel, *initrd, *disk, *cmdline, *sw, *local, *mac, *mtu, *cpus, *memMiB, *stopIn); err != nil {
		log.Fatal(err)
	}
}

func run(kernel, initrd, disk, cmdline, sw, local, macText string, mtu int, cpus uint, memMiB uint64, stopIn time.Duration) error {
	opts := []vz.LinuxBootLoaderOption{vz.WithCommandLine(cmdline)}
	if initrd != "" {
		opts = append(opts, vz.WithInitrd(initrd))
	}
	boot, err := vz.NewLinuxBootLoader(kernel, opts...)
	if err != nil {
		return fmt.Errorf("boot loader: %w", err)
	}
	config, err := vz.NewVirtualMachineConfiguration(boot, cpus, memMiB<<20)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}

	// The console: this terminal, raw, restored on exit.
	restore, err := rawTerminal(os.Stdin)
	if err != nil {
		return err
	}
	defer restore()
	serial, err := vz.NewFileHandleSerialPortAttachment(os.Stdin, os.Stdout)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	console, err := vz.NewVirtioConsoleDeviceSerialPortConfiguration(serial)
	if err != nil {
		return fmt.Errorf("console: %w", err)
	}
	config.SetSerialPortsVirtualMachineConfiguration([]*vz.VirtioConsoleDeviceSerialPortConfiguration{console})

	// The network: a datagram socket connected to the switch.
	attachment, cleanup, err := tsvz.NewAttachment(tsvz.Config{Switch: sw, Local: local, MTU: mtu})
	if err != nil {
		return err
	}
	defer cleanup()
	nic, err := vz.NewVirtioNetworkDeviceConfiguration(attachment)
	if err != nil {
		return fmt.Errorf("network device: %w", err)
	}
	var addr *vz.MACAddress
	if macText != "" {
		hw, err := net.ParseMAC(macText)
		if err != nil {
			return fmt.Errorf("-mac: %w", err)
		}
		addr, err = vz.NewMACAddress(hw)
		if err != nil {
			return fmt.Errorf("-mac: %w", err)
		}
	} else if addr, err = vz.NewRandomLocallyAdministeredMACAddress(); err != nil {
		return fmt.Errorf("MAC address: %w", err)
	}
	nic.SetMACAddress(addr)
	config.SetNetworkDevicesVirtualMachineConfiguration([]*vz.VirtioNetworkDeviceConfiguration{nic})

	entropy, err := vz.NewVirtioEntropyDeviceConfiguration()
	if err != nil {
		return fmt.Errorf("entropy device: %w", err)
	}
	config.SetEntropyDevicesVirtualMachineConfiguration([]*vz.VirtioEntropyDeviceConfiguration{entropy})
	if disk != "" {
		image, err := vz.NewDiskImageStorageDeviceAttachment(disk, false)
		if err != nil {
			return fmt.Errorf("disk: %w", err)
		}
		blk, err := vz.NewVirtioBlockDeviceConfiguration(image)
		if err != nil {
			return fmt.Errorf("disk: %w", err)
		}
		config.SetStorageDevicesVirtualMachineConfiguration([]vz.StorageDeviceConfiguration{blk})
	}

	if ok, err := config.Validate(); !ok || err != nil {
		return fmt.Errorf("configuration invalid: %v", err)
	}
	vm, err := vz.NewVirtualMachine(config)
	if err != nil {
		return fmt.Errorf("virtual machine: %w", err)
	}
	if err := vm.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	fmt.Fprintf(os.Stderr, "vm: NIC %s on switch %s; SIGTERM or SIGINT shuts the guest down, a second one stops the VM at once\r\n", addr, sw)

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	ended := make(chan error, 1)
	go func() {
		for state := range vm.StateChangedNotify() {
			switch state {
			case vz.VirtualMachineStateStopped:
				ended <- nil
				return
			case vz.VirtualMachineStateError:
				ended <- errors.New("the VM failed")
				return
			}
		}
	}()
	return waitStop(vzStopper{vm}, sig, ended, stopIn, os.Stderr)
}

// vzStopper is a Virtualization.framework VM as waitStop sees it.
type vzStopper struct{ vm *vz.VirtualMachine }

func (s vzStopper) RequestStop() error {
	ok, err := s.vm.RequestStop()
	if err == nil && !ok {
		err = errors.New("the VM cannot take the request in its state")
	}
	return err
}

func (s vzStopper) Stop() error {
	if err := s.vm.Stop(); err != nil {
		return fmt.Errorf("%w (stopping a VM needs macOS 12 or later)", err)
	}
	return nil
}

// rawTerminal puts f in raw mode for the guest's console, if it is a
// terminal, and returns the function that restores it.
func rawTerminal(f *os.File) (func(), error) {
	fd := int(f.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TIOCGETA)
	if err != nil {
		return func() {}, nil // not a terminal
	}
	raw := *old
	raw.Iflag &^= unix.ICRNL
	raw.Lflag &^= unix.ICANON | unix.ECHO
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(fd, unix.TIOCSETA, &raw); err != nil {
		return nil, fmt.Errorf("console: raw mode: %w", err)
	}
	return func() { unix.IoctlSetTermios(fd, unix.TIOCSETA, old) }, nil
}
