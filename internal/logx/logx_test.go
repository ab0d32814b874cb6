package logx

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Every: time.Hour}
	if ok, _ := l.Allow(); !ok {
		t.Fatal("first event held back")
	}
	for range 3 {
		if ok, _ := l.Allow(); ok {
			t.Fatal("event within the interval allowed")
		}
	}
	l.last = time.Now().Add(-2 * time.Hour)
	if ok, n := l.Allow(); !ok || n != 3 {
		t.Fatalf("Allow after interval = %v, %d; want true, 3", ok, n)
	}
}

// TestStdLoggerAcceptErrors: net/http's accept-error line, logged at each
// retry, comes through once per interval; other lines all do.
func TestStdLoggerAcceptErrors(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	std := StdLogger(l)
	for range 5 {
		std.Printf("http: Accept error: accept unix /run/ctl.sock: accept4: too many open files; retrying in 1s")
		std.Printf("http: TLS handshake error from x")
	}
	out := buf.String()
	if n := strings.Count(out, "Accept error"); n != 1 {
		t.Errorf("%d accept-error lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "TLS handshake error"); n != 5 {
		t.Errorf("%d other lines, want 5:\n%s", n, out)
	}
}
