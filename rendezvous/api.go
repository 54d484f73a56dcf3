package rendezvous

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/proto"
)

// APIVersion is the version reported by GET /v1/info: the protocol
// version, which relays check.
const APIVersion = proto.Version

// retryOffline is the Retry-After, in seconds, of a 503 for an item whose
// publisher is offline.
const retryOffline = "5"

// retryLater is the Retry-After, in seconds, of any other 503 or 429 whose
// caller set none (no relay live, server closing, over a limit).
const retryLater = "2"

// routes returns the server's HTTP routes.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", withCORS(s.handleInfo))
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET /v1/items/{id}", withCORS(s.handleItem)) // GET patterns match HEAD too
	mux.HandleFunc("GET /v1/control", s.handleControl)
	mux.HandleFunc("GET /v1/items/{id}/meta", withCORS(s.handleItemMeta))
	mux.HandleFunc("GET /i/{id}", s.handlePage)
	mux.HandleFunc(tunnelPrefix+"{relay}/{rest...}", s.handleTunnel)
	mux.HandleFunc("GET /{$}", s.handleIndex)
	mux.HandleFunc("GET /web/{path...}", withCORS(s.handleWeb))
	mux.HandleFunc("GET /web/v1/{file}", withCORS(s.handleWebV1)) // the library's versioned path
	mux.HandleFunc("GET /sw.js", s.handleServiceWorker)
	// CORS preflights of what other origins may read (proto/cors.go).
	for _, p := range []string{"/v1/info", "/v1/items/{id}", "/v1/items/{id}/meta", "/web/{path...}"} {
		mux.HandleFunc("OPTIONS "+p, proto.ServePreflight)
	}
	mux.HandleFunc("GET /v1/upload", s.handleUploadEndpoint) // held.go
	mux.HandleFunc("POST /v1/live/{id}", s.handleLivePost)   // live.go
	mux.HandleFunc("GET /v1/live/{id}", s.handleLiveGet)
	mux.HandleFunc("GET /v1/evsocket/{channel}", s.handleEvSocket)
	mux.HandleFunc("GET /l/{id}", s.handleLivePage) // page.go
	return mux
}

// Info is the body of GET /v1/info, defined once in proto (proto.Info),
// where relays read it.
type Info = proto.Info

// Info returns what GET /v1/info reports.
func (s *Server) Info() Info {
	addrs := s.cfg.Node.Addrs()
	if addrs == nil {
		addrs = []string{}
	}
	return Info{
		Version:   APIVersion,
		PeerID:    s.cfg.Node.ID(),
		Addrs:     addrs,
		TokenKey:  base64.RawURLEncoding.EncodeToString(s.pub),
		PublicURL: s.cfg.PublicURL,
		STUN:      append([]string{}, s.stunAddrs...),
	}
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Info())
}

// statusBody is the body of GET /v1/status.
type statusBody struct {
	Relays      []relayStatus `json:"relays"`
	Sessions    int           `json:"sessions"`
	Items       int           `json:"items"`
	ItemsOnline int           `json:"items_online"`
	// DataPath counts the bytes that crossed the rendezvous (its tunnel
	// and its circuit relay service): paths of last resort.
	DataPath DataPath `json:"data_path"`
	// Cluster is present when the rendezvous is a cluster member.
	Cluster *clusterStatus `json:"cluster,omitempty"`
	// Transfers shows what the mesh carries per item (issue 10).
	Transfers []transferStatus `json:"transfers"`
}

// handleStatus answers GET /v1/status. The public view shows no
// volunteer addresses (redactStatus); the full view needs the StatusToken
// as a bearer token. A wrong token is refused, so that an operator notices.
func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	full := s.statusAuthorized(r)
	if !full && r.Header.Get("Authorization") != "" {
		s.stats.reject(RejectStatusToken)
		writeError(w, 0, proto.StatusUnauthorized, "status token not valid")
		return
	}
	body := statusBody{Relays: s.relayStatuses(s.cfg.Now()), DataPath: s.DataPath()}
	s.mu.Lock()
	body.Sessions = len(s.sessions)
	body.Items = len(s.items)
	body.Transfers = s.transferStatusesLocked()
	for _, it := range s.items {
		if it.online() {
			body.ItemsOnline++
		}
	}
	s.mu.Unlock()
	s.addClusterStatus(&body)
	if !full {
		redactStatus(body.Relays)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, body)
}

// handleItem answers GET and HEAD /v1/items/{id}: message items directly,
// other items with a redirect to a relay carrying a read token.
func (s *Server) handleItem(w http.ResponseWriter, r *http.Request) {
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil {
		writeError(w, 0, proto.StatusNotFound, "no such item")
		return
	}
	if e := s.checkRead(r, id); e != nil { // the auth webhook (webhook.go)
		writeError(w, 0, e.Status, e.Msg)
		return
	}
	now := s.cfg.Now()
	via := r.URL.Query().Get("via")
	avoid := parseAvoid(r.URL.Query().Get("avoid"))
	// A consumer on https is sent to https relays or a tunnel on https,
	// never to an http relay (reachLocked).
	secure := s.secureRequest(r)
	s.mu.Lock()
	it := s.items[id]
	if it == nil {
		s.mu.Unlock()
		if e := s.missingItem(id); e.Status == proto.StatusOffline {
			w.Header().Set("Retry-After", retryOffline)
			writeError(w, 0, e.Status, e.Msg)
			return
		}
		writeError(w, 0, proto.StatusNotFound, "no such item")
		return
	}
	v := it.view()
	operatorOnly := !it.anyRelay()
	if v.kind == proto.KindMessage {
		s.mu.Unlock()
		serveMessage(w, r, v)
		return
	}
	if it.held && it.ended != "" {
		ended := it.ended
		s.mu.Unlock()
		writeError(w, 0, proto.StatusGone, "item "+id.String()+" ended: "+ended)
		return
	}
	if !v.online {
		s.mu.Unlock()
		w.Header().Set("Retry-After", retryOffline)
		writeError(w, 0, proto.StatusOffline, "the publisher of this item is offline")
		return
	}
	rel := s.clipHolderLocked(it, now, avoid, w) // clip.go: a holder has every byte
	if rel != nil {
	} else if it.held {
		// Only its holder has its bytes (held.go).
		if rel = s.pickHolderLocked(it, now); rel == nil {
			s.mu.Unlock()
			w.Header().Set("Retry-After", retryOffline)
			writeError(w, 0, proto.StatusOffline, "the relay holding this item is offline")
			return
		}
	} else if via != "" {
		if rel = s.relays[via]; rel != nil && !s.relayAlive(rel, now) {
			rel = nil
		}
		if rel == nil {
			s.mu.Unlock()
			writeError(w, 0, proto.StatusUnavailable, fmt.Sprintf("relay %.80q is not live", via))
			return
		}
		if operatorOnly && rel.class != ClassOperator {
			s.mu.Unlock()
			s.stats.reject(RejectPlaintext)
			writeError(w, 0, proto.StatusUnavailable, fmt.Sprintf("relay %.80q is a volunteer relay; a plaintext item goes through operator relays only", via))
			return
		}
	} else if rel = s.pickRelayLocked(now, operatorOnly, avoid, secure, ""); rel == nil {
		capped := s.anyCappedLocked(now)
		s.mu.Unlock()
		if operatorOnly && s.pickRelayLocked(now, false, avoid, secure, "") != nil {
			s.stats.reject(RejectPlaintext)
			writeError(w, 0, proto.StatusUnavailable, "no operator relay for a plaintext item")
			return
		}
		if capped {
			writeError(w, 0, proto.StatusUnavailable, "every live relay has reached its monthly volume cap")
			return
		}
		writeError(w, 0, proto.StatusUnavailable, "no relay is live")
		return
	}
	relayID, relayURL := rel.id, s.relayBase(rel, secure)
	s.mu.Unlock()

	tok := proto.SignToken(s.key, proto.Claims{
		Dir:      proto.DirRead,
		Relay:    relayID,
		Item:     id,
		Off:      0,
		Len:      heldTokenLen(v.size),
		Exp:      now.Add(s.cfg.ReadTokenTTL).Unix(),
		Iat:      now.Unix(),
		Size:     v.size,
		Name:     v.name,
		MIME:     v.mime,
		Modified: v.validatorTime(),
	})
	s.stats.redirects.Add(1)
	// Only the token travels: other query parameters are the consumer's
	// business with the rendezvous, not with the relay.
	w.Header().Set("Location", relayURL+"/v1/items/"+id.String()+"?t="+url.QueryEscape(tok))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// parseAvoid parses the avoid query parameter of GET /v1/items/{id}: a
// comma-separated list of relay ids the consumer saw fail as exits (issue
// 10: a download whose exit died resumes through another). At most
// proto.MaxAvoid ids are kept.
func parseAvoid(q string) map[string]bool {
	if q == "" {
		return nil
	}
	avoid := map[string]bool{}
	for id := range strings.SplitSeq(q, ",") {
		if len(avoid) == proto.MaxAvoid {
			break
		}
		if id != "" && len(id) <= maxPeerIDLen {
			avoid[id] = true
		}
	}
	return avoid
}

// ItemMeta is the body of GET /v1/items/{id}/meta: what an item's page
// shows, and whether its publisher is online. It carries no item bytes.
type ItemMeta struct {
	ID     proto.ItemID `json:"id"`
	Kind   string       `json:"kind"`
	Name   string       `json:"name"`
	MIME   string       `json:"mime"`
	Size   int64        `json:"size"` // bytes
	Online bool         `json:"online"`
	// Encrypted tells whether the item's bytes are end-to-end encrypted;
	// then Size is the ciphertext size, Name is empty, Enc names the
	// format (proto.E2EVersion) and Meta holds the sealed name, type and
	// modification time (see proto/e2e.go).
	Encrypted bool   `json:"encrypted"`
	Enc       string `json:"enc,omitempty"`
	Meta      string `json:"meta,omitempty"`
	// Clips (clip.go): the live relays holding it whole, the copies
	// being pushed, and when it expires (RFC 3339).
	Holders int    `json:"holders,omitempty"`
	Storing int    `json:"storing,omitempty"`
	Expires string `json:"expires,omitempty"`
	// SealedHolders (an encrypted clip whose sealed metadata the
	// rendezvous has) is how many live holders confirmed they keep that
	// metadata too, so that the clip survives a restart of the
	// rendezvous (clip_restart.go). Absent otherwise.
	SealedHolders *int `json:"sealed_holders,omitempty"`
}

// handleItemMeta answers GET /v1/items/{id}/meta.
func (s *Server) handleItemMeta(w http.ResponseWriter, r *http.Request) {
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil {
		writeError(w, 0, proto.StatusNotFound, "no such item")
		return
	}
	v, ok := s.lookupItem(id)
	if !ok {
		if e := s.missingItem(id); e.Status == proto.StatusOffline {
			// Just after a restart: its publisher may still reclaim it.
			w.Header().Set("Retry-After", retryOffline)
			writeError(w, 0, e.Status, e.Msg)
			return
		}
		writeError(w, 0, proto.StatusNotFound, "no such item")
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	meta := ItemMeta{
		ID: id, Kind: v.kind, Name: v.name, MIME: v.mime, Size: v.size,
		Online:    v.online || v.kind == proto.KindMessage,
		Encrypted: v.enc != "", Enc: v.enc, Meta: v.meta,
	}
	s.clipMeta(&meta) // clip.go
	writeJSON(w, http.StatusOK, meta)
}

// serveMessage serves the text of a message item, with Range and
// conditional request support.
func serveMessage(w http.ResponseWriter, r *http.Request, v itemView) {
	h := w.Header()
	proto.SetItemHeaders(h, v.mime, v.name)
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "private, no-cache")
	http.ServeContent(w, r, "", v.published, strings.NewReader(v.text))
}

// writeError writes the JSON error body of both servers
// (internal/httpapi); httpStatus 0 means st's own.
func writeError(w http.ResponseWriter, httpStatus int, st proto.Status, msg string) {
	httpapi.WriteError(w, httpStatus, st, msg, retryLater)
}

// writeJSON writes v as a JSON response (internal/httpapi).
func writeJSON(w http.ResponseWriter, code int, v any) { httpapi.WriteJSON(w, code, v) }
