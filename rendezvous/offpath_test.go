package rendezvous_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// The rendezvous off the data path (issue 10): exits a consumer reaches
// directly come first, relays behind NAT are handed out behind a public
// relay's tunnel before the rendezvous's own, and the bytes the
// rendezvous carries are counted.

// registerRelay registers node with rv as a relay with reg (Version and
// Addrs filled in) and keeps it alive with hb every 50ms.
func registerRelay(t *testing.T, rv *rendezvoustest.Server, node *mesh.Node, reg proto.Register, hb proto.Heartbeat) *rendezvoustest.Relay {
	t.Helper()
	r, err := rendezvoustest.Dial(t, rv, node)
	if err != nil {
		t.Fatal(err)
	}
	reg.Version, reg.Addrs = proto.Version, node.Addrs()
	if err := r.Send(&reg); err != nil {
		t.Fatal(err)
	}
	recvAs[proto.Registered](t, r.Recv)
	r.KeepAlive(50*time.Millisecond, hb)
	return r
}

// redirect asks rv for an item URL and returns where it redirects.
func redirect(t *testing.T, u string) string {
	t.Helper()
	resp, _ := do(t, http.MethodGet, u)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("GET %s: status %d, want 307", u, resp.StatusCode)
	}
	return resp.Header.Get("Location")
}

// reachOf returns the reach and reach_kind of relay id in rv's status.
func reachOf(t *testing.T, rv *rendezvoustest.Server, id string) (string, string) {
	t.Helper()
	var st struct {
		Relays []struct {
			ID        string `json:"id"`
			Reach     string `json:"reach"`
			ReachKind string `json:"reach_kind"`
		} `json:"relays"`
	}
	rendezvoustest.GetJSON(t, rv.URL+"/v1/status", &st)
	for _, r := range st.Relays {
		if r.ID == id {
			return r.Reach, r.ReachKind
		}
	}
	return "", ""
}

// TestExitPrefersDirect: a consumer is sent to a relay it reaches directly
// whenever one is live, even when a tunnelled relay is less loaded; to the
// tunnelled one when it avoids the direct one, pins the other (?via=), or
// the direct one is gone. The Welcome lists the direct relay first.
func TestExitPrefersDirect(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	const pubURL = "http://127.0.0.1:1"
	nat := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: "http://10.0.0.2:8081", NAT: proto.NATSymmetric}, proto.Heartbeat{})
	pub := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: pubURL, NAT: proto.NATPublic, Public: true}, proto.Heartbeat{Streams: 7})
	eventually(t, "both relays live", func() bool { return len(getStatus(t, rv).Relays) == 2 })

	c := rendezvoustest.DialControl(t, rv)
	if w := c.Welcome.Relays; len(w) != 2 || w[0].ID != pub.ID || w[0].PushURL != "ws://127.0.0.1:1/v1/push" {
		t.Errorf("welcome relays: got %+v, want the direct relay %s first, at its own push URL", w, pub.ID)
	}
	item := publishFile(t, c, 1000)
	natBase := rv.URL + "/v1/relays/" + nat.ID + "/v1/items/" + item.ID.String() + "?t="
	for i := range 4 { // the direct relay is busier, and still the one chosen
		if loc := redirect(t, item.DownloadURL); !strings.HasPrefix(loc, pubURL+"/v1/items/"+item.ID.String()+"?t=") {
			t.Fatalf("redirect %d: got %q, want the direct relay %s", i, loc, pubURL)
		}
	}
	tests := []struct{ name, query string }{
		{"avoid the direct relay", "?avoid=" + url.QueryEscape(pub.ID)},
		{"pin the tunnelled relay", "?via=" + url.QueryEscape(nat.ID)},
	}
	for _, tt := range tests {
		if loc := redirect(t, item.DownloadURL+tt.query); !strings.HasPrefix(loc, natBase) {
			t.Errorf("%s: redirect to %q, want the tunnel %s", tt.name, loc, natBase)
		}
	}
	pub.Close()
	eventually(t, "the direct relay to leave", func() bool { return len(getStatus(t, rv).Relays) == 1 })
	if loc := redirect(t, item.DownloadURL); !strings.HasPrefix(loc, natBase) {
		t.Errorf("no direct relay left: redirect to %q, want the tunnel %s", loc, natBase)
	}
}

// TestTunnelHost: a relay behind NAT is handed out behind the tunnel of a
// public relay that serves one, reaches it directly and reported a direct
// (or hole-punched) connection to it; redirects, push URLs and the status
// say so. A relayed connection, a public relay that serves no tunnel, or a
// volunteer host for an operator relay leave it behind the rendezvous's
// tunnel.
func TestTunnelHost(t *testing.T) {
	t.Parallel()
	natNode, opNode := rendezvoustest.NewNode(t), rendezvoustest.NewNode(t)
	cfg := testConfig()
	// Relays are volunteers but for opNode; public URLs must pass their
	// challenge.
	cfg.OperatorRelays = []string{opNode.ID()}
	rv := rendezvoustest.Start(t, cfg)
	nat := registerRelay(t, rv, natNode, proto.Register{HTTPURL: "http://10.0.0.2:8081", NAT: proto.NATCone}, proto.Heartbeat{})
	op := registerRelay(t, rv, opNode, proto.Register{HTTPURL: "http://10.0.0.3:8081", NAT: proto.NATCone}, proto.Heartbeat{})
	view := func(kind string) *proto.MeshStatus {
		return &proto.MeshStatus{NAT: proto.NATPublic, Peers: []proto.MeshPeer{{ID: nat.ID, Kind: kind}, {ID: op.ID, Kind: proto.PeerDirect}}}
	}
	hostNode, plainNode := rendezvoustest.NewNode(t), rendezvoustest.NewNode(t)
	hostURL, plainURL := challengeServer(t, hostNode), challengeServer(t, plainNode)
	host := registerRelay(t, rv, hostNode, proto.Register{HTTPURL: hostURL, NAT: proto.NATPublic, Public: true, Tunnel: true}, proto.Heartbeat{Mesh: view(proto.PeerDirect)})
	// A public relay connected to both that serves no tunnel.
	registerRelay(t, rv, plainNode, proto.Register{HTTPURL: plainURL, NAT: proto.NATPublic, Public: true}, proto.Heartbeat{Mesh: view(proto.PeerDirect)})

	hostBase := hostURL + "/v1/relays/" + nat.ID
	eventually(t, "the relay behind NAT to be reached through the host's tunnel", func() bool {
		reach, kind := reachOf(t, rv, nat.ID)
		return reach == hostBase && kind == "relay-tunnel"
	})
	if reach, kind := reachOf(t, rv, host.ID); reach != hostURL || kind != "direct" {
		t.Errorf("host: reach %q %q, want %q direct", reach, kind, hostURL)
	}
	if reach, kind := reachOf(t, rv, op.ID); reach != rv.URL+"/v1/relays/"+op.ID || kind != "rendezvous-tunnel" {
		t.Errorf("operator relay with volunteer hosts only: reach %q %q, want the rendezvous's tunnel", reach, kind)
	}

	c := rendezvoustest.DialControl(t, rv)
	// The publisher pins the relay behind NAT as its entry, so that the
	// order's push URL is that relay's (the scheduler would rather push
	// to the host, which the publisher reaches directly).
	item := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "a.bin", Size: 1000, Volunteers: true, Via: nat.ID})
	if loc := redirect(t, item.DownloadURL+"?via="+url.QueryEscape(nat.ID)); !strings.HasPrefix(loc, hostBase+"/v1/items/"+item.ID.String()+"?t=") {
		t.Errorf("redirect to %q, want into the host's tunnel %s", loc, hostBase)
	}
	if err := nat.Send(&proto.Need{Need: 1, Item: item.ID, Len: 10, Token: rv.ReadToken(t, item.ID, nat.ID)}); err != nil {
		t.Fatal(err)
	}
	if o := recvAs[proto.Order](t, c.Recv); o.PushURL != "ws"+strings.TrimPrefix(hostBase, "http")+"/v1/push" {
		t.Errorf("push_url: got %q, want the host's tunnel", o.PushURL)
	}

	// The host reports the connection relayed: the rendezvous's tunnel.
	host.StopHeartbeat()
	if err := host.Send(&proto.Heartbeat{Mesh: view(proto.PeerRelayed)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relay behind NAT back behind the rendezvous's tunnel", func() bool {
		reach, kind := reachOf(t, rv, nat.ID)
		return reach == rv.URL+"/v1/relays/"+nat.ID && kind == "rendezvous-tunnel"
	})
}

// challengeServer serves the URL challenge of the relay whose node is
// node, as a relay does (proto/challenge.go), and returns its URL.
func challengeServer(t *testing.T, node *mesh.Node) string {
	t.Helper()
	hs := httptest.NewUnstartedServer(nil)
	base := "http://" + hs.Listener.Addr().String()
	hs.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sig, err := node.Sign(proto.ChallengeMessage(r.URL.Query().Get("n"), node.ID(), base))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(proto.ChallengeResponse{Peer: node.ID(), Sig: sig})
	})
	hs.Start()
	t.Cleanup(hs.Close)
	return base
}

// TestDataPathCounted: the bytes the rendezvous's tunnel carries are
// counted, in Server.DataPath and in the status's data_path, so that a
// test of a mesh can read how much crossed the rendezvous.
func TestDataPathCounted(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: "http://10.0.0.2:8081", NAT: proto.NATSymmetric}, proto.Heartbeat{})
	if d := rv.Server.DataPath(); d.Bytes != 0 || d.Tunnel.Requests != 0 {
		t.Fatalf("data path before any request: %+v, want zero", d)
	}
	const size = 1 << 20
	ln, err := relay.Node.Listen(proto.ProtoHTTP)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/items/x", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(make([]byte, size))
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Shutdown(context.Background()) })

	resp, err := rendezvoustest.HTTP.Get(rv.URL + "/v1/relays/" + relay.ID + "/v1/items/x")
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if n != size {
		t.Fatalf("tunnelled body: %d bytes, want %d", n, size)
	}
	d := rv.Server.DataPath()
	if d.Tunnel.Requests != 1 || d.Tunnel.BytesIn < size || d.Tunnel.BytesOut == 0 || d.Bytes != d.Tunnel.BytesIn+d.Tunnel.BytesOut+d.CircuitBytes {
		t.Errorf("data path: %+v, want 1 request, at least %d bytes in, some out, and bytes their sum", d, size)
	}
	var st struct {
		DataPath rendezvous.DataPath `json:"data_path"`
	}
	rendezvoustest.GetJSON(t, rv.URL+"/v1/status", &st)
	if st.DataPath.Bytes < size || st.DataPath.Tunnel.BytesIn != d.Tunnel.BytesIn {
		t.Errorf("status data_path: %+v, want the counters (%+v)", st.DataPath, d)
	}
}
