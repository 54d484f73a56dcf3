package rendezvous_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestCORS checks what pages of other origins may read: the library (also
// at its versioned path), /v1/info, an item's /meta and the item URL
// (here its errors; TestBrowserEmbed follows a redirect in a browser) carry
// Access-Control-Allow-Origin: *, preflights are answered, and what is
// not public (the status, the app's pages) carries no CORS header.
func TestCORS(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	item := "/v1/items/" + proto.NewItemID().String()
	tests := []struct {
		method, path string
		wantCode     int
		wantCORS     bool
		contains     string
	}{
		{"GET", "/web/meshup.js", 200, true, "export class Client"},
		{"GET", "/web/v1/meshup.js", 200, true, "export class Client"},
		{"GET", "/web/v1/e2e.js", 200, true, "export"}, // meshup.js imports ./e2e.js
		{"GET", "/web/v1/sw.js", 404, true, ""},        // only the library is versioned
		{"GET", "/web/v1/app/send.js", 404, true, ""},
		{"GET", "/web/app/send.js", 200, true, ""},
		{"GET", "/v1/info", 200, true, `"token_key"`},
		{"GET", item, 404, true, "no such item"},
		{"GET", item + "/meta", 404, true, "no such item"},
		{"OPTIONS", "/web/v1/meshup.js", 204, true, ""},
		{"OPTIONS", "/v1/info", 204, true, ""},
		{"OPTIONS", item, 204, true, ""},
		{"OPTIONS", item + "/meta", 204, true, ""},
		{"GET", "/v1/status", 200, false, ""},
		{"GET", "/", 200, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, rv.URL+tt.path, nil)
			req.Header.Set("Origin", "https://another.example")
			if tt.method == "OPTIONS" {
				req.Header.Set("Access-Control-Request-Method", "GET")
				req.Header.Set("Access-Control-Request-Headers", "range, authorization")
			}
			resp, err := rendezvoustest.HTTP.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("got %d, want %d", resp.StatusCode, tt.wantCode)
			}
			acao := resp.Header.Get("Access-Control-Allow-Origin")
			if tt.wantCORS != (acao == "*") {
				t.Errorf("Access-Control-Allow-Origin: got %q, want CORS %v", acao, tt.wantCORS)
			}
			if tt.wantCORS && tt.method == "GET" && !strings.Contains(resp.Header.Get("Access-Control-Expose-Headers"), "Retry-After") {
				t.Errorf("Access-Control-Expose-Headers: got %q", resp.Header.Get("Access-Control-Expose-Headers"))
			}
			if tt.method == "OPTIONS" {
				if got := resp.Header.Get("Access-Control-Allow-Headers"); !strings.Contains(got, "Range") || !strings.Contains(got, "Authorization") {
					t.Errorf("Access-Control-Allow-Headers: got %q", got)
				}
				if got := resp.Header.Get("Access-Control-Allow-Methods"); got != "GET, HEAD" {
					t.Errorf("Access-Control-Allow-Methods: got %q", got)
				}
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
		})
	}
}
