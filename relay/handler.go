package relay

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
)

// handlePush upgrades to the push WebSocket and serves it until it ends.
func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) {
	if !slices.Contains(websocket.Subprotocols(r), proto.Subprotocol) {
		s.stats.refused("subprotocol")
		writeError(w, proto.Errorf(proto.StatusProtocol, "push needs WebSocket subprotocol %s", proto.Subprotocol))
		return
	}
	if !s.originAllowed(r) {
		s.stats.refused("origin")
		writeError(w, proto.Errorf(proto.StatusOriginRefused, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	// Reserve, then check: concurrent upgrades never exceed the cap.
	if s.stats.pushConns.Add(1) > int64(s.cfg.MaxConns) {
		s.stats.pushConns.Add(-1)
		s.stats.refused("max_conns")
		writeError(w, proto.Errorf(proto.StatusOverLimit, "relay has %d push connections", s.cfg.MaxConns))
		return
	}
	defer s.stats.pushConns.Add(-1)
	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.HandshakeTimeout,
		// An idle connection holds no buffer of its own: reads use the
		// HTTP server's 4 KiB reader (data goes straight from it into
		// pooled part buffers), writes a pooled buffer.
		WriteBufferPool: s.wbufs,
		Subprotocols:    []string{proto.Subprotocol},
		CheckOrigin:     func(*http.Request) bool { return true }, // checked above
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the client
	}
	pc := newPushConn(s, ws, s.log.With("peer", r.RemoteAddr))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		pc.close(proto.StatusUnavailable, errShutdown.Msg)
		return
	}
	s.conns[pc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	pc.serve(s.ctx)
	s.mu.Lock()
	delete(s.conns, pc)
	s.mu.Unlock()
}

// originAllowed checks a WebSocket upgrade's Origin against the allow-list.
// Non-browser clients send no Origin.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	for _, allowed := range s.allowedOrigins() {
		if allowed == "*" || strings.EqualFold(strings.TrimSuffix(allowed, "/"), origin) {
			return true
		}
	}
	return false
}

func (s *Server) allowedOrigins() []string {
	out := s.cfg.AllowedOrigins
	if l := s.link.Load(); l != nil && l.origin != "" {
		out = append(slices.Clip(out), l.origin)
	}
	return out
}

// errorBody is the JSON body of an error response.
type errorBody struct {
	Status proto.Status `json:"status"`
	Error  string       `json:"error"`
}

func writeError(w http.ResponseWriter, e *proto.Error) {
	// An error may follow the item's headers (a full budget, an offline
	// publisher): they describe the item, not the error, and a stale
	// Content-Length would make the JSON body look cut short.
	for _, k := range []string{"Content-Length", "Content-Range", "Content-Disposition", "ETag", "Last-Modified"} {
		w.Header().Del(k)
	}
	code := e.Status.HTTPStatus()
	if code == http.StatusServiceUnavailable || code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "5")
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Status: e.Status, Error: e.Error()})
}
