package mesh

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/sec"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	yamux "github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	tptu "github.com/libp2p/go-libp2p/p2p/net/upgrader"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	libp2ptls "github.com/libp2p/go-libp2p/p2p/security/tls"
	ma "github.com/multiformats/go-multiaddr"
)

// How relay data moves between nodes (issue 10, "a mesh hop at wire
// speed"). Measured on loopback, 1 GiB through one libp2p stream, CPU
// seconds of both ends together (2-core VM, go-libp2p v0.51):
//
//	QUIC (quic-go)                      7 to 10 s
//	TCP + Noise (ChaCha20-Poly1305)     2.6 s
//	TCP + TLS 1.3 (AES-GCM, AES-NI)     2.0 to 2.5 s
//
// So a mesh hop runs over TCP with TLS whenever the peer has a TCP
// address: go-libp2p's default dial ranker prefers QUIC, which on this
// kind of machine costs three to four times the CPU of TCP for the same
// bytes, and a relay carrying parts is CPU-bound. QUIC stays enabled: it is
// dialled when TCP does not connect within tcpFirstDelay, and hole
// punching (DCUtR) dials every address at once, as go-libp2p does.
//
// TLS stays first among the security transports (the go-libp2p default
// order, kept explicit here), Noise second for peers without TLS. Both
// authenticate the peer id and encrypt; nothing here weakens that.

// tcpFirstDelay is how long dials to a peer's QUIC (and other non-TCP)
// addresses wait behind its TCP ones. A TCP connection that is still
// upgrading holds further dials back by itself (go-libp2p swarm: 2 x 250 ms),
// so this covers a TCP handshake on paths up to about 250 ms RTT.
const tcpFirstDelay = 250 * time.Millisecond

// tcpFirstRanker is go-libp2p's DefaultDialRanker applied to the TCP
// addresses first, then to the others after tcpFirstDelay.
func tcpFirstRanker(addrs []ma.Multiaddr) []network.AddrDelay {
	var tcp, other []ma.Multiaddr
	for _, a := range addrs {
		if isPlainTCP(a) {
			tcp = append(tcp, a)
		} else {
			other = append(other, a)
		}
	}
	if len(tcp) == 0 || len(other) == 0 {
		return swarm.DefaultDialRanker(slices.Clone(addrs))
	}
	out := swarm.DefaultDialRanker(tcp)
	var last time.Duration
	for _, d := range out {
		last = max(last, d.Delay)
	}
	for _, d := range swarm.DefaultDialRanker(other) {
		d.Delay += last + tcpFirstDelay
		out = append(out, d)
	}
	return out
}

// isPlainTCP reports whether a is a direct TCP address (not a circuit, not
// a WebSocket).
func isPlainTCP(a ma.Multiaddr) bool {
	tcp := false
	for _, c := range a {
		switch c.Code() {
		case ma.P_TCP:
			tcp = true
		case ma.P_CIRCUIT, ma.P_WS, ma.P_WSS, ma.P_TLS:
			return false
		}
	}
	return tcp
}

// DefaultMaxStreamsPerPeer is the default of Config.MaxStreamsPerPeer.
const DefaultMaxStreamsPerPeer = 1024

// DefaultMaxStreamWindow is the default of Config.MaxStreamWindow.
const DefaultMaxStreamWindow = 4 << 20

// minStreamWindow is yamux's initial window, below which it cannot go.
const minStreamWindow = 256 << 10

// minMemory is the least Config.MaxMemory: a few connections' buffers.
const minMemory = 16 << 20

// resourceManager returns go-libp2p's default resource manager (limits
// scaled to the machine's memory and file descriptors) with the stream
// limits per peer raised to maxStreams per protocol and direction, and
// the memory of the whole node bounded by maxMemory when it is not 0. It
// also returns the node's memory limit in effect.
//
// The defaults let one peer hold only 64 streams of one protocol, plus 4
// per GiB of the memory the manager may use (an eighth of the machine's):
// 75 on a 24 GiB machine, measured. That is below meshup's own limits,
// which then never bind: a relay forwards up to Budget/Window parts (128
// by default) from one entry relay, each a /meshup/part/2 stream, and the
// rendezvous tunnels up to MaxTunnelConns (256) HTTP connections into one
// relay, each a /meshup/http/1 stream; the 76th was reset. File
// descriptor and connection limits stay as go-libp2p scales them, and
// the streams of all protocols together stay bounded by the system scope.
//
// Memory: every stream reserves its receive window in its scopes and in
// the system scope above them all, so maxMemory bounds what peers can make
// the node hold unread, whatever they send. Scopes below it that go-libp2p
// scaled higher are bounded by it too.
func resourceManager(maxStreams int, maxMemory int64) (network.ResourceManager, int64, error) {
	limits := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&limits)
	pp := &limits.ProtocolPeerBaseLimit
	pp.StreamsInbound, pp.StreamsOutbound, pp.Streams = maxStreams, maxStreams, 2*maxStreams
	ppi := &limits.ProtocolPeerLimitIncrease
	ppi.StreamsInbound, ppi.StreamsOutbound, ppi.Streams = 0, 0, 0
	p := &limits.PeerBaseLimit
	p.StreamsInbound = max(p.StreamsInbound, 2*maxStreams)
	p.StreamsOutbound = max(p.StreamsOutbound, 2*maxStreams)
	p.Streams = max(p.Streams, 4*maxStreams)
	// One protocol across all peers (the rendezvous's registrations, its
	// tunnels) may use what the whole node may.
	pr, sys := &limits.ProtocolBaseLimit, limits.SystemBaseLimit
	pr.StreamsInbound, pr.StreamsOutbound, pr.Streams = sys.StreamsInbound, sys.StreamsOutbound, sys.Streams
	pri, sysi := &limits.ProtocolLimitIncrease, limits.SystemLimitIncrease
	pri.StreamsInbound, pri.StreamsOutbound, pri.Streams = sysi.StreamsInbound, sysi.StreamsOutbound, sysi.Streams
	scaled := limits.AutoScale()
	if maxMemory != 0 {
		scaled = rcmgr.PartialLimitConfig{
			System: rcmgr.ResourceLimits{Memory: rcmgr.LimitVal64(maxMemory)},
		}.Build(scaled)
	}
	memory := int64(scaled.ToPartialLimitConfig().System.Memory)
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(scaled))
	if err != nil {
		return nil, 0, fmt.Errorf("mesh: resource manager: %w", err)
	}
	return rm, memory, nil
}

// transportOptions are the libp2p options of every node: security,
// muxer (with a receive window of at most maxWindow bytes per stream) and
// dial preference.
func transportOptions(maxWindow int) []libp2p.Option {
	yc := *yamux.DefaultTransport.Config() // a copy: the default is shared
	yc.MaxStreamWindowSize = uint32(maxWindow)
	return []libp2p.Option{
		libp2p.Security(libp2ptls.ID, newBatchedTLS),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, (*yamux.Transport)(&yc)),
		libp2p.SwarmOpts(swarm.WithDialRanker(tcpFirstRanker)),
	}
}

// batchedTLS is go-libp2p's TLS 1.3 security transport (/tls/1.0.0,
// unchanged on the wire) whose Writes reach the socket in one syscall.
//
// crypto/tls writes every record (at most 16 KiB of plaintext) with its
// own write(2); yamux hands it up to 64 KiB per Write, so a relay
// forwarding 1 GiB made some 65,000 write syscalls on each connection.
// batchedTLS gathers the records of one Write and sends them together.
type batchedTLS struct {
	*libp2ptls.Transport
	bufs *sync.Pool // of *[]byte of cap maxBatch, shared by the conns
}

// newBatchedTLS has the signature libp2p.Security expects of a security
// transport's constructor.
func newBatchedTLS(id protocol.ID, key crypto.PrivKey, muxers []tptu.StreamMuxer) (*batchedTLS, error) {
	t, err := libp2ptls.New(id, key, muxers)
	if err != nil {
		return nil, err
	}
	return &batchedTLS{Transport: t, bufs: &sync.Pool{}}, nil
}

// SecureInbound implements sec.SecureTransport.
func (t *batchedTLS) SecureInbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	bc := &batchConn{Conn: insecure, bufs: t.bufs}
	sc, err := t.Transport.SecureInbound(ctx, bc, p)
	if err != nil {
		return nil, err
	}
	return &batchedSecureConn{SecureConn: sc, bc: bc}, nil
}

// SecureOutbound implements sec.SecureTransport.
func (t *batchedTLS) SecureOutbound(ctx context.Context, insecure net.Conn, p peer.ID) (sec.SecureConn, error) {
	bc := &batchConn{Conn: insecure, bufs: t.bufs}
	sc, err := t.Transport.SecureOutbound(ctx, bc, p)
	if err != nil {
		return nil, err
	}
	return &batchedSecureConn{SecureConn: sc, bc: bc}, nil
}

// batchedSecureConn is a TLS connection whose Write sends the records it
// makes in one write to the socket.
type batchedSecureConn struct {
	sec.SecureConn
	bc *batchConn
}

// Write encrypts p and sends its records at once.
func (c *batchedSecureConn) Write(p []byte) (int, error) {
	c.bc.batching.Add(1)
	n, err := c.SecureConn.Write(p)
	c.bc.batching.Add(-1)
	if ferr := c.bc.flush(); err == nil {
		err = ferr
	}
	return n, err
}

// batchConn is the socket under a batchedSecureConn. While a Write of the
// secure conn is under way, what TLS writes is gathered (up to
// maxBatch bytes) instead of written at once; the secure conn's Write
// flushes it before returning. Other writes (the handshake, alerts, key
// updates from a Read) go out at once, after anything gathered before
// them, so bytes keep their order.
type batchConn struct {
	net.Conn
	batching atomic.Int32
	bufs     *sync.Pool

	mu  sync.Mutex // guards buf and serializes writes to Conn
	buf []byte     // from bufs while not nil
}

// maxBatch bounds the bytes gathered before a write: yamux's largest
// frame (64 KiB) plus the records' overhead fits.
const maxBatch = 128 << 10

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.batching.Load() > 0 && len(b.buf)+len(p) <= maxBatch {
		if b.buf == nil {
			if v, ok := b.bufs.Get().(*[]byte); ok {
				b.buf = (*v)[:0]
			} else {
				b.buf = make([]byte, 0, maxBatch)
			}
		}
		b.buf = append(b.buf, p...)
		return len(p), nil
	}
	if err := b.flushLocked(); err != nil {
		return 0, err
	}
	return b.Conn.Write(p)
}

func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if b.buf == nil {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	buf := b.buf
	b.bufs.Put(&buf)
	b.buf = nil
	return err
}
