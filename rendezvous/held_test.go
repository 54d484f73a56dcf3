package rendezvous_test

import (
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// hold sends a Hold from relay and returns the reply.
func hold(t *testing.T, relay *rendezvoustest.Relay, h proto.Hold) proto.Message {
	t.Helper()
	if err := relay.Send(&h); err != nil {
		t.Fatal(err)
	}
	m, err := relay.Recv(wait)
	if err != nil {
		t.Fatalf("read hold reply: %v", err)
	}
	return m
}

// TestHeldItem follows a held item through its life at the rendezvous:
// created by a Hold, read through its holder only (the token covers every
// byte while the size is unknown), complete, then released: readers are
// told why until it expires.
func TestHeldItem(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.UploadTTL = time.Hour
	rv := rendezvoustest.Start(t, cfg)
	other := rendezvoustest.Register(t, rv, "http://other.test")
	holder := rendezvoustest.Register(t, rv, "http://holder.test")
	_ = other
	before := time.Now()
	m := hold(t, holder, proto.Hold{Ref: "u1", Protocol: proto.UploadPUT, Name: "v.mp4", MIME: "video/mp4", Size: -1, Client: "192.0.2.1:5000"})
	held, ok := m.(*proto.Held)
	if !ok {
		t.Fatalf("got %T %+v, want held", m, m)
	}
	if held.Ref != "u1" || held.ID.IsZero() || !strings.HasSuffix(held.DownloadURL, "/v1/items/"+held.ID.String()) || !strings.HasSuffix(held.ShareURL, "/i/"+held.ID.String()) {
		t.Fatalf("held: got %+v", held)
	}
	if ok, _ := proto.OwnerOf(held.ID, held.Owner); !ok {
		t.Fatal("held owner secret does not make its id")
	}
	if exp := time.UnixMilli(held.ExpiresMS); exp.Before(before.Add(time.Hour-time.Minute)) || exp.After(time.Now().Add(time.Hour)) {
		t.Errorf("expires %v, want an hour from now", exp)
	}
	for range 3 { // never another relay, whatever the load
		resp, body := do(t, http.MethodGet, held.DownloadURL)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != 307 || !strings.HasPrefix(loc, "http://holder.test/v1/items/") {
			t.Fatalf("read: got %d %s Location %q, want 307 to the holder", resp.StatusCode, body, loc)
		}
		u, _ := url.Parse(loc)
		c, err := proto.ParseToken(tokenKey(t, rv), u.Query().Get("t"), time.Now())
		if err != nil || c.Relay != holder.ID || c.Len != math.MaxInt64 || c.Size != -1 {
			t.Fatalf("read token: %+v %v, want the holder's, covering every byte, size -1", c, err)
		}
	}
	holder.Send(&proto.HoldDone{ID: held.ID, Size: 1234})
	eventually(t, "size known", func() bool {
		resp, _ := do(t, http.MethodGet, held.DownloadURL)
		u, _ := url.Parse(resp.Header.Get("Location"))
		c, err := proto.ParseToken(tokenKey(t, rv), u.Query().Get("t"), time.Now())
		return err == nil && c.Size == 1234 && c.Len == 1234
	})
	holder.Send(&proto.Release{ID: held.ID, Status: proto.StatusSourceError, Reason: "upload interrupted at byte 5"})
	eventually(t, "released item answered 410", func() bool {
		resp, body := do(t, http.MethodGet, held.DownloadURL)
		return resp.StatusCode == 410 && strings.Contains(string(body), "upload interrupted at byte 5")
	})
	if st := rv.Server.Stats().Held; st.Created != 1 || st.Done != 1 || st.Released != 1 {
		t.Errorf("held stats: got %+v, want 1 created, done and released", st)
	}

	// Refusals: unknown protocol, size over the limit.
	if m := hold(t, holder, proto.Hold{Ref: "u2", Protocol: "ftp", Size: 1}); m.(*proto.ErrorMsg).Status != proto.StatusMalformed {
		t.Errorf("unknown protocol: got %+v", m)
	}
	if m := hold(t, holder, proto.Hold{Ref: "u3", Protocol: proto.UploadSTOR, Size: 1 << 62}); m.(*proto.ErrorMsg).Status != proto.StatusTooLarge {
		t.Errorf("size over the limit: got %+v", m)
	}
}

// TestHeldReannounce: the rendezvous keeps no state of its own (issue 14).
// A relay that drops takes its held items offline; registered again, it
// re-announces them with their owner secrets and they are back; a
// rendezvous that never saw the item (it restarted) takes it too. A wrong
// owner secret is refused.
func TestHeldReannounce(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.UploadTTL = time.Hour
	rv := rendezvoustest.Start(t, cfg)
	holder := rendezvoustest.Register(t, rv, "http://holder.test")
	held := hold(t, holder, proto.Hold{Ref: "u1", Protocol: proto.UploadSTOR, Name: "a.bin", Size: 10}).(*proto.Held)

	holder.Close()
	eventually(t, "item offline with its holder gone", func() bool {
		resp, _ := do(t, http.MethodGet, held.DownloadURL)
		return resp.StatusCode == 503
	})
	back, err := rendezvoustest.Dial(t, rv, holder.Node)
	if err != nil {
		t.Fatal(err)
	}
	back.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://holder.test"})
	recvAs[proto.Registered](t, back.Recv)
	re := proto.Hold{Ref: "re", ID: held.ID, Owner: held.Owner, Protocol: proto.UploadSTOR, Name: "a.bin", Size: 10, Done: true, ExpiresMS: held.ExpiresMS}
	if m := hold(t, back, re); m.(*proto.Held).ID != held.ID {
		t.Fatalf("re-announce: got %+v", m)
	}
	if resp, _ := do(t, http.MethodGet, held.DownloadURL); resp.StatusCode != 307 {
		t.Fatalf("read after the re-announce: got %d, want 307", resp.StatusCode)
	}

	fresh := rendezvoustest.Start(t, cfg)
	r2 := rendezvoustest.Register(t, fresh, "http://holder2.test")
	if m := hold(t, r2, re); m.(*proto.Held).ID != held.ID {
		t.Fatalf("re-announce to a rendezvous that never saw it: got %+v", m)
	}
	if resp, _ := do(t, http.MethodGet, fresh.URL+"/v1/items/"+held.ID.String()); resp.StatusCode != 307 || !strings.HasPrefix(resp.Header.Get("Location"), "http://holder2.test/") {
		t.Fatalf("read at the fresh rendezvous: got %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	bad := re
	bad.Owner = strings.Repeat("A", len(re.Owner))
	if m, ok := hold(t, r2, bad).(*proto.ErrorMsg); !ok || m.Status != proto.StatusForbidden {
		t.Fatalf("wrong owner: got %+v, want forbidden", m)
	}
	if st := fresh.Server.Stats().Held; st.Reannounced != 1 {
		t.Errorf("re-announced: got %d, want 1", st.Reannounced)
	}
}

// TestUploadEndpoint: GET /v1/upload?protocol= names the endpoint on a
// live relay.
func TestUploadEndpoint(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	if resp, _ := do(t, http.MethodGet, rv.URL+"/v1/upload?protocol=put"); resp.StatusCode != 503 {
		t.Errorf("no relay: got %d, want 503", resp.StatusCode)
	}
	relay := rendezvoustest.Register(t, rv, "https://relay.example.org")
	for proto_, want := range map[string]string{
		"stor":     "wss://relay.example.org/v1/stor",
		"put":      "https://relay.example.org/v1/upload/",
		"tus":      "https://relay.example.org/v1/files/",
		"socketio": "https://relay.example.org/v1/socket.io/",
	} {
		resp, body := do(t, http.MethodGet, rv.URL+"/v1/upload?protocol="+proto_)
		var ans struct {
			URL, Relay, Protocol, Expires string
			ExpiresIn                     int64 `json:"expires_in"`
		}
		json.Unmarshal(body, &ans)
		if resp.StatusCode != 200 || ans.URL != want || ans.Relay != relay.ID || ans.Protocol != proto_ || ans.ExpiresIn != 3600 || ans.Expires == "" {
			t.Errorf("protocol %s: got %d %s, want url %s", proto_, resp.StatusCode, body, want)
		}
	}
	if resp, _ := do(t, http.MethodGet, rv.URL+"/v1/upload?protocol=ftp"); resp.StatusCode != 400 {
		t.Errorf("unknown protocol: got %d, want 400", resp.StatusCode)
	}
}

// TestUploadEndpointByProtocol: uploaders are sent only to relays that
// serve their protocol (relay --uploads). What a relay says it serves is
// cut to the protocols the rendezvous knows; when no live relay serves a
// protocol the answer says so.
func TestUploadEndpointByProtocol(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	all := rendezvoustest.Register(t, rv, "https://all.example.org")
	putOnly := registerRelay(t, rv, rendezvoustest.NewNode(t), proto.Register{
		HTTPURL: "https://put.example.org", NAT: proto.NATPublic, Public: true,
		Uploads: []string{"put", "ftp", "put", strings.Repeat("x", 1000)},
	}, proto.Heartbeat{})
	relayOf := func(protocol string) string {
		t.Helper()
		resp, body := do(t, http.MethodGet, rv.URL+"/v1/upload?protocol="+protocol)
		var ans struct{ Relay string }
		json.Unmarshal(body, &ans)
		if resp.StatusCode != 200 {
			t.Fatalf("protocol %s: got %d %s, want 200", protocol, resp.StatusCode, body)
		}
		return ans.Relay
	}
	for range 4 {
		if got := relayOf("socketio"); got != all.ID {
			t.Errorf("socketio upload sent to %s, want %s (the put-only relay does not serve it)", got, all.ID)
		}
	}
	seen := map[string]int{}
	for range 4 { // equal loads: the relays take turns
		seen[relayOf("put")]++
	}
	if seen[all.ID] == 0 || seen[putOnly.ID] == 0 {
		t.Errorf("put uploads went to %v, want both relays (%s, %s)", seen, all.ID, putOnly.ID)
	}

	var st struct {
		Relays []struct {
			ID      string   `json:"id"`
			Uploads []string `json:"uploads"`
		} `json:"relays"`
	}
	_, body := do(t, http.MethodGet, rv.URL+"/v1/status")
	json.Unmarshal(body, &st)
	for _, r := range st.Relays {
		want := proto.UploadProtocols
		if r.ID == putOnly.ID {
			want = []string{"put"}
		}
		if !slices.Equal(r.Uploads, want) {
			t.Errorf("status of %s: uploads %q, want %q", r.ID, r.Uploads, want)
		}
	}

	all.Close()
	eventually(t, "socketio uploads refused once the only relay serving them left", func() bool {
		resp, body := do(t, http.MethodGet, rv.URL+"/v1/upload?protocol=socketio")
		return resp.StatusCode == 503 && strings.Contains(string(body), "no live relay serves socketio uploads")
	})
	if got := relayOf("put"); got != putOnly.ID {
		t.Errorf("put upload sent to %s, want %s", got, putOnly.ID)
	}
}

// webhookRecord is a request the test webhook received.
type webhookRecord struct {
	Operation string `json:"operation"`
	Item      struct {
		ID, Name, MIME, Kind, Protocol string
		Size                           int64
	} `json:"item"`
	Client struct {
		Addr string `json:"addr"`
	} `json:"client"`
	Credentials map[string]string `json:"credentials"`
	Metadata    map[string]string `json:"metadata"`
}

// TestAuthWebhook runs the auth webhook against a real local HTTP server:
// it allows (and lowers an upload's limits and attaches metadata), denies,
// times out, or is unreachable; the last three deny (fail closed) with a
// reason the client sees, for a publish, an upload and a read.
func TestAuthWebhook(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []webhookRecord
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	mode := "allow"
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rec webhookRecord
		json.NewDecoder(r.Body).Decode(&rec)
		mu.Lock()
		got = append(got, rec)
		m := mode
		mu.Unlock()
		switch m {
		case "allow":
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"metadata":{"user":"42"},"max_size":1000,"expires_in":60}`)
		case "deny":
			http.Error(w, "quota exceeded", http.StatusPaymentRequired)
		case "hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
	}))
	t.Cleanup(hook.Close)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()

	setMode := func(m string) { mu.Lock(); mode = m; mu.Unlock() }
	for _, tt := range []struct {
		name, mode, url string
		status          proto.Status
		reason          string
	}{
		{"deny", "deny", hook.URL, proto.StatusForbidden, "quota exceeded"},
		{"timeout", "hang", hook.URL, proto.StatusUnavailable, "no answer within"},
		{"unreachable", "allow", deadURL, proto.StatusUnavailable, "could not be asked"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.AuthWebhook, cfg.AuthWebhookTimeout = tt.url, 300*time.Millisecond
			rv := rendezvoustest.Start(t, cfg)
			setMode("allow")
			pub := publishMessage(t, rv) // allowed while the hook allows (unreachable: refused below)
			setMode(tt.mode)
			_ = pub
			c := rendezvoustest.DialControl(t, rv)
			c.Send(&proto.Publish{Ref: "p", Kind: proto.KindFile, Name: "a", Size: 5})
			e := recvAs[proto.ErrorMsg](t, c.Recv)
			if e.Status != tt.status || !strings.Contains(e.Reason, tt.reason) {
				t.Errorf("publish: got %v %q, want %v naming %q", e.Status, e.Reason, tt.status, tt.reason)
			}
			relay := rendezvoustest.Register(t, rv, "http://holder.test")
			if m, ok := hold(t, relay, proto.Hold{Ref: "u", Protocol: proto.UploadTUS, Size: 5}).(*proto.ErrorMsg); !ok || m.Status != tt.status || !strings.Contains(m.Reason, tt.reason) {
				t.Errorf("upload: got %+v, want %v naming %q", m, tt.status, tt.reason)
			}
			if pub.ID.IsZero() {
				return
			}
			resp, body := do(t, http.MethodGet, rv.URL+"/v1/items/"+pub.ID.String())
			st, msg := apiError(t, body)
			if resp.StatusCode != tt.status.HTTPStatus() || st != tt.status || !strings.Contains(msg, tt.reason) {
				t.Errorf("read: got %d %v %q, want %v naming %q", resp.StatusCode, st, msg, tt.status, tt.reason)
			}
		})
	}

	t.Run("allow", func(t *testing.T) {
		cfg := testConfig()
		cfg.AuthWebhook = hook.URL
		rv := rendezvoustest.Start(t, cfg)
		setMode("allow")
		mu.Lock()
		got = nil
		mu.Unlock()
		pub := publishMessage(t, rv)
		req, _ := http.NewRequest(http.MethodGet, rv.URL+"/v1/items/"+pub.ID.String(), nil)
		req.Header.Set("Authorization", "Bearer reader")
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "hello" {
			t.Fatalf("read: got %d %q", resp.StatusCode, body)
		}
		relay := rendezvoustest.Register(t, rv, "http://holder.test")
		if m, ok := hold(t, relay, proto.Hold{Ref: "u", Protocol: proto.UploadTUS, Size: 2000}).(*proto.ErrorMsg); !ok || m.Status != proto.StatusTooLarge {
			t.Errorf("upload over the webhook's max_size: got %+v, want too large", m)
		}
		before := time.Now()
		h, ok := hold(t, relay, proto.Hold{Ref: "u", Protocol: proto.UploadTUS, Name: "n", Size: 500, Auth: map[string]string{"tus.token": "x"}, Meta: map[string]string{"k": "v"}, Client: "192.0.2.9:1"}).(*proto.Held)
		if !ok || h.MaxSize != 1000 || h.Meta["user"] != "42" {
			t.Fatalf("upload: got %+v, want held with max_size 1000 and the webhook's metadata", h)
		}
		if exp := time.UnixMilli(h.ExpiresMS); exp.After(time.Now().Add(61*time.Second)) || exp.Before(before.Add(59*time.Second)) {
			t.Errorf("expires %v, want the webhook's 60s", exp)
		}
		mu.Lock()
		defer mu.Unlock()
		ops := map[string]webhookRecord{}
		for _, r := range got {
			ops[r.Operation] = r
		}
		if r := ops["publish"]; r.Item.Kind != proto.KindMessage || r.Client.Addr == "" {
			t.Errorf("publish request: %+v", r)
		}
		if r := ops["read"]; r.Item.ID != pub.ID.String() || r.Credentials["authorization"] != "Bearer reader" {
			t.Errorf("read request: %+v", r)
		}
		if r := ops["upload"]; r.Item.Protocol != proto.UploadTUS || r.Item.Size != 500 || r.Credentials["tus.token"] != "x" || r.Metadata["k"] != "v" || r.Client.Addr != "192.0.2.9:1" {
			t.Errorf("upload request: %+v", r)
		}
	})
}

// publishMessage publishes a message item "hello", or returns a zero
// Published if the publish is refused.
func publishMessage(t *testing.T, rv *rendezvoustest.Server) proto.Published {
	t.Helper()
	c := rendezvoustest.DialControl(t, rv)
	c.Send(&proto.Publish{Kind: proto.KindMessage, Text: "hello"})
	m, err := c.Recv(wait)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.(*proto.Published); ok {
		return *p
	}
	return proto.Published{}
}
