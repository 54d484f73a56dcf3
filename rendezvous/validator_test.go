package rendezvous_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/url"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestValidatorSurvivesRestart: the time in an item's read tokens, from
// which relays make Last-Modified and the ETag, is the source's
// modification time the publisher sent (or none for an encrypted item),
// not the time of publishing, so it is the same after the item is
// reclaimed on a restarted rendezvous and a reader's If-Range still
// matches (issue 14).
func TestValidatorSurvivesRestart(t *testing.T) {
	t.Parallel()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The restarted rendezvous's clock is a minute on, so that a time
	// taken from the reclaim differs from one taken from the publish.
	const later = time.Minute
	cfg := func(shift time.Duration) rendezvous.Config {
		c := testConfig()
		c.SigningKey = key
		c.Now = func() time.Time { return time.Now().Add(shift) }
		return c
	}
	const mtime = 1790000000
	cipherSize, _ := proto.E2ECipherSize(1000)
	items := []struct {
		name string
		pub  proto.Publish
		want func(published int64) int64
	}{
		{"plaintext with its source's time", proto.Publish{Kind: proto.KindFile, Name: "a.bin", MIME: "application/octet-stream", Size: 1000, Modified: mtime},
			func(int64) int64 { return mtime }},
		{"encrypted", proto.Publish{Kind: proto.KindFile, MIME: "application/octet-stream", Size: cipherSize, Enc: proto.E2EVersion},
			func(int64) int64 { return 0 }},
		{"plaintext, time unknown", proto.Publish{Kind: proto.KindFile, Name: "b.bin", MIME: "application/octet-stream", Size: 1000},
			func(published int64) int64 { return published }},
	}
	modifiedOf := func(rv *rendezvoustest.Server, id proto.ItemID, shift time.Duration) int64 {
		t.Helper()
		resp, _ := do(t, "GET", rv.URL+"/v1/items/"+id.String())
		u, err := url.Parse(resp.Header.Get("Location"))
		if err != nil || resp.StatusCode != 307 {
			t.Fatalf("GET item: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		c, err := proto.ParseToken(key.Public().(ed25519.PublicKey), u.Query().Get("t"), time.Now().Add(shift))
		if err != nil {
			t.Fatal(err)
		}
		return c.Modified
	}

	rv1 := rendezvoustest.Start(t, cfg(0))
	rendezvoustest.Register(t, rv1, "http://relay.test")
	c1 := rendezvoustest.DialControl(t, rv1)
	published := make([]proto.Published, len(items))
	before := make([]int64, len(items))
	for i, it := range items {
		published[i] = c1.Publish(t, it.pub)
		before[i] = modifiedOf(rv1, published[i].ID, 0)
		if want := it.want(time.Now().Unix()); before[i] != want && !(want > mtime && before[i] > mtime) {
			t.Errorf("%s: token time %d, want %d", it.name, before[i], want)
		}
	}
	rv1.Close()

	rv2 := rendezvoustest.Start(t, cfg(later))
	rendezvoustest.Register(t, rv2, "http://relay.test")
	c2 := rendezvoustest.DialControl(t, rv2)
	for i, it := range items {
		p := it.pub
		p.ID, p.Owner = published[i].ID, published[i].Owner
		c2.Publish(t, p)
		after := modifiedOf(rv2, p.ID, later)
		stable := it.want(0) != 0 || it.pub.Enc != ""
		if stable && after != before[i] {
			t.Errorf("%s: token time %d after the restart, %d before: want the same", it.name, after, before[i])
		}
		if !stable && after == before[i] {
			t.Errorf("%s: token time %d before and after: want the time of the reclaim (the test checks it can fail)", it.name, after)
		}
	}
}
