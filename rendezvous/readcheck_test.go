package rendezvous_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestReadCheck drives read checks (proto.ReadCheck) by hand on a
// register stream, with a real local webhook that lets the reader with
// Authorization: Bearer r3ad read: Registered says whether to ask; a
// check of a held item is answered with the webhook's verdict; a check
// from a relay that does not hold the item is refused (fail closed);
// without a webhook every check is allowed.
func TestReadCheck(t *testing.T) {
	t.Parallel()
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Operation   string            `json:"operation"`
			Credentials map[string]string `json:"credentials"`
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Operation == "read" && req.Credentials["authorization"] != "Bearer r3ad" {
			http.Error(w, "who are you", http.StatusForbidden)
		}
	}))
	t.Cleanup(hook.Close)
	verdict := func(t *testing.T, relay *rendezvoustest.Relay, m proto.ReadCheck) *proto.ReadVerdict {
		t.Helper()
		if err := relay.Send(&m); err != nil {
			t.Fatal(err)
		}
		v := recvAs[proto.ReadVerdict](t, relay.Recv)
		if v.Check != m.Check {
			t.Fatalf("verdict for check %d, want %d", v.Check, m.Check)
		}
		return v
	}

	t.Run("webhook", func(t *testing.T) {
		cfg := testConfig()
		cfg.AuthWebhook = hook.URL
		rv := rendezvoustest.Start(t, cfg)
		holder := rendezvoustest.Register(t, rv, "http://holder.test")
		other := rendezvoustest.Register(t, rv, "http://other.test")
		if rc := holder.Registered.ReadChecks; rc == nil || !*rc {
			t.Fatalf("registered read_checks: got %v, want true", rc)
		}
		held, ok := hold(t, holder, proto.Hold{Ref: "u", Protocol: proto.UploadTUS, Name: "a", Size: 5}).(*proto.Held)
		if !ok {
			t.Fatal("upload refused")
		}
		reader := map[string]string{"authorization": "Bearer r3ad"}
		if v := verdict(t, holder, proto.ReadCheck{Check: 1, Item: held.ID, Client: "192.0.2.1:5", Auth: reader}); v.Status != proto.StatusOK {
			t.Errorf("allowed reader: got %v %q, want ok", v.Status, v.Reason)
		}
		if v := verdict(t, holder, proto.ReadCheck{Check: 2, Item: held.ID}); v.Status != proto.StatusForbidden || !strings.Contains(v.Reason, "who are you") {
			t.Errorf("reader without credentials: got %v %q, want forbidden with the webhook's reason", v.Status, v.Reason)
		}
		if v := verdict(t, other, proto.ReadCheck{Check: 3, Item: held.ID, Auth: reader}); v.Status != proto.StatusUnavailable {
			t.Errorf("check from a relay that does not hold the item: got %v %q, want unavailable", v.Status, v.Reason)
		}
		if n := rv.Server.Stats().Held.ReadChecks; n != 3 {
			t.Errorf("read checks counted: got %d, want 3", n)
		}
	})

	t.Run("no webhook", func(t *testing.T) {
		rv := rendezvoustest.Start(t, testConfig())
		relay := rendezvoustest.Register(t, rv, "http://holder.test")
		if rc := relay.Registered.ReadChecks; rc == nil || *rc {
			t.Fatalf("registered read_checks: got %v, want false", rc)
		}
		if v := verdict(t, relay, proto.ReadCheck{Check: 7, Item: proto.ItemID{1}}); v.Status != proto.StatusOK {
			t.Errorf("got %v %q, want ok", v.Status, v.Reason)
		}
	})
}
