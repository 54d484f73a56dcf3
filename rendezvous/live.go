package rendezvous

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshup/meshup/proto"
)

// The channel registry (issue 12, proto/live.go). The rendezvous is not on
// a live channel's data path: it knows which relay carries each channel's
// source and which relays carry copies, as the relays announce them on
// their register streams (proto.LiveAnnounce; announced again after every
// registration, so a restarted rendezvous learns them back), and points
// publishers and readers at relays:
//
//	POST /v1/live/{id}         a publisher (bearer: the channel secret) asks
//	                           where to push: a relay is picked and noted as
//	                           the channel's source (proto.LiveEntry)
//	GET  /v1/live/{id}         a reader is redirected (307, read token) to a
//	                           relay carrying the channel, else one with a
//	                           mesh connection to the source relay, else the
//	                           source; the token's fwd claim names the source,
//	                           which that relay subscribes to once
//	GET  /v1/evsocket/{name}   an EvSocket WebSocket is tunnelled to the
//	                           relay carrying the channel's source (or to a
//	                           relay picked as its source): a WebSocket
//	                           cannot follow a redirect
//
// Plaintext live channels go through operator relays only, unless the
// publisher allows volunteers (?volunteers=1 on the POST; the same rule as
// plaintext items, items.go anyRelay). Sealed channels (proto/livee2e.go;
// ?enc=live1 on the POST, Enc in the relays' announcements) show relays
// nothing but record sizes, so volunteer relays may carry them, as their
// source and as downstream copies; their entry names the share page
// RDV/l/ID, to which the publisher appends #k=KEY.

// DefaultMaxLiveChannels bounds the channels the registry holds.
const DefaultMaxLiveChannels = 100000

// livePending is how long a source noted for a POST waits for the relay
// to announce the channel before it may be picked anew.
const livePending = time.Minute

// liveRegistry is the channel registry. Its mutex is taken after Server.mu
// when both are needed, never before.
type liveRegistry struct {
	mu    sync.Mutex // guards chans
	chans map[proto.ItemID]*liveChan
}

// liveChan is what the registry knows of one channel.
type liveChan struct {
	source     string          // relay id of the source
	announced  bool            // the source announced it (else noted at a POST)
	at         time.Time       // when noted
	volunteers bool            // volunteer relays may carry it
	sealed     bool            // live1 records (proto/livee2e.go); volunteers is then set too
	carriers   map[string]bool // relays carrying a copy
}

// liveAnnounce applies a relay's announcement.
func (s *Server) liveAnnounce(r *relayConn, m *proto.LiveAnnounce) {
	reg := &s.live
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.chans == nil {
		reg.chans = make(map[proto.ItemID]*liveChan)
	}
	lc := reg.chans[m.Channel]
	switch {
	case m.End && lc != nil && lc.source == r.id && m.Source:
		delete(reg.chans, m.Channel)
	case m.End && lc != nil:
		delete(lc.carriers, r.id)
	case m.End:
	case m.Source:
		if lc == nil {
			if len(reg.chans) >= s.cfg.MaxLiveChannels {
				s.stats.reject("live_channels")
				return
			}
			lc = &liveChan{carriers: map[string]bool{}}
			reg.chans[m.Channel] = lc
		}
		lc.source, lc.announced, lc.at = r.id, true, s.cfg.Now()
		lc.sealed = lc.sealed || m.Enc == proto.LiveEncVersion
		lc.volunteers = lc.volunteers || m.Volunteers || lc.sealed
	case lc != nil && len(lc.carriers) < maxRelayPeers:
		lc.carriers[r.id] = true
	}
}

// liveSecret returns the channel id named by the bearer token of req, when
// it is the channel's secret, and id.
func liveSecret(req *http.Request, id proto.ItemID) bool {
	secret, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	got, err := proto.LiveID(secret)
	return err == nil && got == id
}

// handleLivePost answers POST /v1/live/{id}: where the publisher pushes.
func (s *Server) handleLivePost(w http.ResponseWriter, r *http.Request) {
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil || !liveSecret(r, id) {
		s.stats.reject("live_secret")
		writeError(w, 0, proto.StatusForbidden, "the bearer token is not the channel's secret")
		return
	}
	volunteers, _ := strconv.ParseBool(r.URL.Query().Get("volunteers"))
	var sealed bool
	switch enc := r.URL.Query().Get("enc"); enc {
	case "":
	case proto.LiveEncVersion:
		sealed, volunteers = true, true
	default:
		writeError(w, 0, proto.StatusMalformed, fmt.Sprintf("enc %.40q: the live channel formats are %q and none (plaintext)", enc, proto.LiveEncVersion))
		return
	}
	rel, base, e := s.liveSource(id, volunteers, sealed, s.secureRequest(r))
	if e != nil {
		writeError(w, 0, e.Status, e.Msg)
		return
	}
	push := base + "/v1/live/" + id.String()
	if volunteers && !sealed {
		push += "?volunteers=1"
	}
	entry := proto.LiveEntry{Channel: id, Relay: rel, PushURL: push, URL: s.cfg.PublicURL + "/v1/live/" + id.String()}
	if sealed {
		entry.Share = s.cfg.PublicURL + "/l/" + id.String()
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, entry)
}

// liveSource returns the relay carrying channel id's source, picking and
// noting one when there is none live.
func (s *Server) liveSource(id proto.ItemID, volunteers, sealed, secure bool) (string, string, *proto.Error) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	reg := &s.live
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if reg.chans == nil {
		reg.chans = make(map[proto.ItemID]*liveChan)
	}
	lc := reg.chans[id]
	if lc != nil {
		if rel := s.relays[lc.source]; rel != nil && s.relayAlive(rel, now) && (lc.announced || now.Sub(lc.at) < livePending) {
			return rel.id, s.relayBase(rel, secure), nil
		}
	}
	rel := s.pickRelayLocked(now, !volunteers, nil, secure, "")
	if rel == nil {
		if volunteers {
			return "", "", proto.Errorf(proto.StatusUnavailable, "no relay is live for a live channel")
		}
		return "", "", proto.Errorf(proto.StatusUnavailable, "no operator relay is live for a live channel")
	}
	if lc == nil {
		if len(reg.chans) >= s.cfg.MaxLiveChannels {
			s.sweepLiveLocked(now)
		}
		if len(reg.chans) >= s.cfg.MaxLiveChannels {
			s.stats.reject("live_channels")
			return "", "", proto.Errorf(proto.StatusOverLimit, "the rendezvous holds %d live channels", s.cfg.MaxLiveChannels)
		}
		lc = &liveChan{carriers: map[string]bool{}}
		reg.chans[id] = lc
	}
	lc.source, lc.announced, lc.at, lc.volunteers, lc.sealed = rel.id, false, now, volunteers, sealed
	return rel.id, s.relayBase(rel, secure), nil
}

// sweepLiveLocked forgets the channels whose source relay is gone, and
// those noted for a POST that their relay never announced. Both locks
// are held.
func (s *Server) sweepLiveLocked(now time.Time) {
	for id, lc := range s.live.chans {
		if s.relays[lc.source] == nil || !lc.announced && now.Sub(lc.at) >= livePending {
			delete(s.live.chans, id)
		}
	}
}

// handleLiveGet answers GET /v1/live/{id} with a redirect to a relay.
func (s *Server) handleLiveGet(w http.ResponseWriter, r *http.Request) {
	proto.SetPublicCORS(w.Header()) // browsers follow it to a relay (sealed channels' pages)
	id, err := proto.ParseItemID(r.PathValue("id"))
	if err != nil {
		writeError(w, 0, proto.StatusNotFound, "no such live channel")
		return
	}
	now := s.cfg.Now()
	s.mu.Lock()
	s.live.mu.Lock()
	lc := s.live.chans[id]
	var src, rel *relayConn
	if lc != nil {
		src = s.relays[lc.source]
		if src == nil || !s.relayAlive(src, now) {
			src = nil
			if s.relays[lc.source] == nil {
				delete(s.live.chans, id) // its source relay is gone
			}
		} else if via := r.URL.Query().Get("via"); via != "" {
			// Pins the reader's relay (diagnosis, tests), like items'.
			if rel = s.relays[via]; rel != nil && (!s.relayAlive(rel, now) || !lc.volunteers && rel.class != ClassOperator) {
				rel = nil
			}
			if rel == nil {
				s.live.mu.Unlock()
				s.mu.Unlock()
				writeError(w, 0, proto.StatusUnavailable, fmt.Sprintf("relay %.80q cannot carry this channel", via))
				return
			}
		} else {
			rel = s.pickLiveExitLocked(lc, src, now, s.secureRequest(r))
		}
	}
	s.live.mu.Unlock()
	if lc == nil || src == nil {
		s.mu.Unlock()
		writeError(w, 0, proto.StatusNotFound, "no such live channel")
		return
	}
	relayID, base := rel.id, s.relayBase(rel, s.secureRequest(r))
	s.mu.Unlock()
	tok := proto.SignToken(s.key, proto.Claims{
		Dir:   proto.DirRead,
		Relay: relayID,
		Item:  id,
		Fwd:   src.id,
		Exp:   now.Add(s.cfg.ReadTokenTTL).Unix(),
		Iat:   now.Unix(),
	})
	s.stats.redirects.Add(1)
	w.Header().Set("Location", base+"/v1/live/"+id.String()+"?t="+url.QueryEscape(tok))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// pickLiveExitLocked picks the relay a reader of lc reads from: among the
// live relays that may carry it (operator relays unless volunteers), the
// reachable ones first (as pickRelayLocked), then one carrying a copy,
// then one with a connection to the source relay, then the least loaded;
// the source relay when no other qualifies. Both locks are held.
func (s *Server) pickLiveExitLocked(lc *liveChan, src *relayConn, now time.Time, secure bool) *relayConn {
	hosts := s.tunnelHostsLocked()
	score := func(r *relayConn) (Reach, int, int) {
		_, reach := s.reachAmongLocked(r, hosts, secure)
		tier := 2
		switch {
		case r == src || lc.carriers[r.id]:
			tier = 0
		case r.meshPeers[src.id] != "":
			tier = 1
		}
		return reach, tier, relayLoadLocked(r)
	}
	best := src
	br, bt, bl := score(src)
	for _, r := range s.liveRelaysLocked(now) {
		if !lc.volunteers && r.class != ClassOperator {
			continue
		}
		if r.meshPeers[src.id] == "" && r != src && !lc.carriers[r.id] {
			continue // it could not reach the source
		}
		rr, rt, rl := score(r)
		if rr < br || rr == br && (rt < bt || rt == bt && rl < bl) {
			best, br, bt, bl = r, rr, rt, rl
		}
	}
	return best
}

// handleEvSocket answers GET /v1/evsocket/{channel}: it tunnels the
// WebSocket to the relay carrying the channel's source, picking one when
// none does.
func (s *Server) handleEvSocket(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("channel")
	id, err := proto.LiveID(name)
	if err != nil {
		s.stats.reject("live_secret")
		writeError(w, 0, proto.StatusForbidden, fmt.Sprintf("an EvSocket channel name is %d to %d characters of A-Z a-z 0-9 - _ . ~", proto.MinLiveSecret, proto.MaxLiveSecret))
		return
	}
	volunteers, _ := strconv.ParseBool(r.URL.Query().Get("volunteers"))
	rel, _, e := s.liveSource(id, volunteers, false, s.secureRequest(r))
	if e != nil {
		writeError(w, 0, e.Status, e.Msg)
		return
	}
	s.stats.tunnelled.Add(1)
	s.tunnelCount.Requests.Add(1)
	r2 := r.Clone(r.Context())
	r2.SetPathValue("relay", rel)
	rest := "v1/evsocket/" + name
	if volunteers {
		r2.URL.RawQuery = "volunteers=1"
	} else {
		r2.URL.RawQuery = ""
	}
	r2.SetPathValue("rest", rest)
	s.tunnel.ServeHTTP(w, r2)
}

// liveAttrs returns the registry's limits for Limits.
func (c *Config) liveAttrs() []slog.Attr {
	return []slog.Attr{slog.Int("max_live_channels", c.MaxLiveChannels)}
}
