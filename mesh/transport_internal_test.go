package mesh

import (
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// TestTCPFirstRanker checks the dial order: every TCP address of a peer
// before any of its QUIC addresses, relay circuits last, and go-libp2p's
// own order when the peer has one kind only.
func TestTCPFirstRanker(t *testing.T) {
	parse := func(ss ...string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			out = append(out, ma.StringCast(s))
		}
		return out
	}
	const (
		tcp4    = "/ip4/1.2.3.4/tcp/4001"
		tcp6    = "/ip6/2001:db8::1/tcp/4001"
		quic4   = "/ip4/1.2.3.4/udp/4001/quic-v1"
		quic6   = "/ip6/2001:db8::1/udp/4001/quic-v1"
		ws      = "/ip4/1.2.3.4/tcp/4002/ws"
		circuit = "/ip4/5.6.7.8/tcp/4001/p2p/12D3KooWGRUVh7QfQ4tnGDTD4m6cF4MvR7kcjGTY4tgzyFeJk6ev/p2p-circuit"
	)
	got := tcpFirstRanker(parse(quic4, circuit, quic6, tcp4, ws, tcp6))
	if len(got) != 6 {
		t.Fatalf("ranked %d addresses, want 6", len(got))
	}
	delay := map[string]int64{}
	for _, d := range got {
		delay[d.Addr.String()] = int64(d.Delay)
	}
	for _, tc := range []string{tcp4, tcp6} {
		for _, other := range []string{quic4, quic6, ws, circuit} {
			if delay[tc] >= delay[other] {
				t.Errorf("%s dialled after %d ns, not before %s (%d ns)", tc, delay[tc], other, delay[other])
			}
		}
	}
	if delay[circuit] <= delay[quic4] {
		t.Errorf("circuit dialled after %d ns, not after QUIC (%d ns)", delay[circuit], delay[quic4])
	}
	if got := tcpFirstRanker(parse(quic4)); len(got) != 1 || got[0].Delay != 0 {
		t.Errorf("a QUIC address alone: %v, want it dialled at once", got)
	}
}
