package relay_test

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestForwardOverCircuit publishes through relay A (the entry, pinned by
// the publisher) and reads through relay B (the exit). Neither relay knows
// a public address (the rendezvous runs no STUN here), so both are treated
// as behind NAT: they hold circuit reservations on the rendezvous, B and A
// connect over a relayed circuit, the part crosses it, and publisher and
// consumer reach the relays only through the rendezvous tunnel.
func TestForwardOverCircuit(t *testing.T) {
	t.Parallel()
	e := newEnvRV(t, rendezvous.Config{STUNAddr: "off"}, testRelayConfig(), testRelayConfig())
	a, b := e.relays[0], e.relays[1]

	// The relays find each other through the directory and connect over
	// a circuit on the rendezvous.
	peerKind := func(of, peer *relaytest.Server) string {
		for _, p := range of.Server.Status().Peers {
			if p.ID == peer.ID() {
				return p.Kind
			}
		}
		return ""
	}
	eventually(t, "relays connected over a circuit", func() bool {
		return peerKind(a, b) == proto.PeerRelayed && peerKind(b, a) == proto.PeerRelayed
	})
	for _, r := range []*relaytest.Server{a, b} {
		st := r.Server.Status()
		if st.Public || st.NAT != proto.NATUnknown {
			t.Errorf("relay %s: public %v nat %q, want not public, nat unknown", r.ID(), st.Public, st.NAT)
		}
		if !slices.ContainsFunc(st.Addrs.Advertised, func(s string) bool { return strings.Contains(s, "/p2p-circuit") }) {
			t.Errorf("relay %s advertises %v, want a circuit address", r.ID(), st.Addrs.Advertised)
		}
	}

	data := meshtest.RandomBytes(5*partSize+123, 7)
	_, it := e.publishVia(t, data, client.Config{}, a.ID())

	resp, err := noRedirect.Get(e.itemURL(it.ID, b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, e.rv.URL+"/v1/relays/"+b.ID()+"/v1/items/") {
		t.Fatalf("redirect to %q, want the rendezvous tunnel to relay B", loc)
	}

	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, b))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET through B: status %d, %d bytes, equal %v; want 200 and the %d bytes", resp.StatusCode, len(body), bytes.Equal(body, data), len(data))
	}
	resp, body = do(t, http.MethodGet, e.itemURL(it.ID, b), "Range", "bytes=3000000-3000099")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[3000000:3000100]) {
		t.Errorf("Range through B: status %d, %d bytes; want 206 and bytes 3000000-3000099", resp.StatusCode, len(body))
	}

	sa, sb := a.Server.Stats(), b.Server.Stats()
	if sa.ForwardsOut < 6 || sb.ForwardsIn < 6 {
		t.Errorf("forwards: A sent %d, B received %d; want at least the 6 parts each", sa.ForwardsOut, sb.ForwardsIn)
	}
	if sb.MeshStreams[proto.PeerRelayed] < 6 {
		t.Errorf("B's mesh streams by kind: got %v, want the parts over the relayed connection", sb.MeshStreams)
	}
	if sb.BytesOut < int64(len(data)) || sa.BytesOut < int64(len(data)) {
		t.Errorf("bytes out: A %d, B %d; want both at least %d", sa.BytesOut, sb.BytesOut, len(data))
	}
	if got := e.rv.Server.Stats(); got.Circuit.Bytes < int64(len(data)) || got.Forwarded < 6 || got.Tunnelled == 0 {
		t.Errorf("rendezvous: circuit bytes %d, forwarded orders %d, tunnelled %d; want >= %d, >= 6, > 0", got.Circuit.Bytes, got.Forwarded, got.Tunnelled, len(data))
	}
}

// TestMeshPartRefused checks the exit relay's checks on a forwarded part:
// a token for another exit, or from a peer that is not the token's
// audience, is refused.
func TestMeshPartRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	b := e.relays[0]
	peer := rendezvoustest.NewNode(t)
	if _, err := peer.Connect(context.Background(), b.Node.Addrs()); err != nil {
		t.Fatal(err)
	}
	item := proto.ItemID{1}
	tests := []struct {
		name   string
		claims proto.Claims
	}{
		{"audience is another relay", proto.Claims{Dir: proto.DirPush, Relay: b.ID(), Item: item, Len: 10, Ref: 1, Fwd: b.ID()}},
		{"forwarded to another relay", proto.Claims{Dir: proto.DirPush, Relay: peer.ID(), Item: item, Len: 10, Ref: 1, Fwd: "12D3KooWother"}},
		{"read token", proto.Claims{Dir: proto.DirRead, Relay: peer.ID(), Item: item, Len: 10, Ref: 1, Fwd: b.ID()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.claims.Exp = time.Now().Add(wait).Unix()
			st, err := peer.Open(context.Background(), b.ID(), proto.ProtoPart)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Reset()
			begin := proto.PartBegin{Item: item, Len: 10, Token: proto.SignToken(e.key, tt.claims)}
			if _, err := st.Write(begin.AppendFrame(nil)); err != nil {
				t.Fatal(err)
			}
			h, body, err := proto.ReadFrame(st, nil, proto.MaxPartEndLen)
			if err != nil || h.Type != proto.FramePartEnd {
				t.Fatalf("answer: got %v %v, want a PartEnd frame", h.Type, err)
			}
			end, err := proto.DecodePartEnd(body)
			if err != nil {
				t.Fatal(err)
			}
			if end.Status != proto.StatusWrongRelay && end.Status != proto.StatusForbidden {
				t.Errorf("status: got %v, want wrong relay or forbidden", end.Status)
			}
		})
	}
	if got := b.Server.Stats().Refusals["mesh_token"]; got != int64(len(tests)) {
		t.Errorf("mesh_token refusals: got %d, want %d", got, len(tests))
	}
}

// TestForwardCredit checks that a forwarded part waits in the exit's
// window, which its budget counts, and not in the mesh stream's receive
// buffer, which it does not: with the consumer paused, every byte the
// entry relay wrote into its streams has been read by the exit (without
// the exit's credit, up to a stream window more sits unread in each).
func TestForwardCredit(t *testing.T) {
	t.Parallel()
	// A window of half a part, above the stream's first receive window
	// (256 KiB): without the exit's credit, the entry would fill both.
	cfg := testRelayConfig()
	cfg.Window = partSize / 2
	e := newEnv(t, cfg, cfg)
	waitMeshEnv(t, e)
	a, b := e.relays[0], e.relays[1]

	data := meshtest.RandomBytes(24*partSize+5, 31)
	_, it := e.publishVia(t, data, client.Config{}, a.ID())

	d := startDownload(t, e.itemURL(it.ID, b), partSize/2)
	d.waitPaused(t)
	// Settled (nothing moved for a while: the publisher has filled the
	// entry's window and the entry wrote what it could), what A wrote is
	// what B read. Without the exit's credit A writes on into the
	// stream's receive buffer, where B does not read, and this never
	// holds.
	var last [2]int64
	var since time.Time
	eventually(t, "every byte the entry wrote read by the exit", func() bool {
		sa, sb := a.Server.Stats(), b.Server.Stats()
		now := [2]int64{sa.BytesOut, sb.BytesIn}
		if now != last || sa.ForwardsOut == 0 {
			last, since = now, time.Now()
			return false
		}
		settled := time.Since(since) > 300*time.Millisecond
		if settled && now[0] != now[1] {
			t.Logf("settled: entry wrote %d bytes, exit read %d", now[0], now[1])
		}
		return settled && now[0] == now[1]
	})
	if sa := a.Server.Stats(); sa.BytesOut >= int64(len(data)) {
		t.Fatalf("entry wrote %d bytes of %d while the consumer was paused: want it held back", sa.BytesOut, len(data))
	}
	d.resume()
	code, got, err := d.wait(t)
	if code != http.StatusOK || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: status %d, error %v, %d bytes; want 200, no error, the %d bytes", code, err, len(got), len(data))
	}
	if sa := a.Server.Stats(); sa.ForwardsOut < 25 || sa.PartsFailed != 0 {
		t.Errorf("entry: forwarded %d parts, %d failed; want 25 and none", sa.ForwardsOut, sa.PartsFailed)
	}
}
