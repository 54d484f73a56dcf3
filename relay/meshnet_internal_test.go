package relay

import (
	"slices"
	"testing"

	"github.com/meshup/meshup/proto"
)

func TestDialPlan(t *testing.T) {
	const (
		direct  = "/ip4/11.0.0.9/udp/4001/quic-v1/p2p/B"
		direct2 = "/ip4/11.0.0.9/tcp/4001/p2p/B"
		circuit = "/ip4/11.0.0.1/tcp/4001/p2p/R/p2p-circuit/p2p/B"
	)
	all := []string{direct, circuit, direct2}
	tests := []struct {
		name     string
		self     string
		selfNAT  string
		peer     proto.PeerInfo
		wantDial bool
		want     []string
	}{
		{"self", "B", proto.NATCone, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: all}, false, nil},
		{"behind NAT dials public peer directly", "Z", proto.NATCone, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: all}, true, []string{direct, direct2}},
		{"symmetric dials public peer directly", "A", proto.NATSymmetric, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: all}, true, []string{direct, direct2}},
		{"unknown NAT dials public peer directly", "A", proto.NATUnknown, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: all}, true, []string{direct, direct2}},
		{"public leaves peer behind NAT to dial", "A", proto.NATPublic, proto.PeerInfo{ID: "B", NAT: proto.NATCone, Addrs: all}, false, nil},
		{"public with smaller id dials public", "A", proto.NATPublic, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: all}, true, []string{direct, direct2}},
		{"public with larger id waits", "C", proto.NATPublic, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: all}, false, nil},
		{"cone with smaller id dials cone by circuit", "A", proto.NATCone, proto.PeerInfo{ID: "B", NAT: proto.NATCone, Addrs: all}, true, []string{circuit}},
		{"cone with larger id waits", "C", proto.NATCone, proto.PeerInfo{ID: "B", NAT: proto.NATCone, Addrs: all}, false, nil},
		{"symmetric dials symmetric by circuit", "A", proto.NATSymmetric, proto.PeerInfo{ID: "B", NAT: proto.NATSymmetric, Addrs: all}, true, []string{circuit}},
		{"unknown dials cone by circuit", "A", proto.NATUnknown, proto.PeerInfo{ID: "B", NAT: proto.NATCone, Addrs: all}, true, []string{circuit}},
		{"no circuit yet: wait", "A", proto.NATCone, proto.PeerInfo{ID: "B", NAT: proto.NATCone, Addrs: []string{direct}}, false, nil},
		{"public peer without direct addrs", "A", proto.NATCone, proto.PeerInfo{ID: "B", NAT: proto.NATPublic, Addrs: []string{circuit}}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, dial := dialPlan(tt.self, tt.selfNAT, tt.peer)
			if dial != tt.wantDial || !slices.Equal(got, tt.want) {
				t.Errorf("got %v %v, want %v %v", got, dial, tt.want, tt.wantDial)
			}
		})
	}
}

// TestApplyDirectory: deltas add, change and remove entries; a full
// directory replaces; entries naming the relay itself are skipped.
func TestApplyDirectory(t *testing.T) {
	s := &Server{id: "SELF"}
	s.mesh.init()
	ids := func() []string {
		var out []string
		for _, p := range s.mesh.directory {
			out = append(out, p.ID+"="+p.NAT)
		}
		slices.Sort(out)
		return out
	}
	steps := []struct {
		name string
		m    proto.Peers
		want []string
	}{
		{"first delta", proto.Peers{Delta: true, Peers: []proto.PeerInfo{{ID: "A", NAT: "cone"}, {ID: "B", NAT: "public"}, {ID: "SELF", NAT: "public"}}}, []string{"A=cone", "B=public"}},
		{"change and remove", proto.Peers{Delta: true, Peers: []proto.PeerInfo{{ID: "A", NAT: "symmetric"}}, Removed: []string{"B"}}, []string{"A=symmetric"}},
		{"add", proto.Peers{Delta: true, Peers: []proto.PeerInfo{{ID: "C", NAT: "cone"}}}, []string{"A=symmetric", "C=cone"}},
		{"full replaces", proto.Peers{Peers: []proto.PeerInfo{{ID: "D", NAT: "public"}}}, []string{"D=public"}},
		{"remove unknown", proto.Peers{Delta: true, Removed: []string{"Z"}}, []string{"D=public"}},
	}
	for _, st := range steps {
		s.applyDirectory(&st.m)
		if got := ids(); !slices.Equal(got, st.want) {
			t.Errorf("%s: got %v, want %v", st.name, got, st.want)
		}
	}
}

func TestCircuitHop(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"/ip4/11.0.0.1/tcp/4001/p2p/R/p2p-circuit/p2p/B", "R"},
		{"/ip4/11.0.0.1/tcp/4001/p2p/R/p2p-circuit", "R"},
		{"/ip4/11.0.0.9/tcp/4001/p2p/B", ""},
		{"/p2p-circuit/p2p/B", ""},
	} {
		if got := circuitHop(tc.addr); got != tc.want {
			t.Errorf("circuitHop(%q): got %q, want %q", tc.addr, got, tc.want)
		}
	}
}
