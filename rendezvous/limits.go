package rendezvous

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

// Limits per source. Every HTTP request and WebSocket upgrade passes
// limitHandler: a request rate (token bucket) and a count of requests in
// flight (a WebSocket is in flight for its whole life) per source IP, kept
// in a bounded LRU so that a flood of sources costs bounded memory. Control
// sessions and items (online and offline) are also counted per IP. Loopback
// is exempt unless LimitLoopback is set, so that a reverse proxy or
// `meshup dev` on the same host is not one source.
//
// Request bodies must arrive at BodyTimeout plus one second per
// MinBodyRate bytes, so a slow body cannot hold a connection.

// Defaults of the limits per source (see Config).
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxConnsPerIP    = 64
	DefaultRequestRate      = 20 // requests per second per IP
	DefaultRequestBurst     = 100
	DefaultMaxSessionsPerIP = 16
	DefaultMaxItemsPerIP    = 2000
	DefaultTrackedIPs       = 16384
	DefaultBodyTimeout      = 30 * time.Second
	DefaultMinBodyRate      = 16 << 10 // bytes per second
)

// Rejection reasons of the limits per source (see counters.reject).
const (
	RejectConnsPerIP    = srclimit.ReasonConnsPerIP
	RejectRatePerIP     = srclimit.ReasonRatePerIP
	RejectTrackedIPs    = srclimit.ReasonTrackedIPs
	RejectSessionsPerIP = "sessions_per_ip"
	RejectItemsPerIP    = "items_per_ip"
	RejectSlowBody      = "slow_body"
	RejectHandshake     = "handshake_timeout"
)

func (c *Config) setLimitDefaults() {
	c.TunnelURL = strings.TrimRight(c.TunnelURL, "/")
	c.HandshakeTimeout = cmp.Or(c.HandshakeTimeout, DefaultHandshakeTimeout)
	c.MaxConnsPerIP = cmp.Or(c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	c.RequestRate = cmp.Or(c.RequestRate, DefaultRequestRate)
	c.RequestBurst = cmp.Or(c.RequestBurst, DefaultRequestBurst)
	c.MaxSessionsPerIP = cmp.Or(c.MaxSessionsPerIP, DefaultMaxSessionsPerIP)
	c.MaxItemsPerIP = cmp.Or(c.MaxItemsPerIP, DefaultMaxItemsPerIP)
	c.TrackedIPs = cmp.Or(c.TrackedIPs, DefaultTrackedIPs)
	c.BodyTimeout = cmp.Or(c.BodyTimeout, DefaultBodyTimeout)
	c.MinBodyRate = cmp.Or(c.MinBodyRate, DefaultMinBodyRate)
}

func (c *Config) validateLimits() error {
	if c.TunnelURL != "" {
		if err := checkBaseURL(c.TunnelURL, "http", "https"); err != nil {
			return fmt.Errorf("rendezvous: config: TunnelURL: %w", err)
		}
		t, _ := url.Parse(c.TunnelURL)
		p, _ := url.Parse(c.PublicURL)
		if strings.EqualFold(t.Host, p.Host) {
			return fmt.Errorf("rendezvous: config: TunnelURL %q has the host of PublicURL: it must be a separate origin", c.TunnelURL)
		}
	}
	for _, f := range []struct {
		name string
		v    float64
	}{
		{"HandshakeTimeout", float64(c.HandshakeTimeout)},
		{"MaxConnsPerIP", float64(c.MaxConnsPerIP)},
		{"RequestRate", c.RequestRate},
		{"RequestBurst", float64(c.RequestBurst)},
		{"MaxSessionsPerIP", float64(c.MaxSessionsPerIP)},
		{"MaxItemsPerIP", float64(c.MaxItemsPerIP)},
		{"TrackedIPs", float64(c.TrackedIPs)},
		{"BodyTimeout", float64(c.BodyTimeout)},
		{"MinBodyRate", float64(c.MinBodyRate)},
	} {
		if f.v < 0 {
			return fmt.Errorf("rendezvous: config: %s is negative", f.name)
		}
	}
	return nil
}

func (s *Server) limitAttrs() []slog.Attr {
	c := &s.cfg
	return []slog.Attr{
		slog.String("tunnel_url", c.TunnelURL),
		slog.Duration("handshake_timeout", c.HandshakeTimeout),
		slog.Int("max_conns_per_ip", c.MaxConnsPerIP),
		slog.Float64("request_rate", c.RequestRate),
		slog.Int("request_burst", c.RequestBurst),
		slog.Int("max_sessions_per_ip", c.MaxSessionsPerIP),
		slog.Int("max_items_per_ip", c.MaxItemsPerIP),
		slog.Int("tracked_ips", c.TrackedIPs),
		slog.Bool("limit_loopback", c.LimitLoopback),
		slog.Duration("body_timeout", c.BodyTimeout),
		slog.Int("min_body_rate", c.MinBodyRate),
	}
}

// limitState is the state of the limits per source. The maps are guarded
// by Server.mu.
type limitState struct {
	ips      *srclimit.Limiter
	sessions map[netip.Addr]int // control sessions by IP
	items    map[netip.Addr]int // items, online and offline, by publisher IP
	wbufs    *sync.Pool         // WebSocket write buffers, shared by sessions
}

func (s *Server) initLimits() {
	s.lim = limitState{
		ips:      srclimit.New(s.cfg.MaxConnsPerIP, s.cfg.RequestRate, s.cfg.RequestBurst, s.cfg.TrackedIPs),
		sessions: make(map[netip.Addr]int),
		items:    make(map[netip.Addr]int),
		wbufs:    new(sync.Pool),
	}
}

// limitedIP returns the source IP of r when the limits per source apply to
// it.
func (s *Server) limitedIP(r *http.Request) (netip.Addr, bool) {
	ip, ok := srclimit.SourceIP(r.RemoteAddr)
	if !ok || (ip.IsLoopback() && !s.cfg.LimitLoopback) {
		return netip.Addr{}, false
	}
	return ip, true
}

// handler returns the server's HTTP handler: the limits per source, then
// the tunnel on its own origin when TunnelURL is set, else the routes.
func (s *Server) handler() http.Handler {
	tunnelHost := ""
	tunnelOnly := http.NewServeMux()
	if s.cfg.TunnelURL != "" {
		u, _ := url.Parse(s.cfg.TunnelURL) // checked by Validate
		tunnelHost = u.Host
		tunnelOnly.HandleFunc(tunnelPrefix+"{relay}/{rest...}", s.handleTunnel)
		tunnelOnly.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			writeError(w, 0, proto.StatusNotFound, "this origin serves the relay tunnel only")
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ip, ok := s.limitedIP(r); ok {
			release, why, retry := s.lim.ips.Acquire(ip, s.cfg.Now())
			if why != "" {
				s.stats.reject(why)
				w.Header().Set("Retry-After", strconv.Itoa(retry))
				writeError(w, http.StatusTooManyRequests, proto.StatusOverLimit, limitReason(why))
				return
			}
			var done func()
			r, done = srclimit.WithLease(r, release)
			defer done()
		}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			r.Body = srclimit.NewDeadlineBody(w, r.Body, s.cfg.BodyTimeout, s.cfg.MinBodyRate, func() { s.stats.reject(RejectSlowBody) })
		}
		if tunnelHost != "" && strings.EqualFold(r.Host, tunnelHost) {
			tunnelOnly.ServeHTTP(w, r)
			return
		}
		s.mux.ServeHTTP(w, r)
	})
}

// takeLease takes the lease of r in the limits per source, which the
// caller must release (see srclimit.TakeLease).
func takeLease(r *http.Request) func() { return srclimit.TakeLease(r) }

// onTunnelOrigin reports whether r may be served the tunnel: always when
// the tunnel has no origin of its own, else only on that origin.
func (s *Server) onTunnelOrigin(r *http.Request) bool {
	if s.cfg.TunnelURL == "" {
		return true
	}
	u, _ := url.Parse(s.cfg.TunnelURL)
	return strings.EqualFold(r.Host, u.Host)
}

func limitReason(why string) string {
	switch why {
	case RejectConnsPerIP:
		return "too many connections from your address"
	case RejectRatePerIP:
		return "too many requests from your address; slow down"
	case RejectSessionsPerIP:
		return "too many control sessions from your address"
	default:
		return "too many sources; try again later"
	}
}

// reserveSessionLocked counts a control session of ip, unless ip has
// MaxSessionsPerIP already. The caller holds s.mu.
func (s *Server) reserveSessionLocked(ip netip.Addr, limited bool) bool {
	if !limited {
		return true
	}
	if s.lim.sessions[ip] >= s.cfg.MaxSessionsPerIP {
		return false
	}
	s.lim.sessions[ip]++
	return true
}

// releaseSession forgets a session counted by reserveSessionLocked.
func (s *Server) releaseSession(ip netip.Addr, limited bool) {
	if !limited {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lim.sessions[ip]--; s.lim.sessions[ip] <= 0 {
		delete(s.lim.sessions, ip)
	}
}

// itemsOfIPLocked reports whether ip may publish one more item: its items,
// online and offline, are under MaxItemsPerIP. The caller holds s.mu.
func (s *Server) itemAllowedLocked(ip netip.Addr) bool {
	return !ip.IsValid() || s.lim.items[ip] < s.cfg.MaxItemsPerIP
}

// countItemLocked adds d to the items of it's publisher IP. The caller
// holds s.mu.
func (s *Server) countItemLocked(it *item, d int) {
	if !it.src.IsValid() {
		return
	}
	if s.lim.items[it.src] += d; s.lim.items[it.src] <= 0 {
		delete(s.lim.items, it.src)
	}
}
