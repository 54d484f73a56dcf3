package relay

import (
	"cmp"
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync/atomic"

	"github.com/meshup/meshup/internal/httptunnel"
	"github.com/meshup/meshup/proto"
)

// What a public relay does for relays behind NAT, so that their traffic
// spreads over public relays and the rendezvous carries item bytes only
// when no other path exists (issue 10):
//
//   - The HTTP tunnel. A public relay serves /v1/relays/{id}/{rest} like
//     the rendezvous does (internal/httptunnel: the same header allow-list
//     and item policy), for the relays behind NAT that keep a connection to
//     it. Only relays of the directory the rendezvous sent (registered and
//     admitted there) may be tunnelled to, and only over a connection the
//     relay behind NAT opened: the tunnel never dials, so no client can make
//     it reach an address or a peer of its choosing. The rendezvous learns
//     from the relay's heartbeats which relays it is connected to and hands
//     out its tunnel for them.
//   - The circuit relay service (mesh.RelayService, run by the binary when
//     the relay is public), for the same relays: CircuitGate admits them.
//     Relays behind NAT hold reservations on public relays and advertise
//     those circuit addresses rather than the rendezvous's (meshnet.go).
//
// A relay behind NAT, for its part, accepts tunnelled HTTP streams only from
// the rendezvous it is registered with and from the public relays of its
// directory (tunnelListener).

// Defaults of AssistConfig.
const (
	DefaultTunnelConns         = 256
	DefaultCircuitReservations = 2
)

// AssistConfig configures what the relay does for relays behind NAT, and
// asks of public relays when it is behind NAT itself. Zero values mean the
// defaults.
type AssistConfig struct {
	// NoTunnel turns off the HTTP tunnel a public relay serves into the
	// relays behind NAT connected to it. By default it is on (it serves
	// only when the relay is public).
	NoTunnel bool
	// TunnelConns bounds the concurrent tunnelled connections to one relay
	// behind NAT. Defaults to 256.
	TunnelConns int
	// Reservations is how many public relays a relay behind NAT holds
	// circuit reservations on; while it holds one, it advertises their
	// circuits instead of the rendezvous's. Defaults to 2; negative means
	// none (the rendezvous's circuit only).
	Reservations int
}

func (c *AssistConfig) setDefaults() {
	c.TunnelConns = cmp.Or(c.TunnelConns, DefaultTunnelConns)
	c.Reservations = cmp.Or(c.Reservations, DefaultCircuitReservations)
}

func (c *AssistConfig) logAttrs() []any {
	return []any{"tunnel", !c.NoTunnel, "tunnel_conns", c.TunnelConns, "circuit_reservations", max(c.Reservations, 0)}
}

// AssistStats count what a relay did for relays behind NAT.
type AssistStats struct {
	// Tunnel counts the HTTP tunnel a public relay serves: requests, and
	// bytes on its streams to relays behind NAT, headers included.
	Tunnel httptunnel.Stats `json:"tunnel"`
	// Circuits counts the circuit relay service (all zero when the node
	// runs none).
	Circuits     int64 `json:"circuits"`          // relayed connections open
	CircuitBytes int64 `json:"circuit_bytes"`     // bytes relayed, both directions
	Reservations int64 `json:"reservations"`      // reservations held by others
	Held         int   `json:"reservations_held"` // reservations this relay holds on public relays
}

// assistStats returns the relay's AssistStats.
func (s *Server) assistStats() AssistStats {
	rs := s.cfg.Node.RelayStats()
	s.mesh.mu.Lock()
	held := len(s.mesh.pubCircuits)
	s.mesh.mu.Unlock()
	return AssistStats{
		Tunnel:       s.tunCount.Snapshot(),
		Circuits:     rs.Circuits,
		CircuitBytes: rs.Bytes,
		Reservations: rs.Reservations,
		Held:         held,
	}
}

// servesTunnel reports whether the relay serves the tunnel: it is public
// and the tunnel is not turned off.
func (s *Server) servesTunnel() bool {
	return !s.cfg.Assist.NoTunnel && s.isPublic()
}

// newTunnel returns the proxy of the relay's tunnel. It dials only over
// connections the node has.
func (s *Server) newTunnel() *httputil.ReverseProxy {
	return httptunnel.NewProxy(httptunnel.Config{
		Dial: func(ctx context.Context, relay string) (net.Conn, error) {
			return s.cfg.Node.DialConnConnected(ctx, relay, proto.ProtoHTTP)
		},
		MaxConnsPerRelay: s.cfg.Assist.TunnelConns,
		Counters:         &s.tunCount,
		OnError: func(w http.ResponseWriter, r *http.Request, err error) {
			s.stats.refused("tunnel_failed")
			s.log.Info("tunnel to relay failed", "to", shortID(r.PathValue("relay")), "err", err)
			writeError(w, proto.Errorf(proto.StatusUnavailable, "relay unreachable through this relay's tunnel"))
		},
	})
}

// handleTunnel serves /v1/relays/{relay}/{rest...}: the relay's tunnel
// into a relay behind NAT. The limits per source apply as to any request
// (limitHandler); the relay behind NAT sees the request come from this
// relay's peer id.
func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	if !s.servesTunnel() {
		writeError(w, proto.Errorf(proto.StatusNotFound, "this relay serves no tunnel"))
		return
	}
	if !strings.HasPrefix(r.PathValue("rest"), "v1/") {
		writeError(w, proto.Errorf(proto.StatusNotFound, "only a relay's /v1/ API is tunnelled"))
		return
	}
	id := r.PathValue("relay")
	if why := s.tunnelRefusal(id); why != "" {
		s.stats.refused("tunnel_" + why)
		writeError(w, proto.Errorf(proto.StatusUnavailable, "relay %.80q is not reachable through this relay: %s", id, tunnelReason(why)))
		return
	}
	s.tunCount.Requests.Add(1)
	s.tunnel.ServeHTTP(w, r)
}

// Reasons a tunnel request is refused, as counted in Stats.Refusals with
// the prefix "tunnel_".
const (
	tunnelUnknown      = "unknown_relay" // not in the directory
	tunnelNotConnected = "not_connected" // in the directory, no connection to it
)

func tunnelReason(why string) string {
	if why == tunnelUnknown {
		return "not a relay of the rendezvous's directory"
	}
	return "it keeps no connection to this relay"
}

// tunnelRefusal says why the tunnel may not carry a request to relay id,
// or "" when it may: id must be another relay of the directory, connected
// to this relay.
func (s *Server) tunnelRefusal(id string) string {
	if id == s.id || !s.inDirectory(id, false) {
		return tunnelUnknown
	}
	if !s.cfg.Node.Connected(id) {
		return tunnelNotConnected
	}
	return ""
}

// inDirectory reports whether peer is a relay of the directory the
// rendezvous sent, and a public one when public is set.
func (s *Server) inDirectory(peer string, public bool) bool {
	s.mesh.mu.Lock()
	defer s.mesh.mu.Unlock()
	for _, p := range s.mesh.directory {
		if p.ID == peer {
			return !public || p.NAT == proto.NATPublic
		}
	}
	return false
}

// tunnelPeerAllowed reports whether peer may send this relay tunnelled
// HTTP (proto.ProtoHTTP): the rendezvous it is registering or registered
// with, or a public relay of its directory.
func (s *Server) tunnelPeerAllowed(peer string) bool {
	if h := s.home.Load(); h != nil && *h == peer {
		return true
	}
	return s.inDirectory(peer, true)
}

// tunnelListener passes on the tunnelled HTTP streams of allowed peers
// (tunnelPeerAllowed) and closes the others.
type tunnelListener struct {
	net.Listener
	s *Server
}

func (l tunnelListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if peer := c.RemoteAddr().String(); !l.s.tunnelPeerAllowed(peer) {
			l.s.stats.refused("tunnel_peer")
			l.s.log.Debug("tunnelled HTTP stream refused", "peer", shortID(peer))
			c.Close()
			continue
		}
		return c, nil
	}
}

// CircuitGate admits peers to the circuit relay service of a relay's
// libp2p node: while the relay is public, the relays of the directory the
// rendezvous sent it, and nobody else. The node exists before the Server,
// so the gate is passed to the node as mesh.RelayService.Allow and bound
// to the server after New.
type CircuitGate struct{ srv atomic.Pointer[Server] }

// Allow reports whether peer may reserve a slot or open a circuit.
func (g *CircuitGate) Allow(peer string) bool {
	s := g.srv.Load()
	return s != nil && s.isPublic() && peer != s.id && s.inDirectory(peer, false)
}

// Bind makes g admit the directory's relays of s.
func (g *CircuitGate) Bind(s *Server) { g.srv.Store(s) }
