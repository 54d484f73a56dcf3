// Package logflag is the one logging set-up of the meshup binaries (relay,
// rendezvous, meshup): --log-level and --log-format text|json, with --log
// kept as a deprecated alias of --log-level.
package logflag

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
)

// Formats of --log-format.
const (
	FormatText = "text"
	FormatJSON = "json"
)

// Flags holds the logging flags of one binary.
type Flags struct {
	Level  slog.Level
	Format string
}

// Register adds --log-level, its deprecated alias --log, and --log-format
// to fs, with level def as the default.
func (f *Flags) Register(fs *flag.FlagSet, def slog.Level) {
	fs.TextVar(&f.Level, "log-level", def, "log `level`: debug, info, warn, error")
	// The older name of two binaries, still accepted.
	fs.Var(fs.Lookup("log-level").Value, "log", "deprecated alias of --log-level")
	fs.StringVar(&f.Format, "log-format", FormatText, "log `format`: text (logfmt) or json (one object per line)")
}

// Logger returns the logger the flags describe, writing to w.
func (f *Flags) Logger(w io.Writer) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: f.Level}
	switch f.Format {
	case FormatText, "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case FormatJSON:
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f.Format)
}
