package httpserve

import (
	"net/http"
)

// Health paths, as Kubernetes names them.
const (
	LivezPath  = "/livez"
	ReadyzPath = "/readyz"
)

// Health serves GET /livez and GET /readyz in front of next:
//
//	/livez   200 "ok" while the process serves HTTP at all
//	/readyz  200 "ok" when ready returns nil, else 503 with its error
//	         (not registered yet, draining) as the body
//
// Both are plain text, never cached, and outside the limits per source of
// the servers behind (a probe from a load balancer must not be rate
// limited away).
func Health(ready func() error, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead || r.URL.Path != LivezPath && r.URL.Path != ReadyzPath {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if r.URL.Path == ReadyzPath {
			if err := ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				w.Write([]byte("not ready: " + err.Error() + "\n"))
				return
			}
		}
		w.Write([]byte("ok\n"))
	})
}
