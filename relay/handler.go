package relay

import (
	"net/http"
	"slices"
	"strconv"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/proto"
)

// handlePush upgrades to the push WebSocket and serves it on a goroutine
// of its own until it ends. The HTTP handler returns at once: its goroutine
// has a stack grown by net/http, and the server's connection state and
// buffers are freed, so that an idle connection costs what it needs and
// no more (issue 14: at most 16 KiB). The connection keeps its place in
// the limits per source (takeLease) and in MaxConns until it ends.
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
	release := takeLease(r)
	up := websocket.Upgrader{
		HandshakeTimeout: s.cfg.HandshakeTimeout,
		// A small read buffer of the connection's own (part data goes
		// past it, straight into pooled part buffers) lets the HTTP
		// server's 4 KiB one go; writes use a shared pool.
		ReadBufferSize:  wsReadBuffer,
		WriteBufferPool: s.wbufs,
		Subprotocols:    []string{proto.Subprotocol},
		CheckOrigin:     func(*http.Request) bool { return true }, // checked above
	}
	// Tell the publisher how many parts one connection may carry, so it
	// opens another connection rather than have parts refused (issue 14).
	hdr := http.Header{"Meshup-Max-Streams": {strconv.Itoa(s.cfg.MaxStreamsPerConn)}}
	ws, err := up.Upgrade(w, r, hdr)
	if err != nil {
		release()
		s.stats.pushConns.Add(-1)
		return // Upgrade has answered the client
	}
	pc := newPushConn(s, ws, s.log.With("peer", r.RemoteAddr))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		release()
		s.stats.pushConns.Add(-1)
		pc.close(proto.StatusUnavailable, errShutdown.Msg)
		return
	}
	s.conns[pc] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer s.stats.pushConns.Add(-1)
		defer release()
		pc.serve(s.ctx)
		s.mu.Lock()
		delete(s.conns, pc)
		s.mu.Unlock()
	}()
}

// wsReadBuffer is the read buffer of a WebSocket, in bytes: frame headers
// and control messages; bulk data is read past it.
const wsReadBuffer = 1 << 10

// originAllowed checks a WebSocket upgrade's Origin against the allow-list.
// Non-browser clients send no Origin.
func (s *Server) originAllowed(r *http.Request) bool {
	return httpapi.OriginAllowed(r, s.allowedOrigins())
}

func (s *Server) allowedOrigins() []string {
	out := s.cfg.AllowedOrigins
	if l := s.link.Load(); l != nil {
		if l.origin != "" {
			out = append(slices.Clip(out), l.origin)
		}
		out = append(slices.Clip(out), l.origins...)
	}
	return out
}

// writeError writes e as the JSON error body of both servers
// (internal/httpapi).
func writeError(w http.ResponseWriter, e *proto.Error) {
	// An error may follow the item's headers (a full budget, an offline
	// publisher): they describe the item, not the error, and a stale
	// Content-Length would make the JSON body look cut short.
	for _, k := range []string{"Content-Length", "Content-Range", "Content-Disposition", "ETag", "Last-Modified"} {
		w.Header().Del(k)
	}
	httpapi.WriteError(w, 0, e.Status, e.Error(), retryLater)
}

// retryLater is the Retry-After, in seconds, of a refusal that asks to
// come back and names no better time.
const retryLater = "5"
