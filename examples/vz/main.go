//go:build darwin && cgo

// Command vz boots a Linux VM with Apple's Virtualization framework and
// plugs its network device into a tapswitch datagram listener:
//
//	sudo tapswitch serve --listen unixgram:///var/run/tapswitch-vz.sock --socket-group staff ... &
//	go build -o vzdemo ./examples/vz
//	codesign --entitlements examples/vz/vz.entitlements -s - vzdemo
//	./vzdemo -switch /var/run/tapswitch-vz.sock -kernel vmlinuz -initrd initrd.img
//
// The guest's console is on this terminal (hvc0). The binary must be
// signed with the com.apple.security.virtualization entitlement (see
// docs/macos.md). It is modelled on Code-Hex/vz's example/linux, and has
// been built and type-checked only, not run.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

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
	)
	flag.Parse()
	if *kernel == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*kernel, *initrd, *disk, *cmdline, *sw, *local, *mac, *mtu, *cpus, *memMiB); err != nil {
		log.Fatal(err)
	}
}

func run(kernel, initrd, disk, cmdline, sw, local, macText string, mtu int, cpus uint, memMiB uint64) error {
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
	fmt.Fprintf(os.Stderr, "vm: NIC %s on switch %s; SIGTERM or SIGINT stops the VM\r\n", addr, sw)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case <-sig:
			if ok, err := vm.RequestStop(); !ok || err != nil {
				fmt.Fprintf(os.Stderr, "vm: request stop: %v; stopping\r\n", err)
				if err := vm.Stop(); err != nil {
					return fmt.Errorf("stop: %w", err)
				}
			}
		case state := <-vm.StateChangedNotify():
			switch state {
			case vz.VirtualMachineStateStopped:
				return nil
			case vz.VirtualMachineStateError:
				return fmt.Errorf("the VM failed")
			}
		}
	}
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
