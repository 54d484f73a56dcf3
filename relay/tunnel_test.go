package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// natAndPublic starts a rendezvous without STUN, a public relay (declared
// with PublicIP) and a relay that does not know a public address of its
// own, so registers as not public. The relay behind NAT dials the public
// one; the test waits until the rendezvous hands out the public relay's
// tunnel for it.
func natAndPublic(t *testing.T) (e *env, pub, nat *relaytest.Server) {
	t.Helper()
	e = newEnvRV(t, rendezvous.Config{STUNAddr: "off"})
	pcfg := testRelayConfig()
	pcfg.PublicIP = "127.0.0.1"
	pub = relaytest.Start(t, e.rv.URL, pcfg)
	nat = relaytest.Start(t, e.rv.URL, testRelayConfig())
	if st := nat.Server.Status(); st.Public {
		t.Fatalf("relay behind NAT: public %v, want false", st.Public)
	}
	base := pub.URL + "/v1/relays/" + nat.ID()
	eventually(t, "the rendezvous to hand out the public relay's tunnel for the relay behind NAT", func() bool {
		for _, r := range relayStatuses(t, e.rv) {
			if r["id"] == nat.ID() {
				return r["reach"] == base && r["reach_kind"] == "relay-tunnel"
			}
		}
		return false
	})
	return e, pub, nat
}

// relayStatuses returns the relays of rv's status as JSON objects.
func relayStatuses(t *testing.T, rv *rendezvoustest.Server) []map[string]any {
	t.Helper()
	var st struct {
		Relays []map[string]any `json:"relays"`
	}
	rendezvoustest.GetJSON(t, rv.URL+"/v1/status", &st)
	return st.Relays
}

// TestRelayTunnel: a publisher and a consumer reach a relay behind NAT
// through the tunnel of a public relay it is connected to, not through the
// rendezvous: the item arrives whole, the exit names itself, the public
// relay counts the bytes it tunnelled and the rendezvous's tunnel carried
// nothing. A consumer that pins no relay is sent straight to the public
// relay.
func TestRelayTunnel(t *testing.T) {
	t.Parallel()
	e, pub, nat := natAndPublic(t)
	data := meshtest.RandomBytes(3*partSize+77, 11)
	_, it := e.publish(t, data, client.Config{})

	resp, err := noRedirect.Get(e.itemURL(it.ID, nat))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pub.URL+"/v1/relays/"+nat.ID()+"/v1/items/"+it.ID.String()+"?t=") {
		t.Fatalf("redirect to %q, want the public relay's tunnel to the relay behind NAT", loc)
	}
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, nat))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET through the tunnel: status %d, %d bytes, equal %v; want 200 and the %d bytes", resp.StatusCode, len(body), bytes.Equal(body, data), len(data))
	}
	if got := resp.Header.Get("Meshup-Relay"); got != nat.ID() {
		t.Errorf("Meshup-Relay: got %q, want the relay behind NAT %s", got, nat.ID())
	}
	if got := resp.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options through the tunnel: got %q, want nosniff", got)
	}
	resp, body = do(t, http.MethodGet, e.itemURL(it.ID, nat), "Range", "bytes=100-199")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) {
		t.Errorf("Range through the tunnel: status %d, %d bytes; want 206 and bytes 100-199", resp.StatusCode, len(body))
	}

	// The reads cross the tunnel; the publisher pushes to the public
	// relay, which it reaches directly, and the scheduler brings the parts
	// to the relay behind NAT over the mesh.
	as := pub.Server.Stats().Assist.Tunnel
	if as.Requests < 3 || as.BytesIn < int64(len(data)) {
		t.Errorf("public relay's tunnel: %+v; want the requests and the item read from the relay behind NAT (>= %d bytes)", as, len(data))
	}
	if fw := pub.Server.Stats().ForwardsOut; fw == 0 {
		t.Errorf("public relay forwarded %d parts to the relay behind NAT, want the parts pushed to it", fw)
	}
	if nb := nat.Server.Stats().BytesOut; nb < int64(len(data)) {
		t.Errorf("relay behind NAT served %d bytes, want at least %d", nb, len(data))
	}
	if d := e.rv.Server.DataPath(); d.Tunnel.Requests != 0 || d.Bytes > int64(len(data))/100 {
		t.Errorf("rendezvous data path: %+v; want no tunnelled request and under 1%% of the item", d)
	}

	// Without a pinned relay the consumer goes straight to the public one.
	resp, err = noRedirect.Get(e.rv.URL + "/v1/items/" + it.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, pub.URL+"/v1/items/") {
		t.Errorf("unpinned redirect to %q, want the public relay %s", loc, pub.URL)
	}
}

// TestRelayTunnelRefuses: a client cannot make a public relay's tunnel
// reach anything but a relay of the rendezvous's directory connected to it:
// not a peer that is connected but not registered (which sees no stream),
// not an address, not the public relay itself, not outside a relay's /v1/
// API. A relay behind NAT takes tunnelled HTTP only from the rendezvous and
// public relays of its directory. An honest request beside them works.
func TestRelayTunnelRefuses(t *testing.T) {
	t.Parallel()
	e, pub, nat := natAndPublic(t)

	// A stranger: a real libp2p node connected to both relays, serving
	// HTTP on the tunnel protocol, never registered.
	stranger := rendezvoustest.NewNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	for _, r := range []*relaytest.Server{pub, nat} {
		if _, err := stranger.Connect(ctx, r.Node.Addrs()); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := stranger.Listen(proto.ProtoHTTP)
	if err != nil {
		t.Fatal(err)
	}
	var reached atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			reached.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	tunnel := pub.URL + "/v1/relays/"
	tests := []struct {
		name string
		path string
		want int
	}{
		{"connected peer not in the directory", tunnel + stranger.ID() + "/v1/status", http.StatusServiceUnavailable},
		{"unknown peer id", tunnel + "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/v1/status", http.StatusServiceUnavailable},
		{"an address", tunnel + "127.0.0.1:" + strings.TrimPrefix(e.rv.URL, "http://127.0.0.1:") + "/v1/status", http.StatusServiceUnavailable},
		{"a multiaddr", tunnel + url.PathEscape("/ip4/127.0.0.1/tcp/1/p2p/"+nat.ID()) + "/v1/status", http.StatusServiceUnavailable},
		{"the public relay itself", tunnel + pub.ID() + "/v1/status", http.StatusServiceUnavailable},
		{"outside /v1/", tunnel + nat.ID() + "/debug/pprof/", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, tt.path)
			if resp.StatusCode != tt.want {
				t.Fatalf("GET %s: status %d, want %d", tt.path, resp.StatusCode, tt.want)
			}
			apiError(t, resp, body)
		})
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the stranger received %d tunnelled streams, want 0", n)
	}
	if r := pub.Server.Stats().Refusals["tunnel_unknown_relay"]; r < 4 {
		t.Errorf("public relay's tunnel_unknown_relay refusals: got %d, want at least 4", r)
	}

	// The stranger opens the tunnel protocol to the relay behind NAT
	// itself: the stream is closed before any answer.
	c, err := stranger.DialConn(ctx, nat.ID(), proto.ProtoHTTP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
		res.Body.Close()
		t.Errorf("a stranger's tunnelled request got status %d, want the stream closed", res.StatusCode)
	}
	eventually(t, "the relay behind NAT to count the refused stream", func() bool {
		return nat.Server.Stats().Refusals["tunnel_peer"] >= 1
	})

	// The honest path beside: the relay behind NAT's status through the
	// public relay.
	resp, body := do(t, http.MethodGet, tunnel+nat.ID()+"/v1/status")
	var st relay.Status
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil || st.ID != nat.ID() {
		t.Errorf("status through the tunnel: %d %.200s, want 200 and the relay behind NAT's status", resp.StatusCode, body)
	}
}

// TestCircuitOverPublicRelay: relays behind NAT hold their circuit
// reservations on a public relay running the circuit relay service (gated
// by relay.CircuitGate), advertise those circuits rather than the
// rendezvous's, and connect to each other over it: a part forwarded
// between them crosses the public relay, and nothing crosses the
// rendezvous, neither its circuits nor its tunnel.
func TestCircuitOverPublicRelay(t *testing.T) {
	t.Parallel()
	e := newEnvRV(t, rendezvous.Config{STUNAddr: "off"})
	var gate relay.CircuitGate
	node, err := mesh.New(mesh.Config{
		ListenAddrs:       []string{"/ip4/127.0.0.1/tcp/0"},
		Logger:            relaytest.Logger(t),
		RelayService:      &mesh.RelayService{Allow: gate.Allow},
		HolePunching:      true,
		AllowPrivateAddrs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	pcfg := testRelayConfig()
	pcfg.PublicIP, pcfg.Node = "127.0.0.1", node
	pub := relaytest.Start(t, e.rv.URL, pcfg)
	gate.Bind(pub.Server)
	// The relays behind NAT register once the public relay is in the
	// directory: their first directory names it, so they must reserve
	// on it and never on the rendezvous (checked at the end).
	eventually(t, "the rendezvous to list the public relay as public", func() bool {
		for _, r := range relayStatuses(t, e.rv) {
			if r["id"] == pub.ID() {
				return r["nat"] == proto.NATPublic
			}
		}
		return false
	})
	a := relaytest.Start(t, e.rv.URL, testRelayConfig())
	b := relaytest.Start(t, e.rv.URL, testRelayConfig())

	viaPub := func(r *relaytest.Server) bool {
		st := r.Server.Status()
		n := 0
		for _, ad := range st.Addrs.Advertised {
			if strings.Contains(ad, "/p2p-circuit") {
				if !strings.Contains(ad, "/p2p/"+pub.ID()+"/p2p-circuit") {
					return false // a circuit through the rendezvous
				}
				n++
			}
		}
		return n > 0
	}
	eventually(t, "both relays behind NAT to advertise circuits through the public relay only", func() bool { return viaPub(a) && viaPub(b) })
	peerKind := func(of, peer *relaytest.Server) string {
		for _, p := range of.Server.Status().Peers {
			if p.ID == peer.ID() {
				return p.Kind
			}
		}
		return ""
	}
	eventually(t, "the relays behind NAT to connect over a circuit", func() bool {
		return peerKind(a, b) == proto.PeerRelayed && peerKind(b, a) == proto.PeerRelayed
	})
	// A connection made over the rendezvous's circuit before the public
	// relay held the reservations is dropped and made again over the
	// public relay's (dropStaleCircuit).
	viaPubOnly := func(of, peer *relaytest.Server) bool {
		via := of.Node.RelayedVia(peer.ID())
		return len(via) > 0 && !slices.ContainsFunc(via, func(v string) bool { return v != pub.ID() })
	}
	// They share loopback, though: the redial after the move may reach the
	// peer's own address, which identify taught it, and be direct. That
	// too keeps the rendezvous off the data path, checked below; only
	// the circuit's counters then have nothing to show.
	direct := func() bool { return peerKind(a, b) == proto.PeerDirect && peerKind(b, a) == proto.PeerDirect }
	eventually(t, "the relays behind NAT connected over the public relay's circuit only (or directly)", func() bool {
		return viaPubOnly(a, b) && viaPubOnly(b, a) || direct()
	})
	overCircuit := !direct()
	if !overCircuit {
		t.Logf("A and B reconnected directly over loopback after leaving the stale circuit")
	}

	data := meshtest.RandomBytes(3*partSize+5, 13)
	_, it := e.publishVia(t, data, client.Config{}, a.ID())
	eventually(t, "the rendezvous to hand out the public relay's tunnel for B", func() bool {
		for _, r := range relayStatuses(t, e.rv) {
			if r["id"] == b.ID() {
				return r["reach_kind"] == "relay-tunnel"
			}
		}
		return false
	})
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, b))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET through B: status %d, %d bytes, equal %v; want 200 and the %d bytes", resp.StatusCode, len(body), bytes.Equal(body, data), len(data))
	}
	if sb := b.Server.Stats(); overCircuit && sb.MeshStreams[proto.PeerRelayed] < 4 {
		t.Errorf("B's mesh streams by kind: got %v, want the 4 parts over the relayed connection", sb.MeshStreams)
	}
	if as := pub.Server.Stats().Assist; overCircuit && as.CircuitBytes < int64(len(data)) || as.Reservations < 2 {
		t.Errorf("public relay: %+v; want the item's bytes over its circuits and the 2 reservations", as)
	}
	if rs := e.rv.Node.RelayStats(); rs.Reservations != 0 {
		t.Errorf("rendezvous's circuit relay: %+v; want no reservation, as the relays' first directory named the public relay", rs)
	}
	d := e.rv.Server.DataPath()
	switch {
	case overCircuit && d.Bytes != 0:
		t.Errorf("rendezvous data path: %+v, want nothing", d)
	case !overCircuit && (d.Tunnel.BytesOut != 0 || d.Bytes >= partSize):
		// The redial that ended direct may have begun over the
		// rendezvous's circuit, which the peer store still listed:
		// connection set-up bytes, never a part.
		t.Errorf("rendezvous data path: %+v, want no part across it", d)
	}
}

// TestTunnelWhileRegistering: a rendezvous counts a relay registered as it
// sends Registered, and a restarted one redirects readers through its
// tunnel at once, to a relay whose URL it has yet to verify. So the relay
// serves its rendezvous's tunnelled HTTP from the Register on, before it
// has read the reply. The rendezvous here is a real libp2p node and HTTP
// server speaking the register protocol by hand: it opens the tunnel
// between reading Register and answering it.
func TestTunnelWhileRegistering(t *testing.T) {
	t.Parallel()
	node := rendezvoustest.NewNode(t)
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(proto.Info{Version: proto.Version, PeerID: node.ID(), Addrs: node.Addrs(),
			TokenKey: base64.RawURLEncoding.EncodeToString(pub), PublicURL: base})
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })

	tunnelled := make(chan string, 1) // the status of the tunnelled GET, or the error
	node.Handle(proto.ProtoRegister, func(st mesh.Stream) {
		defer st.Reset()
		if _, err := proto.ReadMsg(st, proto.RelayReadLimit); err != nil {
			tunnelled <- "read register: " + err.Error()
			return
		}
		tunnelled <- tunnelGet(node, st.RemotePeer(), "/v1/status")
		if err := proto.WriteMsg(st, &proto.Registered{Relay: st.RemotePeer(), HeartbeatMS: 1000}); err != nil {
			return
		}
		io.Copy(io.Discard, st) // heartbeats, until the relay closes
	})

	relaytest.Start(t, base, relay.Config{})
	if got := <-tunnelled; got != "200 OK" {
		t.Errorf("GET /v1/status through the tunnel before Registered: %s, want 200 OK", got)
	}
}

// tunnelGet sends GET path to relay over a tunnelled HTTP stream from node
// and returns the response's status, or what failed.
func tunnelGet(node *mesh.Node, relay, path string) string {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := node.DialConn(ctx, relay, proto.ProtoHTTP)
	if err != nil {
		return "dial: " + err.Error()
	}
	defer c.Close()
	req, _ := http.NewRequest(http.MethodGet, "http://relay"+path, nil)
	if err := req.Write(c); err != nil {
		return "write: " + err.Error()
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		return "read: " + err.Error()
	}
	resp.Body.Close()
	return resp.Status
}
