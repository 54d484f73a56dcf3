package rendezvous_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// recvHeldClip reads from relay r until the sealed metadata of a clip is
// handed over (a Held with Ref clip) and returns it.
func recvHeldClip(t *testing.T, r *rendezvoustest.Relay) *proto.Held {
	t.Helper()
	for {
		m, err := r.Recv(wait)
		if err != nil {
			t.Fatalf("read held: %v", err)
		}
		if h, ok := m.(*proto.Held); ok && h.Ref == proto.HoldClip {
			return h
		}
	}
}

// TestClipRestart: a rendezvous that restarted (same key) rebuilds an
// encrypted clip from its holder's re-announcement, with its size,
// encryption, sealed metadata, expiry and holder, with the publisher
// gone; a second holder announcing other metadata does not replace it
// (and is handed the clip's own), a relay that was never ordered to
// store the clip cannot announce it, a plaintext clip cannot be given
// sealed metadata; the owner's unpublish tells both holders to drop it,
// and a holder that re-announces it then is told again and does not
// bring it back.
func TestClipRestart(t *testing.T) {
	t.Parallel()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.SigningKey = key
	rv := rendezvoustest.Start(t, cfg)
	a := rendezvoustest.Register(t, rv, "http://a.test")
	b := rendezvoustest.Register(t, rv, "http://b.test")
	c := rendezvoustest.DialControl(t, rv)
	size, err := proto.E2ECipherSize(5000)
	if err != nil {
		t.Fatal(err)
	}
	clip := proto.Publish{Kind: proto.KindClip, MIME: "application/octet-stream", Size: size, Enc: proto.E2EVersion}
	pub := c.Publish(t, clip)
	tokens := map[string]string{}
	for range 2 {
		o := recvAs[proto.Order](t, c.Recv)
		tokens[o.Relay] = o.Token
	}
	if tokens[a.ID] == "" || tokens[b.ID] == "" {
		t.Fatalf("store orders: got %v, want one per relay", tokens)
	}
	sealed, err := proto.NewE2EItem(proto.NewE2EKey(), pub.ID).SealMeta(proto.E2EMeta{Name: "clip.png", Type: "image/png"})
	if err != nil {
		t.Fatal(err)
	}
	withMeta := clip
	withMeta.ID, withMeta.Owner, withMeta.Meta = pub.ID, pub.Owner, sealed
	c.Publish(t, withMeta)
	hold := func(r *rendezvoustest.Relay, ref, sealed string) {
		t.Helper()
		if err := r.Send(&proto.Hold{Ref: ref, ID: pub.ID, Protocol: proto.HoldClip, Size: size, Done: true, ExpiresMS: pub.ExpiresMS, Token: tokens[r.ID], Sealed: sealed}); err != nil {
			t.Fatal(err)
		}
	}
	metaURL1 := rv.URL + "/v1/items/" + pub.ID.String() + "/meta"
	sealedHolders := func(url string) int {
		t.Helper()
		var m rendezvous.ItemMeta
		rendezvoustest.GetJSON(t, url, &m)
		if m.SealedHolders == nil {
			t.Fatalf("meta of an encrypted clip: no sealed_holders")
		}
		return *m.SealedHolders
	}
	hold(a, proto.HoldClip, "")
	if h := recvHeldClip(t, a); h.ID != pub.ID || h.Sealed != sealed {
		t.Fatalf("holder handed %+v, want the clip's sealed metadata", h)
	}
	if n := sealedHolders(metaURL1); n != 0 {
		t.Fatalf("sealed_holders before the holder confirmed: got %d, want 0", n)
	}
	hold(a, proto.HoldClip, sealed) // the relay's confirmation
	eventually(t, "the holder's confirmation counted", func() bool { return sealedHolders(metaURL1) == 1 })
	c.Close()

	// The rendezvous restarts: a new process with the same key, which
	// knows nothing.
	rv.Close()
	rv2 := rendezvoustest.Start(t, cfg)
	rejoin := func(r *rendezvoustest.Relay, url string) *rendezvoustest.Relay {
		t.Helper()
		back, err := rendezvoustest.Dial(t, rv2, r.Node)
		if err != nil {
			t.Fatal(err)
		}
		back.Send(&proto.Register{Version: proto.Version, HTTPURL: url, Budget: 64 << 20, Public: true, NAT: proto.NATPublic})
		recvAs[proto.Registered](t, back.Recv)
		return back
	}
	a2, b2 := rejoin(a, "http://a.test"), rejoin(b, "http://b.test")
	thief := rendezvoustest.Register(t, rv2, "http://thief.test")
	metaURL := rv2.URL + "/v1/items/" + pub.ID.String() + "/meta"
	var m rendezvous.ItemMeta
	if resp, _ := do(t, http.MethodGet, metaURL); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("meta before any announcement: %s, want 404", resp.Status)
	}

	// A relay never ordered to store it: another's token names another
	// relay; a token of its own it cannot make.
	thief.Send(&proto.Hold{Ref: "reclip", ID: pub.ID, Protocol: proto.HoldClip, Size: size, Done: true, Token: tokens[a.ID], Sealed: "forged"})
	eventually(t, "the thief's announcement refused", func() bool { return rv2.Server.Stats().Held.Refused == 1 })
	hold(a2, "reclip", sealed)
	eventually(t, "the clip rebuilt from its holder", func() bool {
		resp, _ := do(t, http.MethodGet, metaURL)
		if resp.StatusCode != http.StatusOK {
			return false
		}
		rendezvoustest.GetJSON(t, metaURL, &m)
		return m.Holders == 1
	})
	if m.Size != size || m.Enc != proto.E2EVersion || m.Meta != sealed || m.Kind != proto.KindClip || m.Expires == "" {
		t.Fatalf("rebuilt clip: got %+v, want size %d, encrypted, the sealed metadata, an expiry", m, size)
	}
	resp, _ := do(t, http.MethodGet, rv2.URL+"/v1/items/"+pub.ID.String())
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, "a.test/") && !strings.Contains(loc, a.ID) {
		t.Fatalf("read of the rebuilt clip: %s to %q, want 307 to its holder", resp.Status, loc)
	}

	// The second holder, with its own token, announces other metadata:
	// it becomes a holder, the metadata stays, and it is handed it.
	hold(b2, "reclip", "forged")
	if h := recvHeldClip(t, b2); h.Sealed != sealed {
		t.Fatalf("second holder handed %q, want the clip's own metadata", h.Sealed)
	}
	rendezvoustest.GetJSON(t, metaURL, &m)
	if m.Holders != 2 || m.Meta != sealed {
		t.Fatalf("after the second holder: got %d holders, meta %q; want 2 and the first", m.Holders, m.Meta)
	}
	if got, want := rv2.Server.Stats().Clips, (rendezvous.ClipStats{Held: 2, Rebuilt: 1, MetaIgnored: 1}); got != want {
		t.Errorf("clip stats: got %+v, want %+v", got, want)
	}

	// A store token of a rendezvous before Enc and Modified were added
	// cannot tell an encrypted clip from a plaintext one: no rebuild. (A
	// refused announcement after it, on the same stream, shows it was
	// handled.)
	oldID := proto.ItemID{0: 0x42, 15: 1}
	oldTok := proto.SignToken(key, proto.Claims{Dir: proto.DirPush, Relay: a2.ID, Item: oldID, Len: 100, Exp: time.Now().Add(time.Hour).Unix(), Size: 100, Store: true})
	a2.Send(&proto.Hold{Ref: "reclip", ID: oldID, Protocol: proto.HoldClip, Size: 100, Done: true, Token: oldTok})
	before := rv2.Server.Stats().Held.Refused
	a2.Send(&proto.Hold{Ref: "reclip", ID: oldID, Protocol: proto.HoldClip, Size: 99, Done: true, Token: oldTok})
	eventually(t, "the announcement after the old token's handled", func() bool { return rv2.Server.Stats().Held.Refused == before+1 })
	if resp, _ := do(t, http.MethodGet, rv2.URL+"/v1/items/"+oldID.String()+"/meta"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("meta of a clip announced with an old store token: %s, want 404 (not rebuilt)", resp.Status)
	}

	// A plaintext clip's announcement with sealed metadata is refused.
	plain := rendezvoustest.DialControl(t, rv2)
	ppub := plain.Publish(t, proto.Publish{Kind: proto.KindClip, Name: "p.txt", MIME: "text/plain", Size: 100, Volunteers: true})
	po := recvAs[proto.Order](t, plain.Recv)
	var pr *rendezvoustest.Relay
	for _, r := range []*rendezvoustest.Relay{a2, b2, thief} {
		if r.ID == po.Relay {
			pr = r
		}
	}
	refused := rv2.Server.Stats().Held.Refused
	pr.Send(&proto.Hold{Ref: proto.HoldClip, ID: ppub.ID, Protocol: proto.HoldClip, Size: 100, Done: true, Token: po.Token, Sealed: "x"})
	eventually(t, "sealed metadata for a plaintext clip refused", func() bool { return rv2.Server.Stats().Held.Refused == refused+1 })

	// The owner comes back and unpublishes: both holders are told.
	owner := rendezvoustest.DialControl(t, rv2)
	owner.Publish(t, withMeta)
	if err := owner.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*rendezvoustest.Relay{a2, b2} {
		rel := recvAs[proto.Release](t, r.Recv)
		if rel.ID != pub.ID || rel.Status != proto.StatusGone || !strings.Contains(rel.Reason, "unpublished") {
			t.Errorf("holder told %+v, want a release of the unpublished clip", rel)
		}
	}
	if resp, _ := do(t, http.MethodGet, metaURL); resp.StatusCode != http.StatusNotFound {
		t.Errorf("meta after unpublish: %s, want 404", resp.Status)
	}
	// A holder whose link was down re-announces it: told again, and the
	// clip stays gone.
	hold(a2, "reclip", sealed)
	if rel := recvAs[proto.Release](t, a2.Recv); rel.ID != pub.ID {
		t.Errorf("re-announce of an unpublished clip answered %+v, want its release", rel)
	}
	if resp, _ := do(t, http.MethodGet, metaURL); resp.StatusCode != http.StatusNotFound {
		t.Errorf("meta after a re-announce of the unpublished clip: %s, want 404", resp.Status)
	}
	if got := rv2.Server.Stats().Clips; got.Released != 3 || got.Rebuilt != 1 {
		t.Errorf("clip stats: got %+v, want 3 releases, 1 rebuild", got)
	}
}
