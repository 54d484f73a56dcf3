package mesh

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// peerState is what the node remembers of a connected peer, from its first
// connection until its last one closes.
type peerState struct {
	relayedAt time.Time // first relayed connection; zero if none
	directAt  time.Time // first direct connection after a relayed one
	punched   bool      // a hole punch with the peer succeeded
}

// PeerConn describes the node's connection to one peer.
type PeerConn struct {
	ID   string
	Kind ConnKind // the best connection: direct or hole-punched over relayed
	// TimeToDirect is how long the peer was reachable only through a
	// relay before a direct connection appeared; 0 if it never was.
	TimeToDirect time.Duration
}

// HolePunchStats count the node's DCUtR hole punches.
type HolePunchStats struct {
	Attempts  int64 // hole punches started
	Successes int64 // ended with a direct connection
	Failures  int64 // ended without one
	// DirectDials counts relayed peers that turned out to be reachable by
	// a plain direct dial, so no hole punch was needed.
	DirectDials int64
}

func isRelayedAddr(a ma.Multiaddr) bool {
	_, err := a.ValueForProtocol(ma.P_CIRCUIT)
	return err == nil
}

func isRelayedConn(c network.Conn) bool {
	return c.Stat().Limited || isRelayedAddr(c.RemoteMultiaddr())
}

func (n *Node) connected(c network.Conn) {
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := n.peers[c.RemotePeer()]
	if ps == nil {
		ps = &peerState{}
		n.peers[c.RemotePeer()] = ps
	}
	switch {
	case isRelayedConn(c):
		if ps.relayedAt.IsZero() {
			ps.relayedAt = now
		}
	case !ps.relayedAt.IsZero() && ps.directAt.IsZero():
		ps.directAt = now
	}
}

func (n *Node) disconnected(c network.Conn) {
	p := c.RemotePeer()
	if n.host.Network().Connectedness(p) != network.NotConnected {
		return // another connection to the peer remains
	}
	n.mu.Lock()
	delete(n.peers, p)
	fns := append([]func(string){}, n.onDisconnect...)
	n.mu.Unlock()
	for _, fn := range fns {
		fn(p.String())
	}
}

// connKind classifies one connection.
func (n *Node) connKind(c network.Conn) ConnKind {
	if isRelayedConn(c) {
		return Relayed
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if ps := n.peers[c.RemotePeer()]; ps != nil && ps.punched {
		return HolePunched
	}
	return Direct
}

// Peers returns the node's connected peers, sorted by id, each with its
// best connection.
func (n *Node) Peers() []PeerConn {
	var out []PeerConn
	for _, p := range n.host.Network().Peers() {
		conns := n.host.Network().ConnsToPeer(p)
		if len(conns) == 0 {
			continue
		}
		best := Relayed
		for _, c := range conns {
			if k := n.connKind(c); k < best {
				best = k
			}
		}
		pc := PeerConn{ID: p.String(), Kind: best}
		n.mu.Lock()
		if ps := n.peers[p]; ps != nil && !ps.directAt.IsZero() {
			pc.TimeToDirect = ps.directAt.Sub(ps.relayedAt)
		}
		n.mu.Unlock()
		out = append(out, pc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// holePunchAddrs are the addresses offered to a peer for a hole punch: the
// public, non-circuit addresses the node advertises. The hole punching
// service waits until there is one.
func (n *Node) holePunchAddrs() []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range n.host.Addrs() {
		if !isRelayedAddr(a) && manet.IsPublicAddr(a) {
			out = append(out, a)
		}
	}
	return out
}

// ErrNoHolePunch means the node cannot hole punch now: hole punching is
// off, or the node knows no public address of its own.
var ErrNoHolePunch = errors.New("mesh: no hole punching without a public address")

// HolePunch tries to replace the relayed connection to peerID with a
// direct one (DCUtR), and blocks until the attempt ends or ctx does. The
// node must be connected to the peer through a relay.
func (n *Node) HolePunch(ctx context.Context, peerID string) error {
	id, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("mesh: peer id %q: %w", peerID, err)
	}
	if n.hps == nil || len(n.holePunchAddrs()) == 0 {
		return ErrNoHolePunch
	}
	done := make(chan error, 1)
	// DirectConnect waits for the service to notice the public address
	// (it polls, at most every 5 s); it cannot be cancelled, so it runs
	// on its own and reports into a buffered channel.
	go func() { done <- n.hps.DirectConnect(id) }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("mesh: hole punch to %s: %w", id.ShortString(), err)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// HolePunchStats returns the node's hole punch counters.
func (n *Node) HolePunchStats() HolePunchStats {
	return HolePunchStats{
		Attempts:    n.hp.attempts.Load(),
		Successes:   n.hp.successes.Load(),
		Failures:    n.hp.failures.Load(),
		DirectDials: n.hp.directDials.Load(),
	}
}

// holePunchTracer counts DCUtR events and marks peers reached by a hole
// punch, so that their direct connections are reported as hole-punched.
type holePunchTracer struct {
	n           *Node
	attempts    atomic.Int64
	successes   atomic.Int64
	failures    atomic.Int64
	directDials atomic.Int64
}

var _ holepunch.EventTracer = (*holePunchTracer)(nil)

// Trace is called by the hole punching service for each event.
func (t *holePunchTracer) Trace(evt *holepunch.Event) {
	switch e := evt.Evt.(type) {
	case *holepunch.StartHolePunchEvt:
		t.attempts.Add(1)
	case *holepunch.EndHolePunchEvt:
		if !e.Success {
			t.failures.Add(1)
			t.n.log.Info("hole punch failed", "peer", evt.Remote.ShortString(), "after", e.EllapsedTime, "err", e.Error)
			return
		}
		t.successes.Add(1)
		t.n.markPunched(evt.Remote)
		t.n.log.Info("hole punch succeeded", "peer", evt.Remote.ShortString(), "after", e.EllapsedTime)
	case *holepunch.ProtocolErrorEvt:
		t.failures.Add(1)
		t.n.log.Info("hole punch refused", "peer", evt.Remote.ShortString(), "err", e.Error)
	case *holepunch.DirectDialEvt:
		if e.Success {
			t.directDials.Add(1)
			t.n.log.Info("relayed peer reached by a direct dial", "peer", evt.Remote.ShortString(), "after", e.EllapsedTime)
		}
	}
}

func (n *Node) markPunched(p peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	ps := n.peers[p]
	if ps == nil {
		ps = &peerState{}
		n.peers[p] = ps
	}
	ps.punched = true
}

// RelayedVia returns the ids of the relays that carry the node's
// connections to peerID when every one of them is relayed, and nil when
// it has a direct or hole-punched one, or none.
func (n *Node) RelayedVia(peerID string) []string {
	p, err := peer.Decode(peerID)
	if err != nil {
		return nil
	}
	var via []string
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if n.connKind(c) != Relayed {
			return nil
		}
		// A relayed connection's remote address is the relay's, then
		// /p2p-circuit: its first /p2p component names the relay.
		if id, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_P2P); err == nil {
			via = append(via, id)
		}
	}
	return via
}

// ClosePeer closes every connection to peerID.
func (n *Node) ClosePeer(peerID string) error {
	p, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("mesh: close peer: %w", err)
	}
	return n.host.Network().ClosePeer(p)
}
