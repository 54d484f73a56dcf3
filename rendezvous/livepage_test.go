package rendezvous_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestLivePage checks the page of a sealed live channel (GET /l/{id}) and
// the live1 library files.
func TestLivePage(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	rendezvoustest.Register(t, rv, "http://relay-a.test:8081")
	id, _ := proto.NewLiveSecret()

	resp, body := do(t, http.MethodGet, rv.URL+"/l/"+id.String())
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /l/ID: status %d, want 200", resp.StatusCode)
	}
	if got, want := resp.Header.Get("Content-Type"), "text/html; charset=utf-8"; got != want {
		t.Errorf("Content-Type: got %q, want %q", got, want)
	}
	for _, s := range []string{`src="/web/app/watch.js"`, `data-testid="live-video"`, `data-testid="save-button"`} {
		if !strings.Contains(string(body), s) {
			t.Errorf("page lacks %q", s)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	// The page reads the channel from the relay the rendezvous redirects
	// to, and plays it from a MediaSource (blob:).
	for _, s := range []string{"script-src 'self';", "connect-src 'self' http://relay-a.test:8081", "media-src 'self' blob:"} {
		if !strings.Contains(csp, s) {
			t.Errorf("Content-Security-Policy: got %q, want it to contain %q", csp, s)
		}
	}

	tests := []struct {
		path     string
		status   int
		contains string
	}{
		{"/l/not-an-id", http.StatusNotFound, ""},
		{"/l/" + id.String() + "/more", http.StatusNotFound, ""},
		{"/web/live.js", http.StatusOK, "export async function goLive"},
		{"/web/v1/live.js", http.StatusOK, "export async function readLive"},
		{"/web/v1/webm.js", http.StatusOK, "export class EBMLWalker"},
		{"/web/app/watch.js", http.StatusOK, "from '/web/live.js'"},
		{"/web/app/golive.js", http.StatusOK, "from '/web/live.js'"},
	}
	for _, tt := range tests {
		resp, body := do(t, http.MethodGet, rv.URL+tt.path)
		if resp.StatusCode != tt.status {
			t.Errorf("GET %s: status %d, want %d", tt.path, resp.StatusCode, tt.status)
		}
		if !strings.Contains(string(body), tt.contains) {
			t.Errorf("GET %s: body lacks %q", tt.path, tt.contains)
		}
	}
}
