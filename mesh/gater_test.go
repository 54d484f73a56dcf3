package mesh_test

import (
	"context"
	"errors"
	"testing"

	"github.com/meshup/meshup/mesh"
)

func TestIsPublicMultiaddr(t *testing.T) {
	t.Parallel()
	const id = "12D3KooWGzBEa7d2KqzEGQkEN3YcHKx2Ld3CkG5k1yr3sS6gZzKd"
	tests := []struct {
		addr string
		want bool
	}{
		{"/ip4/11.0.2.2/tcp/4001", true},
		{"/ip4/11.0.2.2/udp/4001/quic-v1/p2p/" + id, true},
		{"/ip6/2606:4700::1/tcp/4001", true},
		{"/ip4/11.0.1.2/tcp/4001/p2p/" + id + "/p2p-circuit/p2p/" + id, true}, // through a public relay
		{"/ip4/192.168.1.1/tcp/22/p2p/" + id, false},
		{"/ip4/10.0.0.1/tcp/4001", false},
		{"/ip4/127.0.0.1/tcp/4001", false},
		{"/ip4/169.254.0.1/tcp/4001", false},
		{"/ip4/100.64.0.1/tcp/4001", false},
		{"/ip4/0.0.0.0/tcp/4001", false},
		{"/ip4/224.0.0.1/udp/4001/quic-v1", false},
		{"/ip6/fd00::1/tcp/4001", false},
		{"/ip6/fe80::1/tcp/4001", false},
		{"/ip6/::1/tcp/4001", false},
		{"/ip4/10.0.0.1/tcp/4001/p2p/" + id + "/p2p-circuit/p2p/" + id, false}, // through a private relay
		{"/dns4/localhost/tcp/4001", false},
		{"not a multiaddr", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := mesh.IsPublicMultiaddr(tt.addr); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestGaterRefusesPrivateDial: a node with the default config never dials
// a private address, whoever named it: Connect fails, the target sees no
// connection, and the refusal is counted. A node with AllowPrivateAddrs
// connects to the same target.
func TestGaterRefusesPrivateDial(t *testing.T) {
	t.Parallel()
	target := newNode(t, mesh.Config{})
	strict := newNode(t, mesh.Config{}, true)
	if strict.AllowPrivateAddrs() {
		t.Fatal("AllowPrivateAddrs: got true for the default config, want false")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	_, err := strict.Connect(ctx, target.Addrs())
	if err == nil {
		t.Fatal("Connect to a loopback address: got nil error, want a refusal")
	}
	if got := strict.DialsRefused(); got < 1 {
		t.Errorf("DialsRefused: got %d, want >= 1", got)
	}
	if ps := target.Peers(); len(ps) != 0 {
		t.Errorf("target's peers: got %v, want none (nothing was dialled)", ps)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connect: got %v, want an immediate refusal", err)
	}

	lax := newNode(t, mesh.Config{})
	if _, err := lax.Connect(ctx, target.Addrs()); err != nil {
		t.Fatalf("Connect with AllowPrivateAddrs: %v", err)
	}
}

func TestCheckPeerAddr(t *testing.T) {
	t.Parallel()
	const id = "12D3KooWGzBEa7d2KqzEGQkEN3YcHKx2Ld3CkG5k1yr3sS6gZzKd"
	const other = "12D3KooWB4FhKkqWSdDqd6Hn6vKzTFv4MXGqSBnsrSRuWm8kqqhB"
	tests := []struct {
		addr    string
		private bool
		want    error
	}{
		{"/ip4/11.0.0.1/tcp/4001/p2p/" + id, false, nil},
		{"/ip4/11.0.0.1/tcp/4001/p2p/" + other + "/p2p-circuit/p2p/" + id, false, nil},
		{"/ip4/11.0.0.1/tcp/4001/p2p/" + id + "/p2p-circuit/p2p/" + other, false, mesh.ErrAddrForeign},
		{"/ip4/11.0.0.1/tcp/4001/p2p/" + other, false, mesh.ErrAddrForeign},
		{"/ip4/11.0.0.1/tcp/4001", false, mesh.ErrAddrForeign},
		{"/ip4/192.168.1.1/tcp/22/p2p/" + id, false, mesh.ErrAddrPrivate},
		{"/ip4/192.168.1.1/tcp/22/p2p/" + id, true, nil},
		{"/ip4/127.0.0.1/tcp/1/p2p/" + id, true, nil},
		{"garbage", true, mesh.ErrAddrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if _, err := mesh.CheckPeerAddr(tt.addr, id, tt.private); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	if got := mesh.AddrIP("/ip4/11.0.0.1/tcp/4001"); got != "11.0.0.1" {
		t.Errorf("AddrIP: got %q, want 11.0.0.1", got)
	}
}
