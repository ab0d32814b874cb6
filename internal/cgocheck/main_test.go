package main

import (
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// One check of everything, shared by the tests: most of its time goes to
// the standard library, which every package needs. make cross checks
// darwin/amd64 too.
var (
	checkOnce  sync.Once
	checkDiags []Diag
	checkErr   error
)

// check returns the diagnostics for files in dir (relative to this
// package).
func check(t *testing.T, dir string) []Diag {
	t.Helper()
	checkOnce.Do(func() {
		checkDiags, checkErr = Check(Config{GOOS: "darwin", GOARCH: "arm64", Patterns: []string{
			"./testdata/bad", "./testdata/good", "../../vmnet", "../../vz", "../../examples/vz",
		}})
	})
	if checkErr != nil {
		t.Fatal(checkErr)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ds []Diag
	for _, d := range checkDiags {
		if strings.HasPrefix(d.Pos, abs+string(filepath.Separator)) {
			ds = append(ds, d)
		}
	}
	return ds
}

// TestCheckFindsMistakes is the proof that the checker fails on a wrong
// call: every mistake in testdata/bad is reported, and nothing else.
func TestCheckFindsMistakes(t *testing.T) {
	diags := check(t, "testdata/bad")
	want := []string{
		`bad.go:19:49: cannot use "not a file" (untyped string constant) as *os.File value in argument to vz.NewFileHandleNetworkDeviceAttachment`,
		`bad.go:20:18: too many arguments in call to unix.Kqueue`,
		`bad.go:20:6: assignment mismatch: 1 variable but unix.Kqueue returns 2 values`,
		`bad.go:21:2: C.shim_two called with 1 argument(s); its prototype has 2`,
		`bad.go:22:2: C.not_declared is not declared in the cgo preamble or the package's own headers`,
	}
	if len(diags) != len(want) {
		t.Errorf("%d diagnostics, want %d:\n%v", len(diags), len(want), diags)
	}
	for _, w := range want {
		found := false
		for _, d := range diags {
			found = found || strings.Contains(d.String(), w)
		}
		if !found {
			t.Errorf("missing diagnostic %q in\n%v", w, diags)
		}
	}
}

func TestCheckGood(t *testing.T) {
	if diags := check(t, "testdata/good"); len(diags) != 0 {
		t.Error(diags)
	}
}

// TestCheckRepo checks tapswitch's own darwin cgo packages, as `make
// cross` does.
func TestCheckRepo(t *testing.T) {
	for _, dir := range []string{"../../vmnet", "../../vz", "../../examples/vz"} {
		if diags := check(t, dir); len(diags) != 0 {
			t.Errorf("%s: %v", dir, diags)
		}
	}
	// Nothing outside the directories above, e.g. in a dependency.
	var n int
	for _, dir := range []string{"testdata/bad", "testdata/good", "../../vmnet", "../../vz", "../../examples/vz"} {
		n += len(check(t, dir))
	}
	if n != len(checkDiags) {
		t.Errorf("diagnostics outside the checked packages: %v", checkDiags)
	}
}

func TestCheckErrors(t *testing.T) {
	if _, err := Check(Config{GOOS: "darwin", GOARCH: "nosuch", Patterns: []string{"./testdata/good"}}); err == nil {
		t.Error("unknown GOARCH accepted")
	}
	diags, err := Check(Config{GOOS: "darwin", GOARCH: "arm64", Patterns: []string{"./testdata/nosuch"}})
	if err == nil && len(diags) == 0 {
		t.Error("a missing package passed")
	}
}

func TestCountParams(t *testing.T) {
	for list, want := range map[string]int{"": 0, "void": 0, " void ": 0, "int a": 1, "int a, const char *b": 2,
		"void *desc, int wakefd, struct tsvmnet_info *info, struct tsvmnet **out": 4} {
		if got := countParams(list); got != want {
			t.Errorf("countParams(%q) = %d, want %d", list, got, want)
		}
	}
}

func TestPrototypes(t *testing.T) {
	text := `uint32_t tsvmnet_start(void *desc, int wakefd, struct tsvmnet_info *info, struct tsvmnet **out);
void *tsvmnet_desc_new(void);
int tsvmnet_alloc(struct tsvmnet *h, int batch, size_t pktsize,
	struct tsvmnet_bufs *bufs);
struct tsvmnet;
#define X(a) (a)`
	got := map[string]int{}
	for _, m := range protoRE.FindAllStringSubmatch(text, -1) {
		got[m[1]] = countParams(m[2])
	}
	want := map[string]int{"tsvmnet_start": 4, "tsvmnet_desc_new": 0, "tsvmnet_alloc": 4}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("prototype %s: %d parameters (found: %v), want %d", k, got[k], got, v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("prototypes %v, want %v", got, want)
	}
}
