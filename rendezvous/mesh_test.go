package rendezvous_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestDirectory checks that every relay gets the directory of the others,
// and that it follows relays coming and going and their reported
// addresses.
func TestDirectory(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	a := rendezvoustest.Register(t, rv, "http://a.test")
	b := rendezvoustest.Register(t, rv, "http://b.test")

	dirOf := func(r *rendezvoustest.Relay) []proto.PeerInfo {
		r.Recv(50 * time.Millisecond) // collects directory updates
		if d := r.Directory(); d != nil {
			return d.Peers
		}
		return nil
	}
	eventually(t, "a and b to see each other", func() bool {
		da, db := dirOf(a), dirOf(b)
		return len(da) == 1 && da[0].ID == b.ID && len(db) == 1 && db[0].ID == a.ID
	})
	if d := dirOf(a); d[0].NAT != proto.NATPublic || !slices.Equal(d[0].Addrs, b.Node.Addrs()) {
		t.Errorf("a's entry for b: got %+v, want nat public and b's addrs", d[0])
	}

	// b reports a circuit address and a NAT in its mesh view.
	circuit := rv.Node.Addrs()[0] + "/p2p-circuit/p2p/" + b.ID
	if err := b.Send(&proto.Heartbeat{Mesh: &proto.MeshStatus{NAT: proto.NATCone, Addrs: proto.MeshAddrs{Advertised: []string{circuit}}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a to learn b's new address", func() bool {
		d := dirOf(a)
		return len(d) == 1 && d[0].NAT == proto.NATCone && slices.Equal(d[0].Addrs, []string{circuit})
	})

	b.Close()
	eventually(t, "b to leave a's directory", func() bool { return len(dirOf(a)) == 0 })
	if got := rv.Server.Stats().Directories; got < 3 {
		t.Errorf("directories sent: got %d, want at least 3", got)
	}
}

// TestPinnedEntry checks an order for an item whose publisher pinned an
// entry relay: the order goes to the entry, and its token names the exit
// relay that needed the part.
func TestPinnedEntry(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	entry := rendezvoustest.Register(t, rv, "http://entry.test")
	exit := rendezvoustest.Register(t, rv, "http://exit.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "a.bin", Size: 1000, Via: entry.ID})
	key := tokenKey(t, rv)

	if err := exit.Send(&proto.Need{Need: 3, Item: pub.ID, Off: 0, Len: 1000, Token: rv.ReadToken(t, pub.ID, exit.ID)}); err != nil {
		t.Fatal(err)
	}
	o := recvAs[proto.Order](t, c.Recv)
	if o.Relay != entry.ID || o.PushURL != "ws://entry.test/v1/push" {
		t.Errorf("order to %s at %s, want the pinned entry %s at ws://entry.test/v1/push", o.Relay, o.PushURL, entry.ID)
	}
	claims, err := proto.ParseToken(key, o.Token, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if claims.Relay != entry.ID || claims.Fwd != exit.ID || claims.Ref != 3 {
		t.Errorf("token: aud %s fwd %s ref %d, want aud %s fwd %s ref 3", claims.Relay, claims.Fwd, claims.Ref, entry.ID, exit.ID)
	}

	// The entry relay itself needing a part gets it without forwarding.
	if err := entry.Send(&proto.Need{Need: 4, Item: pub.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, pub.ID, entry.ID)}); err != nil {
		t.Fatal(err)
	}
	o = recvAs[proto.Order](t, c.Recv)
	if claims, err = proto.ParseToken(key, o.Token, time.Now()); err != nil || claims.Fwd != "" || claims.Relay != entry.ID {
		t.Errorf("entry's own need: token %+v %v, want aud entry and no fwd", claims, err)
	}

	// A pinned entry that is gone fails the need; it never falls back.
	entry.Close()
	eventually(t, "entry to leave", func() bool { return len(getStatus(t, rv).Relays) == 1 })
	if err := exit.Send(&proto.Need{Need: 5, Item: pub.ID, Off: 0, Len: 10, Token: rv.ReadToken(t, pub.ID, exit.ID)}); err != nil {
		t.Fatal(err)
	}
	if nf := recvAs[proto.NeedFailed](t, exit.Recv); nf.Need != 5 || nf.Status != proto.StatusUnavailable {
		t.Errorf("need failed: got %+v, want need 5 unavailable", nf)
	}
}

// TestTunnel checks that a relay that is not publicly reachable is reached
// through the rendezvous: redirects and push URLs point into the tunnel,
// which carries HTTP over the relay's libp2p connection.
func TestTunnel(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay, err := rendezvoustest.Dial(t, rv, rendezvoustest.NewNode(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://10.0.0.2:8081", NAT: proto.NATSymmetric}); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Recv(rendezvoustest.Timeout); err != nil {
		t.Fatal(err)
	}
	relay.KeepAlive(100*time.Millisecond, proto.Heartbeat{})

	// The relay's side of the tunnel: its HTTP API on libp2p streams.
	ln, err := relay.Node.Listen(proto.ProtoHTTP)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("relay status " + r.URL.RawQuery))
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Shutdown(context.Background()) })

	base := rv.URL + "/v1/relays/" + relay.ID
	resp, body := do(t, "GET", base+"/v1/status?x=1")
	if resp.StatusCode != 200 || string(body) != "relay status x=1" {
		t.Errorf("tunnelled GET: status %d body %q, want 200 \"relay status x=1\" from the relay", resp.StatusCode, body)
	}
	if resp, _ := do(t, "GET", base+"/debug/pprof"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("tunnel outside /v1/: status %d, want 404", resp.StatusCode)
	}
	if resp, _ := do(t, "GET", rv.URL+"/v1/relays/12D3KooWnotarelay/v1/status"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("tunnel to an unknown relay: status %d, want 503", resp.StatusCode)
	}

	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)
	resp, err = noRedirect.Get(pub.DownloadURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, base+"/v1/items/"+pub.ID.String()+"?t=") {
		t.Errorf("redirect to %q, want into the tunnel %s", loc, base)
	}
	if err := relay.Send(&proto.Need{Need: 1, Item: pub.ID, Len: 10, Token: rv.ReadToken(t, pub.ID, relay.ID)}); err != nil {
		t.Fatal(err)
	}
	o := recvAs[proto.Order](t, c.Recv)
	if want := "ws" + strings.TrimPrefix(base, "http") + "/v1/push"; o.PushURL != want {
		t.Errorf("push_url: got %q, want %q", o.PushURL, want)
	}
	if st := rv.Server.Stats(); st.Tunnelled < 1 {
		t.Errorf("tunnelled requests: got %d, want at least 1", st.Tunnelled)
	}
}
