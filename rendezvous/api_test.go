package rendezvous_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestInfo(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	info := rv.Info(t)
	if info.Version != 1 {
		t.Errorf("version: got %d, want 1", info.Version)
	}
	if info.PeerID != rv.Node.ID() {
		t.Errorf("peer_id: got %q, want %q", info.PeerID, rv.Node.ID())
	}
	if info.PublicURL != rv.URL {
		t.Errorf("public_url: got %q, want %q", info.PublicURL, rv.URL)
	}
	if len(info.Addrs) == 0 {
		t.Error("addrs: got none")
	}
	for _, a := range info.Addrs {
		if !strings.HasSuffix(a, "/p2p/"+info.PeerID) {
			t.Errorf("addr %q does not end in /p2p/<peer_id>", a)
		}
	}
	if got, want := tokenKey(t, rv), rv.Server.PublicKey(); !got.Equal(want) {
		t.Errorf("token_key: got %x, want %x", got, want)
	}
}

func TestMessageItem(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	const text = "héllo <b>world</b> & friends"
	pub := c.Publish(t, proto.Publish{Kind: proto.KindMessage, Text: text})

	resp, body := do(t, http.MethodGet, pub.DownloadURL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: status %d, want 200: %s", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get("Content-Type"), "text/plain; charset=utf-8"; got != want {
		t.Errorf("Content-Type: got %q, want %q", got, want)
	}
	if string(body) != text {
		t.Errorf("body: got %q, want %q", body, text)
	}

	resp, body = do(t, http.MethodHead, pub.DownloadURL)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD: got status %d with %d bytes, want 200 with none", resp.StatusCode, len(body))
	}
	if got, want := resp.ContentLength, int64(len(text)); got != want {
		t.Errorf("HEAD Content-Length: got %d, want %d", got, want)
	}

	// A message stays readable while its publisher is away: it lives on
	// the rendezvous.
	c.Close()
	eventually(t, "session to end", func() bool { return getStatus(t, rv).Sessions == 0 })
	if resp, body := do(t, http.MethodGet, pub.DownloadURL); resp.StatusCode != http.StatusOK || string(body) != text {
		t.Errorf("GET after publisher left: got %d %q, want 200 %q", resp.StatusCode, body, text)
	}

	resp, body = do(t, http.MethodGet, pub.ShareURL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("share page: status %d, want 200", resp.StatusCode)
	}
	if !strings.Contains(string(body), "héllo &lt;b&gt;world&lt;/b&gt; &amp; friends") {
		t.Errorf("share page does not show the escaped text:\n%s", body)
	}
	if strings.Contains(string(body), "<b>world") {
		t.Errorf("share page contains unescaped text")
	}
}

func TestItemPage(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	pub := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: `<script>alert(1)</script>.mp4`, MIME: "video/mp4", Size: 3 << 20})

	resp, body := do(t, http.MethodGet, pub.ShareURL)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	page := string(body)
	for _, want := range []string{"&lt;script&gt;alert(1)&lt;/script&gt;.mp4", "3.0 MiB", "video/mp4", "online", `href="/v1/items/` + pub.ID.String() + `"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if strings.Contains(page, "<script>") {
		t.Error("page contains an unescaped script tag")
	}

	c.Close()
	eventually(t, "item to go offline", func() bool { return getStatus(t, rv).ItemsOnline == 0 })
	if _, body := do(t, http.MethodGet, pub.ShareURL); !strings.Contains(string(body), "sender offline") {
		t.Errorf("page of an offline item does not say so:\n%s", body)
	}

	for _, id := range []string{proto.NewItemID().String(), "nope"} {
		if resp, _ := do(t, http.MethodGet, rv.URL+"/i/"+id); resp.StatusCode != http.StatusNotFound {
			t.Errorf("page of %q: status %d, want 404", id, resp.StatusCode)
		}
	}
}

func TestItemErrors(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	online := rendezvoustest.DialControl(t, rv)
	onlineItem := publishFile(t, online, 100)
	gone := rendezvoustest.DialControl(t, rv)
	offlineItem := publishFile(t, gone, 100)
	gone.Close()
	eventually(t, "item to go offline", func() bool { return getStatus(t, rv).ItemsOnline == 1 })

	tests := []struct {
		name       string
		path       string
		wantHTTP   int
		wantStatus proto.Status
		retry      string
	}{
		{"unknown id", "/v1/items/" + proto.NewItemID().String(), 404, proto.StatusNotFound, ""},
		{"bad id", "/v1/items/not-an-id", 404, proto.StatusNotFound, ""},
		{"offline", "/v1/items/" + offlineItem.ID.String(), 503, proto.StatusOffline, "5"},
		{"no relays", "/v1/items/" + onlineItem.ID.String(), 503, proto.StatusUnavailable, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp, body := do(t, method, rv.URL+tt.path)
				if resp.StatusCode != tt.wantHTTP {
					t.Errorf("%s: status got %d, want %d", method, resp.StatusCode, tt.wantHTTP)
				}
				if got := resp.Header.Get("Retry-After"); got != tt.retry {
					t.Errorf("%s: Retry-After got %q, want %q", method, got, tt.retry)
				}
				if method == http.MethodHead {
					continue
				}
				if got, _ := apiError(t, body); got != tt.wantStatus {
					t.Errorf("error status: got %d, want %d", got, tt.wantStatus)
				}
			}
		})
	}
}

func TestRedirect(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	relay := rendezvoustest.Register(t, rv, "http://relay-a.test:8081/")
	c := rendezvoustest.DialControl(t, rv)
	pub := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "a.bin", MIME: "application/x-test", Size: 12345})
	key := tokenKey(t, rv)

	before := time.Now()
	resp, body := do(t, http.MethodGet, pub.DownloadURL+"?foo=bar&t=forged")
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("status %d, want 307: %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Cache-Control"); got != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", got)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := loc.Scheme+"://"+loc.Host+loc.Path, "http://relay-a.test:8081/v1/items/"+pub.ID.String(); got != want {
		t.Errorf("Location: got %q, want %q", got, want)
	}
	q := loc.Query()
	if len(q) != 1 || len(q["t"]) != 1 {
		t.Fatalf("Location query: got %v, want only t", q)
	}
	claims, err := proto.ParseToken(key, q.Get("t"), time.Now())
	if err != nil {
		t.Fatalf("read token: %v", err)
	}
	if err := claims.Check(relay.ID, proto.DirRead, pub.ID, 0, 12345); err != nil {
		t.Errorf("read token does not cover the item: %v", err)
	}
	want := proto.Claims{
		Dir: proto.DirRead, Relay: relay.ID, Item: pub.ID, Off: 0, Len: 12345,
		Size: 12345, Name: "a.bin", MIME: "application/x-test",
	}
	got := claims
	got.Exp, got.Iat, got.Modified = 0, 0, 0
	if got != want {
		t.Errorf("claims: got %+v, want %+v", got, want)
	}
	if exp := time.Unix(claims.Exp, 0); exp.Before(before.Add(9*time.Minute)) || exp.After(time.Now().Add(11*time.Minute)) {
		t.Errorf("exp %v is not about 10 minutes from now", exp)
	}
	if mod := time.Unix(claims.Modified, 0); mod.Before(before.Add(-time.Minute)) || mod.After(time.Now().Add(time.Second)) {
		t.Errorf("modified %v is not the publish time", mod)
	}
	if _, err := proto.ParseToken(key, q.Get("t"), time.Now().Add(11*time.Minute)); err == nil {
		t.Error("read token still valid after ReadTokenTTL")
	}

	resp, _ = do(t, http.MethodHead, pub.DownloadURL)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("HEAD: status %d, want 307", resp.StatusCode)
	}
	if got := rv.Server.Stats().Redirects; got != 2 {
		t.Errorf("stats redirects: got %d, want 2", got)
	}
}

// relayOf returns the relay a GET of item is redirected to, by its token.
func relayOf(t *testing.T, rv *rendezvoustest.Server, downloadURL string) string {
	t.Helper()
	resp, body := do(t, http.MethodGet, downloadURL)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("GET %s: status %d, want 307: %s", downloadURL, resp.StatusCode, body)
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := proto.ParseToken(rv.Server.PublicKey(), loc.Query().Get("t"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return claims.Relay
}

func TestRelayChoice(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	a := rendezvoustest.Register(t, rv, "http://relay-a.test")
	b := rendezvoustest.Register(t, rv, "http://relay-b.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1000)

	t.Run("ties round robin", func(t *testing.T) {
		seen := map[string]int{}
		for range 4 {
			seen[relayOf(t, rv, pub.DownloadURL)]++
		}
		if seen[a.ID] != 2 || seen[b.ID] != 2 {
			t.Errorf("four GETs went to %v, want two to each relay", seen)
		}
	})
	t.Run("least loaded", func(t *testing.T) {
		if err := a.Send(&proto.Heartbeat{Streams: 5}); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(&proto.Heartbeat{Streams: 1}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "heartbeats", func() bool {
			n := 0
			for _, r := range getStatus(t, rv).Relays {
				n += r.Streams
			}
			return n == 6
		})
		for range 3 {
			if got := relayOf(t, rv, pub.DownloadURL); got != b.ID {
				t.Errorf("GET went to %s, want the less loaded %s", got, b.ID)
			}
		}
	})
	t.Run("via pins", func(t *testing.T) {
		for range 3 {
			if got := relayOf(t, rv, pub.DownloadURL+"?via="+a.ID); got != a.ID {
				t.Errorf("GET ?via=a went to %s, want %s", got, a.ID)
			}
		}
		resp, body := do(t, http.MethodGet, pub.DownloadURL+"?via="+rendezvoustest.NewNode(t).ID())
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("via unknown relay: status %d, want 503", resp.StatusCode)
		}
		if got, _ := apiError(t, body); got != proto.StatusUnavailable {
			t.Errorf("via unknown relay: status got %d, want %d", got, proto.StatusUnavailable)
		}
	})
}
