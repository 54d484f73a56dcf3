package relay_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
)

// TestStatusPage fetches a relay's human status page and checks what it
// says and how it is served: HTML with a CSP that allows only its own
// style (by hash), no script, and nosniff.
func TestStatusPage(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.Version = "v1.2.3-test<b>"
	cfg.MaxRate = 100 << 20
	cfg.MonthlyCap = 10 << 30
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(3<<20, 9)
	_, it := e.publish(t, data, client.Config{})
	if resp, body := do(t, http.MethodGet, e.itemURL(it.ID, r)); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET item: status %d, %d bytes", resp.StatusCode, len(body))
	}

	resp, body := do(t, http.MethodGet, r.URL+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: got %d, want 200", resp.StatusCode)
	}
	h := resp.Header
	if got := h.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type: got %q", got)
	}
	if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
	}
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe") || strings.Contains(csp, "script-src") {
		t.Errorf("CSP %q allows more than the page's style", csp)
	}
	// The inline style is the one the CSP's hash allows.
	m := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindSubmatch(body)
	if m == nil {
		t.Fatalf("no style in the page:\n%s", body)
	}
	sum := sha256.Sum256(m[1])
	if want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"; !strings.Contains(csp, want) {
		t.Errorf("CSP %q does not allow the page's style (%s)", csp, want)
	}
	if bytes.Contains(body, []byte("<script")) {
		t.Error("the page has a script")
	}

	page := string(body)
	for _, want := range []string{
		r.ID(),
		"v1.2.3-test&lt;b&gt;", // escaped
		">connected</span>",
		"NAT: public; reachable directly",
		"<td>stor, socketio, put, tus</td>", // --uploads
		"of 256.0 MiB",                      // the default budget
		"100MiB/s",                          // --max-rate, as written
		"unlimited",                         // per consumer
		"3.0 MiB of 10GiB",
		"1 requests, 3.0 MiB to consumers",
		`href="/v1/status"`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("status page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<b>") {
		t.Error("the version was not escaped")
	}

	// Only / is the page; other paths are not found.
	if resp, _ := do(t, http.MethodGet, r.URL+"/nothing-here"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: got %d, want 404", resp.StatusCode)
	}
}
