// Package browser runs the web app's browser tests (client/web/test/run.mjs)
// against a whole mesh started in this process: headless Debian Chromium,
// driven by playwright-core from Node. scripts/test installs chromium,
// ffmpeg and the npm packages and sets MESHUP_REQUIRE_BROWSER=1; without
// that variable a missing tool skips the test and says what is missing,
// with it the test fails.
//
// Both runs (direct, and tunnel: tests 1, 9 and 11 through the rendezvous
// tunnel) also tap the relays (harness_test.go): no plaintext of the 200
// MiB file or of the Go client's file and not their names may reach a
// relay. run.mjs asks the Go side to download and decrypt an item the
// browser encrypted (the Go client's download path), to publish an
// encrypted item from a Go client for the browser to decrypt, and to make
// a relay flip a byte.
//
//	go test -count=1 -v ./cmd/internal/browser
//	MESHUP_BROWSER_ONLY=1,3 MESHUP_SCREENSHOTS=client/web/screenshots go test ...
package browser

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/devmesh"
)

// chromium is where Debian's chromium package puts the browser.
const chromium = "/usr/bin/chromium"

func TestBrowser(t *testing.T) {
	testDir, node := needBrowser(t, "ffmpeg")

	t.Run("direct", func(t *testing.T) {
		only := os.Getenv("MESHUP_BROWSER_ONLY")
		h := newHarness(t, t.TempDir())
		cfg := devmesh.Config{WrapRelay: h.wrap}
		cfg.Relay.Tap = h.tap
		runBrowserTests(t, node, testDir, cfg, only, h)
		h.check(t, only == "" || slices.Contains(strings.Split(only, ","), "1"))
	})
	// Without STUN the relays cannot tell they are reachable, so they
	// are treated as behind NAT: the page pushes and the Service Worker
	// downloads through the rendezvous tunnel (/v1/relays/ID/v1/...).
	// The interop tests (9, 11) run here too: the Go client downloads and
	// pushes through the tunnel as well.
	t.Run("tunnel", func(t *testing.T) {
		h := newHarness(t, t.TempDir())
		cfg := devmesh.Config{WrapRelay: h.wrap}
		cfg.Relay.Tap = h.tap
		cfg.Rendezvous.STUNAddr = "off"
		m := runBrowserTests(t, node, testDir, cfg, "1,9,11", h)
		h.check(t, true)
		if st := m.Rendezvous.Stats(); st.Tunnelled == 0 {
			t.Errorf("tunnelled requests: got 0, want the pushes and downloads through the tunnel")
		} else {
			t.Logf("tunnelled requests: %d", st.Tunnelled)
		}
	})
}

// runBrowserTests starts a mesh with cfg and runs run.mjs against it; only
// lists the tests to run ("" for all); h, if not nil, gives the big file
// and answers run.mjs's requests. It returns the mesh, closed.
func runBrowserTests(t *testing.T, node, testDir string, cfg devmesh.Config, only string, h *harness) *devmesh.Mesh {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := devmesh.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	args := []string{"run.mjs", m.URL}
	if only != "" {
		args = append(args, "--only", only)
	}
	if dir := os.Getenv("MESHUP_SCREENSHOTS"); dir != "" {
		abs, err := filepath.Abs(filepath.Join("../../..", dir))
		if err != nil {
			t.Fatal(err)
		}
		args = append(args, "--screenshots", abs)
	}
	if h != nil {
		h.base = m.URL
		args = append(args, "--harness", "--bigfile", h.bigFile)
	}
	cmd := exec.CommandContext(ctx, node, args...)
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	cmd.Stderr = os.Stderr
	var served chan struct{}
	if h == nil {
		cmd.Stdout = os.Stdout
	} else {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		served = make(chan struct{})
		go func() {
			defer close(served)
			h.serve(ctx, stdout, stdin)
		}()
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if served != nil {
		<-served // stdout is read to its end before Wait
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("browser tests: %v", err)
	}
	return m
}
