package rendezvous_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestClipHolders: a clip's publish is answered with its expiry and a
// store order for the whole item; the relay that announces it with that
// token becomes its holder (a forged announcement does not), reads go to
// the holder after the publisher left, and a holder that registers again
// re-announces the clip and gets its reads back (soft state).
func TestClipHolders(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	holder := rendezvoustest.Register(t, rv, "http://holder.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := c.Publish(t, proto.Publish{Kind: proto.KindClip, Name: "c.txt", MIME: "text/plain", Size: 5000, Volunteers: true})
	if d := time.Until(time.UnixMilli(pub.ExpiresMS)); d < rendezvous.DefaultClipTTL-time.Minute || d > rendezvous.DefaultClipTTL {
		t.Errorf("published: expires in %v, want about %v", d, rendezvous.DefaultClipTTL)
	}
	o := recvAs[proto.Order](t, c.Recv)
	claims, err := proto.ParseToken(tokenKey(t, rv), o.Token, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !claims.Store || claims.Relay != holder.ID || claims.Item != pub.ID || claims.Off != 0 || claims.Len != 5000 || o.Off != 0 || o.Len != 5000 || claims.Exp != pub.ExpiresMS/1000 {
		t.Fatalf("store order: got %+v with claims %+v, want the whole clip onto %s, store, until its expiry", o, claims, holder.ID)
	}
	meta := func() (m rendezvous.ItemMeta) {
		rendezvoustest.GetJSON(t, rv.URL+"/v1/items/"+pub.ID.String()+"/meta", &m)
		return m
	}
	if m := meta(); m.Holders != 0 || m.Storing != 1 || m.Expires == "" {
		t.Fatalf("meta while storing: got %+v, want 0 holders, 1 copy being pushed, an expiry", m)
	}

	announce := proto.Hold{Ref: "clip", ID: pub.ID, Protocol: proto.HoldClip, Size: 5000, Done: true, ExpiresMS: pub.ExpiresMS, Token: o.Token}
	forged := announce
	forged.Size = 4000 // the token covers 5000 bytes
	if err := holder.Send(&forged); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the forged announcement refused", func() bool { return rv.Server.Stats().Held.Refused == 1 })
	if err := holder.Send(&announce); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relay is the clip's holder", func() bool { m := meta(); return m.Holders == 1 && m.Storing == 0 })

	c.Close()
	redirectsToHolder := func() bool {
		resp, _ := do(t, http.MethodGet, pub.DownloadURL)
		return resp.StatusCode == http.StatusTemporaryRedirect && strings.HasPrefix(resp.Header.Get("Location"), "http://holder.test/") && resp.Header.Get("Expires") != ""
	}
	eventually(t, "reads go to the holder with the publisher gone", redirectsToHolder)

	holder.Close()
	eventually(t, "the clip offline with its holder gone", func() bool {
		resp, _ := do(t, http.MethodGet, pub.DownloadURL)
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	back, err := rendezvoustest.Dial(t, rv, holder.Node)
	if err != nil {
		t.Fatal(err)
	}
	back.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://holder.test", Budget: 64 << 20, Public: true, NAT: proto.NATPublic})
	recvAs[proto.Registered](t, back.Recv)
	re := announce
	re.Ref = "re"
	if err := back.Send(&re); err != nil {
		t.Fatal(err)
	}
	eventually(t, "reads go to the holder again after its re-announce", redirectsToHolder)
	if got, want := rv.Server.Stats().Clips, (rendezvous.ClipStats{Orders: 1, Held: 2, Lost: 1}); got != want {
		t.Errorf("clip stats: got %+v, want %+v", got, want)
	}
}
