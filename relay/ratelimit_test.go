package relay_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
)

// TestMaxRate checks the volunteer rate limits end to end: a relay with
// --max-rate 2MiB/s (or a limit per consumer) serves a 6 MiB item whole,
// its limiter made the writes wait (the time is asserted on synctest's
// clock in TestShaperGlobalRate, not here), and every byte sent counts in
// the month's volume.
func TestMaxRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  func(*relay.Config)
	}{
		{"global", func(c *relay.Config) { c.MaxRate = 2 << 20 }},
		{"per consumer", func(c *relay.Config) { c.MaxRatePerConsumer = 2 << 20 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testRelayConfig()
			tt.cfg(&cfg)
			e := newEnv(t, cfg)
			r := e.relays[0]
			data := meshtest.RandomBytes(6<<20, 7)
			_, it := e.publish(t, data, client.Config{})
			resp, body := do(t, http.MethodGet, e.itemURL(it.ID, r))
			if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
				t.Fatalf("GET: status %d, %d bytes; want 200 and the %d bytes of the item", resp.StatusCode, len(body), len(data))
			}
			// Bytes are counted once written: the reader may have them
			// all first.
			eventually(t, "every byte counted", func() bool { return r.Server.Stats().Rate.Sent >= int64(len(data)) })
			rs := r.Server.Stats().Rate
			if rs.Sent != int64(len(data)) || rs.MonthlyUsed != int64(len(data)) {
				t.Errorf("sent %d, monthly used %d: want both %d", rs.Sent, rs.MonthlyUsed, len(data))
			}
			if rs.Waits == 0 || rs.DelayedBytes == 0 || rs.DelayMS == 0 {
				t.Errorf("the limiter never held a write back: %+v", rs)
			}
			if rs.CapReached || rs.MonthlyCap != 0 {
				t.Errorf("no cap configured, got %+v", rs)
			}
		})
	}
}

// TestMonthlyCap checks that a relay past its monthly volume cap finishes
// the response that crossed it, then refuses new consumer requests with
// 503 and Retry-After before any body, says so in its status, and tells
// the rendezvous, which stops choosing it.
func TestMonthlyCap(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.MonthlyCap = 1 << 20
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(2<<20+3, 8)
	_, it := e.publish(t, data, client.Config{})

	// The first request is admitted under the cap and runs to its end,
	// past the cap: never cut mid-body.
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, r))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET under the cap: status %d, %d bytes; want 200 and the %d bytes of the item", resp.StatusCode, len(body), len(data))
	}
	rs := r.Server.Stats().Rate
	if !rs.CapReached || rs.MonthlyUsed != int64(len(data)) || rs.MonthlyCap != 1<<20 {
		t.Fatalf("after %d bytes: got %+v, want the cap of 1 MiB reached", len(data), rs)
	}

	// The next one is refused before any body.
	url := e.relayURL(t, it.ID, r)
	resp, body = do(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET over the cap: got %d, want 503", resp.StatusCode)
	}
	if st := apiError(t, resp, body); st != proto.StatusUnavailable {
		t.Errorf("status: got %v, want %v", st, proto.StatusUnavailable)
	}
	if !strings.Contains(string(body), "monthly volume cap") {
		t.Errorf("body %q does not say why", body)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra <= 0 || ra > 31*24*3600 {
		t.Errorf("Retry-After: got %q, want the seconds until the month ends", resp.Header.Get("Retry-After"))
	}
	if got := r.Server.Stats().Rate; got.CapRefused != 1 || got.MonthlyUsed != int64(len(data)) {
		t.Errorf("after the refusal: got %+v, want 1 refused and nothing more sent", got)
	}
	// HEAD sends no body: still answered.
	if resp, _ := do(t, http.MethodHead, url); resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD over the cap: got %d, want 200", resp.StatusCode)
	}

	// The relay's /v1/status says so.
	resp, body = do(t, http.MethodGet, r.URL+"/v1/status")
	var st relay.Status
	if err := json.Unmarshal(body, &st); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/v1/status: %d %v", resp.StatusCode, err)
	}
	if !st.Stats.Rate.CapReached || st.Stats.Rate.MonthlyUsed != int64(len(data)) {
		t.Errorf("/v1/status rate: got %+v, want the cap reached", st.Stats.Rate)
	}

	// A part to forward to another relay (bytes this relay would send) is
	// refused; the honest transfer above was unharmed.
	p := dialPush(t, r.PushURL(), nil)
	fwd := proto.SignToken(e.key, proto.Claims{
		Dir: proto.DirPush, Relay: r.ID(), Fwd: "12D3KooWSomeOtherExitRelay", Item: it.ID, Len: 100, Ref: 1, Exp: time.Now().Add(time.Hour).Unix(),
	})
	p.send(t, proto.PartBegin{Stream: 1, Item: it.ID, Len: 100, Token: fwd}.AppendFrame(nil))
	if end := p.expectEnd(t, 1); end.Status != proto.StatusUnavailable || !strings.Contains(end.Reason, "monthly volume cap") {
		t.Errorf("part to forward over the cap: got PartEnd %v %q, want unavailable, naming the cap", end.Status, end.Reason)
	}
	if got := r.Server.Stats().Rate.CapRefused; got != 2 {
		t.Errorf("refused for the cap: got %d, want 2 (a request, a part)", got)
	}

	// And so does the status page.
	if _, body := do(t, http.MethodGet, r.URL+"/"); !strings.Contains(string(body), "reached: no new work until") {
		t.Errorf("the status page does not say the cap is reached:\n%s", body)
	}

	// The rendezvous learns it from a heartbeat, lists it, and sends
	// consumers to no relay rather than to this one.
	eventually(t, "the rendezvous lists the relay as capped", func() bool {
		resp, err := httpClient.Get(e.rv.URL + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var rv struct {
			Relays []struct {
				ID         string `json:"id"`
				CapReached bool   `json:"cap_reached"`
			} `json:"relays"`
		}
		b, _ := io.ReadAll(resp.Body)
		json.Unmarshal(b, &rv)
		return len(rv.Relays) == 1 && rv.Relays[0].ID == r.ID() && rv.Relays[0].CapReached
	})
	resp, err = noRedirect.Get(e.rv.URL + "/v1/items/" + it.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	body = mustReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "monthly volume cap") {
		t.Errorf("rendezvous GET with the only relay capped: got %d %s (Location %q), want 503 naming the cap", resp.StatusCode, body, resp.Header.Get("Location"))
	}
}

// TestMonthlyCapMidResponse checks that a response begun under the cap
// runs to its end after the cap is reached and the rendezvous knows it:
// the parts it still needs are ordered (the capped relay forwards nothing
// for others, but takes its own needs' parts), never cut mid-body. The
// consumer pauses after 2 MiB of 16 MiB until the rendezvous lists the
// relay as capped.
func TestMonthlyCapMidResponse(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.MonthlyCap = 1 << 20
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(16<<20, 10)
	_, it := e.publish(t, data, client.Config{})

	d := startDownload(t, e.itemURL(it.ID, r), 2<<20)
	d.waitPaused(t)
	if !r.Server.Stats().Rate.CapReached {
		t.Fatal("the cap of 1 MiB is not reached after 2 MiB")
	}
	eventually(t, "the rendezvous lists the relay as capped", func() bool {
		resp, err := httpClient.Get(e.rv.URL + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return bytes.Contains(mustReadAll(resp.Body), []byte(`"cap_reached":true`))
	})
	d.resume()
	code, body, err := d.wait(t)
	if code != http.StatusOK || err != nil || !bytes.Equal(body, data) {
		t.Fatalf("download across the cap: status %d, %d of %d bytes, err %v", code, len(body), len(data), err)
	}
}

func mustReadAll(r io.Reader) []byte {
	b, _ := io.ReadAll(r)
	return b
}
