package cli

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// logFlags are -log-level and -log-format, which every command has.
type logFlags struct {
	level  levelValue
	format formatValue
}

func registerLogFlags(fs *flag.FlagSet, level slog.Level) *logFlags {
	l := &logFlags{level: levelValue(level), format: "json"}
	fs.Var(&l.level, "log-level", "least severe `level` logged: debug, info, warn or error")
	fs.Var(&l.format, "log-format", "log line `format`: json (one object per line) or text (key=value)")
	return l
}

func (l *logFlags) logger(w io.Writer) *slog.Logger {
	return NewLogger(w, slog.Level(l.level), string(l.format))
}

// NewLogger returns the logger every command uses: JSON (format "json") or key=value
// text lines on w, at level and above, with durations as text ("1m30s") — a number
// of nanoseconds in a JSON log is unreadable.
func NewLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: ReplaceAttr}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// ReplaceAttr renders time.Duration values as text ("5s"), in any group.
func ReplaceAttr(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

type levelValue slog.Level

func (l *levelValue) String() string { return strings.ToLower(slog.Level(*l).String()) }

func (l *levelValue) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("want debug, info, warn or error")
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(s)); err != nil {
		return err
	}
	*l = levelValue(lvl)
	return nil
}

type formatValue string

func (f *formatValue) String() string { return string(*f) }

func (f *formatValue) Set(s string) error {
	if s != "json" && s != "text" {
		return fmt.Errorf("want json or text")
	}
	*f = formatValue(s)
	return nil
}
