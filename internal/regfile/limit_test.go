package regfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadLimit: a file of exactly limit bytes is read; one byte more is
// refused, also when its size says less than it holds (procfs files say
// 0; a file growing while it is read).
func TestReadLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := Read(path, 5); err != nil || string(b) != "12345" {
		t.Errorf("Read of a file at the limit = %q, %v; want it read", b, err)
	}
	if _, err := Read(path, 4); err == nil {
		t.Error("a file over the limit was read")
	}
	// /proc/self/maps is a regular file of size 0 that holds several lines.
	b, err := Read("/proc/self/maps", 10)
	if err == nil || !strings.Contains(err.Error(), "more than the 10 bytes allowed") {
		t.Errorf("Read(/proc/self/maps, 10) = %d bytes, %v; want refused as over the limit", len(b), err)
	}
}
