package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// Defaults of RelayService. go-libp2p's own defaults (2 minutes and 128 KiB
// per circuit, 2 KiB buffers) are meant for hole punching only; meshup
// relays data over circuits when hole punching fails (symmetric NATs), so
// its limits are sized for data, and granted only to peers Allow admits.
const (
	DefaultCircuitDuration = time.Hour
	DefaultCircuitData     = 4 << 30 // bytes per direction
	DefaultMaxReservations = 1024
	DefaultMaxCircuits     = 64 // per peer
	DefaultCircuitBuffer   = 64 << 10
)

// RelayService configures a node's circuit relay v2 service. Zero values
// mean the defaults above.
type RelayService struct {
	// Allow admits a peer to reserve a slot and to open circuits.
	// Required: a relay open to anyone would carry anyone's traffic.
	Allow func(peer string) bool
	// CircuitDuration limits the life of one relayed connection.
	// Defaults to 1 hour.
	CircuitDuration time.Duration
	// CircuitData limits the bytes relayed in each direction of one
	// relayed connection. Defaults to 4 GiB.
	CircuitData int64
	// MaxReservations limits active reservations. Defaults to 1024.
	MaxReservations int
	// MaxCircuits limits relayed connections per peer. Defaults to 64.
	MaxCircuits int
	// BufferSize is the copy buffer of each relayed connection, in bytes.
	// Defaults to 64 KiB.
	BufferSize int
}

func (c *RelayService) setDefaults() {
	if c.CircuitDuration == 0 {
		c.CircuitDuration = DefaultCircuitDuration
	}
	if c.CircuitData == 0 {
		c.CircuitData = DefaultCircuitData
	}
	if c.MaxReservations == 0 {
		c.MaxReservations = DefaultMaxReservations
	}
	if c.MaxCircuits == 0 {
		c.MaxCircuits = DefaultMaxCircuits
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultCircuitBuffer
	}
}

// LogAttrs returns the service's limits for the start-up log.
func (c RelayService) LogAttrs() []slog.Attr {
	c.setDefaults()
	return []slog.Attr{
		slog.Duration("circuit_duration", c.CircuitDuration),
		slog.Int64("circuit_data", c.CircuitData),
		slog.Int("max_reservations", c.MaxReservations),
		slog.Int("max_circuits_per_peer", c.MaxCircuits),
		slog.Int("circuit_buffer", c.BufferSize),
	}
}

func newRelayService(h host.Host, cfg RelayService, t *relayTracer) (*relayv2.Relay, error) {
	if cfg.Allow == nil {
		return nil, fmt.Errorf("mesh: relay service: Allow is required")
	}
	cfg.setDefaults()
	rc := relayv2.DefaultResources()
	rc.Limit = &relayv2.RelayLimit{Duration: cfg.CircuitDuration, Data: cfg.CircuitData}
	rc.MaxReservations = cfg.MaxReservations
	rc.MaxCircuits = cfg.MaxCircuits
	rc.BufferSize = cfg.BufferSize
	r, err := relayv2.New(h,
		relayv2.WithResources(rc),
		relayv2.WithACL(acl{cfg.Allow}),
		relayv2.WithMetricsTracer(t),
	)
	if err != nil {
		return nil, fmt.Errorf("mesh: start relay service: %w", err)
	}
	return r, nil
}

// acl admits the peers Allow names, as reservers and as circuit sources.
type acl struct{ allow func(string) bool }

func (a acl) AllowReserve(p peer.ID, _ ma.Multiaddr) bool { return a.allow(p.String()) }

func (a acl) AllowConnect(src peer.ID, _ ma.Multiaddr, _ peer.ID) bool {
	return a.allow(src.String())
}

// RelayStats count the work of a node's circuit relay service.
type RelayStats struct {
	Reservations       int64 // active
	ReservationsDenied int64
	Circuits           int64 // open relayed connections
	CircuitsTotal      int64
	CircuitsDenied     int64
	Bytes              int64 // relayed, both directions
}

// relayTracer meters the relay service (relayv2.MetricsTracer).
type relayTracer struct {
	reservations       atomic.Int64
	reservationsDenied atomic.Int64
	circuits           atomic.Int64
	circuitsTotal      atomic.Int64
	circuitsDenied     atomic.Int64
	bytes              atomic.Int64
}

var _ relayv2.MetricsTracer = (*relayTracer)(nil)

func (t *relayTracer) RelayStatus(bool) {}
func (t *relayTracer) ConnectionOpened() {
	t.circuits.Add(1)
	t.circuitsTotal.Add(1)
}
func (t *relayTracer) ConnectionClosed(time.Duration) { t.circuits.Add(-1) }
func (t *relayTracer) ConnectionRequestHandled(s pbv2.Status) {
	if s != pbv2.Status_OK {
		t.circuitsDenied.Add(1)
	}
}
func (t *relayTracer) ReservationAllowed(renewal bool) {
	if !renewal {
		t.reservations.Add(1)
	}
}
func (t *relayTracer) ReservationClosed(cnt int) { t.reservations.Add(-int64(cnt)) }
func (t *relayTracer) ReservationRequestHandled(s pbv2.Status) {
	if s != pbv2.Status_OK {
		t.reservationsDenied.Add(1)
	}
}
func (t *relayTracer) BytesTransferred(cnt int) { t.bytes.Add(int64(cnt)) }

// RelayStats returns the relay service's counters; all zero when the node
// runs none.
func (n *Node) RelayStats() RelayStats {
	t := &n.rstat
	return RelayStats{
		Reservations:       t.reservations.Load(),
		ReservationsDenied: t.reservationsDenied.Load(),
		Circuits:           t.circuits.Load(),
		CircuitsTotal:      t.circuitsTotal.Load(),
		CircuitsDenied:     t.circuitsDenied.Load(),
		Bytes:              t.bytes.Load(),
	}
}

// Reservation is a slot held on a circuit relay.
type Reservation struct {
	Relay   string    // the relay's peer id
	Expires time.Time // renew before then
	// Addrs are the circuit addresses through which peers reach this node
	// via the relay: <relay addr>/p2p/<relay>/p2p-circuit.
	Addrs []string
}

// Reserve reserves a slot on the circuit relay named by relayAddrs
// (multiaddrs with /p2p/<id>), connecting to it if needed. Renew it by
// calling Reserve again before it expires.
func (n *Node) Reserve(ctx context.Context, relayAddrs []string) (Reservation, error) {
	var mas []ma.Multiaddr
	for _, s := range relayAddrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return Reservation{}, fmt.Errorf("mesh: parse relay address %q: %w", s, err)
		}
		if isRelayedAddr(a) {
			continue // no circuits over circuits
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return Reservation{}, fmt.Errorf("mesh: relay addresses: %w", err)
	}
	if len(infos) != 1 {
		return Reservation{}, fmt.Errorf("mesh: relay addresses name %d peers, want 1", len(infos))
	}
	ai := infos[0]
	ctx = network.WithAllowLimitedConn(ctx, "meshup reservation")
	rsvp, err := client.Reserve(ctx, n.host, ai)
	if err != nil {
		return Reservation{}, fmt.Errorf("mesh: reserve a slot on %s: %w", ai.ID.ShortString(), err)
	}
	circuit := ma.StringCast("/p2p-circuit")
	var addrs []ma.Multiaddr
	for _, a := range ai.Addrs {
		addrs = append(addrs, a)
	}
	out := Reservation{Relay: ai.ID.String(), Expires: rsvp.Expiration}
	for _, s := range p2pAddrs(ai.ID, addrs) {
		out.Addrs = append(out.Addrs, ma.StringCast(s).Encapsulate(circuit).String())
	}
	return out, nil
}
