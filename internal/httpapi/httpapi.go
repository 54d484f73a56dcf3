// Package httpapi holds what the HTTP APIs of the relay and the rendezvous
// share: the JSON error body and its writer, the Origin check of browser
// requests, and the transport of their HTTP clients.
package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/meshup/meshup/proto"
)

// ErrorBody is the JSON body of every error response of the relay and the
// rendezvous: {"status": 108, "error": "no relay is live"}. Clients
// compare Status, never the text.
type ErrorBody struct {
	Status proto.Status `json:"status"`
	Error  string       `json:"error"`
}

// WriteJSON writes v as a JSON response with code.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	w.Write(append(body, '\n'))
}

// WriteError writes an error response: HTTP status code (0: st's own),
// never cached. Every refusal that asks to come back (503, 429) says when
// (issue 14): Retry-After is retryAfter seconds unless the caller set a
// better figure first.
func WriteError(w http.ResponseWriter, code int, st proto.Status, msg, retryAfter string) {
	if code == 0 {
		code = st.HTTPStatus()
	}
	if (code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests) && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.Header().Set("Cache-Control", "no-store")
	WriteJSON(w, code, ErrorBody{Status: st, Error: msg})
}

// OriginAllowed tells whether a browser request may proceed: a request
// without an Origin header is not a browser's; a same-origin request (the
// Origin's host is the request's Host) is; otherwise the Origin, as
// scheme://host, must be in allowed, where "*" allows any.
func OriginAllowed(r *http.Request, allowed []string) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, a := range allowed {
		if a == "*" {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	norm := u.Scheme + "://" + u.Host
	for _, a := range allowed {
		if strings.EqualFold(strings.TrimRight(a, "/"), norm) {
			return true
		}
	}
	return false
}

// NewTransport returns an HTTP client transport of the caller's own: a
// clone of http.DefaultTransport, with its proxy settings and timeouts,
// and a pool of idle connections nobody else closes. Whoever calls
// CloseIdleConnections on http.DefaultTransport (httptest.Server.Close
// does) can break a request that has just been handed a connection from
// that pool ("http: CloseIdleConnections called").
func NewTransport() *http.Transport {
	return http.DefaultTransport.(*http.Transport).Clone()
}
