package logflag

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"strings"
	"testing"
)

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		args      []string
		wantLevel slog.Level
		wantJSON  bool
		wantErr   bool
	}{
		{nil, slog.LevelInfo, false, false},
		{[]string{"--log-level", "debug"}, slog.LevelDebug, false, false},
		{[]string{"--log", "warn"}, slog.LevelWarn, false, false}, // deprecated alias
		{[]string{"--log-format", "json", "--log-level", "error"}, slog.LevelError, true, false},
		{[]string{"--log-format", "xml"}, 0, false, true},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var f Flags
			f.Register(fs, slog.LevelInfo)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			log, err := f.Logger(&buf)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("got no error, want one")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.Level != tc.wantLevel {
				t.Errorf("got level %v, want %v", f.Level, tc.wantLevel)
			}
			log.Log(t.Context(), tc.wantLevel, "hello", "k", 1)
			log.Log(t.Context(), tc.wantLevel-1, "hidden")
			out := buf.String()
			if strings.Contains(out, "hidden") || !strings.Contains(out, "hello") {
				t.Errorf("got %q, want only the line at the level", out)
			}
			var m map[string]any
			if isJSON := json.Unmarshal(buf.Bytes(), &m) == nil; isJSON != tc.wantJSON {
				t.Errorf("got JSON %v, want %v: %q", isJSON, tc.wantJSON, out)
			}
		})
	}
}
