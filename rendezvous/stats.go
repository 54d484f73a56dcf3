package rendezvous

import (
	"maps"
	"sync"
	"sync/atomic"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Reasons a control message or connection is rejected, as counted in
// Stats.Rejected.
const (
	RejectMalformed      = "malformed"       // undecodable JSON
	RejectUnknownType    = "unknown_type"    // a type this version does not know
	RejectUnexpectedType = "unexpected_type" // a known type a client must not send
	RejectBinary         = "binary"          // a binary frame on the control channel
	RejectTooLarge       = "too_large"       // a message over MaxMessage
	RejectQueueFull      = "queue_full"      // the peer read too slowly
	RejectOrigin         = "origin"          // Origin not allowed
	RejectSubprotocol    = "subprotocol"     // meshup.v1 not offered
	RejectSessionLimit   = "session_limit"   // MaxSessions reached
	RejectPublish        = "publish"         // publish refused
	RejectUnpublish      = "unpublish"       // unpublish refused
	RejectRegister       = "register"        // relay handshake refused
	RejectRecord         = "record"          // relay's signed directory record refused (cluster)
	RejectAdmission      = "admission"       // relay not admitted (no or bad credential)
	RejectRelayCap       = "relay_cap"       // MaxRelays reached
	RejectRelayClock     = "relay_clock"     // relay's clock off by more than ClockSkew
	RejectRelayIPCap     = "relay_ip_cap"    // MaxRelaysPerIP reached
	RejectAddrPrivate    = "addr_private"    // relay address not public, left out of the directory
	RejectAddrForeign    = "addr_foreign"    // relay address naming another peer, left out
	RejectAddrBounds     = "addr_bounds"     // relay address malformed, too long or too many
	RejectChallenge      = "challenge"       // relay's http_url failed its challenge
	RejectNeedToken      = "need_token"      // need without a read token covering it
	RejectNeedRate       = "need_rate"       // need over the relay's or the item's rate
	RejectPlaintext      = "plaintext"       // plaintext item refused to a volunteer relay
	RejectStatusToken    = "status_token"    // GET /v1/status with a wrong bearer token
	RejectPublisherBusy  = "publisher_busy"  // need refused: the publisher's send queue is nearly full
)

// Stats is a snapshot of the server's counters. Counters only grow; gauges
// (Relays, Sessions, Items, ItemsOnline, Orders) are current values.
type Stats struct {
	RelaysRegistered uint64 // register handshakes accepted
	RelaysDead       uint64 // relays dropped (stream ended, silent, replaced, disconnected)
	Relays           int    // relays live now

	SessionsOpened uint64 // control sessions accepted
	Sessions       int    // control sessions open now

	Publishes   uint64 // items published
	Reclaims    uint64 // items taken back online with their owner secret
	Unpublishes uint64 // items withdrawn
	ItemsPurged uint64 // offline items dropped after ItemTTL
	Items       int    // items held now
	ItemsOnline int    // items whose publisher is connected

	Redirects    uint64 // GET /v1/items answered with a redirect to a relay
	OrdersSent   uint64 // orders sent to publishers
	OrdersFailed uint64 // order_failed received from publishers
	Cancels      uint64 // cancels sent to publishers
	Orders       int    // orders outstanding now

	Directories    uint64 // relay directories sent (one per relay change)
	Tunnelled      uint64 // HTTP requests tunnelled to relays behind NAT
	TunnelFailures uint64 // tunnelled requests that could not reach the relay
	Forwarded      uint64 // orders whose entry relay is not the exit relay
	PartsDone      uint64 // orders settled by need_done: the part arrived whole
	Reorders       uint64 // needs asking to avoid an entry that failed them
	URLsVerified   uint64 // relay http_urls that passed a challenge (after not having passed)

	// Circuit relay service of the rendezvous's libp2p node.
	Circuit mesh.RelayStats

	STUNRequests uint64 // datagrams read on the STUN ports
	STUNAnswered uint64 // STUN Binding requests answered
	// STUNDropped counts STUN datagrams not answered, by reason (the
	// STUNDrop constants).
	STUNDropped map[string]uint64

	// Held counts the items relays hold for legacy uploads (held.go).
	Held HeldStats
	// Clips counts clips' store orders and holders (clip.go).
	Clips ClipStats

	// NeedFailed counts need_failed messages sent to relays by status.
	NeedFailed map[proto.Status]uint64
	// Rejected counts refused control messages and connections by reason
	// (the Reject constants).
	Rejected map[string]uint64
}

// counters are the server's monotonic counters; gauges are computed in
// Stats.
type counters struct {
	relaysRegistered atomic.Uint64
	relaysDead       atomic.Uint64
	sessionsOpened   atomic.Uint64
	publishes        atomic.Uint64
	reclaims         atomic.Uint64
	unpublishes      atomic.Uint64
	itemsPurged      atomic.Uint64
	redirects        atomic.Uint64
	ordersSent       atomic.Uint64
	ordersFailed     atomic.Uint64
	cancels          atomic.Uint64
	directories      atomic.Uint64
	tunnelled        atomic.Uint64
	tunnelFailures   atomic.Uint64
	forwarded        atomic.Uint64
	partsDone        atomic.Uint64
	reorders         atomic.Uint64
	verified         atomic.Uint64
	heldCounters     // held items and uploads (held.go)
	clipCounters     // clips (clip.go)

	mu         sync.Mutex // guards the fields below
	needFailed map[proto.Status]uint64
	rejected   map[string]uint64
}

func (c *counters) needFailedInc(st proto.Status) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.needFailed == nil {
		c.needFailed = make(map[proto.Status]uint64)
	}
	c.needFailed[st]++
}

func (c *counters) reject(reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rejected == nil {
		c.rejected = make(map[string]uint64)
	}
	c.rejected[reason]++
}

// Stats returns a snapshot of the server's counters. It is safe to call
// concurrently, also after Close. The counters are read under s.mu, which
// the scheduler holds from sending a message to counting it: whoever has
// an order (a publisher, a test) finds it in OrdersSent.
func (s *Server) Stats() Stats {
	c := &s.stats
	now := s.cfg.Now()
	s.mu.Lock()
	st := Stats{
		RelaysRegistered: c.relaysRegistered.Load(),
		RelaysDead:       c.relaysDead.Load(),
		SessionsOpened:   c.sessionsOpened.Load(),
		Publishes:        c.publishes.Load(),
		Reclaims:         c.reclaims.Load(),
		Unpublishes:      c.unpublishes.Load(),
		ItemsPurged:      c.itemsPurged.Load(),
		Redirects:        c.redirects.Load(),
		OrdersSent:       c.ordersSent.Load(),
		OrdersFailed:     c.ordersFailed.Load(),
		Cancels:          c.cancels.Load(),
		Directories:      c.directories.Load(),
		Tunnelled:        c.tunnelled.Load(),
		TunnelFailures:   c.tunnelFailures.Load(),
		Forwarded:        c.forwarded.Load(),
		PartsDone:        c.partsDone.Load(),
		Reorders:         c.reorders.Load(),
		URLsVerified:     c.verified.Load(),
		Held:             c.heldStats(),
		Clips:            c.clipStats(),
	}
	for _, r := range s.relays {
		if s.relayAlive(r, now) {
			st.Relays++
		}
	}
	st.Sessions = len(s.sessions)
	st.Items = len(s.items)
	for _, it := range s.items {
		if it.online() {
			st.ItemsOnline++
		}
	}
	st.Orders = len(s.orders)
	s.mu.Unlock()

	st.Circuit = s.cfg.Node.RelayStats()
	c.mu.Lock()
	st.NeedFailed = maps.Clone(c.needFailed)
	st.Rejected = maps.Clone(c.rejected)
	c.mu.Unlock()
	if st.NeedFailed == nil {
		st.NeedFailed = map[proto.Status]uint64{}
	}
	if st.Rejected == nil {
		st.Rejected = map[string]uint64{}
	}

	ss := s.stunStats()
	st.STUNRequests, st.STUNAnswered, st.STUNDropped = ss.Requests, ss.Answered, ss.Dropped
	return st
}
