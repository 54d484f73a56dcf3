package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// envMain makes the test binary run main instead of the tests.
const envMain = "RENDEZVOUS_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(envMain) == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

// TestHelpAndVersion checks the exit status and output of -h and
// --version in a real process.
func TestHelpAndVersion(t *testing.T) {
	for _, tc := range []struct {
		arg      string
		wantOut  string // on stdout
		wantErr  string // on stderr
		wantCode int
	}{
		{"-h", "", "-max-item-size", 0},
		{"--help", "", "-log-format", 0},
		{"--version", "rendezvous ", "", 0},
		{"--no-such-flag", "", "flag provided but not defined", 1},
	} {
		t.Run(tc.arg, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(os.Args[0], tc.arg)
			cmd.Env = append(os.Environ(), envMain+"=1")
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.wantCode {
				t.Errorf("got exit status %d, want %d; stderr %q", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantOut) || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("got stdout %q, stderr %.200q; want %q and %q in them", stdout.String(), stderr.String(), tc.wantOut, tc.wantErr)
			}
		})
	}
}

// TestConfigPrecedence checks flags over MESHUP_* environment variables
// over the config file, with sizes in human units.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "rendezvous.conf")
	conf := "max-item-size 1TB\nmax-message 64KiB\nmax-text-message 8KiB\nidentity /from/file\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESHUP_MAX_MESSAGE", "128KiB")
	t.Setenv("MESHUP_MAX_TEXT_MESSAGE", "16KiB")
	t.Setenv("MESHUP_LOG_FORMAT", "json")
	o, err := parseFlags([]string{"--config", file, "--max-text-message", "4KiB"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"max-item-size (file)", o.cfg.MaxItemSize, 1e12},
		{"max-message (env over file)", int64(o.cfg.MaxMessage), 128 << 10},
		{"max-text-message (flag over env)", int64(o.cfg.MaxTextMessage), 4 << 10},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	if o.identity != "/from/file" || o.log.Format != "json" {
		t.Errorf("got identity %q, log format %q; want /from/file, json", o.identity, o.log.Format)
	}
	if _, err := parseFlags([]string{"--max-item-size", "lots"}, io.Discard); err == nil {
		t.Error("--max-item-size lots: got no error, want one")
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}

// TestShutdownClosesSessions checks /livez and /readyz, and that a
// rendezvous told to stop sends its control sessions a close frame with a
// code and a reason, so that clients reconnect at once.
func TestShutdownClosesSessions(t *testing.T) {
	info, stop := startRun(t)
	base := strings.TrimSuffix(info.PublicURL, "/")
	for _, path := range []string{"/livez", "/readyz"} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
			t.Errorf("%s: got %d %q, want 200 ok", path, resp.StatusCode, body)
		}
	}
	c, _, err := rendezvoustest.DialControlHeader("ws"+strings.TrimPrefix(base, "http")+"/v1/control", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop()
	for {
		_, err := c.Recv(10 * time.Second)
		if err == nil {
			continue // messages sent before the close
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || !strings.Contains(ce.Text, "reconnect") {
			t.Errorf("got %v, want a close frame %d with a reason saying reconnect", err, websocket.CloseGoingAway)
		}
		return
	}
}
