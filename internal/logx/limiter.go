package logx

import (
	"sync"
	"time"
)

// Limiter lets one event through per interval and counts the events it
// holds back, so that repeated trouble (accept failing with EMFILE, a read
// error repeating) costs one log line per interval rather than one per
// occurrence. The zero value allows one event every 10 seconds. It is safe
// for concurrent use.
type Limiter struct {
	// Every is the interval (default 10 s).
	Every time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// Allow reports whether an event may be logged now, and how many events
// were held back since the last one allowed.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	every := l.Every
	if every <= 0 {
		every = 10 * time.Second
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < every {
		l.suppressed++
		return false, 0
	}
	l.last = now
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
