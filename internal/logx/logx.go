// Package logx holds the one logging convention every tapswitch package
// shares: a logger is injected (logrus.FieldLogger), and nil means silent.
package logx

import (
	"io"

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
