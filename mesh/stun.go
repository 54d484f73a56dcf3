package mesh

// STUN client: ProbeNAT asks the rendezvous's two STUN ports (proto.Info
// STUN) for the node's server-reflexive address from one UDP socket, and
// classifies the NAT with ClassifyNAT.
//
// Protocol flow (RFC 5389 section 7.2.1, retransmission simplified to a
// fixed interval):
//
//	ProbeNAT (one socket)                 primary       alternate
//	  | Binding request (txid A) -------->  |               |
//	  | Binding request (txid B) ------------------------>  |
//	  |   ... resent every Interval, Tries times, to the ports that
//	  |   have not answered, with the same transaction id ...
//	  | <-------- success A: XOR-MAPPED-ADDRESS             |
//	  | <---------------------------- success B: XOR-MAPPED-ADDRESS

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v2"
)

// Defaults of ProbeConfig.
const (
	// DefaultProbeTries is how many Binding requests go to each STUN port.
	DefaultProbeTries = 3
	// DefaultProbeInterval is the time between two tries, and how long the
	// probe waits after the last one.
	DefaultProbeInterval = 500 * time.Millisecond
	// DefaultProbeLocalAddr is the probe socket's address: IPv4, every
	// interface, a port chosen by the kernel.
	DefaultProbeLocalAddr = "0.0.0.0:0"
)

// maxSTUNAnswer bounds the datagrams the probe reads, in bytes.
const maxSTUNAnswer = 1500

// ErrSTUNServers means ProbeNAT was given no STUN server, or more than two.
var ErrSTUNServers = errors.New("mesh: stun probe needs one or two servers")

// ProbeConfig configures ProbeNAT. Zero values mean the documented
// defaults.
type ProbeConfig struct {
	// LocalAddr is the UDP address the probe socket binds. Its IP family
	// (IPv4 unless it is an IPv6 address) is the family of the server
	// addresses used. Defaults to "0.0.0.0:0".
	LocalAddr string
	// Tries is how many Binding requests are sent to each STUN port that
	// has not answered yet. Defaults to 3.
	Tries int
	// Interval is the time between tries; after the last one the probe
	// waits one more Interval. Defaults to 500ms, so a probe lasts at most
	// 1.5s with the defaults.
	Interval time.Duration
}

// NATReport is the outcome of ProbeNAT.
type NATReport struct {
	// Type is the NAT type (ClassifyNAT).
	Type NATType
	// Mapped is the node's server-reflexive address as the first STUN
	// server saw it, or as the second one did when the first did not
	// answer; zero without answers.
	Mapped netip.AddrPort
	// MappedAlt is the second server's answer, zero without one.
	MappedAlt netip.AddrPort
	// Local is the probe socket's address: the local IP the kernel routes
	// to the first server from, and the socket's port.
	Local netip.AddrPort
	// Answers is how many servers answered: 0, 1 or 2.
	Answers int
}

// ProbeNAT learns the node's server-reflexive address and NAT type. It
// opens one UDP socket, sends Binding requests to each of servers ("host:
// port", typically the two entries of proto.Info.STUN: the rendezvous's
// primary and alternate STUN ports), resends them as configured, and
// classifies the answers with ClassifyNAT against the node's interface
// addresses. It blocks for at most Tries*Interval (1.5s by default), less
// when every server has answered, and closes its socket before returning.
//
// Missing answers are not an error: they make the Type NATUnknown. With a
// single server the Type is always NATUnknown, but Mapped holds its answer.
// ProbeNAT returns an error when the servers cannot be resolved, the
// socket cannot be opened, the first requests could not be sent at all, or
// ctx ends before the probe does.
//
// The probe socket is not libp2p's: on a port-preserving NAT the mapped
// port equals the socket's port, and PublicAddrs assumes the same of
// libp2p's listen ports. Call it at start and periodically (NAT mappings
// and public IPs change); it is safe for concurrent use.
func ProbeNAT(ctx context.Context, servers []string, cfg ProbeConfig) (NATReport, error) {
	if len(servers) == 0 || len(servers) > 2 {
		return NATReport{}, fmt.Errorf("%w, got %d", ErrSTUNServers, len(servers))
	}
	if cfg.LocalAddr == "" {
		cfg.LocalAddr = DefaultProbeLocalAddr
	}
	if cfg.Tries <= 0 {
		cfg.Tries = DefaultProbeTries
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultProbeInterval
	}
	laddr, err := netip.ParseAddrPort(cfg.LocalAddr)
	if err != nil {
		return NATReport{}, fmt.Errorf("mesh: stun probe: local address: %w", err)
	}
	laddr = unmapAddrPort(laddr)
	network, ipNet := "udp4", "ip4"
	if laddr.Addr().Is6() {
		network, ipNet = "udp6", "ip6"
	}

	probes := make([]stunProbe, len(servers))
	for i, s := range servers {
		to, err := resolveUDP(ctx, ipNet, s)
		if err != nil {
			return NATReport{}, fmt.Errorf("mesh: stun probe: resolve %q: %w", s, err)
		}
		req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
		if err != nil {
			return NATReport{}, fmt.Errorf("mesh: stun probe: build request: %w", err)
		}
		probes[i] = stunProbe{to: to, req: req.Raw, txid: req.TransactionID}
	}

	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(laddr))
	if err != nil {
		return NATReport{}, fmt.Errorf("mesh: stun probe: listen on %s: %w", laddr, err)
	}
	defer conn.Close()
	bound := unmapAddrPort(conn.LocalAddr().(*net.UDPAddr).AddrPort())
	local := netip.AddrPortFrom(laddr.Addr(), bound.Port())
	if laddr.Addr().IsUnspecified() {
		local = netip.AddrPortFrom(routeSource(network, laddr.Addr(), probes[0].to), bound.Port())
	}

	if err := exchange(ctx, conn, probes, cfg); err != nil {
		return NATReport{}, err
	}

	ifAddrs, err := interfaceAddrs()
	if err != nil {
		return NATReport{}, fmt.Errorf("mesh: stun probe: list interface addresses: %w", err)
	}
	var second netip.AddrPort
	if len(probes) == 2 {
		second = probes[1].mapped
	}
	r := NATReport{
		Type:      ClassifyNAT(ifAddrs, bound.Port(), probes[0].mapped, second),
		Mapped:    probes[0].mapped,
		MappedAlt: second,
		Local:     local,
	}
	if !r.Mapped.IsValid() {
		r.Mapped = second
	}
	for _, p := range probes {
		if p.mapped.IsValid() {
			r.Answers++
		}
	}
	return r, nil
}

// stunProbe is the state of the requests to one STUN server.
type stunProbe struct {
	to     netip.AddrPort
	req    []byte
	txid   [stun.TransactionIDSize]byte
	mapped netip.AddrPort // the answer; zero until it arrives
}

// exchange sends the probes' requests and reads answers until every probe
// has one or the last try has had Interval to be answered.
func exchange(ctx context.Context, conn *net.UDPConn, probes []stunProbe, cfg ProbeConfig) error {
	// A cancelled ctx wakes the read with a deadline in the past; the mutex
	// keeps the loop from overwriting it with a later one.
	var (
		mu        sync.Mutex // guards cancelled and the read deadline
		cancelled bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		cancelled = true
		conn.SetReadDeadline(time.Unix(1, 0))
	})
	defer stop()

	txids := make([][stun.TransactionIDSize]byte, len(probes))
	for i, p := range probes {
		txids[i] = p.txid
	}
	buf := make([]byte, maxSTUNAnswer)
	var sendErr error
	sent, answered := 0, 0
	var next time.Time
	for answered < len(probes) {
		if now := time.Now(); !now.Before(next) {
			if sent == cfg.Tries {
				break
			}
			ok := 0
			for _, p := range probes {
				if p.mapped.IsValid() {
					continue
				}
				if _, err := conn.WriteToUDPAddrPort(p.req, p.to); err != nil {
					sendErr = err
					continue
				}
				ok++
			}
			if sent == 0 && ok == 0 {
				return fmt.Errorf("mesh: stun probe: send binding request: %w", sendErr)
			}
			sent++
			next = now.Add(cfg.Interval)
		}
		mu.Lock()
		if cancelled {
			mu.Unlock()
			return fmt.Errorf("mesh: stun probe: %w", context.Cause(ctx))
		}
		conn.SetReadDeadline(next)
		mu.Unlock()

		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // time to resend, or cancelled: the loop tells
			}
			return fmt.Errorf("mesh: stun probe: read: %w", err)
		}
		i, mapped, ok := parseBindingAnswer(buf[:n], txids)
		if !ok || unmapAddrPort(from) != probes[i].to || probes[i].mapped.IsValid() {
			continue // not ours, spoofed, or a duplicate of a resent request
		}
		probes[i].mapped = mapped
		answered++
	}
	return nil
}

// parseBindingAnswer decodes a STUN Binding success answering one of the
// transaction ids txids, and returns that id's index and the mapped
// address (XOR-MAPPED-ADDRESS). ok is false for anything else: another
// message, a malformed one, or an answer to another transaction. It never
// panics, whatever pkt holds.
func parseBindingAnswer(pkt []byte, txids [][stun.TransactionIDSize]byte) (i int, mapped netip.AddrPort, ok bool) {
	if !stun.IsMessage(pkt) || pkt[0]&0xc0 != 0 {
		return 0, netip.AddrPort{}, false
	}
	size := int(pkt[2])<<8 | int(pkt[3])
	if size%4 != 0 || len(pkt) != 20+size {
		return 0, netip.AddrPort{}, false
	}
	m := &stun.Message{Raw: pkt}
	if m.Decode() != nil || m.Type != stun.BindingSuccess {
		return 0, netip.AddrPort{}, false
	}
	i = -1
	for j, id := range txids {
		if m.TransactionID == id {
			i = j
		}
	}
	if i < 0 {
		return 0, netip.AddrPort{}, false
	}
	if m.Contains(stun.AttrFingerprint) && stun.Fingerprint.Check(m) != nil {
		return 0, netip.AddrPort{}, false
	}
	// pion's XORMappedAddress.GetFrom reads the family before checking the
	// attribute's length (and panics on a short one): check it first.
	v, err := m.Get(stun.AttrXORMappedAddress)
	if err != nil || !(len(v) == 8 && v[1] == 1 || len(v) == 20 && v[1] == 2) {
		return 0, netip.AddrPort{}, false
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		return 0, netip.AddrPort{}, false
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok || xa.Port <= 0 || xa.Port > 0xffff {
		return 0, netip.AddrPort{}, false
	}
	return i, netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), true
}

// resolveUDP resolves "host:port" to one address of family ipNet ("ip4" or
// "ip6").
func resolveUDP(ctx context.Context, ipNet, hostport string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	p, err := net.DefaultResolver.LookupPort(ctx, "udp", port)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.Is4() != (ipNet == "ip4") {
			return netip.AddrPort{}, fmt.Errorf("%s is not an %s address", ip, ipNet)
		}
		return netip.AddrPortFrom(ip, uint16(p)), nil
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, ipNet, host)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if len(ips) == 0 {
		return netip.AddrPort{}, fmt.Errorf("no %s address", ipNet)
	}
	return netip.AddrPortFrom(ips[0].Unmap(), uint16(p)), nil
}

// routeSource returns the local IP the kernel would send from to reach to,
// or unspec when it cannot tell. Connecting a UDP socket sends nothing.
func routeSource(network string, unspec netip.Addr, to netip.AddrPort) netip.Addr {
	c, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		return unspec
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
}

// interfaceAddrs lists the IP addresses of the node's interfaces.
func interfaceAddrs() ([]netip.Addr, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		var ip net.IP
		switch a := a.(type) {
		case *net.IPNet:
			ip = a.IP
		case *net.IPAddr:
			ip = a.IP
		}
		if v, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, v.Unmap())
		}
	}
	return out, nil
}
