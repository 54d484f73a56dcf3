package relay

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/meshup/meshup/mesh"
)

// NAT detection. A relay asks the rendezvous's two STUN ports, from one
// socket, for its server-reflexive address: the answers say whether it is
// public, behind a NAT that maps endpoint-independently (cone: hole
// punching can work) or behind a symmetric one (it cannot; peers reach the
// relay through a circuit). From the answer and from the address the
// rendezvous observes on the register connection, the relay derives the
// public addresses it advertises: go-libp2p starts hole punching only once
// it knows a public address of its own, and its identify-based discovery
// needs more observers than a small mesh has (go-libp2p issue 2941).

// probeNAT runs one STUN probe against servers and records the outcome.
// With Config.PublicIP set it probes nothing: the operator knows.
func (s *Server) probeNAT(ctx context.Context, servers []string) {
	if s.cfg.PublicIP != "" {
		s.setNAT(mesh.NATReport{Type: mesh.NATPublic})
		return
	}
	if len(servers) == 0 {
		s.log.Warn("the rendezvous offers no STUN: NAT type unknown, the relay will be reached through the rendezvous")
		s.setNAT(mesh.NATReport{Type: mesh.NATUnknown})
		return
	}
	rep, err := mesh.ProbeNAT(ctx, servers, mesh.ProbeConfig{})
	if err != nil {
		s.log.Warn("STUN probe failed", "servers", servers, "err", err)
		rep = mesh.NATReport{Type: mesh.NATUnknown}
	}
	s.setNAT(rep)
}

// setNAT records a NAT report and advertises the addresses it implies.
func (s *Server) setNAT(rep mesh.NATReport) {
	s.mesh.mu.Lock()
	old := s.mesh.nat
	s.mesh.nat = rep.Type.String()
	s.mesh.report = rep
	if rep.Mapped.IsValid() {
		s.mesh.stun = udpMultiaddr(rep.Mapped)
	}
	s.mesh.mu.Unlock()
	s.updateAddrs()
	if old != rep.Type.String() {
		s.log.Info("NAT detected", "nat", rep.Type, "mapped", rep.Mapped, "mapped_alt", rep.MappedAlt, "local", rep.Local)
	}
}

// updateAddrs recomputes the public addresses the relay advertises from
// its NAT report and its observed addresses.
func (s *Server) updateAddrs() {
	var declared netip.Addr
	if s.cfg.PublicIP != "" {
		declared, _ = netip.ParseAddr(s.cfg.PublicIP) // checked by Validate
	}
	s.mesh.mu.Lock()
	rep, observed := s.mesh.report, s.mesh.observed
	s.mesh.mu.Unlock()
	addrs := mesh.PublicAddrs(s.cfg.Node.ListenAddrs(), rep, observed, declared)
	s.mesh.mu.Lock()
	s.mesh.natAddrs = addrs
	s.mesh.mu.Unlock()
	s.advertise()
}

// natLoop probes again every NATProbeInterval until ctx is done. NAT
// mappings and home IPs change.
func (s *Server) natLoop(ctx context.Context, servers []string) {
	t := time.NewTicker(s.cfg.NATProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.probeNAT(ctx, servers)
		}
	}
}

// udpMultiaddr formats a STUN-mapped address as a multiaddr.
func udpMultiaddr(ap netip.AddrPort) string {
	fam := "ip4"
	if ap.Addr().Is6() && !ap.Addr().Is4In6() {
		fam = "ip6"
	}
	return fmt.Sprintf("/%s/%s/udp/%d", fam, ap.Addr().Unmap(), ap.Port())
}
