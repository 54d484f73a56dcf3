package cliconf

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "x.conf")
	if err := os.WriteFile(file, []byte("a from-file\nb from-file\nc from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESHUP_B", "from-env")
	t.Setenv("MESHUP_C", "from-env")
	t.Setenv("MESHUP_VERSION", "1.2.3") // a deployment's own variable: ignored
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a, b, c := fs.String("a", "", ""), fs.String("b", "", ""), fs.String("c", "", "")
	if err := Parse(fs, []string{"--config", file, "-c", "from-flag"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if *a != "from-file" || *b != "from-env" || *c != "from-flag" {
		t.Errorf("got a=%s b=%s c=%s, want from-file, from-env, from-flag", *a, *b, *c)
	}

	var out bytes.Buffer
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	if err := Parse(fs, []string{"--version"}, &out); !errors.Is(err, ErrVersion) || !strings.HasPrefix(out.String(), "x ") {
		t.Errorf("--version: got %v, %q; want ErrVersion and the version line", err, out.String())
	}
}

func TestSplitList(t *testing.T) {
	if got := strings.Join(SplitList(" a, ,b,"), "|"); got != "a|b" {
		t.Errorf("got %q, want a|b", got)
	}
}
