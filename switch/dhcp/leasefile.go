package dhcp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tapswitch/tapswitch/internal/regfile"
	vswitch "github.com/tapswitch/tapswitch/switch"
)

// The lease file, version 2, is UTF-8 text, one record per line, every line
// ending in '\n' (a '\r' before it is ignored, so that a file edited with a
// CRLF editor still reads):
//
//	tapswitch-leases 2
//	lease-time 3600
//	# MAC IP EXPIRY STATE HOSTNAME
//	52:54:00:12:34:56 198.18.0.10 2026-01-02T15:04:05Z bound vm1
//	52:54:00:ab:cd:ef 198.18.0.11 2026-01-02T14:00:00Z released -
//	end 2
//
// The first line names the format and its version. The second gives, in
// seconds, the longest lease a client may hold at the time of the write:
// the lease time, or longer while a lease time given before a restart
// may still run (see Server.load). Lines starting with '#' are comments.
// A lease line has five fields separated by one space: the client's MAC
// address, its IPv4 address, the expiry in RFC 3339 UTC (for a released
// lease: when it was released), the state ("bound" or "released") and the
// sanitised host name ("-" if none). The last line, "end N", counts the
// lease lines; a file cut anywhere short of it is detected as truncated.
// Offers and static leases are not stored: offers are transient and static
// leases come from the configuration. Version 1, read too, is the same
// without the lease-time line.
const (
	leaseFileMagic   = "tapswitch-leases"
	leaseFileVersion = 2
	leaseTimeKey     = "lease-time "
)

// LeaseFileError reports a lease file line that could not be used. Its
// message has the form "PATH:LINE: reason".
type LeaseFileError struct {
	Path   string
	Line   int
	Reason string
	// Err is the sentinel behind Reason, if any (ErrLeaseFileVersion,
	// ErrNotLeaseFile).
	Err error
}

// Error returns "PATH:LINE: reason".
func (e *LeaseFileError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.Path, e.Line, e.Reason)
}

// Unwrap returns e.Err.
func (e *LeaseFileError) Unwrap() error { return e.Err }

// ErrLeaseFileVersion matches the error for a lease file of a version this
// build does not know, presumably written by a newer tapswitch. New refuses
// to start rather than overwrite such a file.
var ErrLeaseFileVersion = errors.New("unsupported lease file version")

// ErrLeaseFileInUse matches the error of New for a lease file another
// server (in this process or another) holds: two servers on one subnet
// given the same file, typically its default path.
var ErrLeaseFileInUse = errors.New("in use")

// LeaseLock is a lease file's lock: see LockLeaseFile.
type LeaseLock struct {
	path string
	f    *os.File
	once sync.Once
}

// LockLeaseFile takes the lock New takes on path, for a caller that wants
// to fail on a lease file in use before it builds the rest (tapswitch serve
// takes it before it creates the host interface): an exclusive lock on
// PATH.lock, held until Close, or ErrLeaseFileInUse. A file at path that is
// not a regular file, or whose first line (its first 4 KiB) shows it is
// not a lease file or of a newer format, is refused before the lock file
// is made beside it; load refuses the rest. Pass the lock as
// Config.LeaseLock.
func LockLeaseFile(path string) (*LeaseLock, error) {
	f, _, err := regfile.Open(path)
	switch {
	case err == nil:
		// Its first line tells; load checks again under the lock.
		head, _ := bufio.NewReader(io.LimitReader(f, 4096)).ReadBytes('\n')
		f.Close()
		if _, perr := parseLeaseFile(path, head); errors.Is(perr, ErrNotLeaseFile) || errors.Is(perr, ErrLeaseFileVersion) {
			return nil, fmt.Errorf("load lease file: %w (refusing to replace it)", perr)
		}
	case !errors.Is(err, os.ErrNotExist):
		// A FIFO, a device, a directory: no lock file beside it.
		return nil, fmt.Errorf("load lease file: %w", err)
	}
	lf, err := lockLeaseFile(path)
	if err != nil {
		return nil, err
	}
	return &LeaseLock{path: path, f: lf}, nil
}

// Close releases the lock; later calls do nothing.
func (l *LeaseLock) Close() { l.once.Do(func() { l.f.Close() }) }

// ErrNotLeaseFile matches the error for a file whose first line is not a
// lease file header: the path names some other file. New refuses to start
// rather than replace it.
var ErrNotLeaseFile = errors.New("not a tapswitch lease file")

// leaseFileLimit bounds what is read of a lease file for a pool of
// poolSize addresses: room for a line of the longest form (a host name of
// 253 bytes) per address, and at least 64 MiB.
func leaseFileLimit(poolSize int) int64 {
	return max(64<<20, int64(poolSize)*512)
}

// maxLeaseFileErrors bounds the errors reported for one file.
const maxLeaseFileErrors = 10

// ReadLeaseFile reads the lease file at path. It returns the leases that
// could be read, in file order, and, if any line was bad or the file was
// truncated, an error joining one *LeaseFileError per bad line (at most
// 10). A missing file is an error matching os.ErrNotExist.
func ReadLeaseFile(path string) ([]Lease, error) {
	data, err := regfile.Read(path, leaseFileLimit(1<<24))
	if err != nil {
		return nil, fmt.Errorf("read lease file: %w", err)
	}
	f, err := parseLeaseFile(path, data)
	return f.leases, err
}

// leaseFile is what a lease file holds.
type leaseFile struct {
	leases []Lease
	// leaseTime is the longest lease a client may have held when the file
	// was written; 0 if the file does not say (version 1, a bad line).
	leaseTime time.Duration
}

// parseLeaseFile parses a lease file. It fails outright only on a file that
// is not a lease file (ErrNotLeaseFile) or is of another version
// (ErrLeaseFileVersion): else it returns every lease it could read, and the
// errors.
func parseLeaseFile(path string, data []byte) (leaseFile, error) {
	var (
		f     leaseFile
		errs  []error
		v2    bool
		count int // lease lines, good or bad
		ended bool
		macs  = map[vswitch.MAC]bool{}
		ips   = map[netip.Addr]bool{}
	)
	bad := func(line int, format string, args ...any) {
		if len(errs) < maxLeaseFileErrors {
			errs = append(errs, &LeaseFileError{Path: path, Line: line, Reason: fmt.Sprintf(format, args...)})
		}
	}
	line := 0
	for len(data) > 0 {
		line++
		if line == 1 && allNUL(data) {
			// What a crash can leave of a file being written (the size
			// recorded, the data not): the lease file, ruined. A file
			// whose first line only starts with NULs is some other file.
			return f, &LeaseFileError{Path: path, Line: line, Reason: "NUL bytes where the header should be"}
		}
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			// A header cut short is a truncated lease file; anything else
			// on the first line is some other file.
			if hdr := leaseFileMagic + " "; line == 1 && !strings.HasPrefix(string(data), hdr) && !strings.HasPrefix(hdr, string(data)) {
				return f, notLeaseFile(path, data)
			}
			bad(line, "truncated line %q", clip(data))
			break
		}
		text := strings.TrimSuffix(string(data[:i]), "\r")
		data = data[i+1:]
		if line == 2 && v2 {
			secs, ok := strings.CutPrefix(text, leaseTimeKey)
			n, err := strconv.ParseUint(secs, 10, 32)
			if ok && err == nil && n > 0 {
				f.leaseTime = time.Duration(n) * time.Second
				continue
			}
			bad(line, "want %q, have %q", leaseTimeKey+"SECONDS", clip([]byte(text)))
			if ok {
				continue
			}
		}
		switch {
		case line == 1:
			v, ok := strings.CutPrefix(text, leaseFileMagic+" ")
			if !ok {
				return f, notLeaseFile(path, []byte(text))
			}
			v2 = v == strconv.Itoa(leaseFileVersion)
			if !v2 && v != "1" {
				return f, &LeaseFileError{Path: path, Line: line, Err: ErrLeaseFileVersion,
					Reason: fmt.Sprintf("%v %q (this build reads 1 and %d)", ErrLeaseFileVersion, v, leaseFileVersion)}
			}
		case ended:
			bad(line, "data after end line")
		case strings.HasPrefix(text, "#"):
		case strings.HasPrefix(text, "end "):
			ended = true
			n, err := strconv.Atoi(strings.TrimPrefix(text, "end "))
			if err != nil || n != count {
				bad(line, "end line %q does not match the %d lease lines read", clip([]byte(text)), count)
			}
		default:
			count++
			l, err := parseLeaseLine(text)
			switch {
			case err != nil:
				bad(line, "%v", err)
			case macs[l.MAC]:
				bad(line, "duplicate MAC %s", l.MAC)
			case ips[l.IP]:
				bad(line, "duplicate IP %s", l.IP)
			default:
				macs[l.MAC], ips[l.IP] = true, true
				f.leases = append(f.leases, l)
			}
		}
	}
	if line == 0 {
		bad(1, "empty file")
	} else if !ended {
		bad(line+1, "truncated: no end line")
	}
	return f, errors.Join(errs...)
}

func notLeaseFile(path string, first []byte) error {
	return &LeaseFileError{Path: path, Line: 1, Err: ErrNotLeaseFile,
		Reason: fmt.Sprintf("%v: first line %q is not %q", ErrNotLeaseFile, clip(first), leaseFileMagic+" N")}
}

// parseLeaseLine parses "MAC IP EXPIRY STATE HOSTNAME".
func parseLeaseLine(s string) (Lease, error) {
	f := strings.Split(s, " ")
	if len(f) != 5 {
		return Lease{}, fmt.Errorf("want 5 fields (MAC IP EXPIRY STATE HOSTNAME), have %d in %q", len(f), clip([]byte(s)))
	}
	var l Lease
	var err error
	if l.MAC, err = vswitch.ParseMAC(f[0]); err != nil || l.MAC.Multicast() || l.MAC == (vswitch.MAC{}) {
		return Lease{}, fmt.Errorf("bad MAC %q", clip([]byte(f[0])))
	}
	if l.IP, err = netip.ParseAddr(f[1]); err != nil || !l.IP.Is4() {
		return Lease{}, fmt.Errorf("bad IPv4 address %q", clip([]byte(f[1])))
	}
	if l.Expiry, err = time.Parse(time.RFC3339, f[2]); err != nil {
		return Lease{}, fmt.Errorf("bad expiry %q", clip([]byte(f[2])))
	}
	st, ok := parseState(f[3])
	if !ok || (st != LeaseBound && st != LeaseReleased) {
		return Lease{}, fmt.Errorf("bad state %q", clip([]byte(f[3])))
	}
	l.State = st
	if f[4] != "-" {
		if h := sanitizeHostname(f[4]); h != f[4] || h == "" {
			return Lease{}, fmt.Errorf("bad host name %q", clip([]byte(f[4])))
		}
		l.Hostname = f[4]
	}
	return l, nil
}

// clip shortens b for an error message.
func clip(b []byte) string {
	const n = 64
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// encodeLeaseFile returns the lease file holding ls, leases of at most
// leaseTime (whole seconds, at least one).
func encodeLeaseFile(ls []Lease, leaseTime time.Duration) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %d\n%s%d\n# MAC IP EXPIRY STATE HOSTNAME\n", leaseFileMagic, leaseFileVersion,
		leaseTimeKey, max(1, int64((leaseTime+time.Second-1)/time.Second)))
	for _, l := range ls {
		h := l.Hostname
		if h == "" {
			h = "-"
		}
		fmt.Fprintf(&b, "%s %s %s %s %s\n", l.MAC, l.IP, l.Expiry.UTC().Format(time.RFC3339), l.State, h)
	}
	fmt.Fprintf(&b, "end %d\n", len(ls))
	return b.Bytes()
}

// sanitizeHostname keeps what a host name may contain (letters, digits,
// '-', '_', '.'), at most 253 bytes, so that it is one lease file field.
func sanitizeHostname(s string) string {
	b := make([]byte, 0, min(len(s), 253))
	for i := 0; i < len(s) && len(b) < 253; i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' {
			b = append(b, c)
		}
	}
	return string(b)
}

// writeFileAtomic replaces path with data durably: it writes a temporary
// file in the same directory, fsyncs it, renames it over path and fsyncs
// the directory, so that a crash leaves either the old or the new file.
// The file gets the permission bits of the file it replaces, so that an
// administrator's chmod survives the rewrite; perm is for a new file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	if fi, err := os.Stat(path); err == nil {
		perm = fi.Mode().Perm()
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err) // err names tmp
	}
	if err = f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil { // F_FULLFSYNC on darwin
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: rename: %w", path, err)
	}
	if err = syncDir(dir); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		// Some file systems (and darwin's F_FULLFSYNC on a directory)
		// refuse to sync a directory; the rename is as durable as they
		// make it.
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// keepAside stores data, the content of a lease file that could not be
// fully read, as PATH.corrupt-TIMESTAMP (with a counter if that exists)
// and returns the name used.
func keepAside(path string, data []byte, now time.Time) (string, error) {
	stamp := now.UTC().Format("20060102T150405Z")
	name := path + ".corrupt-" + stamp
	for i := 2; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, os.ErrNotExist) {
			break
		}
		name = fmt.Sprintf("%s.corrupt-%s-%d", path, stamp, i)
	}
	if err := writeFileAtomic(name, data, 0o600); err != nil {
		return "", fmt.Errorf("keep corrupt lease file aside: %w", err)
	}
	return name, nil
}

// allNUL reports whether the first line of data (up to a newline or the
// end) is NUL bytes only, at least one.
func allNUL(data []byte) bool {
	line, _, _ := bytes.Cut(data, []byte{'\n'})
	return len(line) > 0 && len(bytes.Trim(line, "\x00")) == 0
}
