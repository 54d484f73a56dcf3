package mesh

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/gostream"
)

// Tunnels carry a stream protocol such as HTTP/1.1 over libp2p streams, one
// stream per net.Conn, so that the rendezvous can reach a relay that is
// behind a NAT through the connection the relay opened.

// Listen returns a listener whose connections are the inbound streams of
// protocol proto. Closing the listener stops accepting them.
func (n *Node) Listen(proto string) (net.Listener, error) {
	l, err := gostream.Listen(n.host, protocol.ID(proto))
	if err != nil {
		return nil, fmt.Errorf("mesh: listen on %s: %w", proto, err)
	}
	return l, nil
}

// DialConn opens a stream of protocol proto to peerID as a net.Conn.
//
// Closing the conn resets the stream: the dialer (an HTTP client) closes a
// conn only when it is done with it or gives up, and a reset tells the
// other side at once. A plain close would leave the far end writing into
// a stream nobody reads until its write deadline.
func (n *Node) DialConn(ctx context.Context, peerID, proto string) (net.Conn, error) {
	id, err := peer.Decode(peerID)
	if err != nil {
		return nil, fmt.Errorf("mesh: peer id %q: %w", peerID, err)
	}
	ctx = network.WithAllowLimitedConn(ctx, "meshup tunnel")
	s, err := n.host.NewStream(ctx, id, protocol.ID(proto))
	if err != nil {
		return nil, fmt.Errorf("mesh: dial %s on %s: %w", id.ShortString(), proto, err)
	}
	return dialedConn{s}, nil
}

// DialConnConnected is DialConn over a connection the node already has to
// peerID: it never dials. A public relay tunnels HTTP to the relays behind
// NAT that keep a connection to it, and must not be made to dial anything
// a client names (issue 10).
func (n *Node) DialConnConnected(ctx context.Context, peerID, proto string) (net.Conn, error) {
	return n.DialConn(network.WithNoDial(ctx, "meshup tunnel: connected peers only"), peerID, proto)
}

// dialedConn is a stream as a net.Conn whose Close resets.
type dialedConn struct{ network.Stream }

func (c dialedConn) Close() error { return c.Stream.Reset() }

// tunnelCopyBuf is the buffer ReadFrom copies through.
const tunnelCopyBuf = 64 << 10

// ReadFrom copies r into the stream in writes of up to 64 KiB, one yamux
// frame each: a WebSocket proxied into the tunnel (httputil.ReverseProxy
// copies upgraded connections with io.Copy) would otherwise move in the
// 32 KiB pieces of io.Copy's own buffer.
func (c dialedConn) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, tunnelCopyBuf) // once per tunnelled connection
	// Both wrappers hide the other side's ReadFrom and WriteTo, which
	// would bring back their own buffers.
	return io.CopyBuffer(struct{ io.Writer }{c}, struct{ io.Reader }{r}, buf)
}

func (c dialedConn) LocalAddr() net.Addr { return peerAddr(c.Conn().LocalPeer()) }

func (c dialedConn) RemoteAddr() net.Addr { return peerAddr(c.Conn().RemotePeer()) }

// peerAddr is a peer id as a net.Addr.
type peerAddr peer.ID

func (a peerAddr) Network() string { return "libp2p" }

func (a peerAddr) String() string { return peer.ID(a).String() }
