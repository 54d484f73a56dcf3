package rendezvous_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestEntryChoice drives the scheduler with an exit relay and two other
// relays it is connected to: the read-ahead of one request spreads over
// the entries, a measured fast way is preferred, Need.Avoid is honoured,
// a failed entry makes the need retryable, and the status shows what was
// carried.
func TestEntryChoice(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	exit := rendezvoustest.Register(t, rv, "http://exit.test")
	b := rendezvoustest.Register(t, rv, "http://b.test")
	c := rendezvoustest.Register(t, rv, "http://c.test")
	names := map[string]string{exit.ID: "exit", b.ID: "b", c.ID: "c"}
	if err := exit.Send(&proto.Heartbeat{Mesh: &proto.MeshStatus{NAT: proto.NATPublic, Peers: []proto.MeshPeer{
		{ID: b.ID, Kind: proto.PeerDirect}, {ID: c.ID, Kind: proto.PeerHolePunched},
	}}}); err != nil {
		t.Fatal(err)
	}
	ctl := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, ctl, 64<<20)
	tok := rv.ReadToken(t, pub.ID, exit.ID)
	key := tokenKey(t, rv)
	const part = 8 << 20
	need := func(n uint64, avoid ...string) *proto.Order {
		t.Helper()
		if err := exit.Send(&proto.Need{Need: n, Item: pub.ID, Off: int64(n-1) * part, Len: part, Token: tok, Avoid: avoid}); err != nil {
			t.Fatal(err)
		}
		o := recvAs[proto.Order](t, ctl.Recv)
		claims, err := proto.ParseToken(key, o.Token, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		wantFwd := exit.ID
		if o.Relay == exit.ID {
			wantFwd = ""
		}
		if claims.Relay != o.Relay || claims.Fwd != wantFwd || claims.Ref != n {
			t.Errorf("need %d: order through %s with a token for %s forwarding to %q (ref %d), want the token for the entry forwarding to %q", n, names[o.Relay], names[claims.Relay], names[claims.Fwd], claims.Ref, names[wantFwd])
		}
		return o
	}
	done := func(n uint64, ms int64) {
		t.Helper()
		if err := exit.Send(&proto.NeedDone{Need: n, Bytes: part, MS: ms}); err != nil {
			t.Fatal(err)
		}
	}

	// Nothing measured: the exit itself first (no hop), then the two
	// others, one each, as the outstanding orders grow.
	o1, o2, o3 := need(1), need(2), need(3)
	if o1.Relay != exit.ID {
		t.Errorf("first part through %s, want the exit itself", names[o1.Relay])
	}
	if got := map[string]bool{o2.Relay: true, o3.Relay: true}; !got[b.ID] || !got[c.ID] {
		t.Errorf("read-ahead through %s and %s, want b and c", names[o2.Relay], names[o3.Relay])
	}

	// The exit's own way measures fast (8 MiB in 10 ms), b's slow (in
	// 400 ms): the next parts go through the exit while it has room.
	done(1, 10)
	bNeed, cOrder := uint64(2), o3
	if o2.Relay != b.ID {
		bNeed, cOrder = 3, o2
	}
	done(bNeed, 400)
	if o := need(4); o.Relay != exit.ID {
		t.Errorf("after measuring, part 4 through %s, want the fast exit", names[o.Relay])
	}
	// Avoid: the exit saw itself and c fail on these bytes.
	if o := need(5, exit.ID, c.ID); o.Relay != b.ID {
		t.Errorf("need avoiding exit and c: through %s, want b", names[o.Relay])
	}

	// The publisher cannot push through c: the exit is told the part is
	// unavailable (so it asks again), naming the entry.
	if err := ctl.Send(&proto.OrderFailed{Order: cOrder.Order, Status: proto.StatusOverLimit, Reason: "relay full"}); err != nil {
		t.Fatal(err)
	}
	nf := recvAs[proto.NeedFailed](t, exit.Recv)
	if nf.Status != proto.StatusUnavailable || !strings.Contains(nf.Reason, "entry relay") || !strings.Contains(nf.Reason, "relay full") {
		t.Errorf("need_failed: got %v %q, want unavailable naming the entry and its reason", nf.Status, nf.Reason)
	}

	var st struct {
		Relays []struct {
			ID    string             `json:"id"`
			Rates map[string]float64 `json:"rates_mbps"`
			Entry struct {
				Parts  int64 `json:"parts"`
				Orders int   `json:"orders"`
			} `json:"entry"`
			Reorders int64 `json:"reorders"`
		} `json:"relays"`
		Transfers []struct {
			Item      string           `json:"item"`
			Parts     int64            `json:"parts"`
			Bytes     int64            `json:"bytes"`
			Reorders  int64            `json:"reorders"`
			ReadAhead int              `json:"read_ahead"`
			Entries   map[string]int64 `json:"entries"`
		} `json:"transfers"`
	}
	resp, body := do(t, http.MethodGet, rv.URL+"/v1/status")
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil {
		t.Fatalf("status: %d %s", resp.StatusCode, body)
	}
	if len(st.Transfers) != 1 {
		t.Fatalf("transfers: got %+v, want one", st.Transfers)
	}
	tr := st.Transfers[0]
	if tr.Item != pub.ID.String()[:6] || tr.Parts != 2 || tr.Bytes != 2*part || tr.Reorders != 1 || tr.ReadAhead != 2 ||
		tr.Entries[exit.ID] != 1 || tr.Entries[b.ID] != 1 {
		t.Errorf("transfer: got %+v, want 2 parts (exit, b) of %d bytes, 1 reorder, 2 orders outstanding", tr, part)
	}
	for _, r := range st.Relays {
		switch r.ID {
		case exit.ID:
			if len(r.Rates) != 2 || r.Rates[exit.ID] <= r.Rates[b.ID] || r.Reorders != 1 {
				t.Errorf("exit: rates %v, reorders %d; want its own way faster than b's, 1 reorder", r.Rates, r.Reorders)
			}
		case b.ID:
			if r.Entry.Parts != 1 || r.Entry.Orders != 1 {
				t.Errorf("b as entry: %+v, want 1 part carried and 1 outstanding", r.Entry)
			}
		}
	}
}
