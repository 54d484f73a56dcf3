// Package mesh is meshup's only door to go-libp2p (and, later, memberlist).
// It runs one libp2p host per process, TCP and QUIC, and hands the rest of
// meshup small interfaces of its own: peer ids as strings, addresses as
// multiaddr strings, and Streams.
package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
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
}

// ConnKind says how a stream's connection reaches its peer.
type ConnKind uint8

const (
	// Direct is a connection straight to the peer's address.
	Direct ConnKind = iota
	// HolePunched is a direct connection made by hole punching.
	HolePunched
	// Relayed is a connection through a circuit relay.
	Relayed
)

func (k ConnKind) String() string {
	switch k {
	case Direct:
		return "direct"
	case HolePunched:
		return "hole-punched"
	case Relayed:
		return "relayed"
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
	// Kind says how the connection under the stream reaches the peer.
	Kind() ConnKind
}

// ErrClosed means the node has been closed.
var ErrClosed = errors.New("mesh: node closed")

// Node is a libp2p host. Its methods are safe for concurrent use.
type Node struct {
	host host.Host
	log  *slog.Logger

	mu           sync.Mutex // guards the fields below
	onDisconnect []func(peer string)
	closed       bool
}

// New starts a node listening on cfg.ListenAddrs with a fresh identity that
// lives only in memory.
func New(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	listen := cfg.ListenAddrs
	if len(listen) == 0 {
		listen = DefaultListenAddrs
	}
	key, _, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		return nil, fmt.Errorf("mesh: generate identity: %w", err)
	}
	h, err := libp2p.New(
		libp2p.Identity(key),
		libp2p.ListenAddrStrings(listen...),
	)
	if err != nil {
		return nil, fmt.Errorf("mesh: start libp2p host: %w", err)
	}
	n := &Node{host: h, log: cfg.Logger.With("node", h.ID().ShortString())}
	h.Network().Notify(&network.NotifyBundle{
		DisconnectedF: func(_ network.Network, c network.Conn) {
			p := c.RemotePeer()
			if h.Network().Connectedness(p) == network.Connected {
				return // another connection to the peer remains
			}
			n.mu.Lock()
			fns := append([]func(string){}, n.onDisconnect...)
			n.mu.Unlock()
			for _, fn := range fns {
				fn(p.String())
			}
		},
	})
	return n, nil
}

// ID returns the node's peer id.
func (n *Node) ID() string { return n.host.ID().String() }

// Addrs returns the node's listen addresses as multiaddrs ending in
// /p2p/<id>, so that each one alone is enough to dial the node.
func (n *Node) Addrs() []string {
	info := peer.AddrInfo{ID: n.host.ID(), Addrs: n.host.Addrs()}
	mas, err := peer.AddrInfoToP2pAddrs(&info)
	if err != nil {
		return nil
	}
	out := make([]string, len(mas))
	for i, a := range mas {
		out[i] = a.String()
	}
	return out
}

// Connect connects to the peer named by addrs (multiaddrs with /p2p/<id>)
// and returns its id.
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
	if err := n.host.Connect(ctx, infos[0]); err != nil {
		return "", fmt.Errorf("mesh: connect to %s: %w", infos[0].ID.ShortString(), err)
	}
	return infos[0].ID.String(), nil
}

// Handle serves protocol proto: fn is called in its own goroutine for each
// inbound stream and must close or reset the stream.
func (n *Node) Handle(proto string, fn func(Stream)) {
	n.host.SetStreamHandler(protocol.ID(proto), func(s network.Stream) {
		fn(stream{s})
	})
}

// Open opens a stream to a connected (or dialable) peer.
func (n *Node) Open(ctx context.Context, peerID, proto string) (Stream, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return nil, fmt.Errorf("mesh: peer id %q: %w", peerID, err)
	}
	s, err := n.host.NewStream(ctx, id, protocol.ID(proto))
	if err != nil {
		return nil, fmt.Errorf("mesh: open %s to %s: %w", proto, id.ShortString(), err)
	}
	return stream{s}, nil
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
	return n.host.Close()
}

type stream struct{ network.Stream }

func (s stream) RemotePeer() string { return s.Conn().RemotePeer().String() }

func (s stream) Kind() ConnKind {
	c := s.Conn()
	if c.Stat().Limited || strings.Contains(c.RemoteMultiaddr().String(), "/p2p-circuit") {
		return Relayed
	}
	return Direct
}
