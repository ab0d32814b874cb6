package logx

import (
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
)

// TestLimiterCountsPerInterval: the count returned is of the events held
// back since the last one allowed, not since the first.
func TestLimiterCountsPerInterval(t *testing.T) {
	l := Limiter{Every: time.Hour}
	l.Allow()
	for round, held := range []int{3, 2} {
		for range held {
			l.Allow()
		}
		l.last = time.Now().Add(-2 * time.Hour)
		if ok, n := l.Allow(); !ok || n != held {
			t.Fatalf("round %d: Allow after the interval = %v, %d; want true, %d", round, ok, n, held)
		}
	}
}

// TestStdLoggerLevel: net/http's error lines are warnings, so that they
// are logged at --log-level warn.
func TestStdLoggerLevel(t *testing.T) {
	l, hook := logtest.NewNullLogger()
	StdLogger(l).Printf("http: superfluous response.WriteHeader call")
	if e := hook.LastEntry(); e == nil || e.Level != logrus.WarnLevel {
		t.Fatalf("entry %+v, want a warning", e)
	}
}
