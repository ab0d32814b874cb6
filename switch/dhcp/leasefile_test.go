package dhcp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	vswitch "github.com/tapswitch/tapswitch/switch"
	"github.com/tapswitch/tapswitch/switch/porttest"
)

// exchange feeds frames to srv as the switch would and returns the
// replies it queued.
func exchange(t testing.TB, srv *Server, frames ...[]byte) [][]byte {
	t.Helper()
	bufs := make([][]byte, len(frames))
	for i, f := range frames {
		bufs[i] = append(make([]byte, vswitch.Headroom), f...)
	}
	if n, err := srv.WriteFrames(bufs, vswitch.Headroom); err != nil || n != len(frames) {
		t.Fatalf("WriteFrames: %d, %v", n, err)
	}
	var out [][]byte
	for {
		select {
		case f := <-srv.out:
			out = append(out, f)
		default:
			return out
		}
	}
}

// replies decodes the DHCP replies among frames.
func replies(t testing.TB, frames [][]byte) []*dhcpv4.DHCPv4 {
	t.Helper()
	var ds []*dhcpv4.DHCPv4
	for _, f := range frames {
		r, bad := checkFrame(f)
		if bad != "" {
			t.Fatalf("malformed reply: %s", bad)
		}
		if r.dhcp != nil {
			ds = append(ds, r.dhcp)
		}
	}
	return ds
}

// acquire runs DISCOVER/REQUEST for m directly against srv and returns
// the acknowledged address, or the invalid Addr if no ACK came.
func acquire(t testing.TB, srv *Server, m vswitch.MAC) netip.Addr {
	t.Helper()
	offers := replies(t, exchange(t, srv, bcastFrame(m, newMsg(t, dhcpv4.MessageTypeDiscover, m))))
	if len(offers) != 1 || offers[0].MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("DISCOVER from %v: got %v", m, offers)
	}
	req := newMsg(t, dhcpv4.MessageTypeRequest, m,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offers[0].YourIPAddr)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(offers[0].ServerIdentifier())),
		dhcpv4.WithOption(dhcpv4.OptHostName("host-"+m.String()[15:])))
	acks := replies(t, exchange(t, srv, bcastFrame(m, req)))
	if len(acks) == 0 {
		return netip.Addr{}
	}
	if len(acks) != 1 || acks[0].MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("REQUEST from %v: got %v", m, acks)
	}
	return addr4(acks[0].YourIPAddr)
}

func newFileServer(t *testing.T, path string, clock *fakeClock) *Server {
	t.Helper()
	srv, _ := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: clock.Now})
	return srv
}

// newFileServerLogged makes a server of cfg and returns with it the
// problems with the lease file that New logged (its error lines), one a
// line: "" if none.
func newFileServerLogged(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	log, hook := logtest.NewNullLogger()
	cfg.Logger = log
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.ErrorLevel {
			lines = append(lines, e.Message)
		}
	}
	return srv, strings.Join(lines, "\n")
}

func sampleLeases() []Lease {
	exp := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	return []Lease{
		{MAC: porttest.MAC(1), IP: ip4("198.18.0.2"), Expiry: exp, State: LeaseBound, Hostname: "vm1"},
		{MAC: porttest.MAC(2), IP: ip4("198.18.0.3"), Expiry: exp.Add(time.Hour), State: LeaseReleased},
		{MAC: porttest.MAC(3), IP: ip4("198.18.0.7"), Expiry: exp.Add(-time.Hour), State: LeaseBound, Hostname: "a.b-c_d"},
	}
}

// expectSampleLeases checks that data parses as sampleLeases.
func expectSampleLeases(t *testing.T, what string, data []byte) {
	t.Helper()
	f, err := parseLeaseFile("leases", data)
	if err != nil {
		t.Fatal(err)
	}
	got := f.leases
	for i := range got {
		got[i].Expiry = got[i].Expiry.UTC()
	}
	if !reflect.DeepEqual(got, sampleLeases()) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, got, sampleLeases())
	}
}

func TestLeaseFileRoundTrip(t *testing.T) {
	data := encodeLeaseFile(sampleLeases(), time.Hour)
	expectSampleLeases(t, "round trip", data)
	if want := "tapswitch-leases 2\nlease-time 3600\n"; !bytes.HasPrefix(data, []byte(want)) {
		t.Errorf("file does not start with %q", want)
	}
	if !bytes.Contains(data, []byte("\n02:00:00:00:00:01 198.18.0.2 2026-01-02T15:04:05Z bound vm1\n")) {
		t.Errorf("unexpected line format:\n%s", data)
	}
	empty, err := parseLeaseFile("leases", encodeLeaseFile(nil, time.Hour))
	if err != nil || len(empty.leases) != 0 || empty.leaseTime != time.Hour {
		t.Errorf("empty table: %+v, %v", empty, err)
	}
}

// TestLeaseFileCRLF: a lease file saved with CRLF line endings (an
// editor on Windows, a copy through a CRLF-converting tool) reads as the
// same leases, rather than as a file of a newer version.
func TestLeaseFileCRLF(t *testing.T) {
	crlf := bytes.ReplaceAll(encodeLeaseFile(sampleLeases(), time.Hour), []byte("\n"), []byte("\r\n"))
	expectSampleLeases(t, "CRLF file", crlf)

	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, crlf, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: newClock().Now})
	defer srv.Close()
	if logged != "" {
		t.Errorf("CRLF file reported as corrupt: %q", logged)
	}
	if ls := srv.Leases(); len(ls) != len(sampleLeases()) {
		t.Errorf("loaded %d leases, want %d", len(ls), len(sampleLeases()))
	}
}

// TestLeaseFileTruncated cuts a valid file at every byte offset: each cut
// parses without panic to a prefix of the leases, and is reported.
func TestLeaseFileTruncated(t *testing.T) {
	want := sampleLeases()
	data := encodeLeaseFile(want, time.Hour)
	for n := 0; n < len(data); n++ {
		f, err := parseLeaseFile("leases", data[:n])
		got := f.leases
		if err == nil {
			t.Fatalf("cut at %d/%d: no error", n, len(data))
		}
		var lfe *LeaseFileError
		if !errors.As(err, &lfe) || !strings.HasPrefix(err.Error(), "leases:") {
			t.Fatalf("cut at %d: error %q is not a path:line LeaseFileError", n, err)
		}
		if len(got) > len(want) {
			t.Fatalf("cut at %d: %d leases from %d", n, len(got), len(want))
		}
		for i := range got {
			if got[i].MAC != want[i].MAC || got[i].IP != want[i].IP || got[i].State != want[i].State {
				t.Fatalf("cut at %d: lease %d is %+v, want %+v", n, i, got[i], want[i])
			}
		}
	}
}

// TestLeaseFileTruncatedLoad loads a truncated file through New at every
// offset but 0 (an empty file, TestLeaseFileEmpty): the server starts with
// the prefix, keeps the cut file aside and rewrites a valid one.
func TestLeaseFileTruncatedLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("writes one lease file per byte offset; skipped with -short")
	}
	data := encodeLeaseFile(sampleLeases(), time.Hour)
	for n := 1; n < len(data); n++ {
		dir := t.TempDir()
		path := filepath.Join(dir, "leases")
		if err := os.WriteFile(path, data[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		clock := newClock()
		srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: clock.Now})
		if logged == "" {
			t.Fatalf("cut at %d: no load error", n)
		}
		aside, err := filepath.Glob(path + ".corrupt-*")
		if err != nil || len(aside) != 1 {
			t.Fatalf("cut at %d: aside copies %v, %v", n, aside, err)
		}
		if kept, _ := os.ReadFile(aside[0]); !bytes.Equal(kept, data[:n]) {
			t.Fatalf("cut at %d: the copy aside differs from the cut file", n)
		}
		loaded := srv.Leases()
		reread, err := ReadLeaseFile(path)
		if err != nil {
			t.Fatalf("cut at %d: rewritten file: %v", n, err)
		}
		if len(reread) != len(loaded) {
			t.Fatalf("cut at %d: %d leases loaded, %d rewritten", n, len(loaded), len(reread))
		}
		srv.Close()
	}
}

// TestLeaseFileNULs: a file of NUL bytes, whole or up to a line of
// leases, is what a crash can leave of a file being written. It is a
// corrupt lease file (kept aside, the switch starts), not some other file
// that tapswitch refuses to replace: that stopped tapswitch from starting
// until someone removed it. A file whose first line only starts with NULs
// (a disk image given by mistake) is some other file, and left alone.
func TestLeaseFileNULs(t *testing.T) {
	for name, data := range map[string][]byte{
		"all":          make([]byte, 4096),
		"then a lease": append(make([]byte, 100), "\n52:54:00:12:34:56 198.18.0.100 2026-01-02T15:04:05Z bound vm1\n"...),
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "leases")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: newClock().Now})
			defer srv.Close()
			if !strings.Contains(logged, "NUL bytes") {
				t.Errorf("load error %q, want one about NUL bytes", logged)
			}
			if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 1 {
				t.Errorf("copies aside %v, want one", aside)
			}
			if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 0 {
				t.Errorf("rewritten lease file: %v, %v; want a valid empty one", ls, err)
			}
		})
	}
	path := filepath.Join(t.TempDir(), "image")
	other := append(make([]byte, 16), "\x01\x02 important binary data\n"...)
	if err := os.WriteFile(path, other, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Gateway: testGateway, LeaseFile: path}); !errors.Is(err, ErrNotLeaseFile) {
		t.Errorf("New on a file whose first line starts with NULs: %v, want ErrNotLeaseFile", err)
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, other) {
		t.Error("the other file was changed")
	}
}

// TestLeaseFileNotRegular: a lease file path naming a FIFO (or a device,
// a directory) is refused at once, before a lock file is made beside it.
// A FIFO blocked the start for good (SIGINT ignored), and /dev/zero would
// have been read without end.
func TestLeaseFileNotRegular(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "leases")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{fifo, sub} {
		done := make(chan error, 1)
		go func() {
			srv, err := New(Config{Gateway: testGateway, LeaseFile: path})
			if err == nil {
				srv.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("New with lease file %s: %v, want it refused as not a regular file", path, err)
			}
			if _, err := os.Stat(path + ".lock"); err == nil {
				t.Errorf("a lock file was made beside %s", path)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("lease file %s: still reading after 10 s", path)
		}
	}
}

// TestLargeLeaseFileLoads: the lease file of a large pool, past 64 MiB,
// loads; a fixed 64 MiB bound on what was read refused it at start, a
// file the switch itself had written.
func TestLargeLeaseFileLoads(t *testing.T) {
	const n = 220_000
	name := strings.Repeat("h", 253)
	exp := time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)
	leases := make([]Lease, n)
	for i := range leases {
		m := vswitch.MAC{0x52, 0x54, 0, byte(i >> 16), byte(i >> 8), byte(i)}
		leases[i] = Lease{MAC: m, IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).Next().Next(), Expiry: exp, State: LeaseBound, Hostname: name}
	}
	data := encodeLeaseFile(leases, time.Hour)
	if len(data) <= 64<<20 {
		t.Fatalf("%d bytes: not past 64 MiB", len(data))
	}
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Gateway: netip.MustParsePrefix("10.0.0.1/12"), LeaseFile: path, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if got := len(srv.Leases()); got != n {
		t.Errorf("%d leases loaded, want %d", got, n)
	}
}

func TestLeaseFileGarbageLine(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases")
	lines := strings.SplitAfter(string(encodeLeaseFile(sampleLeases(), time.Hour)), "\n")
	// Line 5 (the second lease) replaced by garbage.
	lines[4] = "02:00:00:00:00:02 not-an-address 2026-01-02T15:04:05Z bound -\n"
	corrupt := strings.Join(lines, "")
	if err := os.WriteFile(path, []byte(corrupt), 0o644); err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: clock.Now})
	defer srv.Close()
	if !strings.Contains(logged, path+":5: bad IPv4 address") {
		t.Fatalf("logged %q, want %s:5: bad IPv4 address ...", logged, path)
	}
	aside, _ := filepath.Glob(path + ".corrupt-*")
	if len(aside) != 1 || !strings.HasSuffix(aside[0], ".corrupt-20260102T030405Z") {
		t.Fatalf("aside copies: %v", aside)
	}
	if kept, _ := os.ReadFile(aside[0]); string(kept) != corrupt {
		t.Error("the copy aside is not the corrupt file")
	}
	// The good lines were loaded, the bad one was skipped.
	var macs []vswitch.MAC
	for _, l := range srv.Leases() {
		macs = append(macs, l.MAC)
	}
	if want := []vswitch.MAC{porttest.MAC(1), porttest.MAC(3)}; !reflect.DeepEqual(macs, want) {
		t.Errorf("loaded %v, want %v", macs, want)
	}
	// The file was rewritten clean.
	if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 2 {
		t.Errorf("rewritten file: %d leases, %v", len(ls), err)
	}
	// A second corrupt load on the same second does not overwrite the first copy.
	srv.Close()
	if err := os.WriteFile(path, []byte("tapswitch-leases 1\njunk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv2 := newFileServer(t, path, clock)
	srv2.Close()
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 2 {
		t.Errorf("aside copies after a second corrupt load: %v", aside)
	}
}

func TestLeaseFileErrors(t *testing.T) {
	for _, tc := range []struct{ name, file, want string }{
		{"empty", "", "f:1: empty file"},
		{"header", "hello\nend 0\n", "f:1: not a tapswitch lease file"},
		{"fields", "tapswitch-leases 1\n02:00:00:00:00:01 198.18.0.2\nend 1\n", "f:2: want 5 fields"},
		{"mac", "tapswitch-leases 1\nff:ff:ff:ff:ff:ff 198.18.0.2 2026-01-02T15:04:05Z bound -\nend 1\n", "f:2: bad MAC"},
		{"expiry", "tapswitch-leases 1\n02:00:00:00:00:01 198.18.0.2 yesterday bound -\nend 1\n", "f:2: bad expiry"},
		{"state", "tapswitch-leases 1\n02:00:00:00:00:01 198.18.0.2 2026-01-02T15:04:05Z offered -\nend 1\n", "f:2: bad state"},
		{"hostname", "tapswitch-leases 1\n02:00:00:00:00:01 198.18.0.2 2026-01-02T15:04:05Z bound a/b\nend 1\n", "f:2: bad host name"},
		{"dup", "tapswitch-leases 1\n02:00:00:00:00:01 198.18.0.2 2026-01-02T15:04:05Z bound -\n02:00:00:00:00:01 198.18.0.3 2026-01-02T15:04:05Z bound -\nend 2\n", "f:3: duplicate MAC"},
		{"dup ip", "tapswitch-leases 1\n02:00:00:00:00:01 198.18.0.2 2026-01-02T15:04:05Z bound -\n02:00:00:00:00:02 198.18.0.2 2026-01-02T15:04:05Z bound -\nend 2\n", "f:3: duplicate IP"},
		{"count", "tapswitch-leases 1\nend 1\n", "f:2: end line"},
		{"after end", "tapswitch-leases 1\nend 0\nx\n", "f:3: data after end line"},
		{"no end", "tapswitch-leases 1\n", "f:2: truncated: no end line"},
		{"no lease time", "tapswitch-leases 2\nend 0\n", "f:2: want \"lease-time SECONDS\""},
		{"bad lease time", "tapswitch-leases 2\nlease-time 1h\nend 0\n", "f:2: want \"lease-time SECONDS\""},
		{"zero lease time", "tapswitch-leases 2\nlease-time 0\nend 0\n", "f:2: want \"lease-time SECONDS\""},
	} {
		_, err := parseLeaseFile("f", []byte(tc.file))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: error %q, want prefix %q", tc.name, err, tc.want)
		}
	}
}

// TestLeaseFileVersion1: a file of version 1, without the lease time,
// still loads, and the next write makes it version 2.
func TestLeaseFileVersion1(t *testing.T) {
	v2 := encodeLeaseFile(sampleLeases(), time.Hour)
	v1 := bytes.Replace(v2, []byte("tapswitch-leases 2\nlease-time 3600\n"), []byte("tapswitch-leases 1\n"), 1)
	expectSampleLeases(t, "version 1", v1)
	if f, _ := parseLeaseFile("leases", v1); f.leaseTime != 0 {
		t.Errorf("version 1 file: lease time %v, want none", f.leaseTime)
	}
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, v1, 0o644); err != nil {
		t.Fatal(err)
	}
	srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: newClock().Now})
	defer srv.Close()
	if logged != "" {
		t.Errorf("version 1 file reported as corrupt: %q", logged)
	}
	if !acquire(t, srv, porttest.MAC(9)).IsValid() {
		t.Fatal("no binding")
	}
	if data, _ := os.ReadFile(path); !bytes.HasPrefix(data, []byte("tapswitch-leases 2\nlease-time 3600\n")) {
		t.Errorf("rewritten file starts %q", clip(data))
	}
}

func TestLeaseFileNewerVersion(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, []byte("tapswitch-leases 3\nwhatever\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{Gateway: testGateway, LeaseFile: path})
	if !errors.Is(err, ErrLeaseFileVersion) {
		t.Fatalf("New: %v, want ErrLeaseFileVersion", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "tapswitch-leases 3\nwhatever\n" {
		t.Error("a newer lease file was modified")
	}
}

// TestLeaseFileEmpty: an empty file, made beforehand to give it a mode
// (touch, chmod), is an empty lease file: no error, no copy kept aside, and
// its mode kept. It was reported as a corrupt file.
func TestLeaseFileEmpty(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: newClock().Now})
	defer srv.Close()
	if logged != "" {
		t.Errorf("load error %q", logged)
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Errorf("copies kept aside: %v", aside)
	}
	if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 0 {
		t.Errorf("the file now: %v, %v; want an empty lease file", ls, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600 kept", fi.Mode(), err)
	}
}

// TestLeaseFileNotALeaseFile: --dhcp-lease-file pointing at some other
// file (a typo, a path swapped with another flag's) must not have that
// file kept aside and replaced, nor its mode changed: New refuses to start.
// A file cut inside its header is still a truncated lease file, and an
// empty file still starts an empty table (TestLeaseFileTruncatedLoad).
func TestLeaseFileNotALeaseFile(t *testing.T) {
	for _, content := range []string{
		"root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/:/bin/sh\n",
		"tapswitch-leases\nend 0\n",
		"\x7fELF\x02\x01\x01", // no newline at all
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "leases")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		srv, err := New(Config{Gateway: testGateway, LeaseFile: path, Now: newClock().Now})
		if err == nil {
			srv.Close()
			t.Errorf("%q: New succeeded", content)
			continue
		}
		if !errors.Is(err, ErrNotLeaseFile) || !strings.Contains(err.Error(), path+":1: not a tapswitch lease file") {
			t.Errorf("%q: error %q, want %s:1: not a tapswitch lease file", content, err, path)
		}
		if data, _ := os.ReadFile(path); string(data) != content {
			t.Errorf("%q: the file was modified to %q", content, data)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%q: mode %v, %v; want 0600", content, fi.Mode(), err)
		}
		if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
			t.Errorf("%q: kept aside as %v", content, aside)
		}
		// Nor is a lock file left beside it (/etc/hosts.lock).
		if _, err := os.Lstat(path + ".lock"); !os.IsNotExist(err) {
			t.Errorf("%q: lock file made beside it: %v", content, err)
		}
	}
}

// TestLeaseFileModeKept: rewriting the lease file keeps the permission
// bits the administrator gave it; a new file is 0644.
func TestLeaseFileModeKept(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases")
	if err := os.WriteFile(path, encodeLeaseFile(sampleLeases(), time.Hour), 0o600); err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	srv := newFileServer(t, path, clock)
	writes := srv.Stats().LeaseWrites
	acquire(t, srv, porttest.MAC(9))
	if srv.Stats().LeaseWrites == writes {
		t.Fatal("a new binding did not rewrite the lease file")
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("mode after a rewrite %v, %v; want 0600", fi.Mode(), err)
	}
	srv.Close()

	// A corrupt file is rewritten at start, keeping its mode too.
	if err := os.WriteFile(path, []byte("tapswitch-leases 1\njunk\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	srv = newFileServer(t, path, clock)
	srv.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode after rewriting a corrupt file %v, %v; want 0640", fi.Mode(), err)
	}

	fresh := filepath.Join(dir, "new")
	srv = newFileServer(t, fresh, clock)
	srv.Close()
	if fi, err := os.Stat(fresh); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("mode of a new lease file %v, %v; want 0644", fi.Mode(), err)
	}
}

func TestLeaseFileConflictsDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	if err := os.WriteFile(path, encodeLeaseFile(sampleLeases(), time.Hour), 0o644); err != nil {
		t.Fatal(err)
	}
	// MAC 1 now has a static lease elsewhere; .7 is reserved.
	srv, logged := newFileServerLogged(t, Config{Gateway: testGateway, LeaseFile: path, Now: newClock().Now,
		Static:   []StaticLease{{MAC: porttest.MAC(1), IP: ip4("198.18.0.100")}},
		Reserved: []netip.Addr{ip4("198.18.0.7")}})
	if logged != "" {
		t.Errorf("conflicts reported as corruption: %v", logged)
	}
	defer srv.Close()
	ls, err := ReadLeaseFile(path)
	if err != nil || len(ls) != 1 || ls[0].MAC != porttest.MAC(2) {
		t.Errorf("rewritten file: %+v, %v", ls, err)
	}
}

// TestLeaseDurableBeforeAck checks that the binding is in the lease file
// by the time the ACK is queued, survives a restart, and that renewals do
// not write.
func TestLeaseDurableBeforeAck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	clock := newClock()
	srv := newFileServer(t, path, clock)
	a := porttest.MAC(1)
	writes := srv.Stats().LeaseWrites
	ip := acquire(t, srv, a)
	ls, err := ReadLeaseFile(path)
	if err != nil || len(ls) != 1 || ls[0].MAC != a || ls[0].IP != ip || ls[0].State != LeaseBound || ls[0].Hostname != "host-01" {
		t.Fatalf("lease file after the ACK: %+v, %v", ls, err)
	}
	if got := srv.Stats().LeaseWrites - writes; got != 1 {
		t.Errorf("%d writes for one new binding, want 1", got)
	}

	// A renewal extends the expiry lazily: no write...
	clock.Add(30 * time.Minute)
	writes = srv.Stats().LeaseWrites
	renew := newMsg(t, dhcpv4.MessageTypeRequest, a, dhcpv4.WithClientIP(ip.AsSlice()))
	acks := replies(t, exchange(t, srv, clientFrame(srv.MAC(), a, ip, testGW, renew)))
	if len(acks) != 1 || acks[0].MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renewal: %v", acks)
	}
	if got := srv.Stats().LeaseWrites; got != writes {
		t.Errorf("renewal wrote the lease file")
	}
	// ...until a frame arrives a minute later...
	clock.Add(lazyFlush)
	exchange(t, srv, porttest.Frame(porttest.Broadcast, porttest.MAC(9), 0x88b5, []byte("x")))
	if got := srv.Stats().LeaseWrites; got != writes+1 {
		t.Errorf("lazy change not written after %v", lazyFlush)
	}
	ls, _ = ReadLeaseFile(path)
	if want := clock.Now().Add(-lazyFlush).Add(time.Hour); len(ls) != 1 || !ls[0].Expiry.Equal(want) {
		t.Errorf("lease file expiry %v, want %v", ls, want)
	}
	// ...and Close writes what is left.
	clock.Add(10 * time.Minute)
	acks = replies(t, exchange(t, srv, clientFrame(srv.MAC(), a, ip, testGW, renew)))
	if len(acks) != 1 {
		t.Fatal("second renewal not acknowledged")
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	ls, _ = ReadLeaseFile(path)
	if want := clock.Now().Add(time.Hour); len(ls) != 1 || !ls[0].Expiry.Equal(want) {
		t.Errorf("lease file expiry after Close %v, want %v", ls, want)
	}

	// Restart: the same MAC gets the same address, another MAC another.
	srv = newFileServer(t, path, clock)
	defer srv.Close()
	if got := acquire(t, srv, porttest.MAC(2)); got == ip {
		t.Error("a restarted server gave a bound address to another MAC")
	}
	if got := acquire(t, srv, a); got != ip {
		t.Errorf("after restart: got %v, want %v", got, ip)
	}
}

// TestRenewalSurvivesCrash: a renewal is written lazily, so a crash can
// leave the lease file an hour short of what the client was acknowledged.
// After such a crash, with the pool full, a new client must not get the
// renewed address while the renewal may still hold: restored bindings are
// not reused for one lease time after start.
//
// The lease time at the restart may be shorter: the wait is still the
// lease time the renewal was given, which the file records.
func TestRenewalSurvivesCrash(t *testing.T) {
	for _, restart := range []time.Duration{time.Hour, 10 * time.Minute} {
		t.Run(restart.String(), func(t *testing.T) { testRenewalSurvivesCrash(t, restart) })
	}
}

func testRenewalSurvivesCrash(t *testing.T, restartLease time.Duration) {
	path := filepath.Join(t.TempDir(), "leases")
	clock := newClock()
	cfg := Config{Gateway: testGateway, Range: Range{ip4("198.18.0.10"), ip4("198.18.0.10")}, LeaseFile: path, Now: clock.Now}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	a := porttest.MAC(1)
	ip := acquire(t, srv, a)
	clock.Add(30 * time.Minute)
	renew := newMsg(t, dhcpv4.MessageTypeRequest, a, dhcpv4.WithClientIP(ip.AsSlice()))
	if acks := replies(t, exchange(t, srv, clientFrame(srv.MAC(), a, ip, testGW, renew))); len(acks) != 1 || acks[0].MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renewal: %v", acks)
	}
	// A crash: srv is never closed, and the kernel drops its lock. The
	// file says the lease ends at +1h, the client holds it until +1h30.
	srv.lock.Close()
	clock.Add(35 * time.Minute)
	cfg.LeaseTime = restartLease
	srv2, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer srv2.Close()
	b := porttest.MAC(2)
	for _, wait := range []time.Duration{0, 20 * time.Minute} {
		clock.Add(wait)
		if offers := replies(t, exchange(t, srv2, bcastFrame(b, newMsg(t, dhcpv4.MessageTypeDiscover, b)))); len(offers) != 0 {
			t.Fatalf("%v after the restart a new client was offered %v, which its client renewed until %v", wait, offers[0].YourIPAddr, clock.Now().Add(25*time.Minute-wait))
		}
	}
	// The client comes back and keeps its address.
	if acks := replies(t, exchange(t, srv2, clientFrame(srv2.MAC(), a, ip, testGW, renew))); len(acks) != 1 || acks[0].MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("renewal after the restart: %v", acks)
	}
	// A binding restored and expired for good is reused once a lease
	// time has passed since the start.
	clock.Add(2 * time.Hour)
	if got := acquire(t, srv2, b); got != ip {
		t.Errorf("pool full of an expired binding: got %v, want %v", got, ip)
	}
}

// TestLeaseTimeRecorded: the lease file records the longest lease a client
// may hold: after a restart with a shorter lease time, the longer one
// until it has run out since the start, so that a second crash in that
// time still waits for it.
func TestLeaseTimeRecorded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	clock := newClock()
	recorded := func() time.Duration {
		t.Helper()
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseLeaseFile(path, data)
		if err != nil {
			t.Fatal(err)
		}
		return f.leaseTime
	}
	cfg := Config{Gateway: testGateway, LeaseFile: path, Now: clock.Now}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	acquire(t, srv, porttest.MAC(1))
	srv.Close()
	if got := recorded(); got != time.Hour {
		t.Fatalf("lease time recorded: %v, want 1h", got)
	}
	cfg.LeaseTime = 10 * time.Minute
	if srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for i, tc := range []struct{ after, want time.Duration }{
		{time.Minute, 59 * time.Minute},
		{45 * time.Minute, 14 * time.Minute},
		{30*time.Second + 500*time.Millisecond, 13*time.Minute + 30*time.Second}, // rounded up
		{10 * time.Minute, 10 * time.Minute},
	} {
		clock.Add(tc.after)
		acquire(t, srv, porttest.MAC(2+i)) // a new binding: a write
		if got := recorded(); got != tc.want {
			t.Errorf("%v after the restart: lease time recorded %v, want %v", clock.Now().Sub(newClock().Now()), got, tc.want)
		}
	}
}

// TestLeaseWriteFailureWithholdsAck: an ACK whose binding cannot be made
// durable is not sent.
func TestLeaseWriteFailureWithholdsAck(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "leases")
	clock := newClock()
	srv := newFileServer(t, path, clock)
	defer srv.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	a := porttest.MAC(1)
	if ip := acquire(t, srv, a); ip.IsValid() {
		t.Fatalf("ACK for %v sent although the lease file cannot be written", ip)
	}
	st := srv.Stats()
	if st.Withheld != 1 || st.LeaseWriteErrors == 0 || st.Acks != 0 {
		t.Errorf("stats %+v: want 1 withheld ACK and a write error", st)
	}
	// A renewal of the not-yet-durable binding is withheld too.
	renew := newMsg(t, dhcpv4.MessageTypeRequest, a, dhcpv4.WithClientIP(net.IP{198, 18, 0, 2}))
	if acks := replies(t, exchange(t, srv, clientFrame(srv.MAC(), a, ip4("198.18.0.2"), testGW, renew))); len(acks) != 0 {
		t.Errorf("renewal of a binding not on disk acknowledged: %v", acks)
	}
	// Within writeRetry of the failure, frames (this renewal, and any
	// flooded broadcast) do not try the write again: it was tried for
	// every frame the responder got.
	errs := st.LeaseWriteErrors
	for range 5 {
		exchange(t, srv, bcastFrame(porttest.MAC(9), newMsg(t, dhcpv4.MessageTypeDiscover, porttest.MAC(9))))
	}
	if st := srv.Stats(); st.LeaseWriteErrors != errs {
		t.Errorf("lease file write errors went from %d to %d within %v of the failure, want no new attempt", errs, st.LeaseWriteErrors, writeRetry)
	}
	// Once the directory is back, the client's retry is acknowledged.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	clock.Add(writeRetry)
	if ip := acquire(t, srv, a); ip != ip4("198.18.0.2") {
		t.Errorf("retry: got %v", ip)
	}
	if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 1 {
		t.Errorf("lease file: %v, %v", ls, err)
	}
}

// TestLeaseWriteRetryAfterForcedWrite: a forced write (SIGHUP, Flush)
// that succeeds right after a failure lifts the wait before the next
// write: a new binding just after it is acknowledged at once.
func TestLeaseWriteRetryAfterForcedWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	clock := newClock()
	srv := newFileServer(t, filepath.Join(dir, "leases"), clock)
	defer srv.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if ip := acquire(t, srv, porttest.MAC(1)); ip.IsValid() {
		t.Fatalf("ACK for %v although the lease file cannot be written", ip)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := srv.Flush(); err != nil {
		t.Fatal(err)
	}
	if ip := acquire(t, srv, porttest.MAC(2)); !ip.IsValid() {
		t.Errorf("a new binding within %v of the failure, after a forced write succeeded, was not acknowledged", writeRetry)
	}
}

// TestLeaseWriteFailureRenewalsAcked: while the lease file cannot be
// written, renewals of bindings it holds are acknowledged (a full disk
// must not cost every VM its address as leases run out); a new binding's
// ACK is withheld, and so are its renewals until a write holds it.
func TestLeaseWriteFailureRenewalsAcked(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "leases")
	clock := newClock()
	srv := newFileServer(t, path, clock)
	defer srv.Close()
	a, b := porttest.MAC(1), porttest.MAC(2)
	ipA := acquire(t, srv, a)
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if ip := acquire(t, srv, b); ip.IsValid() {
		t.Fatalf("ACK for the new binding %v sent although the lease file cannot be written", ip)
	}
	ipB := ip4("198.18.0.3")
	renew := func(m vswitch.MAC, ip netip.Addr) int {
		t.Helper()
		clock.Add(10 * time.Second)
		d := newMsg(t, dhcpv4.MessageTypeRequest, m, dhcpv4.WithClientIP(ip.AsSlice()))
		return len(replies(t, exchange(t, srv, clientFrame(srv.MAC(), m, ip, testGW, d))))
	}
	for range 2 {
		if n := renew(a, ipA); n != 1 {
			t.Errorf("renewal of %v, in the file: %d ACKs, want 1", a, n)
		}
		if n := renew(b, ipB); n != 0 {
			t.Errorf("renewal of %v, not in the file yet: %d ACKs, want 0", b, n)
		}
	}
	if st := srv.Stats(); st.Withheld != 3 || st.Acks != 3 {
		t.Errorf("withheld %d, acks %d; want 3 and 3", st.Withheld, st.Acks)
	}
	// The directory is back: b's next renewal writes the file and is
	// acknowledged.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if n := renew(b, ipB); n != 1 {
		t.Errorf("renewal of %v once the file can be written: %d ACKs", b, n)
	}
	if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 2 {
		t.Errorf("lease file: %+v, %v", ls, err)
	}
}

func TestLeaseFileCreated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leases")
	srv := newFileServer(t, path, newClock())
	defer srv.Close()
	if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 0 {
		t.Errorf("new lease file: %v, %v", ls, err)
	}
	if _, err := New(Config{Gateway: testGateway, LeaseFile: filepath.Join(path, "sub", "leases")}); err == nil {
		t.Error("New with an unwritable lease file path succeeded")
	}
}

// TestLeaseFileLocked: two servers given one lease file (two instances on
// one subnet share the default path) would each rewrite the file from
// their own table, dropping the other's acknowledged bindings. The second
// New fails, naming the file; Close releases the lock, even when its
// final write fails.
func TestLeaseFileLocked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases")
	clock := newClock()
	srv := newFileServer(t, path, clock)
	a := porttest.MAC(1)
	ip := acquire(t, srv, a)

	srv2, err := New(Config{Gateway: testGateway, LeaseFile: path, Now: clock.Now})
	if err == nil {
		srv2.Close()
		t.Fatal("a second server on the same lease file started")
	}
	if !errors.Is(err, ErrLeaseFileInUse) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "another tapswitch") {
		t.Errorf("error %q: want ErrLeaseFileInUse naming %s and another tapswitch", err, path)
	}
	if ls, err := ReadLeaseFile(path); err != nil || len(ls) != 1 || ls[0].IP != ip {
		t.Errorf("lease file after the refused start: %+v, %v", ls, err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	// Once closed, the file is free: the next server loads the binding.
	srv = newFileServer(t, path, clock)
	if got := acquire(t, srv, a); got != ip {
		t.Errorf("after a restart %v got %v, want %v", a, got, ip)
	}
	// A lazily kept renewal (the first one is written: the restart's
	// renewal above has waited more than lazyFlush), and a lease file that
	// cannot be replaced (a directory took its name): Close fails, and
	// still lets go.
	renew := newMsg(t, dhcpv4.MessageTypeRequest, a, dhcpv4.WithClientIP(ip.AsSlice()))
	for _, d := range []time.Duration{30 * time.Minute, 10 * time.Second} {
		clock.Add(d)
		if acks := replies(t, exchange(t, srv, clientFrame(srv.MAC(), a, ip, testGW, renew))); len(acks) != 1 {
			t.Fatalf("renewal: %v", acks)
		}
	}
	if err := os.Rename(path, path+".saved"); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err == nil {
		t.Error("Close succeeded although the lease file could not be written")
	}
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".saved", path); err != nil {
		t.Fatal(err)
	}
	srv, err = New(Config{Gateway: testGateway, LeaseFile: path, Now: clock.Now})
	if err != nil {
		t.Fatalf("New after a Close whose write failed: %v", err)
	}
	srv.Close()
}

// TestLeaseLockNotFollowed: a symlink, a FIFO or a directory at the lock
// file's path is refused: whoever may write the lease file's directory
// could have put a link there, for root to create (or open) a file where
// they choose.
func TestLeaseLockNotFollowed(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	path := filepath.Join(dir, "leases")
	if err := os.Symlink(target, path+".lock"); err != nil {
		t.Fatal(err)
	}
	if _, err := LockLeaseFile(path); err == nil || !strings.Contains(err.Error(), path+".lock is a symlink: not followed") {
		t.Errorf("lock file a symlink: %v", err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("the symlink's target was created: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo+".lock", 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LockLeaseFile(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("lock file a FIFO: %v", err)
	}
}

// TestLeaseLockTakenBefore: a lock taken with LockLeaseFile is New's lock:
// New takes it over (a second lock fails while the server runs), and closes
// it when New fails, for a lock of another path too.
func TestLeaseLockTakenBefore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leases")
	lock, err := LockLeaseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockLeaseFile(path); !errors.Is(err, ErrLeaseFileInUse) {
		t.Fatalf("second LockLeaseFile: %v, want ErrLeaseFileInUse", err)
	}
	srv, err := New(Config{Gateway: testGateway, LeaseFile: path, LeaseLock: lock, Now: newClock().Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := LockLeaseFile(path); !errors.Is(err, ErrLeaseFileInUse) {
		t.Fatalf("LockLeaseFile while the server runs: %v, want ErrLeaseFileInUse", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	lock.Close() // a second Close does nothing

	for _, cfg := range []Config{
		{Gateway: netip.MustParsePrefix("198.18.0.0/24"), LeaseFile: path}, // the network address
		{Gateway: testGateway, LeaseFile: filepath.Join(dir, "other")},     // another file's lock
	} {
		if lock, err = LockLeaseFile(path); err != nil {
			t.Fatalf("LockLeaseFile after Close: %v", err)
		}
		cfg.LeaseLock = lock
		if srv, err := New(cfg); err == nil {
			srv.Close()
			t.Fatalf("New(%+v) succeeded", cfg)
		}
	}
	if lock, err = LockLeaseFile(path); err != nil {
		t.Fatalf("LockLeaseFile after New failed: %v", err)
	}
	lock.Close()

	if err := os.WriteFile(filepath.Join(dir, "notes"), []byte("my notes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LockLeaseFile(filepath.Join(dir, "notes")); !errors.Is(err, ErrNotLeaseFile) {
		t.Errorf("LockLeaseFile of another file: %v, want ErrNotLeaseFile", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "notes.lock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a lock file was made beside another file: %v", err)
	}
}
