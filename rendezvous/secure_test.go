package rendezvous_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestHTTPSNeverHandsOutHTTP: a rendezvous whose public URL is https sends
// consumers and publishers to https relays or through a tunnel on https,
// never to an http relay, which an https page could not use (mixed
// content): a redirect, the Welcome's push URLs and an order's push URL.
func TestHTTPSNeverHandsOutHTTP(t *testing.T) {
	t.Parallel()
	const public = "https://rv.meshup.test"
	cfg := testConfig()
	cfg.PublicURL = public
	rv := rendezvoustest.Start(t, cfg)
	nat := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: "http://10.0.0.2:8081", NAT: proto.NATCone}, proto.Heartbeat{})
	view := &proto.MeshStatus{NAT: proto.NATPublic, Peers: []proto.MeshPeer{{ID: nat.ID, Kind: proto.PeerDirect}}}
	// A public relay on http, serving a tunnel to the relay behind NAT.
	httpHost := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: "http://127.0.0.1:1", NAT: proto.NATPublic, Public: true, Tunnel: true}, proto.Heartbeat{Mesh: view})
	// Once its mesh view is in, a plain caller would be sent through
	// its tunnel (TestTunnelHost); an https one may not.
	eventually(t, "the http host to report its mesh view", func() bool {
		return peersOf(t, rv, httpHost.ID) > 0
	})

	c := rendezvoustest.DialControl(t, rv)
	for _, r := range c.Welcome.Relays {
		if !strings.HasPrefix(r.PushURL, "wss://rv.meshup.test/v1/relays/"+r.ID+"/") {
			t.Errorf("welcome: relay %s push_url %q, want the rendezvous's tunnel on wss", r.ID, r.PushURL)
		}
	}
	if len(c.Welcome.Relays) != 2 {
		t.Errorf("welcome: %d relays, want 2", len(c.Welcome.Relays))
	}

	item := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "a.bin", Size: 1000, Via: nat.ID})
	if !strings.HasPrefix(item.DownloadURL, public+"/") {
		t.Errorf("download url %q, want on %s", item.DownloadURL, public)
	}
	// The share link names the public URL; the test asks the server itself.
	item.DownloadURL = rv.URL + "/v1/items/" + item.ID.String()
	for _, via := range []string{"", httpHost.ID, nat.ID} {
		u := item.DownloadURL
		if via != "" {
			u += "?via=" + url.QueryEscape(via)
		}
		loc := redirect(t, u)
		if !strings.HasPrefix(loc, public+"/v1/relays/") {
			t.Errorf("via %q: redirect to %q, want the rendezvous's tunnel on https", via, loc)
		}
	}
	if err := nat.Send(&proto.Need{Need: 1, Item: item.ID, Len: 10, Token: rv.ReadToken(t, item.ID, nat.ID)}); err != nil {
		t.Fatal(err)
	}
	if o := recvAs[proto.Order](t, c.Recv); o.PushURL != "wss://rv.meshup.test/v1/relays/"+nat.ID+"/v1/push" {
		t.Errorf("order push_url: got %q, want the rendezvous's tunnel on wss", o.PushURL)
	}

	// An https relay serving a tunnel too: consumers go to it directly,
	// and to the relay behind NAT through its tunnel.
	const httpsURL = "https://relay.meshup.test"
	httpsHost := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: httpsURL, NAT: proto.NATPublic, Public: true, Tunnel: true}, proto.Heartbeat{Mesh: view})
	eventually(t, "the relay behind NAT reached through the https relay's tunnel", func() bool {
		reach, _ := reachOf(t, rv, nat.ID)
		return reach == httpsURL+"/v1/relays/"+nat.ID
	})
	if loc := redirect(t, item.DownloadURL+"?via="+httpsHost.ID); !strings.HasPrefix(loc, httpsURL+"/v1/items/") {
		t.Errorf("via the https relay: redirect to %q, want it directly", loc)
	}
	if loc := redirect(t, item.DownloadURL+"?via="+nat.ID); !strings.HasPrefix(loc, httpsURL+"/v1/relays/"+nat.ID+"/v1/items/") {
		t.Errorf("via the relay behind NAT: redirect to %q, want the https relay's tunnel", loc)
	}
	for range 4 {
		if loc := redirect(t, item.DownloadURL); !strings.HasPrefix(loc, "https://") {
			t.Fatalf("redirect to %q, want https", loc)
		}
	}
}

// TestHTTPHandsOutDirect is the contrast: with an http public URL and a
// plain request, the same http relay is handed out directly.
func TestHTTPHandsOutDirect(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{HTTPURL: "http://127.0.0.1:1", NAT: proto.NATPublic, Public: true}, proto.Heartbeat{})
	c := rendezvoustest.DialControl(t, rv)
	item := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "a.bin", Size: 1000})
	if loc := redirect(t, item.DownloadURL); !strings.HasPrefix(loc, "http://127.0.0.1:1/v1/items/") {
		t.Errorf("redirect to %q, want the http relay directly", loc)
	}
}

// peersOf returns how many mesh peers relay id reported, from rv's status.
func peersOf(t *testing.T, rv *rendezvoustest.Server, id string) int {
	t.Helper()
	var st struct {
		Relays []struct {
			ID    string           `json:"id"`
			Peers []proto.MeshPeer `json:"peers"`
		} `json:"relays"`
	}
	rendezvoustest.GetJSON(t, rv.URL+"/v1/status", &st)
	for _, r := range st.Relays {
		if r.ID == id {
			return len(r.Peers)
		}
	}
	return 0
}
