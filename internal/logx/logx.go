// Package logx holds the one logging convention every tapswitch package
// shares: a logger is injected (logrus.FieldLogger), and nil means silent.
package logx

import (
	"io"
	"log"
	"strings"

	"github.com/sirupsen/logrus"
)

var discard = func() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.PanicLevel)
	return l
}()

// OrDiscard returns l, or a logger that discards everything when l is nil.
func OrDiscard(l logrus.FieldLogger) logrus.FieldLogger {
	if l == nil {
		return discard
	}
	return l
}

// StdLogger returns a standard library logger (net/http's ErrorLog) whose
// lines go to l as warnings, so that they take l's format (text or JSON)
// rather than appearing in the standard library's own. net/http's
// accept-error line, which it logs at each retry (every second while the
// process is out of descriptors), is let through once every 10 seconds,
// with the number held back.
func StdLogger(l logrus.FieldLogger) *log.Logger {
	return log.New(&warnWriter{l: OrDiscard(l)}, "", 0)
}

type warnWriter struct {
	l      logrus.FieldLogger
	accept Limiter
}

func (w *warnWriter) Write(p []byte) (int, error) {
	msg := strings.TrimRight(string(p), "\n")
	if strings.HasPrefix(msg, "http: Accept error:") {
		if ok, n := w.accept.Allow(); ok {
			w.l.WithField("suppressed", n).Warn(msg)
		}
		return len(p), nil
	}
	w.l.Warn(msg)
	return len(p), nil
}
