package httpserve_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshup/meshup/cmd/internal/httpserve"
)

func TestHealth(t *testing.T) {
	var notReady error
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) })
	h := httpserve.Health(func() error { return notReady }, next)
	check := func(method, path string, wantCode int, wantBody string) {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		body, _ := io.ReadAll(w.Result().Body)
		if w.Code != wantCode || wantBody != "" && string(body) != wantBody {
			t.Errorf("%s %s: got %d %q, want %d %q", method, path, w.Code, body, wantCode, wantBody)
		}
	}
	check("GET", "/livez", 200, "ok\n")
	check("GET", "/readyz", 200, "ok\n")
	check("HEAD", "/readyz", 200, "")
	check("GET", "/v1/info", http.StatusTeapot, "") // passed on
	check("POST", "/readyz", http.StatusTeapot, "")
	notReady = errors.New("relay: draining")
	check("GET", "/readyz", 503, "not ready: relay: draining\n")
	check("GET", "/livez", 200, "ok\n")
}
