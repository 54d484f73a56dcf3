package mesh_test

import (
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/meshup/meshup/mesh"
)

func TestNATTypeNames(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ  mesh.NATType
		name string
	}{
		{mesh.NATUnknown, "unknown"},
		{mesh.NATPublic, "public"},
		{mesh.NATCone, "cone"},
		{mesh.NATSymmetric, "symmetric"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.typ.String(); got != tt.name {
				t.Errorf("String: got %v, want %v", got, tt.name)
			}
			got, err := mesh.ParseNATType(tt.name)
			if err != nil || got != tt.typ {
				t.Errorf("ParseNATType: got %v, %v, want %v, nil", got, err, tt.typ)
			}
			b, err := json.Marshal(struct{ T mesh.NATType }{tt.typ})
			if want := `{"T":"` + tt.name + `"}`; err != nil || string(b) != want {
				t.Errorf("JSON: got %s, %v, want %s", b, err, want)
			}
			var back struct{ T mesh.NATType }
			if err := json.Unmarshal(b, &back); err != nil || back.T != tt.typ {
				t.Errorf("JSON round trip: got %v, %v, want %v", back.T, err, tt.typ)
			}
		})
	}
	for _, bad := range []string{"", "Cone", "full-cone", "symmetric "} {
		if got, err := mesh.ParseNATType(bad); !errors.Is(err, mesh.ErrNATType) || got != mesh.NATUnknown {
			t.Errorf("ParseNATType(%q): got %v, %v, want unknown, %v", bad, got, err, mesh.ErrNATType)
		}
	}
	if got := mesh.NATType(9).String(); got != "NATType(9)" {
		t.Errorf("String of an invalid type: got %v, want NATType(9)", got)
	}
	if _, err := mesh.NATType(9).MarshalText(); !errors.Is(err, mesh.ErrNATType) {
		t.Errorf("MarshalText of an invalid type: got %v, want %v", err, mesh.ErrNATType)
	}
}

func TestClassifyNAT(t *testing.T) {
	t.Parallel()
	ap := netip.MustParseAddrPort
	local := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"),
		netip.MustParseAddr("10.0.0.2"),
		netip.MustParseAddr("::1"),
		netip.MustParseAddr("2001:db8::5"),
		netip.MustParseAddr("::ffff:192.0.2.9"), // mapped form in the list
	}
	const port = 4000
	var none netip.AddrPort
	tests := []struct {
		name          string
		local         []netip.Addr
		first, second netip.AddrPort
		want          mesh.NATType
	}{
		{"no answers", local, none, none, mesh.NATUnknown},
		{"first only", local, ap("198.51.100.1:4000"), none, mesh.NATUnknown},
		{"second only", local, none, ap("198.51.100.1:4000"), mesh.NATUnknown},
		{"first only, local", local, ap("10.0.0.2:4000"), none, mesh.NATUnknown},
		{"second only, local", local, none, ap("10.0.0.2:4000"), mesh.NATUnknown},
		{"local, port kept", local, ap("10.0.0.2:4000"), ap("10.0.0.2:4000"), mesh.NATPublic},
		{"loopback, port kept", local, ap("127.0.0.1:4000"), ap("127.0.0.1:4000"), mesh.NATPublic},
		{"ipv6 local, port kept", local, ap("[2001:db8::5]:4000"), ap("[2001:db8::5]:4000"), mesh.NATPublic},
		{"mapped answers", local, ap("[::ffff:10.0.0.2]:4000"), ap("10.0.0.2:4000"), mesh.NATPublic},
		{"mapped local address", local, ap("192.0.2.9:4000"), ap("192.0.2.9:4000"), mesh.NATPublic},
		{"local ip, port changed", local, ap("10.0.0.2:5000"), ap("10.0.0.2:5000"), mesh.NATCone},
		{"same foreign address", local, ap("198.51.100.1:5000"), ap("198.51.100.1:5000"), mesh.NATCone},
		{"same foreign ip, port kept", local, ap("198.51.100.1:4000"), ap("198.51.100.1:4000"), mesh.NATCone},
		{"no local addresses", nil, ap("10.0.0.2:4000"), ap("10.0.0.2:4000"), mesh.NATCone},
		{"ports differ", local, ap("198.51.100.1:5000"), ap("198.51.100.1:5001"), mesh.NATSymmetric},
		{"ips differ", local, ap("198.51.100.1:5000"), ap("198.51.100.2:5000"), mesh.NATSymmetric},
		{"local then foreign", local, ap("10.0.0.2:4000"), ap("198.51.100.1:4000"), mesh.NATSymmetric},
		{"families differ", local, ap("198.51.100.1:5000"), ap("[2001:db8::1]:5000"), mesh.NATSymmetric},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := mesh.ClassifyNAT(tt.local, port, tt.first, tt.second); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestPublicAddrs(t *testing.T) {
	t.Parallel()
	listen := []string{
		"/ip4/0.0.0.0/tcp/4001",
		"/ip4/0.0.0.0/udp/4001/quic-v1",
		"/ip4/10.0.0.2/tcp/4002",
		"/ip6/::/tcp/4003",
		"/ip4/0.0.0.0/tcp/0",               // not bound yet: no port to advertise
		"/ip4/0.0.0.0/tcp/4004/ws",         // not a form meshup advertises
		"/dns4/relay.example.org/tcp/4005", // not an IP
		"/ip4/0.0.0.0/udp/4006/quic-v1/webtransport",
		"not a multiaddr",
	}
	report := func(typ mesh.NATType, mapped string) mesh.NATReport {
		r := mesh.NATReport{Type: typ}
		if mapped != "" {
			r.Mapped = netip.MustParseAddrPort(mapped)
		}
		return r
	}
	addr := netip.MustParseAddr
	var noIP netip.Addr
	tests := []struct {
		name     string
		listen   []string
		nat      mesh.NATReport
		observed []string
		declared netip.Addr
		want     []string
	}{
		{"unknown", listen, report(mesh.NATUnknown, "1.2.3.4:4001"), []string{"/ip4/1.2.3.4/tcp/4001"}, noIP, nil},
		{"declared", listen, report(mesh.NATSymmetric, "1.2.3.4:999"), []string{"/ip4/1.2.3.4/tcp/4001"}, addr("5.6.7.8"), []string{
			"/ip4/5.6.7.8/tcp/4001", "/ip4/5.6.7.8/tcp/4002", "/ip4/5.6.7.8/udp/4001/quic-v1",
		}},
		{"declared ipv6", listen, report(mesh.NATUnknown, ""), nil, addr("2606:4700::1"), []string{"/ip6/2606:4700::1/tcp/4003"}},
		{"declared mapped form", listen[:1], report(mesh.NATUnknown, ""), nil, addr("::ffff:5.6.7.8"), []string{"/ip4/5.6.7.8/tcp/4001"}},
		{"declared private", listen, report(mesh.NATUnknown, ""), nil, addr("10.0.0.9"), nil},
		{"declared documentation", listen, report(mesh.NATUnknown, ""), nil, addr("203.0.113.5"), nil},
		{"declared loopback", listen, report(mesh.NATUnknown, ""), nil, addr("127.0.0.1"), nil},
		{"public", []string{"/ip4/1.2.3.4/tcp/4001", "/ip4/127.0.0.1/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1", "/ip6/2606:4700::2/tcp/4003"},
			report(mesh.NATPublic, "1.2.3.4:50000"), nil, noIP, []string{
				"/ip4/1.2.3.4/tcp/4001", "/ip4/1.2.3.4/udp/4001/quic-v1", "/ip6/2606:4700::2/tcp/4003",
			}},
		{"public on loopback", []string{"/ip4/127.0.0.1/tcp/4001"}, report(mesh.NATPublic, "127.0.0.1:4001"), nil, noIP, nil},
		{"cone", listen, report(mesh.NATCone, "1.2.3.4:50000"), nil, noIP, []string{
			"/ip4/1.2.3.4/tcp/4001", "/ip4/1.2.3.4/tcp/4002", "/ip4/1.2.3.4/udp/4001/quic-v1",
		}},
		{"cone with observed tcp", listen, report(mesh.NATCone, "1.2.3.4:50000"), []string{
			"/ip4/1.2.3.4/tcp/61000/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
			"/ip4/9.9.9.9/udp/62000/quic-v1", // another IP: not this NAT's mapping
		}, noIP, []string{
			"/ip4/1.2.3.4/tcp/61000", "/ip4/1.2.3.4/udp/4001/quic-v1",
		}},
		{"cone with observed both", listen[:2], report(mesh.NATCone, "1.2.3.4:50000"), []string{
			"/ip4/1.2.3.4/udp/62000/quic-v1", "/ip4/1.2.3.4/tcp/61000", "/ip4/1.2.3.4/tcp/61001",
		}, noIP, []string{
			"/ip4/1.2.3.4/tcp/61000", "/ip4/1.2.3.4/tcp/61001", "/ip4/1.2.3.4/udp/62000/quic-v1",
		}},
		{"cone behind cgnat", listen, report(mesh.NATCone, "100.64.1.1:50000"), nil, noIP, nil},
		{"cone without mapped", listen, report(mesh.NATCone, ""), nil, noIP, nil},
		{"cone ipv6 mapped", listen, report(mesh.NATCone, "[2606:4700::3]:50000"), nil, noIP, []string{"/ip6/2606:4700::3/tcp/4003"}},
		{"symmetric", listen, report(mesh.NATSymmetric, "1.2.3.4:50000"), []string{
			"/ip4/1.2.3.4/tcp/61000/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
			"/ip4/1.2.3.4/tcp/61000",
			"/ip4/192.168.1.5/tcp/4001",
			"/ip4/1.2.3.4/udp/62000/quic-v1",
			"/ip4/1.2.3.4/tcp/61002/ws",
			"/p2p-circuit",
		}, noIP, []string{"/ip4/1.2.3.4/tcp/61000", "/ip4/1.2.3.4/udp/62000/quic-v1"}},
		{"symmetric without observed", listen, report(mesh.NATSymmetric, "1.2.3.4:50000"), nil, noIP, nil},
		{"nothing to listen on", nil, report(mesh.NATCone, "1.2.3.4:50000"), nil, addr("5.6.7.8"), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mesh.PublicAddrs(tt.listen, tt.nat, tt.observed, tt.declared)
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// The order of the inputs does not matter.
			rev := mesh.PublicAddrs(reversed(tt.listen), tt.nat, reversed(tt.observed), tt.declared)
			if !slices.Equal(rev, got) {
				t.Errorf("reversed inputs: got %q, want %q", rev, got)
			}
		})
	}
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

func TestIsPublicIP(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ip   string
		want bool
	}{
		{"1.2.3.4", true},
		{"::ffff:1.2.3.4", true},
		{"2606:4700::1", true},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"127.0.0.1", false},
		{"169.254.1.1", false},
		{"0.0.0.0", false},
		{"192.0.2.1", false},
		{"198.51.100.1", false},
		{"203.0.113.1", false},
		{"224.0.0.1", false},
		{"::1", false},
		{"::", false},
		{"fe80::1", false},
		{"fd00::1", false},
		{"2001:db8::1", false},
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			if got := mesh.IsPublicIP(netip.MustParseAddr(tt.ip)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if mesh.IsPublicIP(netip.Addr{}) {
		t.Error("zero Addr: got true, want false")
	}
}
