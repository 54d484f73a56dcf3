package relay

import (
	"cmp"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

// Limits per source. Every HTTP request and WebSocket upgrade passes
// limitHandler: a request rate (token bucket) and a count of requests in
// flight (a WebSocket is in flight for its whole life) per source IP. The
// IPs are kept in a bounded LRU, so a flood of sources costs bounded
// memory. Requests that came through the rendezvous tunnel have no IP (the
// rendezvous limits them) and loopback is exempt unless LimitLoopback is
// set, so a reverse proxy or `meshup dev` on the same host is not one
// source.
//
// Request bodies must arrive at BodyTimeout plus one second per
// MinBodyRate bytes, so a slow body cannot hold a connection.

// Defaults of the limits per source (see Config).
const (
	DefaultMaxConnsPerIP = 64
	DefaultRequestRate   = 20 // requests per second per IP
	DefaultRequestBurst  = 100
	DefaultTrackedIPs    = 16384
	DefaultBodyTimeout   = 30 * time.Second
	DefaultMinBodyRate   = 16 << 10 // bytes per second
)

func (c *Config) setLimitDefaults() {
	c.ClockSkew = cmp.Or(c.ClockSkew, proto.DefaultClockSkew)
	c.MaxConnsPerIP = cmp.Or(c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	c.RequestRate = cmp.Or(c.RequestRate, DefaultRequestRate)
	c.RequestBurst = cmp.Or(c.RequestBurst, DefaultRequestBurst)
	c.TrackedIPs = cmp.Or(c.TrackedIPs, DefaultTrackedIPs)
	c.BodyTimeout = cmp.Or(c.BodyTimeout, DefaultBodyTimeout)
	c.MinBodyRate = cmp.Or(c.MinBodyRate, DefaultMinBodyRate)
}

func (c *Config) limitAttrs() []any {
	return []any{
		"clock_skew", c.ClockSkew, "max_conns_per_ip", c.MaxConnsPerIP,
		"request_rate", c.RequestRate, "request_burst", c.RequestBurst,
		"tracked_ips", c.TrackedIPs, "limit_loopback", c.LimitLoopback,
		"body_timeout", c.BodyTimeout, "min_body_rate", c.MinBodyRate,
		"max_read_checks", proto.MaxReadChecks, // fixed by the protocol: both ends of a link bound it
	}
}

// parseToken verifies tok with the rendezvous key, tolerating ClockSkew.
func (s *Server) parseToken(tok string) (proto.Claims, error) {
	return proto.ParseTokenSkew(s.tokenKey(), tok, s.cfg.Now(), s.cfg.ClockSkew)
}

// limitHandler applies the limits per source to every request of h.
func (s *Server) limitHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, ok := srclimit.SourceIP(r.RemoteAddr)
		if ok && (s.cfg.LimitLoopback || !ip.IsLoopback()) && !s.sioSessionRequest(r, ip) {
			release, why, retry := s.ips.Acquire(ip, s.cfg.Now())
			if why != "" {
				s.stats.refused(why)
				w.Header().Set("Retry-After", strconv.Itoa(retry))
				writeError(w, proto.Errorf(proto.StatusOverLimit, "%s", limitReason(why)))
				return
			}
			var done func()
			r, done = srclimit.WithLease(r, release)
			defer done()
		}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 && !strings.HasPrefix(r.URL.Path, "/v1/live/") { // a live body has no end (live.go)
			r.Body = srclimit.NewDeadlineBody(w, r.Body, s.cfg.BodyTimeout, s.cfg.MinBodyRate, func() { s.stats.refused("slow_body") })
		}
		h.ServeHTTP(w, r)
	})
}

// sioSessionRequest reports whether r belongs to an open socket.io
// (Engine.IO) session from ip, which holds one lease for its whole life
// (socketio.go): its polls and its upgrade take none of their own.
func (s *Server) sioSessionRequest(r *http.Request, ip netip.Addr) bool {
	if !strings.HasPrefix(r.URL.Path, sioPath) {
		return false
	}
	sid := r.URL.Query().Get("sid")
	return sid != "" && s.ad.sio.sessionIP(sid, ip)
}

// takeLease takes the lease of r in the limits per source, which the
// caller must release (see srclimit.TakeLease).
func takeLease(r *http.Request) func() { return srclimit.TakeLease(r) }

// limitReason tells the peer why the limits per source refused it; why is
// a srclimit reason, as counted in stats.
func limitReason(why string) string {
	switch why {
	case srclimit.ReasonConnsPerIP:
		return "too many connections from your address"
	case srclimit.ReasonRatePerIP:
		return "too many requests from your address; slow down"
	default:
		return "too many sources; try again later"
	}
}

// isTimeout reports whether err is a deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
