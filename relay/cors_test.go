package relay_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
)

// TestItemCORS checks that a page of another origin may read a relay's
// item responses, with the headers a resumable download needs, and that
// the preflight of a request with Range and a bearer token is answered.
func TestItemCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	_, it := e.publish(t, meshtest.RandomBytes(1000, 3), client.Config{})
	url := e.relayURL(t, it.ID, r)

	resp, _ := do(t, http.MethodGet, url, "Range", "bytes=0-9", "Origin", "https://another.example")
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("GET: got %d, want 206", resp.StatusCode)
	}
	if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
		t.Errorf("Access-Control-Allow-Origin: got %q, want *", got)
	}
	expose := resp.Header.Get("Access-Control-Expose-Headers")
	for _, h := range []string{"Content-Range", "ETag", "Meshup-Relay", "Retry-After"} {
		if !strings.Contains(expose, h) {
			t.Errorf("Access-Control-Expose-Headers %q lacks %s", expose, h)
		}
	}

	req, _ := http.NewRequest(http.MethodOptions, r.URL+"/v1/items/"+it.ID.String(), nil)
	req.Header.Set("Origin", "https://another.example")
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "authorization, range")
	pre, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pre.Body.Close()
	if pre.StatusCode != http.StatusNoContent || pre.Header.Get("Access-Control-Allow-Origin") != "*" ||
		!strings.Contains(pre.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
		t.Errorf("preflight: got %d %v", pre.StatusCode, pre.Header)
	}
}
