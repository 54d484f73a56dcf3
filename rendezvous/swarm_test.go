package rendezvous_test

import (
	"net/http"
	"testing"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// Swarm upload (issue 10): several sessions publish one item.

// sendNeed has relay ask for bytes [0, 10) of item id as its need n.
func sendNeed(t *testing.T, rv *rendezvoustest.Server, relay *rendezvoustest.Relay, id proto.ItemID, n uint64) {
	t.Helper()
	if err := relay.Send(&proto.Need{Need: n, Item: id, Off: 0, Len: 10, Token: rv.ReadToken(t, id, relay.ID)}); err != nil {
		t.Fatal(err)
	}
}

// join publishes pub's item again from c with Swarm set.
func join(t *testing.T, c *rendezvoustest.Control, pub proto.Published, size int64) proto.Published {
	t.Helper()
	got := c.Publish(t, proto.Publish{Ref: "j", ID: pub.ID, Owner: pub.Owner, Kind: proto.KindFile, Size: size, Swarm: true})
	if got.ID != pub.ID || got.DownloadURL != pub.DownloadURL {
		t.Fatalf("join: got %+v, want item %s", got, pub.ID)
	}
	return got
}

// expectOrder reads the next message of c, which must be an order for
// item id.
func expectOrder(t *testing.T, c *rendezvoustest.Control, id proto.ItemID) *proto.Order {
	t.Helper()
	o := recvAs[proto.Order](t, c.Recv)
	if o.Item != id {
		t.Fatalf("order for item %s, want %s", o.Item, id)
	}
	return o
}

// TestSwarmSpreadsOrders: a second session joins an item with Swarm; the
// orders of four needs alternate between the two members, and the item
// counts once.
func TestSwarmSpreadsOrders(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	a := rendezvoustest.DialControl(t, rv)
	b := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, a, 1000)
	join(t, b, pub, 1000)
	if st := getStatus(t, rv); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("status: items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
	// Joining twice changes nothing.
	join(t, b, pub, 1000)
	for n, c := range []*rendezvoustest.Control{a, b, a, b} {
		sendNeed(t, rv, relay, pub.ID, uint64(n+1))
		expectOrder(t, c, pub.ID)
	}
}

// TestSwarmConflict: a member announcing another size, kind or
// encryption is refused with StatusConflict (HTTP 409), and the item
// keeps its one publisher.
func TestSwarmConflict(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	a := rendezvoustest.DialControl(t, rv)
	b := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, a, 1000)
	for _, p := range []proto.Publish{
		{Kind: proto.KindFile, Size: 999},
		{Kind: proto.KindClip, Size: 1000},
		{Kind: proto.KindFile, Size: 1000, Enc: proto.E2EVersion},
	} {
		p.ID, p.Owner, p.Swarm, p.Ref = pub.ID, pub.Owner, true, "x"
		if err := b.Send(&p); err != nil {
			t.Fatal(err)
		}
		if e := recvAs[proto.ErrorMsg](t, b.Recv); e.Status != proto.StatusConflict || e.Ref != "x" {
			t.Errorf("join as %s of %d bytes enc %q: got %+v, want status %d", p.Kind, p.Size, p.Enc, e, proto.StatusConflict)
		}
	}
	if got := proto.StatusConflict.HTTPStatus(); got != http.StatusConflict {
		t.Errorf("StatusConflict maps to HTTP %d, want 409", got)
	}
	if got := rv.Server.Stats().Rejected[rendezvous.RejectSwarmConflict]; got != 3 {
		t.Errorf("rejected swarm_conflict: got %d, want 3", got)
	}
	// Orders still go to a alone.
	for n := range uint64(2) {
		sendNeed(t, rv, relay, pub.ID, n+1)
		expectOrder(t, a, pub.ID)
	}
	// A message cannot be a swarm.
	msgOwner := a.Publish(t, proto.Publish{Kind: proto.KindMessage, Text: "hi"})
	if err := b.Send(&proto.Publish{Ref: "m", ID: msgOwner.ID, Owner: msgOwner.Owner, Kind: proto.KindMessage, Text: "hi", Swarm: true}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, b.Recv); e.Status != proto.StatusMalformed {
		t.Errorf("swarm of a message: got %+v, want status %d", e, proto.StatusMalformed)
	}
}

// TestSwarmMemberLeaves: when a member's session ends, its outstanding
// orders fail back to the relay as offline, the item stays online, and
// the next orders go to the member left.
func TestSwarmMemberLeaves(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	a := rendezvoustest.DialControl(t, rv)
	b := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, a, 1000)
	join(t, b, pub, 1000)
	for n, c := range []*rendezvoustest.Control{a, b, a, b} {
		sendNeed(t, rv, relay, pub.ID, uint64(n+1))
		expectOrder(t, c, pub.ID)
	}
	a.Close()
	failed := map[uint64]bool{}
	for range 2 {
		nf := recvAs[proto.NeedFailed](t, relay.Recv)
		if nf.Status != proto.StatusOffline {
			t.Errorf("need %d failed with %d, want %d", nf.Need, nf.Status, proto.StatusOffline)
		}
		failed[nf.Need] = true
	}
	if !failed[1] || !failed[3] {
		t.Errorf("needs failed: got %v, want a's: 1 and 3", failed)
	}
	if st := getStatus(t, rv); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("status after a left: items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
	// The relay asks again: b serves.
	for n := uint64(5); n <= 6; n++ {
		sendNeed(t, rv, relay, pub.ID, n)
		expectOrder(t, b, pub.ID)
	}
	if resp, _ := do(t, http.MethodGet, pub.DownloadURL); resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("GET with one member left: status %d, want 307", resp.StatusCode)
	}
	b.Close()
	eventually(t, "item offline once the last member left", func() bool {
		st := getStatus(t, rv)
		return st.Items == 1 && st.ItemsOnline == 0
	})
}

// TestSwarmUnpublish: a member's Unpublish takes only that member out
// (its order is cancelled and fails back to the relay); the item ends with
// the last member's.
func TestSwarmUnpublish(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	a := rendezvoustest.DialControl(t, rv)
	b := rendezvoustest.DialControl(t, rv)
	outsider := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, a, 1000)
	join(t, b, pub, 1000)

	if err := outsider.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, outsider.Recv); e.Status != proto.StatusForbidden {
		t.Errorf("unpublish by a non-member: got %+v, want status %d", e, proto.StatusForbidden)
	}

	sendNeed(t, rv, relay, pub.ID, 1)
	o := expectOrder(t, a, pub.ID)
	if err := a.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	if c := recvAs[proto.Cancel](t, a.Recv); c.Order != o.Order {
		t.Errorf("cancel of order %d, want %d", c.Order, o.Order)
	}
	if nf := recvAs[proto.NeedFailed](t, relay.Recv); nf.Need != 1 || nf.Status != proto.StatusOffline {
		t.Errorf("need failed: got %+v, want need 1 status %d", nf, proto.StatusOffline)
	}
	if st := getStatus(t, rv); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("status after a unpublished: items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
	sendNeed(t, rv, relay, pub.ID, 2)
	expectOrder(t, b, pub.ID)

	// a is no longer a member: a second unpublish is refused.
	if err := a.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, a.Recv); e.Status != proto.StatusForbidden {
		t.Errorf("unpublish by a former member: got %+v, want status %d", e, proto.StatusForbidden)
	}
	if err := b.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	if nf := recvAs[proto.NeedFailed](t, relay.Recv); nf.Need != 2 || nf.Status != proto.StatusNotFound {
		t.Errorf("need failed: got %+v, want need 2 status %d", nf, proto.StatusNotFound)
	}
	eventually(t, "item gone with the last member", func() bool { return getStatus(t, rv).Items == 0 })
}

// TestSwarmTakeOver: a reclaim without Swarm makes its session the only
// publisher, as after a reconnect; the members it replaced can no longer
// unpublish it.
func TestSwarmTakeOver(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	a := rendezvoustest.DialControl(t, rv)
	b := rendezvoustest.DialControl(t, rv)
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, a, 1000)
	join(t, b, pub, 1000)
	c.Publish(t, proto.Publish{ID: pub.ID, Owner: pub.Owner})
	for n := uint64(1); n <= 3; n++ {
		sendNeed(t, rv, relay, pub.ID, n)
		expectOrder(t, c, pub.ID)
	}
	for _, x := range []*rendezvoustest.Control{a, b} {
		if err := x.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
			t.Fatal(err)
		}
		if e := recvAs[proto.ErrorMsg](t, x.Recv); e.Status != proto.StatusForbidden {
			t.Errorf("unpublish by a replaced member: got %+v, want status %d", e, proto.StatusForbidden)
		}
	}
	// A replaced member's session ending leaves the item online.
	a.Close()
	b.Close()
	sendNeed(t, rv, relay, pub.ID, 4)
	expectOrder(t, c, pub.ID)
	if st := getStatus(t, rv); st.ItemsOnline != 1 {
		t.Errorf("items online: got %d, want 1", st.ItemsOnline)
	}
}

// TestSwarmCreates: a swarm member of an item this rendezvous does not
// know (it restarted) publishes it under its id; the next joins it; the
// item counts once against the limits and MaxPublishersPerItem bounds the
// members.
func TestSwarmCreates(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxPublishersPerItem = 2
	rv := rendezvoustest.Start(t, cfg)
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	id, owner := proto.NewOwnedItemID()
	p := proto.Publish{ID: id, Owner: owner, Kind: proto.KindFile, Name: "a.bin", Size: 1000, Swarm: true}
	a := rendezvoustest.DialControl(t, rv)
	b := rendezvoustest.DialControl(t, rv)
	c := rendezvoustest.DialControl(t, rv)
	if got := a.Publish(t, p); got.ID != id {
		t.Fatalf("published %s, want %s", got.ID, id)
	}
	b.Publish(t, p)
	if st := getStatus(t, rv); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("status: items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
	if err := c.Send(&p); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, c.Recv); e.Status != proto.StatusOverLimit {
		t.Errorf("third member over MaxPublishersPerItem 2: got %+v, want status %d", e, proto.StatusOverLimit)
	}
	if got := rv.Server.Stats().Rejected[rendezvous.RejectPublishers]; got != 1 {
		t.Errorf("rejected publishers_per_item: got %d, want 1", got)
	}
	for n, x := range []*rendezvoustest.Control{a, b} {
		sendNeed(t, rv, relay, id, uint64(n+1))
		expectOrder(t, x, id)
	}
}
