package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Limits of a Register message and of a relay's reported mesh view.
const (
	maxRelayAddrs   = 64
	maxRelayAddrLen = 1024
	maxPeerIDLen    = 128
	maxRelayPeers   = 1024
)

// relayConn is a registered relay: its register stream, one reader (the
// stream handler) and one writer goroutine fed by send.
type relayConn struct {
	id       string // libp2p peer id, authenticated by libp2p
	st       mesh.Stream
	log      *slog.Logger
	stats    *counters
	httpURL  string
	addrs    []string // as the relay reported them (status only)
	dirAddrs []string // what the directory carries: own, public, bounded (directoryAddrs)
	budget   int64
	window   int
	public   bool     // reachable directly: consumers and publishers use httpURL
	tunnel   bool     // serves the HTTP tunnel into relays behind NAT connected to it
	uploads  []string // the upload protocols it serves, known ones only (servedUploads)
	nat      string   // as the relay reported it
	observed string   // the relay's address on its register connection
	ip       string   // the IP of observed, for MaxRelaysPerIP
	class    string   // ClassOperator or ClassVolunteer
	label    string   // the name in its admission token, if any
	draining bool     // the relay said it is shutting down (Heartbeat.Draining); guarded by Server.mu
	needRate *rate.Limiter

	// Used by the stream's reader only (checkNeedToken):
	needToken  string       // the last read token whose signature verified
	needClaims proto.Claims // its claims

	readChecks atomic.Int32 // read checks asking the auth webhook (readcheck.go)

	send     chan proto.Message
	done     chan struct{} // closed by fail
	failOnce sync.Once
	why      string // why the relay was dropped; read after done is closed

	// Guarded by Server.mu:
	registered      time.Time
	lastSeen        time.Time
	streams         int
	reserved        int64
	served          int64
	ordersSinceBeat int
	needs           map[uint64]*order      // by need id; nil once the relay is removed
	mesh            *proto.MeshStatus      // the relay's last reported view of the mesh
	meshPeers       map[string]string      // mesh.Peers by id: their connection kinds
	entryOrders     int                    // outstanding orders that push to this relay
	exitForwards    int                    // outstanding orders for its needs that another entry forwards to it
	entryParts      int64                  // parts carried as entry, settled by need_done
	entryBytes      int64                  // their bytes
	rates           map[string]float64     // measured throughput from each entry relay to it as exit, bytes per ms (entry.go)
	avoided         map[string]time.Time   // entry relays it last named in Need.Avoid, and when
	entryFailedAt   time.Time              // when an order through it last failed
	reorders        int64                  // its needs that asked to avoid a failed entry
	verified        bool                   // its http_url answered the last challenge
	verifiedAt      time.Time              // when the last challenge ended
	verifyErr       string                 // why the last challenge failed
	sentDir         map[string]string      // the directory as sent to it: id -> fingerprint
	capReached      bool                   // its heartbeat says its monthly volume cap is reached: choose it for no new work
	held            map[proto.ItemID]*item // items it holds (held.go); nil once the relay is removed
}

// fail drops the relay: the writer resets the stream, which ends the
// reader. It never blocks (a stream reset can wait for a congested
// connection, so only the writer does it), and is safe to call many times
// from any goroutine, also while holding Server.mu.
func (r *relayConn) fail(why string) {
	r.failOnce.Do(func() {
		r.why = why
		close(r.done)
	})
}

func (r *relayConn) isDone() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// enqueue queues m for the relay without blocking. A relay whose queue is
// full is too slow and is dropped. It reports whether m was queued.
func (r *relayConn) enqueue(m proto.Message) bool {
	if r.isDone() {
		return false
	}
	select {
	case r.send <- m:
		return true
	default:
		r.stats.reject(RejectQueueFull)
		r.fail("send queue full")
		return false
	}
}

// writeLoop writes queued messages to the stream until the relay fails,
// then resets the stream.
func (r *relayConn) writeLoop(timeout time.Duration) {
	defer r.st.Reset()
	for {
		select {
		case <-r.done:
			return
		case m := <-r.send:
			r.st.SetWriteDeadline(time.Now().Add(timeout))
			if err := proto.WriteMsg(r.st, m); err != nil {
				r.fail(fmt.Sprintf("write %s: %v", m.MessageType(), err))
				return
			}
		}
	}
}

// handleRegister serves one register stream for its whole life: the
// handshake, then the relay's messages until the stream ends or the relay
// is dropped. It resets the stream when done.
func (s *Server) handleRegister(st mesh.Stream) {
	if !s.goStart() {
		st.Reset()
		return
	}
	defer s.wg.Done()
	peer := st.RemotePeer()
	log := s.log.With("relay", peer)
	reg, err := s.readRegister(st)
	if err != nil {
		s.refuseRelay(st, RejectRegister, proto.StatusMalformed, err)
		return
	}
	class, label, err := s.admitRelay(peer, reg)
	if err != nil {
		s.refuseRelay(st, RejectAdmission, proto.StatusForbidden, err)
		return
	}
	now := s.cfg.Now()
	if err := checkRelayClock(reg.Time, now, s.cfg.ClockSkew); err != nil {
		s.refuseRelay(st, RejectRelayClock, proto.StatusExpired, err)
		return
	}
	r := &relayConn{
		id:         peer,
		st:         st,
		log:        log,
		stats:      &s.stats,
		httpURL:    strings.TrimRight(reg.HTTPURL, "/"),
		addrs:      reg.Addrs,
		dirAddrs:   s.directoryAddrs(peer, reg.Addrs),
		budget:     reg.Budget,
		window:     reg.Window,
		public:     reg.Public,
		tunnel:     reg.Tunnel,
		uploads:    servedUploads(reg.Uploads),
		nat:        natOrUnknown(reg.NAT),
		observed:   st.RemoteAddr(),
		ip:         mesh.AddrIP(st.RemoteAddr()),
		class:      class,
		label:      label,
		needRate:   rate.NewLimiter(rate.Limit(s.cfg.NeedRate), s.cfg.NeedBurst),
		send:       make(chan proto.Message, s.cfg.RelayQueue),
		done:       make(chan struct{}),
		registered: now,
		lastSeen:   now,
		needs:      make(map[uint64]*order),
		sentDir:    make(map[string]string),
		held:       make(map[proto.ItemID]*item),
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Reset()
		return
	}
	if reason, err := s.relayCapsLocked(peer, r.ip); err != nil {
		s.mu.Unlock()
		s.refuseRelay(st, reason, proto.StatusOverLimit, err)
		return
	}
	r.send <- &proto.Registered{Relay: peer, HeartbeatMS: int(s.cfg.HeartbeatInterval / time.Millisecond), Observed: r.observed, Origins: s.cfg.AllowedOrigins, ReadChecks: new(s.cfg.AuthWebhook != "")}
	if old := s.relays[peer]; old != nil {
		old.fail("replaced by a new registration")
	}
	s.relays[peer] = r
	s.sendDirectoryLocked(r, s.directoryLocked())
	s.markDirectoryLocked()
	s.mu.Unlock()
	s.stats.relaysRegistered.Add(1)
	log.Info("relay registered", "class", r.class, "label", r.label, "http_url", r.httpURL, "public", r.public, "nat", r.nat, "observed", r.observed, "addrs", len(r.addrs), "dir_addrs", len(r.dirAddrs), "conn", st.Kind(), "budget", r.budget, "window", r.window)
	s.publishRecord(r, reg.Record)
	if r.public && s.goStart() {
		go s.verifyLoop(r)
	}

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		r.writeLoop(s.cfg.WriteTimeout)
	}()
	err = s.readRelay(r)
	switch {
	case r.isDone():
	case errors.Is(err, io.EOF):
		r.fail("stream closed")
	default:
		r.fail(fmt.Sprintf("read: %v", err))
	}
	<-writerDone
	s.removeRelay(r)
}

// checkRelayClock refuses a relay whose clock (Register.Time, Unix
// milliseconds; 0 if it sent none) is further than skew from now. Such a
// relay would take expired tokens for valid or fresh ones for expired.
func checkRelayClock(relayMS int64, now time.Time, skew time.Duration) error {
	if relayMS == 0 {
		return nil
	}
	d := time.UnixMilli(relayMS).Sub(now)
	if d.Abs() <= skew {
		return nil
	}
	dir := "ahead of"
	if d < 0 {
		dir = "behind"
	}
	return fmt.Errorf("relay clock %s the rendezvous's by %v, more than the %v allowed: check the clock (NTP)", dir, d.Abs().Round(time.Second), skew)
}

// readRegister reads and checks the first message of a register stream.
func (s *Server) readRegister(st mesh.Stream) (*proto.Register, error) {
	stop := context.AfterFunc(s.ctx, func() { st.Reset() })
	defer stop()
	st.SetDeadline(time.Now().Add(registerTimeout))
	m, err := proto.ReadMsg(st, s.cfg.MaxMessage)
	if err != nil {
		return nil, fmt.Errorf("read register: %w", err)
	}
	reg, ok := m.(*proto.Register)
	if !ok {
		return nil, fmt.Errorf("first message is %q, want register", m.MessageType())
	}
	if reg.Version != proto.Version {
		return nil, fmt.Errorf("protocol version %d, want %d", reg.Version, proto.Version)
	}
	if err := checkBaseURL(reg.HTTPURL, "http", "https"); err != nil {
		return nil, fmt.Errorf("http_url %.80q: %w", reg.HTTPURL, err)
	}
	if len(reg.Addrs) > maxRelayAddrs {
		return nil, fmt.Errorf("%d addrs, limit %d", len(reg.Addrs), maxRelayAddrs)
	}
	for _, a := range reg.Addrs {
		if len(a) > maxRelayAddrLen {
			return nil, fmt.Errorf("addr of %d bytes, limit %d", len(a), maxRelayAddrLen)
		}
	}
	if err := st.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear deadline: %w", err)
	}
	return reg, nil
}

// relayPushURL returns the WebSocket push URL of relay r: its own when
// it may be reached directly (directLocked), else a tunnel's, a public
// relay's before the rendezvous's (reachLocked). The caller holds s.mu.
func (s *Server) relayPushURL(r *relayConn, secure bool) string {
	return pushURL(s.relayBase(r, secure))
}

// relayBase returns the base URL under which consumers reach relay r's
// API: its own when it may be reached directly (directLocked), else a
// tunnel's, a public relay's before the rendezvous's (reachLocked). The
// caller holds s.mu.
func (s *Server) relayBase(r *relayConn, secure bool) string {
	base, _ := s.reachLocked(r, secure)
	return base
}

// pushURL returns the WebSocket push URL of a relay with HTTP base URL
// base.
func pushURL(base string) string {
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest + "/v1/push"
	}
	return "ws://" + strings.TrimPrefix(base, "http://") + "/v1/push"
}

// pushScheme returns the WebSocket scheme matching HTTP scheme httpScheme.
func pushScheme(httpScheme string) string {
	if httpScheme == "https" {
		return "wss"
	}
	return "ws"
}

// readRelay handles the relay's messages until its stream fails.
func (s *Server) readRelay(r *relayConn) error {
	for {
		m, err := proto.ReadMsg(r.st, s.cfg.MaxMessage)
		if err != nil {
			return err
		}

		switch m := m.(type) {
		case *proto.Heartbeat:
			s.heartbeat(r, m)
			s.publishRecord(r, m.Record)
		case *proto.Need:
			s.handleNeed(r, m)
		case *proto.NeedCancel:
			s.handleNeedCancel(r, m)
		case *proto.NeedDone:
			s.handleNeedDone(r, m)
		case *proto.Hold: // held.go
			s.handleHold(r, m)
		case *proto.HoldDone:
			s.handleHoldDone(r, m)
		case *proto.Release:
			s.handleRelease(r, m)
			s.clipLost(r, m.ID) // clip.go: re-replicate
		case *proto.LiveAnnounce:
			s.liveAnnounce(r, m) // live.go
		case *proto.ReadCheck:
			s.handleReadCheck(r, m) // readcheck.go
		default:
			s.stats.reject(RejectUnexpectedType)
			r.log.Debug("unexpected message from relay", "type", m.MessageType())
		}
	}
}

// heartbeat records a relay's load and its view of the mesh.
func (s *Server) heartbeat(r *relayConn, hb *proto.Heartbeat) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r.lastSeen = now
	r.streams = max(hb.Streams, 0)
	r.reserved = min(max(hb.Reserved, 0), max(r.budget, 0))
	r.served = max(hb.Served, 0)
	r.ordersSinceBeat = 0
	r.draining = hb.Draining
	r.capReached = hb.CapReached
	if ms := hb.Mesh; ms != nil && checkMesh(ms) == nil {
		dirAddrs := s.directoryAddrs(r.id, ms.Addrs.Advertised)
		changed := !slices.Equal(dirAddrs, r.dirAddrs) || natOrUnknown(ms.NAT) != r.nat
		r.mesh = ms
		r.meshPeers = make(map[string]string, len(ms.Peers))
		for _, p := range ms.Peers {
			r.meshPeers[p.ID] = p.Kind
		}
		r.nat = natOrUnknown(ms.NAT)
		r.addrs = ms.Addrs.Advertised
		r.dirAddrs = dirAddrs
		if changed {
			s.markDirectoryLocked()
		}
	} else if ms != nil {
		s.stats.reject(RejectRegister)
		r.log.Debug("mesh view ignored", "err", checkMesh(ms))
	}
}

// checkMesh checks the bounds of a relay's reported mesh view.
func checkMesh(ms *proto.MeshStatus) error {
	if len(ms.Addrs.Advertised) > maxRelayAddrs || len(ms.Addrs.Observed) > maxRelayAddrs {
		return fmt.Errorf("over %d addrs", maxRelayAddrs)
	}
	for _, a := range append(slices.Clone(ms.Addrs.Advertised), ms.Addrs.Observed...) {
		if len(a) > maxRelayAddrLen {
			return fmt.Errorf("addr of %d bytes, limit %d", len(a), maxRelayAddrLen)
		}
	}
	if len(ms.Peers) > maxRelayPeers {
		return fmt.Errorf("%d peers, limit %d", len(ms.Peers), maxRelayPeers)
	}
	for _, p := range ms.Peers {
		if len(p.ID) > maxPeerIDLen || len(p.Kind) > 16 {
			return errors.New("peer entry too long")
		}
	}
	return nil
}

func natOrUnknown(nat string) string {
	switch nat {
	case proto.NATPublic, proto.NATCone, proto.NATSymmetric:
		return nat
	}
	return proto.NATUnknown
}

// IsRelay reports whether peer is a registered relay. The rendezvous's
// circuit relay service admits only those.
func (s *Server) IsRelay(peer string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.relays[peer]
	return r != nil && !r.isDone()
}

// removeRelay forgets a failed relay and cancels its orders at the
// publishers.
func (s *Server) removeRelay(r *relayConn) {
	s.mu.Lock()
	current := s.relays[r.id] == r // not replaced by a new registration
	if current {
		delete(s.relays, r.id)
		s.markDirectoryLocked()
	}
	for _, o := range r.needs {
		if o.sess.enqueue(&proto.Cancel{Order: o.id}) {
			s.stats.cancels.Add(1)
		}
		if _, ok := s.orders[o.id]; ok && o.entry != nil {
			o.entry.entryOrders--
		}
		delete(s.orders, o.id)
		delete(o.sess.orders, o.id)
	}
	r.needs, r.exitForwards = nil, 0
	lost := s.clipsHeldLocked(r) // clip.go
	s.holderLeftLocked(r, s.cfg.Now())
	s.replicateClipsLocked(lost, s.cfg.Now())
	s.mu.Unlock()
	s.stats.relaysDead.Add(1)
	if current {
		s.withdrawRecord(r.id)
	}
	r.log.Info("relay dropped", "reason", r.why)
}

// peerDisconnected drops the relay of a peer whose last connection closed.
func (s *Server) peerDisconnected(peer string) {
	s.mu.Lock()
	r := s.relays[peer]
	s.mu.Unlock()
	if r != nil {
		r.fail("peer disconnected")
	}
}

// relayAlive reports whether r may be chosen at time now.
func (s *Server) relayAlive(r *relayConn, now time.Time) bool {
	return r.needs != nil && !r.isDone() && now.Sub(r.lastSeen) <= s.cfg.DeadAfter
}

// anyCappedLocked reports whether a live relay reached its monthly volume
// cap (relay --monthly-cap): why none may be chosen, when none is.
func (s *Server) anyCappedLocked(now time.Time) bool {
	for _, r := range s.relays {
		if r.capReached && s.relayAlive(r, now) {
			return true
		}
	}
	return false
}

// liveRelaysLocked returns the live relays sorted by id.
func (s *Server) liveRelaysLocked(now time.Time) []*relayConn {
	var out []*relayConn
	for _, r := range s.relays {
		if s.relayAlive(r, now) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *relayConn) int { return strings.Compare(a.id, b.id) })
	return out
}

// pickRelayLocked returns the exit relay for an HTTP consumer: a live
// relay (of class operator when operatorOnly) that the consumer reaches
// directly whenever one is live, so that no item byte crosses a tunnel
// (issue 10); else one reached through a public relay's tunnel; only when
// neither is live, one behind the rendezvous's own tunnel. Within the best
// reach it takes the least loaded relay (relayLoadLocked), breaking ties
// round robin. The relays in avoid are left out unless no other is live
// (an avoided relay beats none). A non-empty upload (a proto.Upload*
// protocol) keeps only the relays that serve it. It returns nil when none
// is live.
func (s *Server) pickRelayLocked(now time.Time, operatorOnly bool, avoid map[string]bool, secure bool, upload string) *relayConn {
	var best []*relayConn
	bestReach, bestLoad := Reach(0), 0
	hosts := s.tunnelHostsLocked()
	for _, r := range s.liveRelaysLocked(now) {
		if operatorOnly && r.class != ClassOperator || avoid[r.id] || r.draining || r.capReached ||
			upload != "" && !slices.Contains(r.uploads, upload) {
			continue
		}
		_, reach := s.reachAmongLocked(r, hosts, secure)
		load := relayLoadLocked(r)
		switch {
		case best == nil || reach < bestReach || reach == bestReach && load < bestLoad:
			best, bestReach, bestLoad = []*relayConn{r}, reach, load
		case reach == bestReach && load == bestLoad:
			best = append(best, r)
		}
	}
	if len(best) == 0 {
		if len(avoid) > 0 {
			return s.pickRelayLocked(now, operatorOnly, nil, secure, upload) // an avoided relay beats none
		}
		return nil
	}
	r := best[s.rr%uint64(len(best))]
	s.rr++
	return r
}

// pushRelays lists the live relays a client may be ordered to push to, for
// its Welcome: the relays it reaches directly first, then those behind a
// public relay's tunnel, then those behind the rendezvous's tunnel, by id
// within each, so that a publisher that connects ahead to the first ones
// keeps its bytes off the rendezvous (issue 10).
func (s *Server) pushRelays(secure bool) []proto.RelayInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	type entry struct {
		info  proto.RelayInfo
		reach Reach
	}
	var es []entry
	hosts := s.tunnelHostsLocked()
	for _, r := range s.liveRelaysLocked(s.cfg.Now()) {
		if r.draining {
			continue
		}
		base, reach := s.reachAmongLocked(r, hosts, secure)
		es = append(es, entry{proto.RelayInfo{ID: r.id, PushURL: pushURL(base)}, reach})
	}
	slices.SortStableFunc(es, func(a, b entry) int { return int(a.reach) - int(b.reach) })
	out := make([]proto.RelayInfo, 0, len(es)) // "relays": [] rather than null
	for _, e := range es {
		out = append(out, e.info)
	}
	return out
}

// relayOrigins returns the origins under which browsers reach the live
// relays (a relay's own, or this server's for a tunnelled relay) and of
// their push WebSockets, for the web app's Content-Security-Policy.
func (s *Server) relayOrigins() (httpOrigins, wsOrigins []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.liveRelaysLocked(s.cfg.Now()) {
		if u, err := url.Parse(s.relayBase(r, false)); err == nil && u.Host != "" {
			httpOrigins = append(httpOrigins, u.Scheme+"://"+u.Host)
			wsOrigins = append(wsOrigins, pushScheme(u.Scheme)+"://"+u.Host)
		}
	}
	slices.Sort(httpOrigins)
	slices.Sort(wsOrigins)
	return slices.Compact(httpOrigins), slices.Compact(wsOrigins)
}

// relayStatus is one relay in GET /v1/status. The embedded MeshStatus is
// the relay's own view (nat, addrs, peers, holepunch), as in the relay's
// /v1/status.
type relayStatus struct {
	ID      string `json:"id"`
	HTTPURL string `json:"http_url"`
	Public  bool   `json:"public"` // claims to be reachable directly
	Reach   string `json:"reach"`  // the base URL consumers are sent to
	// ReachKind says how: direct, relay-tunnel (a public relay's tunnel)
	// or rendezvous-tunnel.
	ReachKind string `json:"reach_kind"`
	// Tunnel says the relay serves the tunnel into relays behind NAT.
	Tunnel bool `json:"tunnel,omitempty"`
	// Uploads are the upload protocols the relay serves.
	Uploads []string `json:"uploads"`
	// Class is the relay's trust class: operator or volunteer.
	Class string `json:"class,omitempty"`
	// Verified says its http_url answered the last challenge (only
	// relays that claim public are challenged); VerifyError says why not.
	Verified    bool   `json:"verified"`
	VerifyError string `json:"verify_error,omitempty"`
	proto.MeshStatus
	Conn     string `json:"conn"` // how the rendezvous reaches it: direct, hole-punched, relayed
	Streams  int    `json:"streams"`
	Reserved int64  `json:"reserved"`
	Served   int64  `json:"served"`
	Orders   int    `json:"orders"` // orders outstanding
	// The mesh (issue 10): what the relay carried as an entry (parts
	// settled by need_done) and the orders outstanding through it; as an
	// exit, the rates measured from each entry relay in MB/s, and how
	// many of its needs asked to avoid a failed entry.
	Entry    entryStatus        `json:"entry"`
	Rates    map[string]float64 `json:"rates_mbps"`
	Reorders int64              `json:"reorders"`
	LastSeen string             `json:"last_seen"`
	Alive    bool               `json:"alive"`
	// Local is false for a relay known only through the cluster's gossip;
	// Home is the cluster member it is registered with (empty when the
	// rendezvous is not in a cluster), Expires when its record lapses.
	Local   bool   `json:"local"`
	Home    string `json:"home,omitempty"`
	Expires string `json:"expires,omitempty"`
	// Draining says the relay is shutting down: it is chosen neither as
	// exit nor as entry for new work (proto.Heartbeat.Draining).
	Draining bool `json:"draining,omitempty"`
	// CapReached says the relay reached its monthly volume cap: it is
	// chosen for no new work.
	CapReached bool `json:"cap_reached,omitempty"`
}

// relayStatuses lists the live relays.
func (s *Server) relayStatuses(now time.Time) []relayStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []relayStatus{}
	hosts := s.tunnelHostsLocked()
	for _, r := range s.liveRelaysLocked(now) {
		ms := proto.MeshStatus{
			NAT:   r.nat,
			Addrs: proto.MeshAddrs{Observed: []string{r.observed}, Advertised: slices.Clone(r.addrs)},
			Peers: []proto.MeshPeer{},
		}
		if r.mesh != nil {
			ms = *r.mesh
			if len(ms.Addrs.Observed) == 0 {
				ms.Addrs.Observed = []string{r.observed}
			}
			if ms.Peers == nil {
				ms.Peers = []proto.MeshPeer{}
			}
		}
		base, reach := s.reachAmongLocked(r, hosts, false)
		out = append(out, relayStatus{
			ID:          r.id,
			HTTPURL:     r.httpURL,
			Public:      r.public,
			Reach:       base,
			ReachKind:   reach.String(),
			Tunnel:      r.tunnel,
			Uploads:     r.uploads,
			Class:       r.class,
			Verified:    r.verified,
			VerifyError: r.verifyErr,
			MeshStatus:  ms,
			Conn:        r.st.Kind().String(),
			Streams:     r.streams,
			Draining:    r.draining,
			Reserved:    r.reserved,
			Served:      r.served,
			Orders:      len(r.needs),
			Entry:       entryStatus{Parts: r.entryParts, Bytes: r.entryBytes, Orders: r.entryOrders},
			Rates:       ratesMBps(r),
			Reorders:    r.reorders,
			LastSeen:    r.lastSeen.UTC().Format(time.RFC3339Nano),
			Alive:       true,
			Local:       true,
			CapReached:  r.capReached,
		})
	}
	return out
}

// RelayGate admits registered relays to the circuit relay service of the
// rendezvous's libp2p node, and nobody else. The node exists before the
// Server, so the gate is created first, passed to the node as
// mesh.RelayService.Allow, and bound to the server after New.
type RelayGate struct{ srv atomic.Pointer[Server] }

// Allow reports whether peer is a relay registered with the bound server.
func (g *RelayGate) Allow(peer string) bool {
	s := g.srv.Load()
	return s != nil && s.IsRelay(peer)
}

// Bind makes g admit the relays of s.
func (g *RelayGate) Bind(s *Server) { g.srv.Store(s) }

// MeshViews returns the mesh view of every live relay, by relay id: what
// each reported of its NAT, addresses, peers and hole punches.
func (s *Server) MeshViews() map[string]proto.MeshStatus {
	out := make(map[string]proto.MeshStatus)
	for _, r := range s.relayStatuses(s.cfg.Now()) {
		out[r.ID] = r.MeshStatus
	}
	return out
}

// servedUploads is what a relay says it serves (Register.Uploads), known
// protocols only, each once, in proto.UploadProtocols order: a relay's
// list is bounded by what the rendezvous knows, whatever it sent.
func servedUploads(said []string) []string {
	served := []string{}
	for _, p := range proto.UploadProtocols {
		if slices.Contains(said, p) {
			served = append(served, p)
		}
	}
	return served
}
