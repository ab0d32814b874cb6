package listen

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// DefaultMode is the permission given to socket files when the caller asks
// for none: owner and group may connect, others may not.
const DefaultMode os.FileMode = 0o660

// Sentinel errors of ListenUnix and ListenUnixgram.
var (
	// ErrInUse: the socket path belongs to a socket another process is
	// listening on; it is left alone.
	ErrInUse = errors.New("socket is in use by a live listener")
	// ErrNotSocket: the path exists and is not a socket; it is left alone.
	ErrNotSocket = errors.New("file exists and is not a socket")
)

// MaxSocketPath is the longest socket path bind accepts on every supported
// system (sun_path is 104 bytes on macOS and 108 on Linux, NUL included).
const MaxSocketPath = 103

// SocketFile is a unix socket file this process created. Remove deletes it
// on shutdown.
type SocketFile struct {
	path string
	fi   os.FileInfo
	once sync.Once
	err  error
}

// Path returns the socket file's path.
func (f *SocketFile) Path() string { return f.path }

// SameFile reports whether fi describes the socket file this process
// created.
func (f *SocketFile) SameFile(fi os.FileInfo) bool { return os.SameFile(f.fi, fi) }

// Remove deletes the socket file unless it has been replaced by another
// file since it was created (by a second instance started by mistake, say).
// It is idempotent.
func (f *SocketFile) Remove() error {
	f.once.Do(func() {
		cur, err := os.Lstat(f.path)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				f.err = fmt.Errorf("remove socket %s: %w", f.path, err)
			}
			return
		}
		if f.fi != nil && !os.SameFile(f.fi, cur) {
			return
		}
		if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			f.err = fmt.Errorf("remove socket %s: %w", f.path, err)
		}
	})
	return f.err
}

// ListenUnix listens for stream connections on the unix socket path,
// giving the socket file mode (DefaultMode if zero). See ListenUnixgram for
// how path is prepared. The listener does not unlink path when closed: call
// SocketFile.Remove after closing it.
func ListenUnix(path string, mode os.FileMode) (*net.UnixListener, *SocketFile, error) {
	c, f, err := bindUnix("unix", path, mode, func(p string) (io.Closer, error) {
		l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
		if err != nil {
			return nil, err
		}
		l.SetUnlinkOnClose(false)
		return l, nil
	})
	if err != nil {
		return nil, nil, err
	}
	return c.(*net.UnixListener), f, nil
}

// ListenUnixgram binds a datagram socket to the unix socket path, giving
// the socket file mode (DefaultMode if zero).
//
// A socket file left at path by a process that has gone is replaced. A
// socket another process still serves (a probe connection succeeds) is
// refused with ErrInUse, and any other kind of file with ErrNotSocket.
//
// The mode is set without a window in which others could connect: the
// socket is bound inside a fresh private (0700) directory next to path,
// chmodded there, then renamed into place, which also replaces a stale
// file atomically. Changing the umask instead would affect every goroutine
// of the process. When that directory cannot be made, or its path would
// exceed the socket path limit, the socket is bound at path directly and
// chmodded at once; the permissions of path's directory then guard the
// short window.
func ListenUnixgram(path string, mode os.FileMode) (*net.UnixConn, *SocketFile, error) {
	c, f, err := bindUnix("unixgram", path, mode, func(p string) (io.Closer, error) {
		return net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	})
	if err != nil {
		return nil, nil, err
	}
	return c.(*net.UnixConn), f, nil
}

func bindUnix(network, path string, mode os.FileMode, bind func(string) (io.Closer, error)) (io.Closer, *SocketFile, error) {
	if mode == 0 {
		mode = DefaultMode
	}
	if len(path) > MaxSocketPath {
		return nil, nil, fmt.Errorf("listen %s %s: path longer than %d bytes", network, path, MaxSocketPath)
	}
	if err := checkStale(network, path); err != nil {
		return nil, nil, err
	}
	if tmp, err := os.MkdirTemp(filepath.Dir(path), ".tapswitch-"); err == nil {
		defer os.RemoveAll(tmp)
		if p := filepath.Join(tmp, "s"); len(p) <= MaxSocketPath {
			c, err := bind(p)
			if err != nil {
				return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
			}
			if err := os.Chmod(p, mode); err != nil {
				c.Close()
				return nil, nil, fmt.Errorf("listen %s %s: chmod: %w", network, path, err)
			}
			if err := os.Rename(p, path); err != nil {
				c.Close()
				return nil, nil, fmt.Errorf("listen %s %s: move socket into place: %w", network, path, err)
			}
			return finish(network, path, c)
		}
	}
	if err := removeStale(path); err != nil {
		return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	c, err := bind(path)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		c.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("listen %s %s: chmod: %w", network, path, err)
	}
	return finish(network, path, c)
}

func finish(network, path string, c io.Closer) (io.Closer, *SocketFile, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	return c, &SocketFile{path: path, fi: fi}, nil
}

// checkStale returns nil when path does not exist or is a socket nobody
// serves any more.
func checkStale(network, path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen %s %s: %w", network, path, ErrNotSocket)
	}
	c, err := net.DialTimeout(network, path, time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("listen %s %s: %w", network, path, ErrInUse)
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENOENT):
		return nil
	case errors.Is(err, syscall.EPROTOTYPE):
		// A live socket of the other type (stream vs datagram).
		return fmt.Errorf("listen %s %s: %w", network, path, ErrInUse)
	default:
		return fmt.Errorf("listen %s %s: probe existing socket: %w", network, path, err)
	}
}

// removeStale removes path if it is a socket (checkStale has already
// found it dead).
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return ErrNotSocket
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
