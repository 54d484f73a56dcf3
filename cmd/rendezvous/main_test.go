package main

import (
	"errors"
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/cmd/internal/cliconf/cliconftest"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestMain(m *testing.M) { cliconftest.Main(m, main) }

// TestHelpAndVersion checks the exit status and output of -h and
// --version in a real process.
func TestHelpAndVersion(t *testing.T) {
	cliconftest.Check(t, []cliconftest.Case{
		{Arg: "-h", WantErr: "-max-item-size"},
		{Arg: "--help", WantErr: "-log-format"},
		{Arg: "--version", WantOut: "rendezvous "},
		{Arg: "--no-such-flag", WantErr: "flag provided but not defined", WantCode: 1},
	})
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
		resp, err := rendezvoustest.HTTP.Get(base + path)
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
