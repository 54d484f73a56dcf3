package browser

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
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

// TestBrowserStor runs the STOR/DATA upload protocol (issue 11, protocol
// 1) from JavaScript in headless Chromium (client/web/test/stor.mjs):
// base64 and binary uploads each streamed to a reader while they run
// (SHA-256 equal), AUTH refused and accepted by the rendezvous's auth
// webhook (a real local HTTP server here), a malformed STOR, a block over
// the relay's limit and a dropped connection.
//
//	go test -count=1 -run TestBrowserStor ./cmd/internal/browser
func TestBrowserStor(t *testing.T) {
	testDir, node := needBrowser(t)

	// The application's webhook: uploads need the login alice; reads and
	// the rest are allowed.
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Operation   string            `json:"operation"`
			Credentials map[string]string `json:"credentials"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Operation == "upload" && (req.Credentials["login"] != "alice" || req.Credentials["password"] != "s3cret") {
			http.Error(w, "unknown user", http.StatusForbidden)
		}
	}))
	t.Cleanup(hook.Close)
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AuthWebhook: hook.URL})
	rel := relaytest.Start(t, rv.URL, relay.Config{StorMaxBlock: 256 << 10})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "stor.mjs", rv.URL, rel.URL)
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("stor.mjs:\n%s", out)
	if err != nil {
		t.Fatalf("stor.mjs: %v", err)
	}
	if !strings.Contains(string(out), "stor: ok") {
		t.Fatal("stor.mjs did not report success")
	}
}
