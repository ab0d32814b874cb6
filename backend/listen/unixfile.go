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

	"golang.org/x/sys/unix"
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
	// ErrGroup: the socket file could not be given the group asked for
	// (as when not root and not a member of it); nothing is left at the
	// path.
	ErrGroup = errors.New("cannot give the socket file group")
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
// giving the socket file mode (DefaultMode if zero) and, unless it is nil,
// the group *group. See ListenUnixgram for how path is prepared. The
// listener does not unlink path when closed: call SocketFile.Remove after
// closing it.
func ListenUnix(path string, mode os.FileMode, group *int) (*net.UnixListener, *SocketFile, error) {
	c, f, err := bindUnix("unix", path, mode, group, func(p string) (io.Closer, error) {
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
// the socket file mode (DefaultMode if zero) and, unless it is nil, the
// group *group.
//
// A socket file left at path by a process that has gone is replaced. A
// socket another process still serves (a probe connection succeeds) is
// refused with ErrInUse, and any other kind of file with ErrNotSocket.
//
// The mode and group are set without a window in which others could
// connect, or the group's members could not: the socket is bound inside a
// fresh private (0700) directory next to path, given its group and mode
// there, then renamed into place, which also replaces a stale file
// atomically. Changing the umask instead would affect every goroutine of
// the process. The chown, chmod and rename go through a descriptor of that
// directory, which nobody else can write: someone who may write path's
// directory and renames the private one away cannot make them act on a
// file of theirs (a symlink or a hard link). When that directory cannot be
// made, or its path would exceed the socket path limit, the socket is
// bound at path directly and given its group and mode at once, which is
// refused in a directory others may write.
func ListenUnixgram(path string, mode os.FileMode, group *int) (*net.UnixConn, *SocketFile, error) {
	c, f, err := bindUnix("unixgram", path, mode, group, func(p string) (io.Closer, error) {
		return net.ListenUnixgram("unixgram", &net.UnixAddr{Name: p, Net: "unixgram"})
	})
	if err != nil {
		return nil, nil, err
	}
	return c.(*net.UnixConn), f, nil
}

func bindUnix(network, path string, mode os.FileMode, group *int, bind func(string) (io.Closer, error)) (io.Closer, *SocketFile, error) {
	if mode == 0 {
		mode = DefaultMode
	}
	if len(path) > MaxSocketPath {
		return nil, nil, fmt.Errorf("listen %s %s: path longer than %d bytes", network, path, MaxSocketPath)
	}
	if err := checkStale(network, path); err != nil {
		return nil, nil, err
	}
	// The longest name MkdirTemp may give (a uint32 in decimal) decides,
	// so that the same path is not made one way or the other at random.
	if dir := filepath.Dir(path); len(filepath.Join(dir, privateDirPattern+"4294967295", "s")) <= MaxSocketPath {
		if tmp, err := os.MkdirTemp(dir, privateDirPattern); err == nil {
			defer os.RemoveAll(tmp)
			return bindPrivate(network, path, tmp, mode, group, bind)
		}
	}
	if err := sharedDir(filepath.Dir(path)); err != nil {
		return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	if err := removeStale(path); err != nil {
		return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	c, err := bind(path)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s %s: %w", network, path, err)
	}
	if group != nil {
		if err := unix.Fchownat(unix.AT_FDCWD, path, -1, *group, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			c.Close()
			os.Remove(path)
			return nil, nil, fmt.Errorf("listen %s %s: %w %d: %w", network, path, ErrGroup, *group, err)
		}
	}
	if err := os.Chmod(path, mode); err != nil {
		c.Close()
		os.Remove(path)
		return nil, nil, fmt.Errorf("listen %s %s: chmod: %w", network, path, err)
	}
	return finish(network, path, c)
}

// privateDirPattern names the private directories a socket is made in.
const privateDirPattern = ".tapswitch-"

// bindPrivate binds the socket as tmp/s, tmp being the private directory
// made for it, and moves it to path.
func bindPrivate(network, path, tmp string, mode os.FileMode, group *int, bind func(string) (io.Closer, error)) (io.Closer, *SocketFile, error) {
	fail := func(what string, err error) (io.Closer, *SocketFile, error) {
		return nil, nil, fmt.Errorf("listen %s %s: %s%w", network, path, what, err)
	}
	dir, err := unix.Open(tmp, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("open "+tmp+": ", err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	if err := unix.Fstat(dir, &st); err != nil {
		return fail("", err)
	}
	if int(st.Uid) != os.Geteuid() || st.Mode&0o777 != 0o700 {
		return fail("", fmt.Errorf("%s was replaced by another directory (owner %d, mode %o) before it was opened", tmp, st.Uid, st.Mode&0o777))
	}
	c, err := bind(filepath.Join(tmp, "s"))
	if err != nil {
		return fail("", err)
	}
	// Through dir: if tmp's name now leads elsewhere, "s" is not found
	// rather than someone else's file changed.
	if group != nil {
		if err := unix.Fchownat(dir, "s", -1, *group, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			c.Close()
			return fail("", fmt.Errorf("%w %d: %w", ErrGroup, *group, err))
		}
	}
	if err := unix.Fchmodat(dir, "s", uint32(mode.Perm()), 0); err != nil {
		c.Close()
		return fail("chmod: ", err)
	}
	if err := unix.Renameat(dir, "s", unix.AT_FDCWD, path); err != nil {
		c.Close()
		return fail("move socket into place: ", err)
	}
	return finish(network, path, c)
}

// sharedDir refuses a directory others may write, unless it is sticky
// (/tmp), where others cannot rename or remove what is not theirs.
func sharedDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("%s is writable by others and not sticky: a socket there is made in a private directory beside it, whose path would be too long (give a directory of at most %d bytes)", dir, MaxSocketPath-len("/"+privateDirPattern+"4294967295/s"))
	}
	return nil
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
