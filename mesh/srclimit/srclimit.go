// Package srclimit holds the limits per source of the HTTP servers of
// relays and the rendezvous: a count of requests in flight and a request
// rate (token bucket) per source IP, kept in a bounded LRU so that a flood
// of sources costs bounded memory; a lease that lets an upgraded WebSocket
// stay in flight for its whole life; and a request body that must arrive
// at a minimum rate. One copy serves both servers, so a fix lands in both.
//
// It uses the standard library and golang.org/x/time/rate only (mesh/ is
// the only place for go-libp2p and memberlist, and this package needs
// neither).
package srclimit

import (
	"container/list"
	"context"
	"math"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Refusal reasons of Limiter.Acquire, as counted by the servers.
const (
	ReasonConnsPerIP = "conns_per_ip" // the IP has maxConns requests in flight
	ReasonRatePerIP  = "rate_per_ip"  // the IP is over its request rate
	ReasonTrackedIPs = "tracked_ips"  // maxIPs IPs, all with requests in flight
)

// SourceIP returns the IP of a request's RemoteAddr ("ip:port"), unmapped
// from IPv4-in-IPv6, or false when it has none (a request through the
// rendezvous tunnel names a peer id).
func SourceIP(remoteAddr string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// Limiter counts requests in flight and rations requests per source IP.
// It tracks at most maxIPs IPs: the least recently seen IP without
// requests in flight is forgotten first. It is safe for concurrent use.
type Limiter struct {
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

// New returns a Limiter of maxConns requests in flight per IP, perSec
// requests per second per IP with bursts of burst, tracking at most maxIPs
// IPs.
func New(maxConns int, perSec float64, burst, maxIPs int) *Limiter {
	l := &Limiter{maxConns: maxConns, rate: rate.Limit(perSec), burst: burst, max: maxIPs, ips: make(map[netip.Addr]*list.Element)}
	l.lru.Init()
	return l
}

// Acquire admits one request of ip at now. It returns a release function
// to call when the request ends (calling it again does nothing), or the
// reason of a refusal (a Reason constant) and the seconds after which to
// retry.
func (l *Limiter) Acquire(ip netip.Addr, now time.Time) (release func(), reason string, retryAfterSeconds int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e := l.ips[ip]
	if e == nil {
		if len(l.ips) >= l.max && !l.evictLocked() {
			return nil, ReasonTrackedIPs, 1
		}
		e = l.lru.PushFront(&ipState{ip: ip, lim: rate.NewLimiter(l.rate, l.burst)})
		l.ips[ip] = e
	}
	l.lru.MoveToFront(e)
	st := e.Value.(*ipState)
	if st.conns >= l.maxConns {
		return nil, ReasonConnsPerIP, 1
	}
	if !st.lim.AllowN(now, 1) {
		return nil, ReasonRatePerIP, max(1, int(math.Ceil(1/float64(l.rate))))
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
func (l *Limiter) evictLocked() bool {
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

// InFlight returns the requests in flight of ip (for tests and status).
func (l *Limiter) InFlight(ip netip.Addr) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.ips[ip]; e != nil {
		return e.Value.(*ipState).conns
	}
	return 0
}

// lease is a request's place in a Limiter. A handler that serves a
// connection beyond its own return (an upgraded WebSocket) takes it and
// releases it when the connection ends.
type lease struct {
	release func()
	taken   atomic.Bool
}

type leaseKey struct{}

// WithLease returns r carrying release, the release function of its
// Acquire, and a function for the end of the request that calls release
// unless a handler took it with TakeLease.
func WithLease(r *http.Request, release func()) (*http.Request, func()) {
	l := &lease{release: release}
	r = r.WithContext(context.WithValue(r.Context(), leaseKey{}, l))
	return r, func() {
		if !l.taken.Load() {
			release()
		}
	}
}

// TakeLease takes the lease of r, which the caller must release; a
// request without one (the limits do not apply to it) has a no-op one.
func TakeLease(r *http.Request) func() {
	l, _ := r.Context().Value(leaseKey{}).(*lease)
	if l == nil {
		return func() {}
	}
	l.taken.Store(true)
	return l.release
}
