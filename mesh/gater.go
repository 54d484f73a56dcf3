package mesh

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// The address rule. Relays are run by strangers and say where they can be
// reached; a node that dialled whatever it was told would be an SSRF into
// the networks of the volunteers (an address /ip4/192.168.1.1/tcp/22 in a
// directory). So one rule decides which addresses meshup dials at all, and
// the same rule decides which addresses the rendezvous accepts into its
// directory and which URLs it fetches: public unicast addresses only,
// unless the operator allows private ones for a LAN, a lab or tests
// (--allow-private-addrs). IsPublicIP (nat.go) is the rule.

// IsPublicMultiaddr reports whether the multiaddr s leads to a public
// address: its first component is an ip4 or ip6 address for which
// IsPublicIP holds. A circuit address is judged by the relay it goes
// through (its first component). DNS names are not public by this rule:
// what they resolve to is not known when the address is checked.
func IsPublicMultiaddr(s string) bool {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return false
	}
	return isPublicMultiaddr(a)
}

func isPublicMultiaddr(a ma.Multiaddr) bool {
	if len(a) == 0 {
		return false
	}
	c := a[0]
	switch c.Protocol().Code {
	case ma.P_IP4, ma.P_IP6:
		ip, ok := netip.AddrFromSlice(c.RawValue())
		return ok && IsPublicIP(ip)
	}
	return false
}

// gater is the node's libp2p connection gater: every outbound dial to an
// address goes through InterceptAddrDial, whichever code path started it
// (Connect, a stream open, identify, hole punching, circuit relays).
// Inbound connections are not gated here: who may use what is decided by
// the protocols (registration, tokens, the relay service's Allow).
type gater struct {
	allowPrivate bool
	refused      atomic.Int64
}

func (g *gater) InterceptPeerDial(peer.ID) bool { return true }

func (g *gater) InterceptAddrDial(_ peer.ID, a ma.Multiaddr) bool {
	if g.allowPrivate || isPublicMultiaddr(a) {
		return true
	}
	g.refused.Add(1)
	return false
}

func (g *gater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *gater) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}

func (g *gater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) { return true, 0 }

// DialsRefused returns how many dials to an address the node's connection
// gater refused because the address is not public (see IsPublicIP).
func (n *Node) DialsRefused() int64 { return n.gate.refused.Load() }

// AllowPrivateAddrs reports whether the node dials private addresses
// (Config.AllowPrivateAddrs).
func (n *Node) AllowPrivateAddrs() bool { return n.gate.allowPrivate }

// Errors of CheckPeerAddr.
var (
	// ErrAddrMalformed means an address is not a multiaddr.
	ErrAddrMalformed = errors.New("mesh: address malformed")
	// ErrAddrForeign means an address does not end in the peer's own id.
	ErrAddrForeign = errors.New("mesh: address names another peer")
	// ErrAddrPrivate means an address is not public (IsPublicMultiaddr).
	ErrAddrPrivate = errors.New("mesh: address not public")
)

// CheckPeerAddr checks an address that peer says it is reachable at: a
// multiaddr whose last /p2p component is peer itself, public unless
// allowPrivate. It returns the address in canonical form.
func CheckPeerAddr(s, peerID string, allowPrivate bool) (string, error) {
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		return "", ErrAddrMalformed
	}
	last := ""
	ma.ForEach(a, func(c ma.Component) bool {
		if c.Protocol().Code == ma.P_P2P {
			last = c.Value()
		}
		return true
	})
	if last != peerID {
		return "", ErrAddrForeign
	}
	if !allowPrivate && !isPublicMultiaddr(a) {
		return "", ErrAddrPrivate
	}
	return a.String(), nil
}

// AddrIP returns the IP address a multiaddr starts with, or "".
func AddrIP(s string) string {
	a, err := ma.NewMultiaddr(s)
	if err != nil || len(a) == 0 {
		return ""
	}
	switch a[0].Protocol().Code {
	case ma.P_IP4, ma.P_IP6:
		if ip, ok := netip.AddrFromSlice(a[0].RawValue()); ok {
			return ip.Unmap().String()
		}
	}
	return ""
}
