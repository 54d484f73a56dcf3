package rendezvous

import (
	"context"
	"hash/fnv"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"

	"github.com/meshup/meshup/internal/httptunnel"
	"github.com/meshup/meshup/proto"
)

// The tunnel lets browsers and HTTP clients reach relays behind NAT. A
// request to /v1/relays/{relay}/{rest} is proxied to the relay's own API at
// /{rest}, over HTTP/1.1 carried by libp2p streams (proto.ProtoHTTP) on the
// connection the relay keeps with the rendezvous. WebSocket upgrades (the
// push channel) pass through too. Only registered relays are reachable, and
// only their /v1/ API: the tunnel never dials an address a client names.
//
// The rendezvous's tunnel is the path of last resort (issue 10: the
// rendezvous carries item bytes only when no other path exists). Public
// relays serve the same tunnel (relay/tunnel.go, internal/httptunnel) for
// the relays behind NAT connected to them, and relayBase hands out theirs
// first. The bytes this tunnel carries are counted (DataPath).

// tunnelPrefix is the path under which relays are tunnelled.
const tunnelPrefix = httptunnel.Prefix

// tunnelBase returns the base URL under which relay id is tunnelled by the
// rendezvous: on Config.TunnelURL when set, else on the public URL.
func (s *Server) tunnelBase(id string) string {
	if s.cfg.TunnelURL != "" {
		return s.cfg.TunnelURL + tunnelPrefix + id
	}
	return s.cfg.PublicURL + tunnelPrefix + id
}

// newTunnel returns the reverse proxy that serves the tunnel.
func (s *Server) newTunnel() *httputil.ReverseProxy {
	return httptunnel.NewProxy(httptunnel.Config{
		Dial: func(ctx context.Context, relay string) (net.Conn, error) {
			return s.cfg.Node.DialConn(ctx, relay, proto.ProtoHTTP)
		},
		MaxConnsPerRelay: s.cfg.MaxTunnelConns,
		Counters:         &s.tunnelCount,
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			s.stats.tunnelFailures.Add(1)
			s.log.Info("tunnel to relay failed", "relay", r.PathValue("relay"), "err", err)
			writeError(w, http.StatusBadGateway, proto.StatusUnavailable, "relay unreachable through the tunnel")
		},
	})
}

// handleTunnel serves /v1/relays/{relay}/{rest...}.
func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	if !s.onTunnelOrigin(r) {
		writeError(w, 0, proto.StatusNotFound, "the relay tunnel is served on "+s.cfg.TunnelURL)
		return
	}
	if !strings.HasPrefix(r.PathValue("rest"), "v1/") {
		writeError(w, 0, proto.StatusNotFound, "only a relay's /v1/ API is tunnelled")
		return
	}
	if !s.IsRelay(r.PathValue("relay")) {
		writeError(w, 0, proto.StatusUnavailable, "no such relay is registered")
		return
	}
	s.stats.tunnelled.Add(1)
	s.tunnelCount.Requests.Add(1)
	s.tunnel.ServeHTTP(w, r)
}

// DataPath counts the item bytes that crossed the rendezvous: its tunnel
// into relays behind NAT and its circuit relay service. Both are paths of
// last resort (issue 10); a mesh with a public relay keeps them near zero.
type DataPath struct {
	// Tunnel counts the rendezvous's HTTP tunnel: requests, and bytes on
	// its streams to relays (headers included).
	Tunnel httptunnel.Stats `json:"tunnel"`
	// CircuitBytes counts the bytes relayed over circuits between
	// relays, both directions.
	CircuitBytes int64 `json:"circuit_bytes"`
	// Bytes is the sum of the tunnel's bytes in and out and CircuitBytes:
	// every byte of data that crossed the rendezvous.
	Bytes int64 `json:"bytes"`
}

// DataPath returns the counters of the bytes that crossed the rendezvous.
func (s *Server) DataPath() DataPath {
	d := DataPath{Tunnel: s.tunnelCount.Snapshot(), CircuitBytes: s.cfg.Node.RelayStats().Bytes}
	d.Bytes = d.Tunnel.BytesIn + d.Tunnel.BytesOut + d.CircuitBytes
	return d
}

// Reach says how consumers and publishers reach a relay's HTTP API.
type Reach uint8

const (
	// ReachDirect is the relay's own, verified URL.
	ReachDirect Reach = iota
	// ReachRelayTunnel is the tunnel of a public relay connected to it.
	ReachRelayTunnel
	// ReachRendezvousTunnel is the rendezvous's own tunnel: item bytes
	// then cross the rendezvous.
	ReachRendezvousTunnel
)

func (k Reach) String() string {
	switch k {
	case ReachDirect:
		return "direct"
	case ReachRelayTunnel:
		return "relay-tunnel"
	case ReachRendezvousTunnel:
		return "rendezvous-tunnel"
	}
	return "unknown"
}

// reachLocked returns the base URL of relay r's API for consumers and
// publishers, and how it reaches r: r's own URL when it is directly
// reachable (directLocked); else the tunnel of a public relay that has a
// direct or hole-punched connection to r (tunnelHost); else the
// rendezvous's tunnel. The caller holds s.mu.
//
// secure is set for a caller on https (secureRequest): an https page
// cannot fetch from or open a WebSocket to an http relay (mixed content),
// so it is handed https URLs only, and a relay with an http URL is
// reached through a tunnel on https: a public relay's, else the
// rendezvous's. When the rendezvous's own public URL is https, every
// caller counts as secure.
func (s *Server) reachLocked(r *relayConn, secure bool) (string, Reach) {
	return s.reachAmongLocked(r, s.tunnelHostsLocked(), secure)
}

// reachAmongLocked is reachLocked with the tunnel hosts given
// (tunnelHostsLocked), for callers that ask for many relays. The caller
// holds s.mu.
func (s *Server) reachAmongLocked(r *relayConn, hosts []*relayConn, secure bool) (string, Reach) {
	secure = secure || s.publicHTTPS()
	if s.directLocked(r) && (!secure || isHTTPS(r.httpURL)) {
		return r.httpURL, ReachDirect
	}
	if h := tunnelHost(r, hosts, secure); h != nil {
		return h.httpURL + tunnelPrefix + r.id, ReachRelayTunnel
	}
	return s.tunnelBase(r.id), ReachRendezvousTunnel
}

// tunnelHostsLocked returns the relays whose tunnels may be handed out:
// live, serving the tunnel, reached directly themselves (directLocked),
// with a mesh view. The caller holds s.mu.
func (s *Server) tunnelHostsLocked() []*relayConn {
	now := s.cfg.Now()
	var hosts []*relayConn
	for _, h := range s.relays {
		if h.tunnel && h.meshPeers != nil && s.relayAlive(h, now) && s.directLocked(h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// tunnelHost picks among hosts the public relay whose tunnel reaches relay
// r, or nil when none can: one that reported at its last heartbeat a
// direct or hole-punched connection to r, and may see r's traffic (an
// operator relay, which may carry plaintext items, is tunnelled by
// operator relays only). Among several, the choice is a hash of both ids
// (rendezvous hashing), so that r keeps its host while the hosts stay, and
// relays behind NAT spread over the hosts.
func tunnelHost(r *relayConn, hosts []*relayConn, secure bool) *relayConn {
	var best *relayConn
	var bestScore uint64
	for _, h := range hosts {
		if h == r || r.class == ClassOperator && h.class != ClassOperator || secure && !isHTTPS(h.httpURL) {
			continue
		}
		if k := h.meshPeers[r.id]; k != proto.PeerDirect && k != proto.PeerHolePunched {
			continue
		}
		f := fnv.New64a()
		f.Write([]byte(h.id))
		f.Write([]byte{0})
		f.Write([]byte(r.id))
		if sc := f.Sum64(); best == nil || sc > bestScore || sc == bestScore && h.id < best.id {
			best, bestScore = h, sc
		}
	}
	return best
}

// publicHTTPS reports whether the rendezvous's public URL is https: its
// pages are then on https, and every relay URL handed out must be too.
func (s *Server) publicHTTPS() bool {
	return isHTTPS(s.cfg.PublicURL)
}

// secureRequest reports whether r came over https: TLS on this server, or
// terminated by a proxy in front that says so (X-Forwarded-Proto). A
// forged header only makes the answer use https URLs, which any client
// can reach.
func (s *Server) secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") || s.publicHTTPS()
}

func isHTTPS(u string) bool {
	return len(u) >= len("https://") && strings.EqualFold(u[:len("https://")], "https://")
}
