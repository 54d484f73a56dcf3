package rendezvous

// STUN: the rendezvous answers RFC 5389 Binding requests so that relays
// behind NAT learn their server-reflexive address (go-libp2p starts hole
// punching only once it knows a public address for itself, and its own
// discovery needs four observers; see DESIGN.md, Connectivity).
//
// Protocol flow (RFC 5389 section 7, UDP only, no authentication):
//
//	client                                   STUNServer
//	  | Binding request (txid T)  ------------->  |
//	  | <------------- Binding success (txid T)   |
//	  |   XOR-MAPPED-ADDRESS = source of request  |
//	  |   SOFTWARE "meshup", FINGERPRINT          |
//
// The rendezvous listens on two ports (Config.STUNAddr and STUNAltAddr). A
// client that sends from one socket to both and gets the same mapped
// address back sits behind an endpoint-independent ("cone") mapping; see
// mesh.ProbeNAT.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v2"
)

// STUN defaults and fixed limits.
const (
	// DefaultSTUNPort is the IANA port of STUN, used by cmd/rendezvous.
	DefaultSTUNPort = 3478
	// DefaultSTUNWriteTimeout bounds each STUN answer's write.
	DefaultSTUNWriteTimeout = time.Second
	// MaxSTUNPacket is the largest datagram the STUN server reads, in
	// bytes; longer datagrams are dropped. A Binding request needs 20 bytes
	// plus a few attributes; 1500 is a common Ethernet MTU.
	MaxSTUNPacket = 1500
	// STUNSoftware is the SOFTWARE attribute of every answer.
	STUNSoftware = "meshup"
	// STUNOff disables the STUN server, or only its alternate port, when
	// given as Config.STUNAddr or Config.STUNAltAddr.
	STUNOff = "off"
)

// Reasons a datagram on a STUN port is dropped, as counted in
// STUNStats.Dropped and Stats.STUNDropped.
const (
	STUNDropTooLarge   = "too_large"   // longer than MaxSTUNPacket
	STUNDropNotSTUN    = "not_stun"    // shorter than a header or no magic cookie
	STUNDropMalformed  = "malformed"   // STUN header, but lengths or attributes do not parse
	STUNDropNotBinding = "not_binding" // a well-formed message that is not a Binding request
	STUNDropBadCRC     = "fingerprint" // a FINGERPRINT attribute that does not match
	STUNDropWrite      = "write"       // the answer could not be sent
)

// stunDropReasons lists the drop reasons in a fixed order; stunCounters
// indexes by position.
var stunDropReasons = [...]string{
	STUNDropTooLarge,
	STUNDropNotSTUN,
	STUNDropMalformed,
	STUNDropNotBinding,
	STUNDropBadCRC,
	STUNDropWrite,
}

type stunDrop uint8

const (
	dropTooLarge stunDrop = iota
	dropNotSTUN
	dropMalformed
	dropNotBinding
	dropBadCRC
	dropWrite
	numDrops
)

func (d stunDrop) String() string { return stunDropReasons[d] }

// ErrSTUNClosed means the STUNServer has been closed.
var ErrSTUNClosed = errors.New("rendezvous: stun server closed")

// STUNConfig configures a STUNServer. Zero values mean the documented
// defaults.
type STUNConfig struct {
	// WriteTimeout bounds the write of each answer. Defaults to 1s.
	WriteTimeout time.Duration
	// Logger receives the server's logs; per-packet detail is logged at
	// Debug. Defaults to slog.Default().
	Logger *slog.Logger
}

// STUNStats is a snapshot of a STUNServer's counters. Requests counts
// every datagram read; each one is then either Answered or Dropped, and
// counted so just after the answer is sent or the datagram dropped.
type STUNStats struct {
	Requests uint64            // datagrams read on the STUN ports
	Answered uint64            // Binding success answers sent
	Dropped  map[string]uint64 // datagrams not answered, by reason (the STUNDrop constants)
}

// stunCounters are a STUNServer's monotonic counters.
type stunCounters struct {
	requests atomic.Uint64
	answered atomic.Uint64
	dropped  [numDrops]atomic.Uint64
}

// STUNServer answers STUN Binding requests on the PacketConns handed to
// Serve, one goroutine per PacketConn. It ignores anything that is not a
// well-formed Binding request, counting it by reason. Its methods are safe
// for concurrent use.
type STUNServer struct {
	cfg   STUNConfig
	log   *slog.Logger
	stats stunCounters

	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // Serve calls
	closeOnce sync.Once

	mu     sync.Mutex // guards the fields below
	closed bool
	conns  map[net.PacketConn]struct{}
}

// NewSTUNServer returns a STUNServer that serves nothing until Serve is
// called.
func NewSTUNServer(cfg STUNConfig) *STUNServer {
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultSTUNWriteTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &STUNServer{
		cfg:    cfg,
		log:    cfg.Logger,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[net.PacketConn]struct{}),
	}
}

// Serve answers Binding requests read from conn until conn fails or the
// server is closed. It blocks, and closes conn before returning. It
// returns nil when the server was closed, ErrSTUNClosed when it was
// already closed before the call, and the read error otherwise.
func (s *STUNServer) Serve(conn net.PacketConn) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		conn.Close()
		return ErrSTUNClosed
	}
	s.conns[conn] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
		s.wg.Done()
	}()

	log := s.log.With("stun", conn.LocalAddr().String())
	// One byte more than the limit tells an oversized datagram from one
	// of exactly MaxSTUNPacket bytes.
	buf := make([]byte, MaxSTUNPacket+1)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			if s.ctx.Err() != nil {
				log.Debug("stun server closed")
				return nil
			}
			return fmt.Errorf("rendezvous: stun read on %s: %w", conn.LocalAddr(), err)
		}
		s.stats.requests.Add(1)
		src, ok := udpAddrPort(from)
		if !ok {
			s.drop(log, dropNotSTUN, from)
			continue
		}
		if n > MaxSTUNPacket {
			s.drop(log, dropTooLarge, from)
			continue
		}
		resp, drop := stunAnswer(buf[:n], src)
		if resp == nil {
			s.drop(log, drop, from)
			continue
		}
		conn.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		if _, err := conn.WriteTo(resp, from); err != nil {
			s.drop(log, dropWrite, from)
			continue
		}
		// Counted once sent: counters never go down (Prometheus would read
		// a decrease as a reset), so a client may hold an answer a moment
		// before it is counted.
		s.stats.answered.Add(1)
		log.Debug("stun binding answered", "peer", src.String())
	}
}

func (s *STUNServer) drop(log *slog.Logger, d stunDrop, from net.Addr) {
	s.stats.dropped[d].Add(1)
	log.Debug("stun packet dropped", "peer", from.String(), "reason", d.String())
}

// Close stops every Serve call, closing their PacketConns, and waits for
// them to return. It is idempotent and always returns nil.
func (s *STUNServer) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		conns := make([]net.PacketConn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.cancel()
		for _, c := range conns {
			c.Close()
		}
	})
	s.wg.Wait()
	return nil
}

// Stats returns a snapshot of the server's counters. It is safe to call
// concurrently, also after Close.
func (s *STUNServer) Stats() STUNStats {
	st := STUNStats{
		Requests: s.stats.requests.Load(),
		Answered: s.stats.answered.Load(),
		Dropped:  make(map[string]uint64, numDrops),
	}
	for i := range numDrops {
		if n := s.stats.dropped[i].Load(); n > 0 {
			st.Dropped[i.String()] = n
		}
	}
	return st
}

// udpAddrPort returns the IP and port of a UDP source address, with
// IPv4-mapped IPv6 addresses (from dual-stack sockets) unmapped so that
// they are answered as IPv4.
func udpAddrPort(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := u.AddrPort()
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	return ap, ap.IsValid()
}

// stunAnswer returns the answer to the datagram pkt received from src, or
// nil and the reason to drop it. It never panics, whatever pkt holds.
//
// pkt must be exactly one STUN message (RFC 5389 section 6): a 20-byte
// header with the magic cookie and a length that accounts for every
// following byte, in whole 4-byte words. Attributes are not interpreted,
// except FINGERPRINT, which is checked when present; MESSAGE-INTEGRITY is
// ignored because the server holds no credentials.
func stunAnswer(pkt []byte, src netip.AddrPort) ([]byte, stunDrop) {
	if !stun.IsMessage(pkt) {
		return nil, dropNotSTUN
	}
	// The two most significant bits of every STUN message are zero
	// (RFC 5389 section 6); the rest of the header must describe pkt
	// exactly: UDP carries one message per datagram.
	if pkt[0]&0xc0 != 0 {
		return nil, dropMalformed
	}
	size := int(pkt[2])<<8 | int(pkt[3])
	if size%4 != 0 || len(pkt) != 20+size {
		return nil, dropMalformed
	}
	req := &stun.Message{Raw: pkt}
	if err := req.Decode(); err != nil {
		return nil, dropMalformed
	}
	if req.Type != stun.BindingRequest {
		return nil, dropNotBinding
	}
	if req.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(req); err != nil {
			return nil, dropBadCRC
		}
	}
	resp, err := stun.Build(
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		stun.NewSoftware(STUNSoftware),
		stun.Fingerprint,
	)
	if err != nil {
		// Only a bad address length fails, and src is always 4 or 16
		// bytes; count it rather than trust that.
		return nil, dropMalformed
	}
	return resp.Raw, 0 // the reason is unused with an answer
}

// startSTUN serves the opened STUN ports lns until the Server closes.
func (s *Server) startSTUN(lns []stunListener) {
	if len(lns) == 0 {
		return
	}
	s.stun = NewSTUNServer(STUNConfig{Logger: s.log})
	for _, l := range lns {
		s.stunAddrs = append(s.stunAddrs, l.addr)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.stun.Serve(l.conn); err != nil {
				s.log.Error("stun server stopped", "addr", l.addr, "err", err)
			}
		}()
	}
}

// stunStats returns the STUN counters, zero when STUN is off.
func (s *Server) stunStats() STUNStats {
	if s.stun == nil {
		return STUNStats{Dropped: map[string]uint64{}}
	}
	return s.stun.Stats()
}

// stunListener is one STUN port opened by the rendezvous.
type stunListener struct {
	conn net.PacketConn
	addr string // "host:port" as relays should reach it
}

// listenSTUN opens the STUN ports named by the (defaulted) config: the
// primary and, unless it is off, the alternate. publicURL supplies the
// advertised host of a port bound to an unspecified IP. On error nothing
// is left open.
func listenSTUN(primary, alt, publicURL string) ([]stunListener, error) {
	if primary == STUNOff {
		return nil, nil
	}
	addrs := []string{primary}
	if alt != STUNOff {
		addrs = append(addrs, alt)
	}
	var out []stunListener
	for _, a := range addrs {
		conn, err := net.ListenPacket("udp", a)
		if err != nil {
			for _, l := range out {
				l.conn.Close()
			}
			return nil, fmt.Errorf("rendezvous: stun listen on %s: %w", a, err)
		}
		out = append(out, stunListener{conn: conn, addr: advertisedSTUN(conn.LocalAddr(), publicURL)})
	}
	return out, nil
}

// advertisedSTUN returns "host:port" of a bound STUN port as relays should
// reach it: the bound IP, or the host of publicURL when the port is bound
// to an unspecified IP ("0.0.0.0", "::").
func advertisedSTUN(bound net.Addr, publicURL string) string {
	ap, ok := udpAddrPort(bound)
	if !ok {
		return bound.String()
	}
	port := strconv.Itoa(int(ap.Port()))
	if !ap.Addr().IsUnspecified() {
		return net.JoinHostPort(ap.Addr().String(), port)
	}
	u, err := url.Parse(publicURL)
	if err != nil || u.Hostname() == "" {
		return net.JoinHostPort(ap.Addr().String(), port)
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// stunAltDefault returns the default alternate STUN address for primary:
// the same host with the next port, or an ephemeral port when the primary
// port is 0 (chosen by the kernel).
func stunAltDefault(primary string) (string, error) {
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		return "", err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", fmt.Errorf("port %q: %w", port, err)
	}
	switch p {
	case 0:
		return net.JoinHostPort(host, "0"), nil
	case 65535:
		return "", errors.New("port 65535 has no next port for the alternate; set it explicitly")
	}
	return net.JoinHostPort(host, strconv.FormatUint(p+1, 10)), nil
}

// checkSTUNAddr checks a STUN listen address: "host:port" with a numeric
// port, where host may be empty (every interface).
func checkSTUNAddr(a string) error {
	_, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}
