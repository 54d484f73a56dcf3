package relay

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

// Volunteer controls (issue 13). A volunteer lends a relay part of an
// uplink: the limits here count the bytes the relay sends, which is what
// an uplink and a metered contract count. They are the item bytes of
// consumer responses (this relay as exit) and the parts it forwards to
// exit relays over the mesh (this relay as entry). What it receives
// (pushes, forwarded parts) is bounded by what it sends: a relay only
// takes in bytes that a consumer or an exit relay is waiting for.
//
//   - MaxRate bounds those bytes per second, all together: one token
//     bucket that writers wait on (golang.org/x/time/rate) before each
//     chunk, so a limited relay slows its consumers down instead of
//     refusing them. Writes are cut into chunks no larger than the
//     bucket's burst (rate/8, between 16 KiB and 256 KiB), so throughput
//     is smooth rather than a burst a second.
//   - MaxRatePerConsumer bounds the item bytes per second sent to one
//     consumer: every response to one IP shares one bucket (a consumer
//     that opens parallel Range requests gets no more). Requests without
//     an IP (through a tunnel) and from loopback (a reverse proxy, unless
//     LimitLoopback) have a bucket each.
//   - MonthlyCap bounds the bytes sent in a calendar month (UTC). It is
//     counted in memory only, never written to disk: a restart starts the
//     count again from zero. Once reached, the relay takes no new work:
//     consumer requests are answered 503 with Retry-After before any byte
//     of body, parts to forward to other relays are refused, and its
//     heartbeats tell the rendezvous (proto.Heartbeat.CapReached), which
//     then chooses other relays. Responses already started run to their
//     end, so the cap may be exceeded by what they still send; parts this
//     relay itself asked for are still taken, for the same reason.
//
// The HTTP tunnel and circuits a public relay serves for relays behind
// NAT are not counted; --tunnel=false and --circuit-relay=false turn them
// off.

// Bounds of a rate limiter's burst, in bytes.
const (
	minBurst = 16 << 10
	maxBurst = 256 << 10
)

// burstFor returns the burst of a token bucket of r bytes per second:
// an eighth of a second's worth, within [minBurst, maxBurst].
func burstFor(r int64) int {
	return int(min(max(r/8, minBurst), maxBurst))
}

// shaper holds the relay's egress rate limits and its monthly volume. It
// is safe for concurrent use.
type shaper struct {
	global   *rate.Limiter // nil: no global limit
	perRate  int64         // bytes per second per consumer; 0: none
	perBurst int
	vol      volume

	sent         atomic.Int64 // bytes written through the shaper
	waits        atomic.Int64 // writes that waited for a limiter
	delayedBytes atomic.Int64 // bytes of those writes
	waited       atomic.Int64 // nanoseconds of delay the limiters imposed, summed
	capRefused   atomic.Int64 // requests and parts refused for the monthly cap

	mu        sync.Mutex // guards consumers
	consumers map[string]*consumerLimit
}

type consumerLimit struct {
	lim  *rate.Limiter
	refs int
}

func newShaper(maxRate, perConsumer, monthlyCap int64, now func() time.Time) *shaper {
	sh := &shaper{perRate: perConsumer, consumers: map[string]*consumerLimit{}}
	if maxRate > 0 {
		sh.global = rate.NewLimiter(rate.Limit(maxRate), burstFor(maxRate))
	}
	if perConsumer > 0 {
		sh.perBurst = burstFor(perConsumer)
	}
	sh.vol = volume{limit: monthlyCap, now: now}
	return sh
}

// consumer returns the rate limiter of the consumer of r (nil when there
// is no limit per consumer) and a function to call when the response ends.
func (sh *shaper) consumer(r *http.Request, limitLoopback bool) (*rate.Limiter, func()) {
	if sh.perRate <= 0 {
		return nil, func() {}
	}
	ip, ok := srclimit.SourceIP(r.RemoteAddr)
	if !ok || ip.IsLoopback() && !limitLoopback {
		return rate.NewLimiter(rate.Limit(sh.perRate), sh.perBurst), func() {}
	}
	key := ip.String()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	c := sh.consumers[key]
	if c == nil {
		c = &consumerLimit{lim: rate.NewLimiter(rate.Limit(sh.perRate), sh.perBurst)}
		sh.consumers[key] = c
	}
	c.refs++
	return c.lim, func() {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		if c.refs--; c.refs == 0 {
			delete(sh.consumers, key)
		}
	}
}

// writer returns w limited by the global rate, by consumer when it is not
// nil, and counted in the monthly volume. Waits end with ctx.
func (sh *shaper) writer(ctx context.Context, w io.Writer, consumer *rate.Limiter) *shapedWriter {
	sw := &shapedWriter{w: w, ctx: ctx, sh: sh, chunk: 1 << 30}
	for _, l := range []*rate.Limiter{sh.global, consumer} {
		if l != nil {
			sw.lims = append(sw.lims, l)
			sw.chunk = min(sw.chunk, l.Burst())
		}
	}
	return sw
}

// wait blocks until n bytes may be sent under every limiter of lims.
func (sh *shaper) wait(ctx context.Context, n int, lims []*rate.Limiter) error {
	if len(lims) == 0 {
		return nil
	}
	now := time.Now()
	var delay time.Duration
	rs := make([]*rate.Reservation, 0, len(lims))
	for _, l := range lims {
		r := l.ReserveN(now, n)
		if !r.OK() { // n above the burst: never, writes are cut to it
			for _, r := range rs {
				r.CancelAt(now)
			}
			return fmt.Errorf("relay: rate limiter: %d bytes exceed the burst %d", n, l.Burst())
		}
		rs = append(rs, r)
		delay = max(delay, r.DelayFrom(now))
	}
	if delay <= 0 {
		return nil
	}
	sh.waits.Add(1)
	sh.delayedBytes.Add(int64(n))
	sh.waited.Add(int64(delay))
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		for _, r := range rs {
			r.Cancel()
		}
		return ctx.Err()
	}
}

// shapedWriter is a writer under the relay's rate limits. Every byte it
// writes counts in the monthly volume.
type shapedWriter struct {
	w     io.Writer
	ctx   context.Context
	sh    *shaper
	lims  []*rate.Limiter
	chunk int // the most written at once: the smallest burst
}

func (s *shapedWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		n := min(len(p), s.chunk)
		if err := s.sh.wait(s.ctx, n, s.lims); err != nil {
			return written, err
		}
		m, err := s.w.Write(p[:n])
		written += m
		s.sh.sent.Add(int64(m))
		s.sh.vol.add(int64(m))
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Flush flushes the writer underneath, if it can.
func (s *shapedWriter) Flush() error {
	if f, ok := s.w.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// volume counts the bytes sent in the current calendar month (UTC), in
// memory only.
type volume struct {
	limit int64 // 0: no cap
	now   func() time.Time

	mu    sync.Mutex // guards the fields below
	month int        // year*12 + month of used
	used  int64
}

func monthOf(t time.Time) int {
	t = t.UTC()
	return t.Year()*12 + int(t.Month()) - 1
}

// rollLocked starts a new count when the month changed.
func (v *volume) rollLocked() {
	if m := monthOf(v.now()); m != v.month {
		v.month, v.used = m, 0
	}
}

func (v *volume) add(n int64) {
	v.mu.Lock()
	v.rollLocked()
	v.used += n
	v.mu.Unlock()
}

// state returns the bytes sent this month, whether the cap is reached,
// and when the count starts again.
func (v *volume) state() (used int64, reached bool, resets time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rollLocked()
	y, m := v.month/12, time.Month(v.month%12+1)
	return v.used, v.limit > 0 && v.used >= v.limit, time.Date(y, m+1, 1, 0, 0, 0, 0, time.UTC)
}

// capReached reports whether the monthly volume cap is reached.
func (s *Server) capReached() bool {
	_, reached, _ := s.shaper.vol.state()
	return reached
}

// refuseOverCap answers a consumer request with 503 and Retry-After when
// the monthly cap is reached, before any byte of body, and reports
// whether it did.
func (s *Server) refuseOverCap(w http.ResponseWriter) bool {
	_, reached, resets := s.shaper.vol.state()
	if !reached {
		return false
	}
	s.shaper.capRefused.Add(1)
	s.stats.refused("monthly_cap")
	w.Header().Set("Retry-After", fmt.Sprint(max(1, int64(resets.Sub(s.cfg.Now()).Seconds()))))
	writeError(w, proto.Errorf(proto.StatusUnavailable, "%s", s.capReason(resets)))
	return true
}

func (s *Server) capReason(resets time.Time) string {
	return fmt.Sprintf("this relay's monthly volume cap (%d bytes) is reached; it takes no new work until %s", s.shaper.vol.limit, resets.Format(time.RFC3339))
}

// RateStats counts what the volunteer controls did (ratelimit.go).
type RateStats struct {
	MaxRate            int64 `json:"max_rate"`              // bytes per second sent, all together; 0: unlimited
	MaxRatePerConsumer int64 `json:"max_rate_per_consumer"` // bytes per second to one consumer; 0: unlimited
	Sent               int64 `json:"sent"`                  // bytes sent under the limits since start
	Waits              int64 `json:"waits"`                 // writes that waited for a rate limiter
	DelayedBytes       int64 `json:"delayed_bytes"`         // bytes of those writes
	DelayMS            int64 `json:"delay_ms"`              // delay the limiters imposed, summed over writes
	// MonthlyCap is the cap on bytes sent per calendar month (UTC), 0 for
	// none; MonthlyUsed the bytes sent this month, since start (the count
	// is in memory only); CapReached whether the cap is reached, and
	// CapResets when the count starts again.
	MonthlyCap  int64     `json:"monthly_cap"`
	MonthlyUsed int64     `json:"monthly_used"`
	CapReached  bool      `json:"cap_reached"`
	CapResets   time.Time `json:"cap_resets"`
	CapRefused  int64     `json:"cap_refused"` // requests and parts refused for the cap
}

func (s *Server) rateStats() RateStats {
	sh := s.shaper
	used, reached, resets := sh.vol.state()
	return RateStats{
		MaxRate:            s.cfg.MaxRate,
		MaxRatePerConsumer: s.cfg.MaxRatePerConsumer,
		Sent:               sh.sent.Load(),
		Waits:              sh.waits.Load(),
		DelayedBytes:       sh.delayedBytes.Load(),
		DelayMS:            time.Duration(sh.waited.Load()).Milliseconds(),
		MonthlyCap:         s.cfg.MonthlyCap,
		MonthlyUsed:        used,
		CapReached:         reached,
		CapResets:          resets,
		CapRefused:         sh.capRefused.Load(),
	}
}

func (c *Config) rateAttrs() []any {
	return []any{"max_rate", c.MaxRate, "max_rate_per_consumer", c.MaxRatePerConsumer, "monthly_cap", c.MonthlyCap}
}
