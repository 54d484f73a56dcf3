package rendezvous

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Limits of a Register message.
const (
	maxRelayAddrs   = 64
	maxRelayAddrLen = 1024
)

// relayConn is a registered relay: its register stream, one reader (the
// stream handler) and one writer goroutine fed by send.
type relayConn struct {
	id      string // libp2p peer id, authenticated by libp2p
	st      mesh.Stream
	log     *slog.Logger
	stats   *counters
	httpURL string
	pushURL string
	addrs   []string
	budget  int64
	window  int

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
	needs           map[uint64]*order // by need id; nil once the relay is removed
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
		s.stats.reject(RejectRegister)
		log.Warn("relay registration refused", "err", err)
		st.Reset()
		return
	}
	now := s.cfg.Now()
	r := &relayConn{
		id:         peer,
		st:         st,
		log:        log,
		stats:      &s.stats,
		httpURL:    strings.TrimRight(reg.HTTPURL, "/"),
		addrs:      reg.Addrs,
		budget:     reg.Budget,
		window:     reg.Window,
		send:       make(chan proto.Message, s.cfg.RelayQueue),
		done:       make(chan struct{}),
		registered: now,
		lastSeen:   now,
		needs:      make(map[uint64]*order),
	}
	r.pushURL = pushURL(r.httpURL)
	r.send <- &proto.Registered{Relay: peer, HeartbeatMS: int(s.cfg.HeartbeatInterval / time.Millisecond)}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		st.Reset()
		return
	}
	if old := s.relays[peer]; old != nil {
		old.fail("replaced by a new registration")
	}
	s.relays[peer] = r
	s.mu.Unlock()
	s.stats.relaysRegistered.Add(1)
	log.Info("relay registered", "http_url", r.httpURL, "addrs", len(r.addrs), "conn", st.Kind(), "budget", r.budget, "window", r.window)

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

// pushURL returns the WebSocket push URL of a relay with HTTP base URL
// base.
func pushURL(base string) string {
	if rest, ok := strings.CutPrefix(base, "https://"); ok {
		return "wss://" + rest + "/v1/push"
	}
	return "ws://" + strings.TrimPrefix(base, "http://") + "/v1/push"
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
		case *proto.Need:
			s.handleNeed(r, m)
		case *proto.NeedCancel:
			s.handleNeedCancel(r, m)
		default:
			s.stats.reject(RejectUnexpectedType)
			r.log.Debug("unexpected message from relay", "type", m.MessageType())
		}
	}
}

// heartbeat records a relay's load.
func (s *Server) heartbeat(r *relayConn, hb *proto.Heartbeat) {
	now := s.cfg.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	r.lastSeen = now
	r.streams = max(hb.Streams, 0)
	r.reserved = max(hb.Reserved, 0)
	r.served = max(hb.Served, 0)
	r.ordersSinceBeat = 0
}

// removeRelay forgets a failed relay and cancels its orders at the
// publishers.
func (s *Server) removeRelay(r *relayConn) {
	s.mu.Lock()
	if s.relays[r.id] == r {
		delete(s.relays, r.id)
	}
	for _, o := range r.needs {
		if o.sess.enqueue(&proto.Cancel{Order: o.id}) {
			s.stats.cancels.Add(1)
		}
		delete(s.orders, o.id)
		delete(o.sess.orders, o.id)
	}
	r.needs = nil
	s.mu.Unlock()
	s.stats.relaysDead.Add(1)
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

// pickRelayLocked returns the least loaded live relay, breaking ties round
// robin, or nil when none is live. A relay's load is its open part streams
// at the last heartbeat plus the orders given to it since.
func (s *Server) pickRelayLocked(now time.Time) *relayConn {
	var best []*relayConn
	bestLoad := 0
	for _, r := range s.liveRelaysLocked(now) {
		load := r.streams + r.ordersSinceBeat
		switch {
		case best == nil || load < bestLoad:
			best, bestLoad = []*relayConn{r}, load
		case load == bestLoad:
			best = append(best, r)
		}
	}
	if len(best) == 0 {
		return nil
	}
	r := best[s.rr%uint64(len(best))]
	s.rr++
	return r
}

// relayStatus is one relay in GET /v1/status.
type relayStatus struct {
	ID       string   `json:"id"`
	Addrs    []string `json:"addrs"`
	HTTPURL  string   `json:"http_url"`
	Conn     string   `json:"conn"` // how the rendezvous reaches it: direct, hole-punched, relayed
	Streams  int      `json:"streams"`
	Reserved int64    `json:"reserved"`
	Served   int64    `json:"served"`
	Orders   int      `json:"orders"` // orders outstanding
	LastSeen string   `json:"last_seen"`
	Alive    bool     `json:"alive"`
}

// relayStatuses lists the live relays.
func (s *Server) relayStatuses(now time.Time) []relayStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []relayStatus{}
	for _, r := range s.liveRelaysLocked(now) {
		out = append(out, relayStatus{
			ID:       r.id,
			Addrs:    append([]string{}, r.addrs...),
			HTTPURL:  r.httpURL,
			Conn:     r.st.Kind().String(),
			Streams:  r.streams,
			Reserved: r.reserved,
			Served:   r.served,
			Orders:   len(r.needs),
			LastSeen: r.lastSeen.UTC().Format(time.RFC3339Nano),
			Alive:    true,
		})
	}
	return out
}
