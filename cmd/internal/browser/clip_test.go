package browser

import (
	"context"
	"os"
	"os/exec"
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
	testDir, node := needBrowser(t)
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
