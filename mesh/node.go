// Package mesh is meshup's only door to go-libp2p (and memberlist). It runs
// one libp2p host per process, TCP and QUIC, and hands the rest of meshup
// small interfaces of its own: peer ids as strings, addresses as multiaddr
// strings, Streams, and net.Conns for tunnels.
//
// A node can serve as a circuit relay v2 for other nodes (RelayService),
// hold reservations on such relays when it sits behind a NAT (Reserve),
// and upgrade relayed connections to direct ones by hole punching (DCUtR).
// It keeps track of how it reaches each peer: Peers reports direct,
// hole-punched or relayed, and how long the relayed phase lasted.
package mesh

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"

	"github.com/meshup/meshup/proto"
)

// DefaultListenAddrs are the libp2p listen addresses used when Config has
// none: TCP and QUIC on all interfaces, ports chosen by the kernel.
var DefaultListenAddrs = []string{
	"/ip4/0.0.0.0/tcp/0",
	"/ip4/0.0.0.0/udp/0/quic-v1",
}

// Config configures a Node.
type Config struct {
	// ListenAddrs are libp2p multiaddrs to listen on. Defaults to
	// DefaultListenAddrs.
	ListenAddrs []string
	// Logger receives the node's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// RelayService, when set, makes the node a circuit relay v2 for the
	// peers it allows. Publicly reachable nodes run it.
	RelayService *RelayService
	// HolePunching enables DCUtR: relayed connections are upgraded to
	// direct ones when both NATs allow it.
	HolePunching bool
	// NATPortMap asks the home router for a port mapping with UPnP or
	// NAT-PMP.
	NATPortMap bool
	// AllowPrivateAddrs lets the node dial addresses that are not public
	// (loopback, private, link-local, CGNAT, ULA; see IsPublicIP). By
	// default a connection gater refuses every dial to such an address,
	// whoever supplied it; a LAN, a lab on private ranges and tests on
	// loopback set it.
	AllowPrivateAddrs bool
	// Identity is the node's Ed25519 private key, which its peer id
	// names; a key kept across restarts keeps the peer id. Defaults to a
	// fresh key that lives only in memory.
	Identity ed25519.PrivateKey
	// MaxStreamsPerPeer bounds the streams of one protocol one peer may
	// have open with the node, in each direction (go-libp2p's resource
	// manager; see resourceManager). meshup's own limits (parts per
	// relay, tunnel connections per relay) are lower and bind first.
	// Defaults to DefaultMaxStreamsPerPeer (1024).
	MaxStreamsPerPeer int
	// MaxStreamWindow bounds the bytes one stream may have in flight
	// towards the node and unread (yamux's receive window, which it
	// grows while the stream is limited by it, otherwise up to 16 MiB).
	// A forwarded part has no more in flight than the exit relay's credit
	// (its window, which its budget counts), so what this bounds is
	// tunnelled HTTP and a peer that ignores the credit; it should not be
	// below a relay's window, or parts cross long links slower. 4 MiB
	// carries 40 MB/s per stream at 100 ms round trip; parts run in
	// parallel. Defaults to DefaultMaxStreamWindow (4 MiB).
	MaxStreamWindow int
	// MaxMemory bounds the bytes go-libp2p's resource manager lets the
	// node reserve, all peers together, for its connections and their
	// stream buffers: each stream's receive window, which holds what the
	// peer sent and the node has not read yet (tunnelled HTTP, a stream's
	// first bytes before they are checked). It is memory outside a
	// relay's budget, reserved rather than held: a forwarded part's
	// window grows as large as the exit's credit while its bytes wait in
	// the exit's budget. Within it a window stops growing
	// past half use, and when a new stream's first window (256 KiB) no
	// longer fits, yamux ends that peer's connection. 0: go-libp2p's
	// default, scaled to an eighth of the machine's memory (3 GiB on
	// 24 GiB).
	MaxMemory int64
}

// LogAttrs returns the node's limits for the start-up log; MaxMemory is
// the effective one.
func (c Config) LogAttrs() []any {
	return []any{"max_streams_per_peer", c.MaxStreamsPerPeer, "max_stream_window", c.MaxStreamWindow, "max_memory", c.MaxMemory}
}

// ConnKind says how a connection reaches its peer.
type ConnKind uint8

const (
	// Direct is a connection straight to the peer's address.
	Direct ConnKind = iota
	// HolePunched is a direct connection made by hole punching.
	HolePunched
	// Relayed is a connection through a circuit relay.
	Relayed
)

// String returns the kind's wire name, defined once in proto:
// "direct", "hole-punched" or "relayed".
func (k ConnKind) String() string {
	switch k {
	case Direct:
		return proto.PeerDirect
	case HolePunched:
		return proto.PeerHolePunched
	case Relayed:
		return proto.PeerRelayed
	}
	return fmt.Sprintf("ConnKind(%d)", uint8(k))
}

// Stream is a reliable, ordered, bidirectional byte stream to a peer.
// CloseWrite half-closes; Close closes both directions; Reset aborts both
// directions. Read and Write may be called from different goroutines.
type Stream interface {
	io.ReadWriteCloser
	CloseWrite() error
	Reset() error
	SetDeadline(time.Time) error
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
	// RemotePeer returns the peer id at the other end.
	RemotePeer() string
	// RemoteAddr returns the multiaddr of the connection's other end.
	RemoteAddr() string
	// Kind says how the connection under the stream reaches the peer.
	Kind() ConnKind
}

// ErrClosed means the node has been closed.
var ErrClosed = errors.New("mesh: node closed")

// Node is a libp2p host. Its methods are safe for concurrent use.
type Node struct {
	host  host.Host
	log   *slog.Logger
	relay *relayv2.Relay     // nil unless Config.RelayService
	hps   *holepunch.Service // nil unless Config.HolePunching
	rstat relayTracer
	hp    holePunchTracer
	gate  *gater

	maxMemory int64 // Config.MaxMemory in effect

	extra atomic.Pointer[[]ma.Multiaddr] // advertised on top of the listen addresses

	mu           sync.Mutex // guards the fields below
	peers        map[peer.ID]*peerState
	onDisconnect []func(peer string)
	closed       bool
}

// New starts a node listening on cfg.ListenAddrs with the identity
// cfg.Identity, or a fresh one that lives only in memory.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		listen = DefaultListenAddrs
	}
	if cfg.MaxStreamsPerPeer == 0 {
		cfg.MaxStreamsPerPeer = DefaultMaxStreamsPerPeer
	}
	if cfg.MaxStreamWindow == 0 {
		cfg.MaxStreamWindow = DefaultMaxStreamWindow
	}
	if cfg.MaxStreamWindow < minStreamWindow || cfg.MaxStreamWindow > 1<<30 {
		return nil, fmt.Errorf("mesh: config: MaxStreamWindow %d is outside %d..%d", cfg.MaxStreamWindow, minStreamWindow, 1<<30)
	}
	if cfg.MaxStreamsPerPeer < 0 {
		return nil, fmt.Errorf("mesh: config: MaxStreamsPerPeer %d is negative", cfg.MaxStreamsPerPeer)
	}
	if cfg.MaxMemory != 0 && cfg.MaxMemory < minMemory {
		return nil, fmt.Errorf("mesh: config: MaxMemory %d is below %d", cfg.MaxMemory, minMemory)
	}
	key, err := identity(cfg.Identity)
	if err != nil {
		return nil, err
	}
	rm, memory, err := resourceManager(cfg.MaxStreamsPerPeer, cfg.MaxMemory)
	if err != nil {
		return nil, err
	}
	cfg.MaxMemory = memory
	n := &Node{peers: make(map[peer.ID]*peerState), gate: &gater{allowPrivate: cfg.AllowPrivateAddrs}, maxMemory: memory}
	n.hp.n = n
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ConnectionGater(n.gate),
		libp2p.ListenAddrStrings(listen...),
		libp2p.AddrsFactory(n.addrsFactory),
	}
	opts = append(opts, transportOptions(cfg.MaxStreamWindow)...)
	opts = append(opts, libp2p.ResourceManager(rm)) // closed by the host
	if cfg.NATPortMap {
		opts = append(opts, libp2p.NATPortMap())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		return nil, fmt.Errorf("mesh: start libp2p host: %w", err)
	}
	n.host = h
	n.log = cfg.Logger.With("node", h.ID().ShortString())
	n.log.Info("libp2p limits", cfg.LogAttrs()...)
	h.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(_ network.Network, c network.Conn) { n.connected(c) },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.disconnected(c) },
	})
	if cfg.HolePunching {
		// Started by hand rather than with libp2p.EnableHolePunching, to
		// keep the service: the library punches once, when a relayed
		// connection comes in, and a punch that came too early (before
		// the other side knew its public address) is never retried.
		// HolePunch retries.
		ider, ok := h.(interface{ IDService() identify.IDService })
		if !ok {
			h.Close()
			return nil, errors.New("mesh: libp2p host has no identify service")
		}
		n.hps, err = holepunch.NewService(h, ider.IDService(), n.holePunchAddrs, holepunch.WithTracer(&n.hp))
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("mesh: start hole punching: %w", err)
		}
	}
	if cfg.RelayService != nil {
		// Started by hand rather than with libp2p.EnableRelayService,
		// which waits for AutoNAT to call the host public: a small mesh
		// has too few peers for AutoNAT, and the operator knows.
		n.relay, err = newRelayService(h, *cfg.RelayService, &n.rstat)
		if err != nil {
			h.Close()
			return nil, err
		}
	}
	return n, nil
}

// identity returns the libp2p form of key, or a fresh key when key is nil.
func identity(key ed25519.PrivateKey) (crypto.PrivKey, error) {
	if key == nil {
		k, _, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			return nil, fmt.Errorf("mesh: generate identity: %w", err)
		}
		return k, nil
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("mesh: config: Identity has %d bytes, want %d", len(key), ed25519.PrivateKeySize)
	}
	k, err := crypto.UnmarshalEd25519PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("mesh: config: Identity: %w", err)
	}
	return k, nil
}

// PeerID returns the peer id of the node whose identity is key, without
// starting one.
func PeerID(key ed25519.PrivateKey) (string, error) {
	k, err := identity(key)
	if err != nil {
		return "", err
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("mesh: peer id: %w", err)
	}
	return id.String(), nil
}

// ID returns the node's peer id.
func (n *Node) ID() string { return n.host.ID().String() }

// Memory returns the bytes the node's connections and streams have
// reserved, and the most they may (Config.MaxMemory in effect).
func (n *Node) Memory() (used, limit int64) {
	n.host.Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
		used = s.Stat().Memory
		return nil
	})
	return used, n.maxMemory
}

// Addrs returns the node's advertised addresses as multiaddrs ending in
// /p2p/<id>, so that each one alone is enough to dial the node.
func (n *Node) Addrs() []string {
	return p2pAddrs(n.host.ID(), n.host.Addrs())
}

// ListenAddrs returns the addresses the node listens on, wildcards
// resolved to interface addresses, without /p2p/.
func (n *Node) ListenAddrs() []string {
	addrs, err := n.host.Network().InterfaceListenAddresses()
	if err != nil {
		return nil
	}
	return multiaddrStrings(addrs)
}

// SetAdvertised sets the addresses the node advertises on top of its
// listen addresses: public addresses learnt with STUN or declared by the
// operator, and circuit addresses of its reservations. Peers learn them
// through identify.
func (n *Node) SetAdvertised(addrs []string) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			n.log.Warn("advertised address ignored", "addr", s, "err", err)
			continue
		}
		mas = append(mas, a)
	}
	old := n.extra.Swap(&mas)
	if old == nil || !slices.EqualFunc(*old, mas, ma.Multiaddr.Equal) {
		n.log.Debug("advertised addresses", "addrs", addrs)
	}
}

func (n *Node) addrsFactory(addrs []ma.Multiaddr) []ma.Multiaddr {
	if extra := n.extra.Load(); extra != nil {
		addrs = append(slices.Clone(addrs), *extra...)
	}
	return ma.Unique(addrs)
}

// Connect connects to the peer named by addrs (multiaddrs with /p2p/<id>)
// and returns its id. Circuit addresses are allowed.
func (n *Node) Connect(ctx context.Context, addrs []string) (string, error) {
	var mas []ma.Multiaddr
	for _, s := range addrs {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return "", fmt.Errorf("mesh: parse address %q: %w", s, err)
		}
		mas = append(mas, a)
	}
	infos, err := peer.AddrInfosFromP2pAddrs(mas...)
	if err != nil {
		return "", fmt.Errorf("mesh: peer addresses: %w", err)
	}
	if len(infos) != 1 {
		return "", fmt.Errorf("mesh: addresses name %d peers, want 1", len(infos))
	}
	ctx = network.WithAllowLimitedConn(ctx, "meshup")
	if err := n.host.Connect(ctx, infos[0]); err != nil {
		return "", fmt.Errorf("mesh: connect to %s: %w", infos[0].ID.ShortString(), err)
	}
	return infos[0].ID.String(), nil
}

// Connected reports whether the node has a connection to peerID.
func (n *Node) Connected(peerID string) bool {
	id, err := peer.Decode(peerID)
	if err != nil {
		return false
	}
	c := n.host.Network().Connectedness(id)
	return c == network.Connected || c == network.Limited
}

// Handle serves protocol proto: fn is called in its own goroutine for each
// inbound stream and must close or reset the stream.
func (n *Node) Handle(proto string, fn func(Stream)) {
	n.host.SetStreamHandler(protocol.ID(proto), func(s network.Stream) {
		fn(stream{s, n})
	})
}

// Open opens a stream to a connected (or dialable) peer. Relayed
// connections are used when no direct one exists; data circuits on meshup
// relays have limits fit for data (see RelayService).
func (n *Node) Open(ctx context.Context, peerID, proto string) (Stream, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return nil, fmt.Errorf("mesh: peer id %q: %w", peerID, err)
	}
	ctx = network.WithAllowLimitedConn(ctx, "meshup")
	s, err := n.host.NewStream(ctx, id, protocol.ID(proto))
	if err != nil {
		return nil, fmt.Errorf("mesh: open %s to %s: %w", proto, id.ShortString(), err)
	}
	return stream{s, n}, nil
}

// OnDisconnect registers fn to be called when the last connection to a
// peer closes.
func (n *Node) OnDisconnect(fn func(peer string)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.onDisconnect = append(n.onDisconnect, fn)
}

// Close shuts the host down, closing every connection. It is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	n.mu.Unlock()
	if n.hps != nil {
		n.hps.Close()
	}
	if n.relay != nil {
		n.relay.Close()
	}
	return n.host.Close()
}

type stream struct {
	network.Stream
	n *Node
}

func (s stream) RemotePeer() string { return s.Conn().RemotePeer().String() }

func (s stream) RemoteAddr() string { return s.Conn().RemoteMultiaddr().String() }

func (s stream) Kind() ConnKind { return s.n.connKind(s.Conn()) }

// p2pAddrs returns addrs with /p2p/<id> appended.
func p2pAddrs(id peer.ID, addrs []ma.Multiaddr) []string {
	info := peer.AddrInfo{ID: id, Addrs: addrs}
	mas, err := peer.AddrInfoToP2pAddrs(&info)
	if err != nil {
		return nil
	}
	return multiaddrStrings(mas)
}

func multiaddrStrings(addrs []ma.Multiaddr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out
}
