package relay

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

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
	setDefault(&c.ClockSkew, proto.DefaultClockSkew)
	setDefault(&c.MaxConnsPerIP, DefaultMaxConnsPerIP)
	setDefault(&c.RequestRate, DefaultRequestRate)
	setDefault(&c.RequestBurst, DefaultRequestBurst)
	setDefault(&c.TrackedIPs, DefaultTrackedIPs)
	setDefault(&c.BodyTimeout, DefaultBodyTimeout)
	setDefault(&c.MinBodyRate, DefaultMinBodyRate)
}

func (c *Config) limitAttrs() []any {
	return []any{
		"clock_skew", c.ClockSkew, "max_conns_per_ip", c.MaxConnsPerIP,
		"request_rate", c.RequestRate, "request_burst", c.RequestBurst,
		"tracked_ips", c.TrackedIPs, "limit_loopback", c.LimitLoopback,
		"body_timeout", c.BodyTimeout, "min_body_rate", c.MinBodyRate,
	}
}

// parseToken verifies tok with the rendezvous key, tolerating ClockSkew.
func (s *Server) parseToken(tok string) (proto.Claims, error) {
	return proto.ParseTokenSkew(s.tokenKey(), tok, s.cfg.Now(), s.cfg.ClockSkew)
}

// limitHandler applies the limits per source to every request of h.
func (s *Server) limitHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, ok := sourceIP(r.RemoteAddr)
		if ok && (s.cfg.LimitLoopback || !ip.IsLoopback()) {
			release, why, retry := s.ips.acquire(ip, s.cfg.Now())
			if why != "" {
				s.stats.refused(why)
				w.Header().Set("Retry-After", strconv.Itoa(retry))
				writeError(w, proto.Errorf(proto.StatusOverLimit, "%s", limitReason(why)))
				return
			}
			lease := &lease{release: release}
			r = r.WithContext(context.WithValue(r.Context(), leaseKey{}, lease))
			defer func() {
				if !lease.taken.Load() {
					release()
				}
			}()
		}
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			r.Body = newDeadlineBody(w, r.Body, s.cfg.BodyTimeout, s.cfg.MinBodyRate, func() { s.stats.refused("slow_body") })
		}
		h.ServeHTTP(w, r)
	})
}

// lease is a request's place in the limits per source. A handler that
// serves a connection beyond its own return (an upgraded WebSocket) takes
// it and releases it when the connection ends.
type lease struct {
	release func()
	taken   atomic.Bool
}

type leaseKey struct{}

// takeLease takes the lease of r, which the caller must release; a
// request the limits do not apply to has a no-op one.
func takeLease(r *http.Request) func() {
	l, _ := r.Context().Value(leaseKey{}).(*lease)
	if l == nil {
		return func() {}
	}
	l.taken.Store(true)
	return l.release
}

// Refusal reasons of the limits per source, as counted in stats.
const (
	refusedConnsPerIP = "conns_per_ip"
	refusedRatePerIP  = "rate_per_ip"
	refusedTrackedIPs = "tracked_ips"
)

func limitReason(why string) string {
	switch why {
	case refusedConnsPerIP:
		return "too many connections from your address"
	case refusedRatePerIP:
		return "too many requests from your address; slow down"
	default:
		return "too many sources; try again later"
	}
}

// sourceIP returns the IP of a request's RemoteAddr, or false when it has
// none (a request through the rendezvous tunnel names a peer id).
func sourceIP(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// ipLimiter counts requests in flight and rations requests per source IP.
// It tracks at most max IPs: the least recently seen IP without requests
// in flight is forgotten first.
type ipLimiter struct {
	maxConns int
	rate     rate.Limit
	burst    int
	max      int

	mu  sync.Mutex // guards the fields below
	ips map[netip.Addr]*list.Element
	lru list.List // of *ipState; front is the most recently seen
}

type ipState struct {
	ip    netip.Addr
	conns int
	lim   *rate.Limiter
}

func newIPLimiter(maxConns int, perSec float64, burst, max int) *ipLimiter {
	l := &ipLimiter{maxConns: maxConns, rate: rate.Limit(perSec), burst: burst, max: max, ips: make(map[netip.Addr]*list.Element)}
	l.lru.Init()
	return l
}

// acquire admits one request of ip at now. It returns a release function
// to call when the request ends, or the reason of a refusal and the
// seconds after which to retry.
func (l *ipLimiter) acquire(ip netip.Addr, now time.Time) (release func(), why string, retry int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.ips[ip]
	if e == nil {
		if len(l.ips) >= l.max && !l.evictLocked() {
			return nil, refusedTrackedIPs, 1
		}
		e = l.lru.PushFront(&ipState{ip: ip, lim: rate.NewLimiter(l.rate, l.burst)})
		l.ips[ip] = e
	}
	l.lru.MoveToFront(e)
	st := e.Value.(*ipState)
	if st.conns >= l.maxConns {
		return nil, refusedConnsPerIP, 1
	}
	if !st.lim.AllowN(now, 1) {
		return nil, refusedRatePerIP, max(1, int(math.Ceil(1/float64(l.rate))))
	}
	st.conns++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			st.conns--
			l.mu.Unlock()
		})
	}, "", 0
}

// evictLocked forgets the least recently seen IP with nothing in flight.
// It scans from the back, so that the common case is O(1).
func (l *ipLimiter) evictLocked() bool {
	for e := l.lru.Back(); e != nil; e = e.Prev() {
		st := e.Value.(*ipState)
		if st.conns == 0 {
			l.lru.Remove(e)
			delete(l.ips, st.ip)
			return true
		}
	}
	return false
}

// inFlight returns the requests in flight of ip (for tests and status).
func (l *ipLimiter) inFlight(ip netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.ips[ip]; e != nil {
		return e.Value.(*ipState).conns
	}
	return 0
}

// errSlowBody is the error of a request body read after its deadline.
var errSlowBody = errors.New("relay: request body too slow")

// deadlineBody bounds the time a request body may take: timeout, plus a
// second per minRate bytes read so far. The deadline is on the connection,
// so a stalled read ends; it is cleared at the end of the body, so that
// it never cuts a long response that follows.
type deadlineBody struct {
	rc      *http.ResponseController
	body    io.ReadCloser
	start   time.Time
	timeout time.Duration
	minRate int
	n       int64
	onSlow  func()
	done    bool
}

func newDeadlineBody(w http.ResponseWriter, body io.ReadCloser, timeout time.Duration, minRate int, onSlow func()) *deadlineBody {
	d := &deadlineBody{rc: http.NewResponseController(w), body: body, start: time.Now(), timeout: timeout, minRate: minRate, onSlow: onSlow}
	d.rc.SetReadDeadline(d.deadline())
	return d
}

func (d *deadlineBody) deadline() time.Time {
	return d.start.Add(d.timeout + time.Duration(float64(d.n)/float64(d.minRate)*float64(time.Second)))
}

func (d *deadlineBody) Read(p []byte) (int, error) {
	n, err := d.body.Read(p)
	d.n += int64(n)
	switch {
	case err == nil:
		d.rc.SetReadDeadline(d.deadline())
	case errors.Is(err, io.EOF):
		d.finish()
	case isTimeout(err):
		if !d.done {
			d.onSlow()
		}
		d.done = true
		return n, fmt.Errorf("%w: %d bytes in %v", errSlowBody, d.n, time.Since(d.start).Round(time.Millisecond))
	}
	return n, err
}

func (d *deadlineBody) finish() {
	if !d.done {
		d.done = true
		d.rc.SetReadDeadline(time.Time{})
	}
}

func (d *deadlineBody) Close() error { return d.body.Close() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
