package mesh

// NAT classification and address selection: pure functions over what a
// STUN probe (ProbeNAT) and libp2p observed, so that the rules are table
// tested without sockets.
//
// Why a relay needs this: go-libp2p starts hole punching (DCUtR) only once
// it knows a public address for itself, and its identify-based discovery
// of that address needs several observers, which a small mesh does not
// have (go-libp2p issue 2941). The rendezvous's STUN ports give a relay its
// server-reflexive address and tell whether its NAT maps one socket to the
// same public address for every destination (RFC 4787 "endpoint-
// independent mapping", a "cone" NAT: hole punching works) or not
// ("symmetric": it does not, and the relay needs a circuit).

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/meshup/meshup/proto"
)

// NATType says how a node's outbound UDP mappings behave, as far as the
// rendezvous's two STUN ports can tell.
type NATType uint8

const (
	// NATUnknown means the probe could not tell: fewer than two answers.
	NATUnknown NATType = iota
	// NATPublic means no translation: the mapped address is one of the
	// node's own interface addresses, with the port preserved.
	NATPublic
	// NATCone means endpoint-independent mapping: one socket got the same
	// public address and port from both STUN ports. Hole punching works.
	NATCone
	// NATSymmetric means the mapping depends on the destination: one
	// socket got different public addresses or ports from the two STUN
	// ports. Hole punching does not work; peers need a relayed circuit.
	NATSymmetric
)

// natNames are the wire names of the NAT types, defined once in proto.
var natNames = [...]string{
	NATUnknown:   proto.NATUnknown,
	NATPublic:    proto.NATPublic,
	NATCone:      proto.NATCone,
	NATSymmetric: proto.NATSymmetric,
}

// ErrNATType means a string names no NATType.
var ErrNATType = errors.New("mesh: unknown nat type")

// String returns "unknown", "public", "cone" or "symmetric".
func (t NATType) String() string {
	if int(t) < len(natNames) {
		return natNames[t]
	}
	return fmt.Sprintf("NATType(%d)", uint8(t))
}

// ParseNATType parses the names String returns.
func ParseNATType(s string) (NATType, error) {
	for t, name := range natNames {
		if s == name {
			return NATType(t), nil
		}
	}
	return NATUnknown, fmt.Errorf("%w %q", ErrNATType, s)
}

// MarshalText implements encoding.TextMarshaler with String's names.
func (t NATType) MarshalText() ([]byte, error) {
	if int(t) >= len(natNames) {
		return nil, fmt.Errorf("%w %d", ErrNATType, uint8(t))
	}
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseNATType.
func (t *NATType) UnmarshalText(b []byte) error {
	v, err := ParseNATType(string(b))
	if err != nil {
		return err
	}
	*t = v
	return nil
}

// ClassifyNAT tells the NAT type from the answers of two STUN ports to
// Binding requests sent from one UDP socket bound to localPort. first and
// second are the mapped addresses the two ports reported; a zero
// netip.AddrPort means no answer. local lists the node's interface
// addresses. IPv4-mapped IPv6 addresses compare equal to their IPv4 form.
//
//   - no answer, or only one: NATUnknown. One observation cannot show
//     whether the mapping depends on the destination, and guessing "cone"
//     would make a symmetric relay advertise an address nobody can reach.
//     A node with a public interface address loses nothing: libp2p already
//     advertises its interface addresses.
//   - two different answers: NATSymmetric.
//   - two equal answers that are a local address with localPort: NATPublic.
//   - two equal answers otherwise: NATCone.
func ClassifyNAT(local []netip.Addr, localPort uint16, first, second netip.AddrPort) NATType {
	first, second = unmapAddrPort(first), unmapAddrPort(second)
	switch {
	case !first.IsValid() || !second.IsValid():
		return NATUnknown
	case first != second:
		return NATSymmetric
	case first.Port() == localPort && slices.ContainsFunc(local, func(a netip.Addr) bool { return a.Unmap() == first.Addr() }):
		return NATPublic
	default:
		return NATCone
	}
}

func unmapAddrPort(ap netip.AddrPort) netip.AddrPort {
	if !ap.IsValid() {
		return ap
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// endpoint is a dialable libp2p address in the two forms meshup listens
// on: /ipX/IP/tcp/PORT and /ipX/IP/udp/PORT/quic-v1.
type endpoint struct {
	ip   netip.Addr
	quic bool // udp/quic-v1, else tcp
	port uint16
}

// parseEndpoint parses a multiaddr string in one of the endpoint forms,
// optionally followed by /p2p/ID (dropped). Anything else (DNS, WebSocket,
// WebTransport, circuits, zones) is not an endpoint.
func parseEndpoint(s string) (endpoint, bool) {
	m, err := ma.NewMultiaddr(s)
	if err != nil {
		return endpoint{}, false
	}
	if n := len(m); n > 0 && m[n-1].Code() == ma.P_P2P {
		m = m[:n-1]
	}
	if len(m) < 2 {
		return endpoint{}, false
	}
	var e endpoint
	switch m[0].Code() {
	case ma.P_IP4, ma.P_IP6:
		ip, ok := netip.AddrFromSlice(m[0].RawValue())
		if !ok {
			return endpoint{}, false
		}
		if m[0].Code() == ma.P_IP4 {
			ip = ip.Unmap()
		}
		e.ip = ip
	default:
		return endpoint{}, false
	}
	switch {
	case len(m) == 2 && m[1].Code() == ma.P_TCP:
	case len(m) == 3 && m[1].Code() == ma.P_UDP && m[2].Code() == ma.P_QUIC_V1:
		e.quic = true
	default:
		return endpoint{}, false
	}
	port, err := strconv.ParseUint(m[1].Value(), 10, 16)
	if err != nil {
		return endpoint{}, false
	}
	e.port = uint16(port)
	return e, true
}

// String returns e as a multiaddr string.
func (e endpoint) String() string {
	fam := "/ip4/"
	if e.ip.Is6() {
		fam = "/ip6/"
	}
	if e.quic {
		return fam + e.ip.String() + "/udp/" + strconv.Itoa(int(e.port)) + "/quic-v1"
	}
	return fam + e.ip.String() + "/tcp/" + strconv.Itoa(int(e.port))
}

// withIP returns e with ip, when ip is of e's address family.
func (e endpoint) withIP(ip netip.Addr) (endpoint, bool) {
	if !ip.IsValid() || ip.Is4() != e.ip.Is4() {
		return endpoint{}, false
	}
	e.ip = ip
	return e, true
}

// IsPublicIP reports whether go-libp2p counts ip as public: not loopback,
// private, link-local, CGNAT, documentation (192.0.2.0/24,
// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), multicast or
// otherwise unroutable. A relay can use it to check an operator-declared
// public address.
func IsPublicIP(ip netip.Addr) bool {
	if !ip.IsValid() || ip.Zone() != "" {
		return false
	}
	ip = ip.Unmap()
	return isPublicEndpoint(endpoint{ip: ip, port: 1})
}

func isPublicEndpoint(e endpoint) bool {
	if e.port == 0 || e.ip.IsUnspecified() {
		return false
	}
	m, err := ma.NewMultiaddr(e.String())
	return err == nil && manet.IsPublicAddr(m)
}

// PublicAddrs returns the libp2p addresses a node should advertise as its
// public ones, besides what libp2p finds itself: sorted multiaddr strings,
// each a public IP with /tcp/PORT or /udp/PORT/quic-v1, without duplicates.
//
// listen are the node's bound listen addresses, with real ports (e.g.
// "/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"); nat is the
// latest ProbeNAT report; observed are the addresses libp2p peers observed
// for the node (identify); declared is an operator-declared public IP, or
// the zero Addr. Strings that are not IP+TCP or IP+UDP+QUIC-v1 addresses
// are ignored, as is a trailing /p2p/ID. The rules, first match wins:
//
//   - declared: declared with each listen port of its address family. The
//     operator knows about port forwarding that no probe can see.
//   - NATPublic: the listen addresses whose IP is public, and the mapped IP
//     with each listen port (a listener on 0.0.0.0 has no IP of its own).
//   - NATCone: for each listen address of the mapped IP's family, the
//     observed addresses with the mapped IP and the same transport when
//     there are any (their port is the one the NAT really mapped), else the
//     mapped IP with the listen port (port-preserving NATs, such as Linux
//     masquerade, keep it).
//   - NATSymmetric: the observed addresses as they are. They will not help
//     other peers dial in, but they are true; no port is ever invented.
//   - NATUnknown: nothing.
//
// Addresses that go-libp2p does not count as public (IsPublicIP) are never
// returned, whatever the rule.
func PublicAddrs(listen []string, nat NATReport, observed []string, declared netip.Addr) []string {
	var ls, obs []endpoint
	for _, s := range listen {
		if e, ok := parseEndpoint(s); ok && e.port != 0 {
			ls = append(ls, e)
		}
	}
	for _, s := range observed {
		if e, ok := parseEndpoint(s); ok {
			obs = append(obs, e)
		}
	}
	mapped := nat.Mapped.Addr().Unmap()
	declared = declared.Unmap()

	var out []endpoint
	withIP := func(ip netip.Addr) {
		for _, l := range ls {
			if e, ok := l.withIP(ip); ok {
				out = append(out, e)
			}
		}
	}
	switch {
	case declared.IsValid():
		withIP(declared)
	case nat.Type == NATPublic:
		out = append(out, ls...)
		withIP(mapped)
	case nat.Type == NATCone:
		for _, l := range ls {
			e, ok := l.withIP(mapped)
			if !ok {
				continue
			}
			seen := false
			for _, o := range obs {
				if o.ip == mapped && o.quic == l.quic {
					out = append(out, o)
					seen = true
				}
			}
			if !seen {
				out = append(out, e)
			}
		}
	case nat.Type == NATSymmetric:
		out = append(out, obs...)
	}

	addrs := make([]string, 0, len(out))
	for _, e := range out {
		if isPublicEndpoint(e) {
			addrs = append(addrs, e.String())
		}
	}
	slices.Sort(addrs)
	return slices.Compact(addrs)
}
