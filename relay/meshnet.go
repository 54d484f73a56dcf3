package relay

import (
	"cmp"
	"context"
	"hash/fnv"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// The relay's place in the mesh: what it learnt of its NAT, the addresses
// it advertises, its circuit reservations, and its connections to the other
// relays the rendezvous names.

// meshState is guarded by its own mutex; the relay's hot paths never take
// it.
type meshState struct {
	mu       sync.Mutex     // guards the fields below
	nat      string         // one of the proto.NAT* constants
	report   mesh.NATReport // the last STUN probe
	stun     string         // the STUN-mapped address, as a multiaddr
	natAddrs []string       // public addresses derived from STUN or --public
	observed []string       // this relay's address as the rendezvous sees it
	circuits []string       // circuit addresses of the reservation on the rendezvous
	// pubCircuits are the circuit addresses of reservations on public
	// relays, by relay id. While there are any, they are advertised
	// instead of circuits: relayed traffic then crosses public relays,
	// not the rendezvous (issue 10).
	pubCircuits map[string][]string
	directory   []proto.PeerInfo
	retry       map[string]peerRetry // peers whose last dial failed
	punch       map[string]peerRetry // relayed peers: when to try a hole punch again
	wake        chan struct{}        // cap 1; a new directory arrived
	resWake     chan struct{}        // cap 1; the same, for the reservation loop
	// dirReady is closed when the first directory of the current register
	// stream arrives (resetDirectory makes a new one): the reservation loop
	// waits for it, so that it does not take the rendezvous's circuit for
	// want of knowing the public relays.
	dirReady chan struct{}
}

type peerRetry struct {
	at      time.Time
	backoff time.Duration
}

func (m *meshState) init() {
	m.nat = proto.NATUnknown
	m.retry = make(map[string]peerRetry)
	m.punch = make(map[string]peerRetry)
	m.wake = make(chan struct{}, 1)
	m.resWake = make(chan struct{}, 1)
	m.dirReady = make(chan struct{})
	m.pubCircuits = make(map[string][]string)
}

// natType returns the relay's NAT type.
func (s *Server) natType() string {
	s.mesh.mu.Lock()
	defer s.mesh.mu.Unlock()
	return s.mesh.nat
}

// isPublic reports whether publishers and consumers can reach the relay's
// HTTP API and libp2p addresses directly.
func (s *Server) isPublic() bool {
	return s.natType() == proto.NATPublic // Config.PublicIP makes it so from New on
}

// setObserved records addresses of this relay as others see it.
func (s *Server) setObserved(addrs ...string) {
	s.mesh.mu.Lock()
	defer s.mesh.mu.Unlock()
	for _, a := range addrs {
		if a != "" && !slices.Contains(s.mesh.observed, a) {
			s.mesh.observed = append(s.mesh.observed, a)
		}
	}
	if len(s.mesh.observed) > 8 {
		s.mesh.observed = s.mesh.observed[len(s.mesh.observed)-8:]
	}
}

// setCircuits records the circuit addresses of the relay's reservations:
// on the rendezvous (rdv) and on public relays (pub, by relay id), and
// advertises them.
func (s *Server) setCircuits(rdv []string, pub map[string][]string) {
	s.mesh.mu.Lock()
	s.mesh.circuits = rdv
	s.mesh.pubCircuits = pub
	s.mesh.mu.Unlock()
	s.advertise()
}

// advertise tells the node which addresses to advertise on top of its
// listen addresses: the NAT's public addresses, and the circuits of
// public relays, or the rendezvous's circuit when it holds none.
func (s *Server) advertise() {
	s.mesh.mu.Lock()
	addrs := slices.Clone(s.mesh.natAddrs)
	if len(s.mesh.pubCircuits) > 0 {
		for _, id := range slices.Sorted(maps.Keys(s.mesh.pubCircuits)) {
			addrs = append(addrs, s.mesh.pubCircuits[id]...)
		}
	} else {
		addrs = append(addrs, s.mesh.circuits...)
	}
	s.mesh.mu.Unlock()
	s.cfg.Node.SetAdvertised(addrs)
}

// maxDirectory bounds the relay's directory of peers.
const maxDirectory = 4096

// resetDirectory empties the directory of peers: each register stream
// starts from an empty one, and dirReady waits for its first message. It
// wakes nothing: an empty directory is not news to the loops.
func (s *Server) resetDirectory() {
	s.mesh.mu.Lock()
	s.mesh.directory = nil
	s.mesh.dirReady = make(chan struct{})
	s.mesh.mu.Unlock()
}

// directoryReady returns a channel closed once the current register
// stream's first directory has arrived.
func (s *Server) directoryReady() <-chan struct{} {
	s.mesh.mu.Lock()
	defer s.mesh.mu.Unlock()
	return s.mesh.dirReady
}

// applyDirectory applies a Peers message: a whole directory, or a delta
// (entries added or changed, ids removed). Entries naming this relay are
// skipped, and the directory is bounded by maxDirectory.
func (s *Server) applyDirectory(m *proto.Peers) {
	s.mesh.mu.Lock()
	byID := make(map[string]int, len(s.mesh.directory))
	dir := s.mesh.directory
	if !m.Delta {
		dir = nil
	}
	dir = slices.Clone(dir)
	for i, p := range dir {
		byID[p.ID] = i
	}
	for _, p := range m.Peers {
		if p.ID == s.id {
			continue
		}
		if i, ok := byID[p.ID]; ok {
			dir[i] = p
		} else if len(dir) < maxDirectory {
			byID[p.ID] = len(dir)
			dir = append(dir, p)
		}
	}
	if len(m.Removed) > 0 {
		gone := make(map[string]bool, len(m.Removed))
		for _, id := range m.Removed {
			gone[id] = true
		}
		dir = slices.DeleteFunc(dir, func(p proto.PeerInfo) bool { return gone[p.ID] })
	}
	s.mesh.directory = dir
	select {
	case <-s.mesh.dirReady:
	default:
		close(s.mesh.dirReady)
	}
	s.mesh.mu.Unlock()
	s.wakePeering()
}

func (s *Server) wakePeering() {
	for _, c := range []chan struct{}{s.mesh.wake, s.mesh.resWake} {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// meshStatus returns the relay's view of the mesh.
func (s *Server) meshStatus() proto.MeshStatus {
	n := s.cfg.Node
	s.mesh.mu.Lock()
	observed := slices.Clone(s.mesh.observed)
	if s.mesh.stun != "" {
		observed = append(observed, s.mesh.stun)
	}
	ms := proto.MeshStatus{
		NAT: s.mesh.nat,
		Addrs: proto.MeshAddrs{
			Observed:   observed,
			Advertised: n.Addrs(),
		},
		Peers: []proto.MeshPeer{},
	}
	known := make(map[string]bool, len(s.mesh.directory))
	for _, p := range s.mesh.directory {
		known[p.ID] = true
	}
	s.mesh.mu.Unlock()
	if ms.Addrs.Observed == nil {
		ms.Addrs.Observed = []string{}
	}
	for _, p := range n.Peers() {
		if !known[p.ID] {
			continue // the rendezvous, or a peer no longer in the directory
		}
		ms.Peers = append(ms.Peers, proto.MeshPeer{
			ID:             p.ID,
			Kind:           p.Kind.String(),
			TimeToDirectMS: p.TimeToDirect.Milliseconds(),
		})
	}
	hp := n.HolePunchStats()
	ms.HolePunch = proto.HolePunchStats{Attempts: hp.Attempts, Successes: hp.Successes, Failures: hp.Failures}
	return ms
}

// dialPlan decides whether this relay (self, behind selfNAT) dials peer p,
// and at which addresses. Exactly one side of each pair dials, so that two
// relays never race two connections (and two hole punches) at each other:
//
//   - a relay behind NAT dials a public one at its direct addresses;
//   - a public relay leaves relays behind NAT to dial it;
//   - between two public relays, or two relays behind NAT, the one with the
//     smaller id dials; behind NAT it dials only the peer's circuit
//     addresses, and the peer, receiving a relayed connection, starts the
//     hole punch (DCUtR). Dialing the peer's public address first would
//     not connect (its NAT drops unsolicited packets) and would leave a
//     conntrack entry on our own NAT that breaks the punch that follows.
func dialPlan(self, selfNAT string, p proto.PeerInfo) (addrs []string, dial bool) {
	if p.ID == self {
		return nil, false
	}
	selfPublic, peerPublic := selfNAT == proto.NATPublic, p.NAT == proto.NATPublic
	var direct, circuit []string
	for _, a := range p.Addrs {
		if strings.Contains(a, "/p2p-circuit") {
			circuit = append(circuit, a)
		} else {
			direct = append(direct, a)
		}
	}
	switch {
	case peerPublic && !selfPublic:
		return direct, len(direct) > 0
	case selfPublic && !peerPublic:
		return nil, false
	case self > p.ID:
		return nil, false
	case selfPublic: // both public
		return direct, len(direct) > 0
	default: // both behind NAT
		return circuit, len(circuit) > 0
	}
}

// dropStaleCircuit closes this relay's connection to peer when it is
// relayed through a node that peer no longer advertises a circuit on,
// while addrs (the dial plan) has circuits through others: the next round
// of peerLoop dials one of those. A connection made over the rendezvous's
// circuit before a public relay took the reservations would otherwise
// keep the relay-to-relay traffic on the rendezvous for its whole life
// (issue 10: the rendezvous off the data path). Only the side that dials
// drops, so that the two never race.
func (s *Server) dropStaleCircuit(peer string, addrs []string) {
	hops := map[string]bool{}
	for _, a := range addrs {
		if hop := circuitHop(a); hop != "" {
			hops[hop] = true
		}
	}
	if len(hops) == 0 {
		return
	}
	via := s.cfg.Node.RelayedVia(peer)
	if len(via) == 0 {
		return
	}
	for _, v := range via {
		if hops[v] {
			return
		}
	}
	s.log.Info("moving a relayed connection to a current circuit", "peer", shortID(peer), "via", shortID(via[0]))
	s.stats.circuitMoves.Add(1)
	s.cfg.Node.ClosePeer(peer)
}

// circuitHop returns the relay's id in a circuit address
// (.../p2p/RELAY/p2p-circuit/...), or "".
func circuitHop(addr string) string {
	before, _, ok := strings.Cut(addr, "/p2p-circuit")
	if !ok {
		return ""
	}
	i := strings.LastIndex(before, "/p2p/")
	if i < 0 {
		return ""
	}
	return before[i+len("/p2p/"):]
}

// peerLoop keeps connections to the directory's peers until ctx is done.
func (s *Server) peerLoop(ctx context.Context) {
	tick := time.NewTicker(s.cfg.PeerInterval)
	defer tick.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	dialing := make(map[string]bool)
	var dmu sync.Mutex
	for {
		s.mesh.mu.Lock()
		dir := slices.Clone(s.mesh.directory)
		nat := s.mesh.nat
		s.mesh.mu.Unlock()
		now := time.Now()
		s.retryHolePunches(ctx, dir, nat, &wg, now)
		for _, p := range dir {
			addrs, ok := dialPlan(s.id, nat, p)
			if ok && s.cfg.Node.Connected(p.ID) {
				s.dropStaleCircuit(p.ID, addrs)
				continue
			}
			if !ok || s.cfg.Node.Connected(p.ID) {
				continue
			}
			s.mesh.mu.Lock()
			r := s.mesh.retry[p.ID]
			s.mesh.mu.Unlock()
			dmu.Lock()
			busy := dialing[p.ID]
			if !busy && !now.Before(r.at) {
				dialing[p.ID] = true
			}
			dmu.Unlock()
			if busy || now.Before(r.at) {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.dialPeer(ctx, p.ID, addrs)
				dmu.Lock()
				delete(dialing, p.ID)
				dmu.Unlock()
			}()
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-s.mesh.wake:
		}
	}
}

// First and longest wait between hole punch retries to a peer that stays
// relayed.
const (
	punchRetryFirst = 5 * time.Second
	punchRetryMax   = 2 * time.Minute
)

// retryHolePunches starts a hole punch to each peer behind NAT that is
// still reached only through a relay, when this relay is the side that
// did not dial (the side go-libp2p punches from). go-libp2p punches once,
// when the relayed connection comes in, and that attempt fails when the
// peer did not yet know its public address (a relay that just started).
// Symmetric NATs fail every time; the backoff keeps that cheap.
func (s *Server) retryHolePunches(ctx context.Context, dir []proto.PeerInfo, nat string, wg *sync.WaitGroup, now time.Time) {
	if nat == proto.NATPublic {
		return
	}
	relayed := make(map[string]bool)
	for _, p := range s.cfg.Node.Peers() {
		relayed[p.ID] = p.Kind == mesh.Relayed
	}
	s.mesh.mu.Lock()
	defer s.mesh.mu.Unlock()
	for _, p := range dir {
		_, dials := dialPlan(s.id, nat, p)
		if dials || p.NAT == proto.NATPublic || !relayed[p.ID] {
			delete(s.mesh.punch, p.ID)
			continue
		}
		r, ok := s.mesh.punch[p.ID]
		if !ok {
			s.mesh.punch[p.ID] = peerRetry{at: now.Add(punchRetryFirst), backoff: punchRetryFirst}
			continue
		}
		if now.Before(r.at) {
			continue
		}
		r.backoff = min(2*r.backoff, punchRetryMax)
		r.at = now.Add(24 * time.Hour) // until the attempt ends
		s.mesh.punch[p.ID] = r
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			err := s.cfg.Node.HolePunch(pctx, p.ID)
			cancel()
			s.mesh.mu.Lock()
			if r, ok := s.mesh.punch[p.ID]; ok {
				r.at = time.Now().Add(r.backoff)
				s.mesh.punch[p.ID] = r
			}
			s.mesh.mu.Unlock()
			s.log.Info("hole punch retried", "peer", shortID(p.ID), "err", err, "next_in", r.backoff)
		}()
	}
}

// dialPeer connects to one peer, backing off after a failure.
func (s *Server) dialPeer(ctx context.Context, id string, addrs []string) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	_, err := s.cfg.Node.Connect(ctx, addrs)
	s.mesh.mu.Lock()
	defer s.mesh.mu.Unlock()
	if err == nil {
		delete(s.mesh.retry, id)
		s.log.Info("connected to mesh peer", "peer", shortID(id))
		return
	}
	r := s.mesh.retry[id]
	r.backoff = min(max(2*r.backoff, time.Second), time.Minute)
	r.at = time.Now().Add(r.backoff/2 + rand.N(r.backoff/2+1))
	s.mesh.retry[id] = r
	s.log.Info("mesh peer unreachable", "peer", shortID(id), "err", err, "retry_in", r.backoff)
}

// Timings of the reservation loop.
const (
	// firstDirectoryWait is how long a relay behind NAT waits for its
	// first directory before it reserves on the rendezvous, so that it
	// reserves on the public relays the directory names first. (A
	// reservation on the rendezvous taken for want of a directory is
	// advertised until a public relay's replaces it, and peers that dial
	// it meanwhile carry parts across the rendezvous.)
	firstDirectoryWait = 2 * time.Second
	// reserveRetryFirst and reserveRetryMax bound the backoff after a
	// reservation failed. The first retry comes soon: a public relay
	// refuses a relay that registered a moment ago until the directory
	// naming it reaches the public relay (DirectoryInterval, 1s).
	reserveRetryFirst = time.Second
	reserveRetryMax   = 5 * time.Minute
	// rdvFallbackFailures is how many times in a row every public relay
	// must have refused or failed before the relay reserves on the
	// rendezvous.
	rdvFallbackFailures = 3
)

// held is one reservation the relay holds, or tries to.
type held struct {
	rsv      mesh.Reservation // zero while none is held
	next     time.Time        // when to reserve (renew, or retry) again
	backoff  time.Duration    // after failures; 0 after a success
	failures int              // in a row
}

// reserveLoop holds circuit reservations while ctx lasts, so that peers
// reach this relay behind its NAT: on up to Assist.Reservations public
// relays of the directory (reservationTargets), and on the rendezvous
// (rdvAddrs) only while it holds none of those, so that relayed traffic
// crosses public relays rather than the rendezvous (issue 10).
func (s *Server) reserveLoop(ctx context.Context, rdvAddrs []string) {
	defer s.setCircuits(nil, map[string][]string{})
	select {
	case <-ctx.Done():
		return
	case <-s.directoryReady():
	case <-time.After(firstDirectoryWait):
	}
	pub := make(map[string]*held)
	var rdv held
	for {
		now := time.Now()
		targets := s.reservationTargets(pub, now)
		for id, h := range pub {
			if _, ok := targets[id]; !ok && h.backoff == 0 {
				delete(pub, id) // a failed one stays, to keep its backoff
			}
		}
		for id, addrs := range targets {
			h := pub[id]
			if h == nil {
				h = &held{}
				pub[id] = h
			}
			if now.Before(h.next) {
				continue
			}
			s.reserve(ctx, h, id, addrs)
		}
		circuits := make(map[string][]string)
		for id, h := range pub {
			if _, ok := targets[id]; ok && len(h.rsv.Addrs) > 0 && time.Now().Before(h.rsv.Expires) {
				circuits[id] = h.rsv.Addrs
			}
		}
		// The rendezvous's circuit is the last resort: taken when no
		// public relay is in the directory, or all of them failed a few
		// times in a row.
		fallback := true
		for id := range targets {
			if pub[id].failures < rdvFallbackFailures {
				fallback = false
			}
		}
		if len(circuits) == 0 && fallback && !time.Now().Before(rdv.next) {
			s.reserve(ctx, &rdv, "rendezvous", rdvAddrs)
		}
		var rdvCircuits []string
		if time.Now().Before(rdv.rsv.Expires) {
			rdvCircuits = rdv.rsv.Addrs
		}
		s.setCircuits(rdvCircuits, circuits)

		wake := time.Now().Add(30 * time.Second)
		for id := range targets {
			wake = minTime(wake, pub[id].next)
		}
		if len(circuits) == 0 && fallback {
			wake = minTime(wake, rdv.next)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.mesh.resWake:
		case <-time.After(max(time.Until(wake), 100*time.Millisecond)):
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// reserve reserves (or renews) a slot on the circuit relay at addrs and
// records the outcome in h.
func (s *Server) reserve(ctx context.Context, h *held, name string, addrs []string) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	rsv, err := s.cfg.Node.Reserve(rctx, addrs)
	cancel()
	now := time.Now()
	if err != nil {
		h.rsv = mesh.Reservation{}
		h.failures++
		h.backoff = min(max(2*h.backoff, reserveRetryFirst), reserveRetryMax)
		h.next = now.Add(h.backoff)
		if ctx.Err() == nil {
			s.log.Warn("circuit reservation failed", "on", shortID(name), "err", err, "retry_in", h.backoff)
		}
		return
	}
	if len(h.rsv.Addrs) == 0 {
		s.log.Info("circuit reservation held", "on", shortID(rsv.Relay), "expires", rsv.Expires)
	}
	h.rsv, h.backoff, h.failures = rsv, 0, 0
	h.next = now.Add(max(time.Until(rsv.Expires)*3/4, time.Second))
}

// reservationTargets returns the public relays of the directory to hold
// reservations on, with their direct addresses: up to
// Assist.Reservations, in an order of their own for each relay (a hash of
// both ids), so that relays behind NAT spread over the public relays;
// those whose last attempt failed (in held) come after the others.
func (s *Server) reservationTargets(held map[string]*held, now time.Time) map[string][]string {
	n := s.cfg.Assist.Reservations
	out := make(map[string][]string)
	if n <= 0 {
		return out
	}
	type cand struct {
		id     string
		addrs  []string
		score  uint64
		failed bool
	}
	var cs []cand
	s.mesh.mu.Lock()
	for _, p := range s.mesh.directory {
		if p.NAT != proto.NATPublic || p.ID == s.id {
			continue
		}
		var direct []string
		for _, a := range p.Addrs {
			if !strings.Contains(a, "/p2p-circuit") {
				direct = append(direct, a)
			}
		}
		if len(direct) == 0 {
			continue
		}
		f := fnv.New64a()
		f.Write([]byte(s.id))
		f.Write([]byte{0})
		f.Write([]byte(p.ID))
		h := held[p.ID]
		cs = append(cs, cand{p.ID, direct, f.Sum64(), h != nil && h.backoff > 0 && now.Before(h.next)})
	}
	s.mesh.mu.Unlock()
	slices.SortFunc(cs, func(a, b cand) int {
		if a.failed != b.failed {
			if a.failed {
				return 1
			}
			return -1
		}
		return cmp.Compare(b.score, a.score)
	})
	for _, c := range cs[:min(n, len(cs))] {
		out[c.id] = c.addrs
	}
	return out
}
