package rendezvous

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/meshup/meshup/proto"
)

// Entry choice (issue 10). An exit relay asks for one part at a time, and
// keeps Prefetch parts of a consumer's request open at once (read-ahead).
// Each need is ordered through the entry relay with the best score:
//
//	score = rate × path × reach × health / (1 + outstanding orders)
//
// where:
//
//   - rate is the throughput measured from the entry to this exit, an
//     exponentially weighted average over the parts that took that way
//     (need_done: bytes over the time from first to last byte). A way not
//     yet measured gets the average of the exit's measured ways, so that
//     every entry is tried.
//   - path is how the part reaches the exit. The exit itself needs no hop
//     (1); a direct or hole-punched mesh connection costs a hop (pathMesh);
//     a relayed circuit crosses a third node (pathRelayed). A candidate
//     that neither the exit nor itself reports a mesh connection to (in
//     their heartbeats) is left out: the entry would have to dial the exit
//     while the publisher waits.
//   - reach is how the publisher reaches the entry (reachLocked). A relay
//     it can reach directly counts 1; one behind a public relay's tunnel
//     costs that relay a hop (reachRelayTunnel); one reached through the
//     rendezvous tunnel puts the rendezvous on the data path (reachTunnel).
//   - health: an entry through which an order failed in the last
//     entryFailHold, or that this exit named in Need.Avoid in that time,
//     counts entryFailPenalty, so the next parts go elsewhere while it
//     recovers or is declared dead.
//   - outstanding orders are the orders sent through the entry and not yet
//     settled by need_done, a failure or a cancel. Dividing by them spreads
//     the read-ahead of one consumer, and the load of many, over the
//     entries in proportion to their rates.
//
// The relays an exit names in Need.Avoid (it saw them die or stall on
// these bytes) are left out unless no other candidate is left.
//
// Trust: rates are kept per exit, from that exit's own reports, and each
// sample is bounded by the part's length and maxRateSample: an exit that
// lies about its rates only steers its own parts, never another exit's.
const (
	pathMesh         = 0.8
	pathRelayed      = 0.3
	reachRelayTunnel = 0.5
	reachTunnel      = 0.25
	entryFailPenalty = 0.1
	entryFailHold    = 30 * time.Second
	rateAlpha        = 0.3         // weight of a new sample in the average
	minRateSample    = 256 << 10   // bytes: smaller parts measure latency, not rate
	maxRateSample    = 100_000_000 // bytes per millisecond (100 GB/s): a bound on lies
)

// entryScore is the score of a candidate entry relay (see above).
type entryScore struct {
	rate     float64 // bytes per millisecond; 0 when not measured
	path     float64
	reach    float64
	health   float64
	inflight int
}

func (e entryScore) value(defaultRate float64) float64 {
	rate := e.rate
	if rate == 0 {
		rate = defaultRate
	}
	return rate * e.path * e.reach * e.health / float64(1+e.inflight)
}

// pathLocked returns the path factor from candidate c to exit, and false
// when c has no known way to reach the exit.
func (s *Server) pathLocked(c, exit *relayConn) (float64, bool) {
	if c == exit {
		return 1, true
	}
	kind := meshKind(exit, c.id)
	if kind == "" {
		kind = meshKind(c, exit.id)
	}
	switch kind {
	case proto.PeerDirect, proto.PeerHolePunched:
		return pathMesh, true
	case proto.PeerRelayed:
		return pathRelayed, true
	}
	return 0, false
}

// meshKind returns how relay r reported its connection to peer, or "".
func meshKind(r *relayConn, peer string) string {
	return r.meshPeers[peer]
}

// pickEntryLocked chooses the entry relay for need n of exit, for item it.
func (s *Server) pickEntryLocked(it *item, exit *relayConn, n *proto.Need, now time.Time) (*relayConn, *proto.Error) {
	if it.via != "" {
		if it.via == exit.id {
			return exit, nil
		}
		entry := s.relays[it.via]
		if entry == nil || !s.relayAlive(entry, now) {
			return nil, proto.Errorf(proto.StatusUnavailable, "entry relay %.80s, pinned by the publisher, is not live", it.via)
		}
		return entry, nil
	}
	avoid := map[string]bool{}
	for _, id := range n.Avoid[:min(len(n.Avoid), proto.MaxAvoid)] {
		avoid[id] = true
		// The exit saw this entry fail: its next parts avoid it for a
		// while too. Kept per exit, so an exit's claims steer only its
		// own parts.
		if exit.avoided == nil {
			exit.avoided = map[string]time.Time{}
		}
		if _, ok := exit.avoided[id]; ok || len(exit.avoided) < maxRelayPeers {
			exit.avoided[id] = now
		}
	}
	type cand struct {
		r     *relayConn
		score entryScore
	}
	var cands []cand
	var measured, rateSum float64
	hosts := s.tunnelHostsLocked()
	// A publisher on https reaches http relays through a tunnel only.
	secure := false
	for _, m := range it.members {
		secure = secure || m.secure
	}
	anyAvoided := false
	for _, c := range s.liveRelaysLocked(now) {
		// A relay draining or past its monthly cap (relay --monthly-cap)
		// forwards nothing more, but still takes its own needs' parts:
		// they serve responses it had already begun.
		if !it.anyRelay() && c.class != ClassOperator || (c.draining || c.capReached) && c != exit {
			continue
		}
		path, ok := s.pathLocked(c, exit)
		if !ok {
			continue
		}
		if avoid[c.id] {
			anyAvoided = true
			continue
		}
		rate := exit.rates[c.id]
		sc := entryScore{rate: rate, path: path, reach: 1, health: 1, inflight: c.entryOrders}
		switch _, reach := s.reachAmongLocked(c, hosts, secure); reach {
		case ReachRelayTunnel:
			sc.reach = reachRelayTunnel
		case ReachRendezvousTunnel:
			sc.reach = reachTunnel
		}
		if recent(c.entryFailedAt, now) || recent(exit.avoided[c.id], now) {
			sc.health = entryFailPenalty
		}
		if rate > 0 {
			measured++
			rateSum += rate
		}
		cands = append(cands, cand{c, sc})
	}
	if len(cands) == 0 {
		if anyAvoided && len(avoid) > 0 {
			// Every way left failed once: try them again rather than fail
			// the consumer.
			n2 := *n
			n2.Avoid = nil
			return s.pickEntryLocked(it, exit, &n2, now)
		}
		if !it.anyRelay() {
			return nil, proto.Errorf(proto.StatusForbidden, "a plaintext item goes through operator relays only, and none can reach the exit")
		}
		return nil, proto.Errorf(proto.StatusUnavailable, "no entry relay can reach the exit")
	}
	defaultRate := 1.0
	if measured > 0 {
		defaultRate = rateSum / measured
	}
	var best []*relayConn
	bestScore := -1.0
	for _, c := range cands {
		v := c.score.value(defaultRate)
		switch {
		case v > bestScore*(1+1e-9):
			best, bestScore = []*relayConn{c.r}, v
		case v >= bestScore*(1-1e-9):
			best = append(best, c.r)
		}
	}
	e := best[s.rr%uint64(len(best))]
	s.rr++
	return e, nil
}

// recent reports whether t is within entryFailHold before now.
func recent(t, now time.Time) bool {
	return !t.IsZero() && now.Sub(t) < entryFailHold
}

// handleNeedDone settles the order for relay r's need: every byte arrived.
// It counts the part for its entry relay and item, and updates r's
// measured rate from that entry.
func (s *Server) handleNeedDone(r *relayConn, d *proto.NeedDone) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o := r.needs[d.Need]
	if o == nil {
		r.log.Debug("need_done for unknown need", "need", d.Need)
		return
	}
	bytes := min(max(d.Bytes, 0), o.len)
	if e := o.entry; e != nil {
		e.entryParts++
		e.entryBytes += bytes
		if bytes >= minRateSample && d.MS > 0 {
			sample := min(float64(bytes)/float64(d.MS), maxRateSample)
			if r.rates == nil {
				r.rates = map[string]float64{}
			}
			if old, ok := r.rates[e.id]; ok {
				r.rates[e.id] = old + rateAlpha*(sample-old)
			} else if len(r.rates) < maxRelayPeers {
				r.rates[e.id] = sample
			}
		}
	}
	if it := s.items[o.item]; it != nil {
		it.carried.add(o.entry, bytes)
	}
	s.stats.partsDone.Add(1)
	s.forgetOrderLocked(o)
}

// carried counts what the mesh carried for one item (issue 10, status).
type carried struct {
	parts    int64
	bytes    int64
	reorders int64            // needs that asked to avoid a failed entry
	entries  map[string]int64 // parts by entry relay id
}

func (c *carried) add(entry *relayConn, bytes int64) {
	c.parts++
	c.bytes += bytes
	if entry == nil {
		return
	}
	if c.entries == nil {
		c.entries = map[string]int64{}
	}
	if _, ok := c.entries[entry.id]; ok || len(c.entries) < maxRelayPeers {
		c.entries[entry.id]++
	}
}

// entryStatus is a relay's work as an entry, in GET /v1/status.
type entryStatus struct {
	Parts  int64 `json:"parts"`
	Bytes  int64 `json:"bytes"`
	Orders int   `json:"orders"`
}

// ratesMBps returns r's measured rates from each entry, in MB/s.
func ratesMBps(r *relayConn) map[string]float64 {
	out := make(map[string]float64, len(r.rates))
	for id, v := range r.rates {
		out[id] = math.Round(v/10) / 100 // bytes per ms = kB/s; two decimals of MB/s
	}
	return out
}

// transferStatus is one item's traffic in GET /v1/status. Item ids are
// capabilities, so only a prefix too short to name the item is shown.
type transferStatus struct {
	Item     string `json:"item"`  // the id's first 6 characters
	Parts    int64  `json:"parts"` // parts delivered whole
	Bytes    int64  `json:"bytes"`
	Reorders int64  `json:"reorders"`
	// ReadAhead is the item's orders outstanding now: the parts being
	// carried, over every exit.
	ReadAhead int              `json:"read_ahead"`
	Entries   map[string]int64 `json:"entries"`    // parts by entry relay id
	Members   int              `json:"publishers"` // publishers online (several in a swarm)
}

// maxTransfers bounds the items listed in GET /v1/status.
const maxTransfers = 100

// transferStatusesLocked lists the items the mesh carried or is carrying,
// the busiest first, at most maxTransfers.
func (s *Server) transferStatusesLocked() []transferStatus {
	readAhead := map[proto.ItemID]int{}
	for _, o := range s.orders {
		readAhead[o.item]++
	}
	out := []transferStatus{}
	for id, it := range s.items {
		c := &it.carried
		if c.parts == 0 && readAhead[id] == 0 {
			continue
		}
		out = append(out, transferStatus{
			Item: id.String()[:6], Parts: c.parts, Bytes: c.bytes, Reorders: c.reorders,
			ReadAhead: readAhead[id], Entries: maps.Clone(c.entries), Members: len(it.members),
		})
	}
	slices.SortFunc(out, func(a, b transferStatus) int {
		return cmp.Or(cmp.Compare(b.ReadAhead, a.ReadAhead), cmp.Compare(b.Bytes, a.Bytes), strings.Compare(a.Item, b.Item))
	})
	return out[:min(len(out), maxTransfers)]
}

// shortID returns the last characters of a peer id, for log lines and
// reasons.
func shortID(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}
