//go:build unix

package vz

import (
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Hello is the 4-byte datagram Dial sends first, as vfkit does. It tells
// the switch about the VM at once, before the guest sends a frame, so that
// broadcasts and replies reach the VM from the start and the port shows in
// `tapswitch ctl ports`; and it makes the same socket work with gvproxy's
// vfkit listener, which requires it. The switch consumes it; a datagram
// listener that does not know it drops it as a runt (an Ethernet frame is
// at least 14 bytes).
const Hello = "VFKT"

// Apple's recommended socket buffer sizes for a file-handle attachment:
// SO_RCVBUF at least twice SO_SNDBUF, four times for best throughput
// (VZFileHandleNetworkDeviceAttachment.maximumTransmissionUnit).
const (
	DefaultSendBuffer    = 1 << 20
	DefaultReceiveBuffer = 4 << 20
)

// MinMTU and MaxMTU bound Config.MTU. A frame is MTU+14 bytes with its
// Ethernet header, and the switch takes frames of at most 65535 bytes
// (serve --max-frame), so MaxMTU is 65521.
const (
	MinMTU = 1500
	MaxMTU = 65535 - 14
)

// maxSockPath is the longest unix socket path macOS accepts (sun_path is
// 104 bytes, NUL included); Linux allows 107.
const maxSockPath = 103

// Config configures Dial and NewAttachment.
type Config struct {
	// Switch is the path of the switch's datagram socket, as given to
	// `tapswitch serve --listen unixgram://PATH`. Required.
	Switch string
	// Local is the path the VM's end of the socket is bound to: the
	// switch sends the VM's frames there. Empty means a new name in
	// os.TempDir(). A relative path is made absolute (the switch cannot
	// answer a sender bound to a relative path). A stale socket file left
	// there by a process that died is replaced; one in use is an error.
	Local string
	// MTU, if not 0, is set on the attachment (macOS 13+): MinMTU (1500)
	// to MaxMTU (65521). The switch must take frames of MTU+14 bytes:
	// serve's --max-frame (default 65535) at least MTU+14.
	MTU int
	// SendBuffer and ReceiveBuffer are SO_SNDBUF and SO_RCVBUF (default
	// DefaultSendBuffer and DefaultReceiveBuffer). Apple requires the
	// receive buffer to be at least twice the send buffer.
	SendBuffer, ReceiveBuffer int
	// NoHello leaves out the Hello datagram: the switch then learns the VM
	// from its first frame.
	NoHello bool
	// Reconnect is how often the Conn checks whether the switch's socket
	// was replaced (the switch restarted), to connect to the new one
	// (default 1 s; negative: never). The VM's socket stays connected to
	// the socket it was connected to, so without this the VM's network is
	// dead after a restart of the switch until the VM restarts.
	Reconnect time.Duration
}

// DefaultReconnect is Config.Reconnect's default.
const DefaultReconnect = time.Second

// Conn is a VM's end of the connection to the switch: a unixgram socket
// bound to LocalPath and connected to the switch's socket.
type Conn struct {
	file  *os.File
	local string
	cfg   Config

	reconnects atomic.Uint64
	done       chan struct{}
	wg         sync.WaitGroup

	closeOnce sync.Once
	closeErr  error
}

// fileID tells a socket file from the one that replaced it at its path:
// the inode number alone does not, as a file system may give the new file
// the number the old one freed.
type fileID struct {
	dev, ino uint64
	ctime    unix.Timespec
}

func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{uint64(st.Dev), uint64(st.Ino), st.Ctim}, nil // (Dev's and Ino's types differ by system)
}

// watch reconnects c whenever the file at the switch's path is not the
// one c is connected to, until Close. id is that of the file connected to.
func (c *Conn) watch(every time.Duration, id fileID) {
	defer c.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
		}
		now, err := statID(c.cfg.Switch)
		if err != nil || now == id {
			continue // gone (the switch is down) or the same
		}
		if c.reconnect() == nil {
			id = now
			c.reconnects.Add(1)
		}
	}
}

// reconnect connects the socket to the switch's path again and sends
// Hello, so that the new switch adds the VM's port at once. Linux and BSD
// let a connected datagram socket connect to another address.
func (c *Conn) reconnect() error {
	rc, err := c.file.SyscallConn()
	if err != nil {
		return err
	}
	var opErr error
	err = rc.Control(func(fd uintptr) {
		if opErr = unix.Connect(int(fd), &unix.SockaddrUnix{Name: c.cfg.Switch}); opErr == nil && !c.cfg.NoHello {
			_, opErr = unix.Write(int(fd), []byte(Hello))
		}
	})
	return cmp.Or(err, opErr)
}

// Reconnects returns how many times the Conn has connected to a new
// socket of the switch (see Config.Reconnect).
func (c *Conn) Reconnects() uint64 { return c.reconnects.Load() }

// File returns the socket, for VZFileHandleNetworkDeviceAttachment. It is
// in blocking mode, as Virtualization.framework uses it; the Conn owns it.
func (c *Conn) File() *os.File { return c.file }

// LocalPath returns the path the socket is bound to.
func (c *Conn) LocalPath() string { return c.local }

// Close closes the socket, removes its path and stops the checks for a
// restarted switch (Config.Reconnect). Close it only after the VM that uses
// it has stopped, and do close it: until then the Conn, its socket and a
// goroutine stay, referenced or not. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.wg.Wait()
		var errs []error
		if err := c.file.Close(); err != nil {
			errs = append(errs, fmt.Errorf("vz %s: close: %w", c.local, err))
		}
		if err := os.Remove(c.local); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("vz %s: remove: %w", c.local, err))
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Dial makes the VM's socket: a unixgram socket with cfg's buffer sizes,
// bound to cfg.Local, connected to cfg.Switch, that has sent Hello.
func Dial(cfg Config) (*Conn, error) {
	if cfg.Switch == "" {
		return nil, errors.New("vz: no switch socket given (Config.Switch)")
	}
	snd, rcv := cfg.SendBuffer, cfg.ReceiveBuffer
	if snd == 0 {
		snd = DefaultSendBuffer
	}
	if rcv == 0 {
		rcv = DefaultReceiveBuffer
	}
	if snd < 0 || rcv < 2*snd {
		return nil, fmt.Errorf("vz: receive buffer %d must be at least twice the send buffer %d (Apple's rule)", rcv, snd)
	}
	if cfg.MTU != 0 && (cfg.MTU < MinMTU || cfg.MTU > MaxMTU) {
		return nil, fmt.Errorf("vz: MTU %d outside %d to %d (a frame is MTU+14 bytes, and the switch takes at most 65535): choose one in that range",
			cfg.MTU, MinMTU, MaxMTU)
	}
	local := cfg.Local
	if local == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("vz: local socket name: %w", err)
		}
		local = filepath.Join(os.TempDir(), fmt.Sprintf("tapswitch-vz-%d-%s.sock", os.Getpid(), hex.EncodeToString(b[:])))
	}
	local, err := filepath.Abs(local)
	if err != nil {
		return nil, fmt.Errorf("vz: local socket %s: %w", cfg.Local, err)
	}
	for _, p := range []string{local, cfg.Switch} {
		if len(p) > maxSockPath {
			return nil, fmt.Errorf("vz: socket path %s is %d bytes long, at most %d allowed: choose a shorter one",
				p, len(p), maxSockPath)
		}
	}

	// macOS has no SOCK_CLOEXEC: hold ForkLock as package net does, so no
	// child inherits the socket.
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("vz %s: socket: %w", local, err)
	}
	if err := setup(fd, local, cfg, snd, rcv); err != nil {
		unix.Close(fd)
		return nil, err
	}
	c := &Conn{file: os.NewFile(uintptr(fd), "vz:"+local), local: local, cfg: cfg, done: make(chan struct{})}
	if every := cmp.Or(cfg.Reconnect, DefaultReconnect); every > 0 {
		// The file connected to: at worst (replaced meanwhile) the first
		// check reconnects once more than needed.
		id, _ := statID(cfg.Switch)
		c.wg.Add(1)
		go c.watch(every, id)
	}
	return c, nil
}

// setup sizes, binds and connects fd and sends the hello. On error the
// caller closes fd; setup removes the path it bound.
func setup(fd int, local string, cfg Config, snd, rcv int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, snd); err != nil {
		return fmt.Errorf("vz %s: set SO_SNDBUF %d: %w (macOS caps socket buffers at sysctl kern.ipc.maxsockbuf)", local, snd, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcv); err != nil {
		return fmt.Errorf("vz %s: set SO_RCVBUF %d: %w (macOS caps socket buffers at sysctl kern.ipc.maxsockbuf)", local, rcv, err)
	}
	if err := removeStale(local); err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: local}); err != nil {
		return fmt.Errorf("vz %s: bind: %w", local, err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: cfg.Switch}); err != nil {
		os.Remove(local)
		switch {
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ECONNREFUSED):
			return fmt.Errorf("vz %s: connect to switch %s: %w: is `tapswitch serve --listen unixgram://%[2]s` running?",
				local, cfg.Switch, err)
		case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
			return fmt.Errorf("vz %s: connect to switch %s: %w: join the socket's group (tapswitch serve --socket-group)",
				local, cfg.Switch, err)
		case errors.Is(err, unix.EPROTOTYPE):
			return fmt.Errorf("vz %s: connect to switch %s: %w: that is a stream socket; listen with unixgram://",
				local, cfg.Switch, err)
		}
		return fmt.Errorf("vz %s: connect to switch %s: %w", local, cfg.Switch, err)
	}
	if !cfg.NoHello {
		if _, err := unix.Write(fd, []byte(Hello)); err != nil {
			os.Remove(local)
			return fmt.Errorf("vz %s: send hello to switch %s: %w", local, cfg.Switch, err)
		}
	}
	return nil
}

// removeStale removes a socket file at path that no process is bound to.
// Anything else at path is left alone, and bind then reports it.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if err != nil || st.Mode().Type() != fs.ModeSocket {
		return nil
	}
	probe, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		return fmt.Errorf("vz %s: probe stale socket: %w", path, err)
	}
	defer unix.Close(probe)
	err = unix.Connect(probe, &unix.SockaddrUnix{Name: path})
	if err == nil {
		return fmt.Errorf("vz %s: bind: %w: another process is bound to it", path, unix.EADDRINUSE)
	}
	if !errors.Is(err, unix.ECONNREFUSED) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("vz %s: remove stale socket: %w", path, err)
	}
	return nil
}
