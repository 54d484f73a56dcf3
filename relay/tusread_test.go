package relay_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// readHook is a real local auth webhook. It allows every upload; a read
// it answers by its mode: "allow" allows a reader presenting
// Authorization: Bearer r3ad and denies any other (401 "no reader
// credentials"), "hang" never answers (the rendezvous times out).
type readHook struct {
	*httptest.Server
	mu    sync.Mutex // guards the fields below
	mode  string
	reads []webhookRead
}

type webhookRead struct {
	Item struct {
		ID, Name, Protocol string
		Size               int64
	} `json:"item"`
	Client struct {
		Addr string `json:"addr"`
	} `json:"client"`
	Credentials map[string]string `json:"credentials"`
}

func newReadHook(t *testing.T) *readHook {
	h := &readHook{mode: "allow"}
	release := make(chan struct{})
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Operation string `json:"operation"`
			webhookRead
		}
		json.NewDecoder(r.Body).Decode(&req)
		if req.Operation != "read" {
			return // 200: uploads are allowed
		}
		h.mu.Lock()
		h.reads = append(h.reads, req.webhookRead)
		mode := h.mode
		h.mu.Unlock()
		switch {
		case mode == "hang":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case req.Credentials["authorization"] != "Bearer r3ad":
			http.Error(w, "no reader credentials", http.StatusUnauthorized)
		}
	}))
	t.Cleanup(func() { close(release); h.Close() })
	return h
}

func (h *readHook) setMode(m string) {
	h.mu.Lock()
	h.mode = m
	h.mu.Unlock()
}

func (h *readHook) lastRead(t *testing.T) webhookRead {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reads) == 0 {
		t.Fatal("the webhook was asked about no read")
	}
	return h.reads[len(h.reads)-1]
}

// tusUpload uploads data with tus to the relay at base and returns the
// upload URL and the item's id (from Meshup-Item-URL).
func tusUpload(t *testing.T, base string, data []byte) (string, proto.ItemID) {
	t.Helper()
	u, resp := tusCreate(t, base+"/v1/files/", int64(len(data)))
	item := resp.Header.Get("Meshup-Item-URL")
	id, err := proto.ParseItemID(item[strings.LastIndexByte(item, '/')+1:])
	if err != nil {
		t.Fatalf("Meshup-Item-URL %q: %v", item, err)
	}
	p := tusReq(t, http.MethodPatch, u, data, "Upload-Offset", "0", "Content-Type", "application/offset+octet-stream")
	if p.StatusCode != http.StatusNoContent || p.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("PATCH: got status %d offset %q, want 204 and %d", p.StatusCode, p.Header.Get("Upload-Offset"), len(data))
	}
	return u, id
}

// TestTusReadWebhook reads tus uploads on their upload URL (GET
// /v1/files/KEY, served by the relay, not redirected) with the
// rendezvous's auth webhook a real local HTTP server: the relay asks the
// rendezvous (read_check), which asks the webhook as for any read. Allowed
// is served (with Range), denied is 403 with the webhook's reason, a
// webhook that times out or is unreachable is 503 (fail closed). Without a
// webhook the read is served and the rendezvous is never asked; with one,
// a relay whose link to the rendezvous is down refuses with 503.
func TestTusReadWebhook(t *testing.T) {
	data := randBytes(t, 200<<10)
	reason := func(t *testing.T, resp *http.Response, body []byte, code int, st proto.Status, want string) {
		t.Helper()
		if resp.StatusCode != code || apiError(t, resp, body) != st || !strings.Contains(string(body), want) {
			t.Fatalf("GET upload URL: got %d %.200q, want %d naming %q", resp.StatusCode, body, code, want)
		}
	}

	t.Run("allowed, denied, timeout", func(t *testing.T) {
		hook := newReadHook(t)
		e := newEnvRV(t, rendezvous.Config{AuthWebhook: hook.URL, AuthWebhookTimeout: 300 * time.Millisecond}, testRelayConfig())
		u, id := tusUpload(t, e.relays[0].URL, data)

		resp, body := do(t, http.MethodGet, u, "Authorization", "Bearer r3ad")
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Fatalf("allowed: got %d and %d bytes, want 200 and the %d uploaded", resp.StatusCode, len(body), len(data))
		}
		r := hook.lastRead(t)
		if r.Item.ID != id.String() || r.Item.Protocol != proto.UploadTUS || r.Item.Name != "a b.bin" || r.Item.Size != int64(len(data)) ||
			r.Credentials["authorization"] != "Bearer r3ad" || !strings.HasPrefix(r.Client.Addr, "127.0.0.1:") {
			t.Errorf("webhook read request: got %+v, want item %s (tus, a b.bin, %d bytes), the reader's Authorization and address", r, id, len(data))
		}
		resp, body = do(t, http.MethodGet, u, "Authorization", "Bearer r3ad", "Range", "bytes=100-199")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[100:200]) {
			t.Fatalf("allowed with Range: got %d and %d bytes, want 206 and bytes 100-199", resp.StatusCode, len(body))
		}

		resp, body = do(t, http.MethodGet, u)
		reason(t, resp, body, http.StatusForbidden, proto.StatusForbidden, "no reader credentials")
		if len(body) > 1000 || bytes.Contains(body, data[:64]) {
			t.Fatalf("denied: the answer carries item bytes")
		}

		hook.setMode("hang")
		resp, body = do(t, http.MethodGet, u, "Authorization", "Bearer r3ad")
		reason(t, resp, body, http.StatusServiceUnavailable, proto.StatusUnavailable, "no answer within")
		hook.setMode("allow")

		// Through the rendezvous's tunnel (the relay behind NAT case):
		// the same verdicts, the reader's address from the tunnel.
		tu, _ := tusUpload(t, e.rv.URL+"/v1/relays/"+e.relays[0].ID(), data)
		if !strings.HasPrefix(tu, e.rv.URL+"/v1/relays/") {
			t.Fatalf("upload URL through the tunnel: got %s", tu)
		}
		resp, body = do(t, http.MethodGet, tu, "Authorization", "Bearer r3ad", "Range", "bytes=5-")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[5:]) {
			t.Fatalf("allowed through the tunnel: got %d and %d bytes, want 206 and the bytes from 5", resp.StatusCode, len(body))
		}
		if r := hook.lastRead(t); r.Client.Addr != "127.0.0.1" || r.Credentials["authorization"] != "Bearer r3ad" {
			t.Errorf("webhook read request through the tunnel: got client %q credentials %v, want 127.0.0.1 and the reader's", r.Client.Addr, r.Credentials)
		}
		resp, body = do(t, http.MethodGet, tu)
		reason(t, resp, body, http.StatusForbidden, proto.StatusForbidden, "no reader credentials")

		if n := e.rv.Server.Stats().Held.ReadChecks; n != 6 {
			t.Errorf("rendezvous read checks: got %d, want 6 (one per GET)", n)
		}
		// The link to the rendezvous down: no verdict can be had.
		e.rv.Close()
		eventually(t, "relay sees its rendezvous gone", func() bool { return !e.relays[0].Server.Status().Registered })
		resp, body = do(t, http.MethodGet, u, "Authorization", "Bearer r3ad")
		reason(t, resp, body, http.StatusServiceUnavailable, proto.StatusUnavailable, "not registered")
	})

	t.Run("unreachable", func(t *testing.T) {
		hook := newReadHook(t)
		e := newEnvRV(t, rendezvous.Config{AuthWebhook: hook.URL}, testRelayConfig())
		u, _ := tusUpload(t, e.relays[0].URL, data)
		hook.Close() // the port refuses connections from now on
		resp, body := do(t, http.MethodGet, u, "Authorization", "Bearer r3ad")
		reason(t, resp, body, http.StatusServiceUnavailable, proto.StatusUnavailable, "could not be asked")
	})

	t.Run("no webhook", func(t *testing.T) {
		e := newEnv(t, testRelayConfig())
		u, _ := tusUpload(t, e.relays[0].URL, data)
		resp, body := do(t, http.MethodGet, u, "Range", "bytes=1000-")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:]) {
			t.Fatalf("got %d and %d bytes, want 206 and the bytes from 1000", resp.StatusCode, len(body))
		}
		if n := e.rv.Server.Stats().Held.ReadChecks; n != 0 {
			t.Errorf("rendezvous read checks: got %d, want 0 (no webhook: the relay does not ask)", n)
		}
	})
}
