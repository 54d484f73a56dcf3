package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshup/meshup/proto"
)

func TestOriginAllowed(t *testing.T) {
	for _, tc := range []struct {
		origin  string
		allowed []string
		want    bool
	}{
		{"", nil, true},
		{"http://relay.example:8081", nil, true}, // same origin as Host
		{"https://app.example", nil, false},
		{"https://app.example", []string{"https://APP.example/"}, true},
		{"https://app.example", []string{"http://app.example"}, false},
		{"https://evil.example", []string{"https://app.example"}, false},
		{"null", []string{"https://app.example"}, false},
		{"null", []string{"*"}, true},
		{"https://any.example", []string{"*"}, true},
	} {
		r := httptest.NewRequest("GET", "http://relay.example:8081/v1/push", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := OriginAllowed(r, tc.allowed); got != tc.want {
			t.Errorf("origin %q, allowed %q: got %v, want %v", tc.origin, tc.allowed, got, tc.want)
		}
	}
}

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, 0, proto.StatusUnavailable, "no relay is live", "2")
	var b ErrorBody
	if err := json.Unmarshal(w.Body.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" || b.Status != proto.StatusUnavailable || b.Error != "no relay is live" {
		t.Errorf("got %d, Retry-After %q, %+v; want 503, 2, the status and message", w.Code, w.Header().Get("Retry-After"), b)
	}
	w = httptest.NewRecorder()
	w.Header().Set("Retry-After", "30")
	WriteError(w, http.StatusTooManyRequests, proto.StatusOverLimit, "slow down", "2")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "30" {
		t.Errorf("got %d, Retry-After %q; want 429 and the caller's 30", w.Code, w.Header().Get("Retry-After"))
	}
}
