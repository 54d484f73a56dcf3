package browser

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestBrowserClip runs client/web/test/clip.mjs in headless Chromium: an
// image and a long text pasted on the web app's sender page become clips
// that two relays store whole; after the tab is closed both are read
// intact (decrypted with the link's key) with an Expires header.
//
//	go test -count=1 -run TestBrowserClip ./cmd/internal/browser
func TestBrowserClip(t *testing.T) {
	if testing.Short() {
		t.Skip("browser tests take minutes; run without -short (scripts/test does)")
	}
	missing := t.Skip
	if os.Getenv("MESHUP_REQUIRE_BROWSER") == "1" {
		missing = t.Fatal
	}
	testDir, err := filepath.Abs("../../../client/web/test")
	if err != nil {
		t.Fatal(err)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	for _, need := range []struct{ path, what string }{
		{chromium, "chromium is not installed (apt-get install chromium)"},
		{filepath.Join(testDir, "node_modules", "playwright-core"), "playwright-core is not installed (npm ci in client/web/test)"},
	} {
		if _, err := os.Stat(need.path); err != nil {
			missing(need.what)
		}
	}
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute})
	for range 2 {
		relaytest.Start(t, rv.URL, relay.Config{})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "clip.mjs", rv.URL)
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("clip.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("clip.mjs: %v", err)
	}
	if !strings.Contains(string(out), "clip: ok") {
		t.Fatal("clip.mjs did not report success")
	}
}
