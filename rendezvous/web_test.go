package rendezvous_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestWebApp(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	rendezvoustest.Register(t, rv, "http://relay-a.test:8081")

	tests := []struct {
		path, ctype, contains, csp string
	}{
		{"/", "text/html; charset=utf-8", `data-testid="file-input"`, "connect-src 'self' http://relay-a.test:8081 ws://relay-a.test:8081;"},
		{"/web/meshup.js", "text/javascript; charset=utf-8", "export class Client", ""},
		{"/web/app/send.js", "text/javascript; charset=utf-8", "from '/web/meshup.js'", ""},
		{"/web/app/app.css", "text/css; charset=utf-8", ":root", ""},
		{"/sw.js", "text/javascript; charset=utf-8", "addEventListener('fetch'", "connect-src 'self' http: https:"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, rv.URL+tt.path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d, want 200", resp.StatusCode)
			}
			if got := resp.Header.Get("Content-Type"); got != tt.ctype {
				t.Errorf("Content-Type: got %q, want %q", got, tt.ctype)
			}
			if !strings.Contains(string(body), tt.contains) {
				t.Errorf("body lacks %q", tt.contains)
			}
			csp := resp.Header.Get("Content-Security-Policy")
			if !strings.Contains(csp, tt.csp) {
				t.Errorf("Content-Security-Policy: got %q, want it to contain %q", csp, tt.csp)
			}
			if strings.HasSuffix(tt.ctype, "html; charset=utf-8") && (!strings.Contains(csp, "script-src 'self';") || strings.Contains(csp, "unsafe")) {
				t.Errorf("Content-Security-Policy of a page is not strict: %q", csp)
			}
		})
	}

	for _, p := range []string{"/web/app/index.html", "/web/nope.js", "/web/web.go", "/web/test/run.mjs"} {
		if resp, _ := do(t, http.MethodGet, rv.URL+p); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
		}
	}

	resp, _ := do(t, http.MethodGet, rv.URL+"/web/meshup.js")
	req, _ := http.NewRequest(http.MethodGet, rv.URL+"/web/meshup.js", nil)
	req.Header.Set("If-None-Match", resp.Header.Get("ETag"))
	resp2, err := rendezvoustest.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusNotModified {
		t.Errorf("conditional GET: status %d, want 304", resp2.StatusCode)
	}
}

func TestWelcomeListsRelays(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	if got := rendezvoustest.DialControl(t, rv).Welcome.Relays; len(got) != 0 {
		t.Errorf("relays before any registered: got %v, want none", got)
	}
	relay := rendezvoustest.Register(t, rv, "https://relay-a.test")
	want := []proto.RelayInfo{{ID: relay.ID, PushURL: "wss://relay-a.test/v1/push"}}
	if got := rendezvoustest.DialControl(t, rv).Welcome.Relays; !reflect.DeepEqual(got, want) {
		t.Errorf("relays: got %v, want %v", got, want)
	}
}

func TestItemMeta(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	pub := c.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "a.mp4", MIME: "video/mp4", Size: 5 << 20})

	meta := func() rendezvous.ItemMeta {
		t.Helper()
		resp, body := do(t, http.MethodGet, pub.DownloadURL+"/meta")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d, want 200: %s", resp.StatusCode, body)
		}
		var m rendezvous.ItemMeta
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	want := rendezvous.ItemMeta{ID: pub.ID, Kind: proto.KindFile, Name: "a.mp4", MIME: "video/mp4", Size: 5 << 20, Online: true}
	if got := meta(); got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	c.Close()
	eventually(t, "item to go offline", func() bool { return !meta().Online })

	for _, id := range []string{proto.NewItemID().String(), "nope"} {
		if resp, _ := do(t, http.MethodGet, rv.URL+"/v1/items/"+id+"/meta"); resp.StatusCode != http.StatusNotFound {
			t.Errorf("meta of %q: status %d, want 404", id, resp.StatusCode)
		}
	}
}
