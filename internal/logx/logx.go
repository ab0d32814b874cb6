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
// rather than appearing in the standard library's own.
func StdLogger(l logrus.FieldLogger) *log.Logger {
	return log.New(warnWriter{OrDiscard(l)}, "", 0)
}

type warnWriter struct{ l logrus.FieldLogger }

func (w warnWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
