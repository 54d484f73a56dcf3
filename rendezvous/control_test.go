package rendezvous_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestWelcome(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{MaxMessage: 32 << 10})
	c := rendezvoustest.DialControl(t, rv)
	if c.Welcome.Session == "" {
		t.Error("welcome has no session id")
	}
	if got, want := c.Welcome.MaxMessage, 32<<10; got != want {
		t.Errorf("max_message: got %d, want %d", got, want)
	}
	if got, want := c.Welcome.PingSeconds, 15; got != want {
		t.Errorf("ping_seconds: got %d, want %d", got, want)
	}
	if got := c.Conn.Subprotocol(); got != proto.Subprotocol {
		t.Errorf("subprotocol: got %q, want %q", got, proto.Subprotocol)
	}
}

func TestPublish(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{MaxTextMessage: 100, MaxItemSize: 1 << 30})
	c := rendezvoustest.DialControl(t, rv)
	tests := []struct {
		name string
		pub  proto.Publish
		want proto.Status // StatusOK: expect Published
	}{
		{"file", proto.Publish{Kind: proto.KindFile, Name: "a.mp4", MIME: "video/mp4", Size: 1 << 20}, proto.StatusOK},
		{"empty file", proto.Publish{Kind: proto.KindFile, Name: "empty"}, proto.StatusOK},
		{"clip with no relay to hold it", proto.Publish{Kind: proto.KindClip, Name: "clip.png", MIME: "image/png", Size: 5000}, proto.StatusUnavailable}, // clip.go
		{"message", proto.Publish{Kind: proto.KindMessage, Text: strings.Repeat("x", 100)}, proto.StatusOK},
		{"max size", proto.Publish{Kind: proto.KindFile, Name: "big", Size: 1 << 30}, proto.StatusOK},
		{"unknown kind", proto.Publish{Kind: "live", Name: "a"}, proto.StatusMalformed},
		{"no kind", proto.Publish{Name: "a"}, proto.StatusMalformed},
		{"negative size", proto.Publish{Kind: proto.KindFile, Name: "a", Size: -1}, proto.StatusMalformed},
		{"too big", proto.Publish{Kind: proto.KindFile, Name: "a", Size: 1<<30 + 1}, proto.StatusTooLarge},
		{"long name", proto.Publish{Kind: proto.KindFile, Name: strings.Repeat("n", 256)}, proto.StatusMalformed},
		{"control char in name", proto.Publish{Kind: proto.KindFile, Name: "a\nb"}, proto.StatusMalformed},
		{"long mime", proto.Publish{Kind: proto.KindFile, Name: "a", MIME: "application/" + strings.Repeat("x", 116)}, proto.StatusMalformed},
		{"bad mime", proto.Publish{Kind: proto.KindFile, Name: "a", MIME: "not a type"}, proto.StatusMalformed},
		{"long message", proto.Publish{Kind: proto.KindMessage, Text: strings.Repeat("x", 101)}, proto.StatusTooLarge},
		{"text on a file", proto.Publish{Kind: proto.KindFile, Name: "a", Text: "hi"}, proto.StatusMalformed},
		{"id without owner", proto.Publish{ID: proto.NewItemID(), Kind: proto.KindFile}, proto.StatusMalformed},
		{"unknown id, bad owner", proto.Publish{ID: proto.NewItemID(), Owner: "secret"}, proto.StatusForbidden},
	}
	ids := map[proto.ItemID]bool{}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pub.Ref = "r" + string(rune('a'+i))
			if err := c.Send(&tt.pub); err != nil {
				t.Fatal(err)
			}
			m, err := c.Recv(wait)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want != proto.StatusOK {
				e, ok := m.(*proto.ErrorMsg)
				if !ok {
					t.Fatalf("got %T %+v, want *proto.ErrorMsg", m, m)
				}
				if e.Status != tt.want || e.Ref != tt.pub.Ref || e.Reason == "" {
					t.Errorf("got %+v, want status %d with ref %q and a reason", e, tt.want, tt.pub.Ref)
				}
				return
			}
			p, ok := m.(*proto.Published)
			if !ok {
				t.Fatalf("got %T %+v, want *proto.Published", m, m)
			}
			if p.Ref != tt.pub.Ref {
				t.Errorf("ref: got %q, want %q", p.Ref, tt.pub.Ref)
			}
			if id, err := proto.ParseItemID(p.ID.String()); err != nil || id != p.ID || p.ID.IsZero() {
				t.Errorf("id %q does not round-trip", p.ID)
			}
			if ids[p.ID] {
				t.Errorf("id %s given twice", p.ID)
			}
			ids[p.ID] = true
			if got, want := p.ShareURL, rv.URL+"/i/"+p.ID.String(); got != want {
				t.Errorf("share_url: got %q, want %q", got, want)
			}
			if got, want := p.DownloadURL, rv.URL+"/v1/items/"+p.ID.String(); got != want {
				t.Errorf("download_url: got %q, want %q", got, want)
			}
			if len(p.Owner) < 32 {
				t.Errorf("owner secret %q is too short", p.Owner)
			}
		})
	}
	st := rv.Server.Stats()
	if st.Publishes != uint64(len(ids)) || st.Items != len(ids) || st.ItemsOnline != len(ids) {
		t.Errorf("stats: publishes %d items %d online %d, want %d each", st.Publishes, st.Items, st.ItemsOnline, len(ids))
	}
}

func TestPublishLimits(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{MaxItemsPerSession: 2, MaxItems: 3})
	c1 := rendezvoustest.DialControl(t, rv)
	publishFile(t, c1, 1)
	publishFile(t, c1, 1)
	expectPublishError(t, c1, proto.StatusOverLimit)
	c2 := rendezvoustest.DialControl(t, rv)
	publishFile(t, c2, 1)
	expectPublishError(t, c2, proto.StatusOverLimit)
}

func expectPublishError(t *testing.T, c *rendezvoustest.Control, want proto.Status) {
	t.Helper()
	if err := c.Send(&proto.Publish{Kind: proto.KindFile, Name: "x"}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, c.Recv); e.Status != want {
		t.Errorf("publish refused with %d (%s), want %d", e.Status, e.Reason, want)
	}
}

func TestReclaim(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c1 := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c1, 500)
	c1.Close()
	eventually(t, "item to go offline", func() bool {
		st := getStatus(t, rv)
		return st.Items == 1 && st.ItemsOnline == 0
	})

	c2 := rendezvoustest.DialControl(t, rv)
	for _, owner := range []string{"wrong", pub.Owner[:len(pub.Owner)-1]} {
		if err := c2.Send(&proto.Publish{Ref: "w", ID: pub.ID, Owner: owner}); err != nil {
			t.Fatal(err)
		}
		if e := recvAs[proto.ErrorMsg](t, c2.Recv); e.Status != proto.StatusForbidden || e.Ref != "w" {
			t.Errorf("wrong owner: got %+v, want status %d ref w", e, proto.StatusForbidden)
		}
	}
	if got := getStatus(t, rv).ItemsOnline; got != 0 {
		t.Errorf("items online after refused reclaims: got %d, want 0", got)
	}

	back := c2.Publish(t, proto.Publish{Ref: "ok", ID: pub.ID, Owner: pub.Owner})
	if back.ID != pub.ID || back.Owner != pub.Owner || back.DownloadURL != pub.DownloadURL || back.Ref != "ok" {
		t.Errorf("reclaim: got %+v, want %+v with ref ok", back, pub)
	}
	if st := getStatus(t, rv); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("after reclaim: items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
	if got := rv.Server.Stats().Reclaims; got != 1 {
		t.Errorf("stats reclaims: got %d, want 1", got)
	}

	// The reclaiming session now owns the item.
	if err := c2.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unpublish", func() bool { return getStatus(t, rv).Items == 0 })
}

func TestUnpublish(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	owner := rendezvoustest.DialControl(t, rv)
	other := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, owner, 10)

	if err := other.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, other.Recv); e.Status != proto.StatusForbidden {
		t.Errorf("unpublish by another session: got %+v, want status %d", e, proto.StatusForbidden)
	}
	if err := owner.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unpublish", func() bool { return getStatus(t, rv).Items == 0 })
	if resp, _ := do(t, http.MethodGet, pub.DownloadURL); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET after unpublish: status %d, want 404", resp.StatusCode)
	}
	if err := owner.Send(&proto.Unpublish{ID: pub.ID}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, owner.Recv); e.Status != proto.StatusNotFound {
		t.Errorf("second unpublish: got %+v, want status %d", e, proto.StatusNotFound)
	}
}

// closeCode reads until the server closes c and returns the close code.
func closeCode(t *testing.T, c *rendezvoustest.Control) int {
	t.Helper()
	for {
		_, err := c.Recv(wait)
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil && !errors.Is(err, proto.ErrUnknownType) {
			t.Fatalf("got %v, want a close frame", err)
		}
	}
}

func TestControlProtocolErrors(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{MaxMessage: 4096})
	tests := []struct {
		name string
		typ  int
		data string
		want int
	}{
		{"malformed json", websocket.TextMessage, `{"type":"publish",`, proto.StatusMalformed.CloseCode()},
		{"no type", websocket.TextMessage, `{"kind":"file"}`, proto.StatusMalformed.CloseCode()},
		{"wrong field type", websocket.TextMessage, `{"type":"publish","size":"big"}`, proto.StatusMalformed.CloseCode()},
		{"binary", websocket.BinaryMessage, `{"type":"hello"}`, proto.StatusProtocol.CloseCode()},
		{"oversized", websocket.TextMessage, `{"type":"hello","client":"` + strings.Repeat("x", 64<<10) + `"}`, websocket.CloseMessageTooBig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := rendezvoustest.DialControl(t, rv)
			if err := c.SendRaw(tt.typ, []byte(tt.data)); err != nil {
				t.Fatal(err)
			}
			if got := closeCode(t, c); got != tt.want {
				t.Errorf("close code: got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestControlUnknownType(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	if err := c.SendRaw(websocket.TextMessage, []byte(`{"type":"teleport","to":"mars"}`)); err != nil {
		t.Fatal(err)
	}
	e := recvAs[proto.ErrorMsg](t, c.Recv)
	if e.Status != proto.StatusMalformed || !strings.Contains(e.Reason, "unknown message type") || !strings.Contains(e.Reason, "teleport") {
		t.Errorf("got %+v, want status %d naming the type", e, proto.StatusMalformed)
	}
	// A message only servers send is refused too, and the session lives on.
	if err := c.Send(&proto.Order{Order: 1}); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, c.Recv); e.Status != proto.StatusProtocol {
		t.Errorf("order from a client: got %+v, want status %d", e, proto.StatusProtocol)
	}
	publishFile(t, c, 1)
	rej := rv.Server.Stats().Rejected
	if rej[rendezvous.RejectUnknownType] != 1 || rej[rendezvous.RejectUnexpectedType] != 1 {
		t.Errorf("stats rejected: got %v, want one unknown_type and one unexpected_type", rej)
	}
}

func TestControlHandshake(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{AllowedOrigins: []string{"https://app.example.com"}})
	host := strings.TrimPrefix(rv.URL, "http://")
	tests := []struct {
		name         string
		origin       string
		noSubproto   bool
		wantHTTP     int // 0: upgrade succeeds
		wantStatus   proto.Status
		wantInReason string
	}{
		{"no origin", "", false, 0, 0, ""},
		{"same origin", "http://" + host, false, 0, 0, ""},
		{"allowed origin", "https://app.example.com", false, 0, 0, ""},
		{"bad origin", "https://evil.example.com", false, http.StatusForbidden, proto.StatusOriginRefused, "evil.example.com"},
		{"allowed host, other scheme", "http://app.example.com", false, http.StatusForbidden, proto.StatusOriginRefused, ""},
		{"no subprotocol", "", true, http.StatusBadRequest, proto.StatusProtocol, proto.Subprotocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			if tt.origin != "" {
				h.Set("Origin", tt.origin)
			}
			d := websocket.Dialer{HandshakeTimeout: wait}
			if !tt.noSubproto {
				d.Subprotocols = []string{"other", proto.Subprotocol}
			}
			conn, resp, err := d.Dial(rv.ControlURL(), h)
			if tt.wantHTTP == 0 {
				if err != nil {
					t.Fatalf("dial: %v", err)
				}
				conn.Close()
				return
			}
			if err == nil {
				conn.Close()
				t.Fatalf("dial succeeded, want HTTP %d", tt.wantHTTP)
			}
			if resp == nil {
				t.Fatalf("dial: %v, want HTTP %d", err, tt.wantHTTP)
			}
			if resp.StatusCode != tt.wantHTTP {
				t.Errorf("status: got %d, want %d", resp.StatusCode, tt.wantHTTP)
			}
			var body [512]byte
			n, _ := resp.Body.Read(body[:])
			st, msg := apiError(t, body[:n])
			if st != tt.wantStatus || !strings.Contains(msg, tt.wantInReason) {
				t.Errorf("error: got %d %q, want %d containing %q", st, msg, tt.wantStatus, tt.wantInReason)
			}
		})
	}
}

func TestSessionLimit(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{MaxSessions: 1})
	c := rendezvoustest.DialControl(t, rv)
	_, resp, err := rendezvoustest.DialControlHeader(rv.ControlURL(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("second session: err %v status %d, want HTTP 429", err, code)
	}
	c.Close()
	eventually(t, "session to end", func() bool { return getStatus(t, rv).Sessions == 0 })
	c2, _, err := rendezvoustest.DialControlHeader(rv.ControlURL(), nil)
	if err != nil {
		t.Fatalf("session after the first ended: %v", err)
	}
	c2.Close()
}

func TestCloseEndsSessions(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	c := rendezvoustest.DialControl(t, rv)
	relay := rendezvoustest.Register(t, rv, "http://relay.test")
	done := make(chan int, 1)
	go func() {
		for {
			_, err := c.Recv(wait)
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				done <- ce.Code
				return
			}
			if err != nil {
				done <- -1
				return
			}
		}
	}()
	if err := rv.Server.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rv.Server.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := <-done; got != websocket.CloseGoingAway {
		t.Errorf("session close code: got %d, want %d", got, websocket.CloseGoingAway)
	}
	if _, err := relay.Recv(wait); err == nil {
		t.Error("relay stream still open after Close")
	}
	if _, _, err := rendezvoustest.DialControlHeader(rv.ControlURL(), nil); err == nil {
		t.Error("new session accepted after Close")
	}
}

// TestReclaimAfterRestart checks that an item comes back under its id on a
// rendezvous that has never seen it (a restart keeps no state), with the
// metadata the publisher sends, and that only its owner can do that.
func TestReclaimAfterRestart(t *testing.T) {
	t.Parallel()
	rv1 := rendezvoustest.Start(t, testConfig())
	pub := publishFile(t, rendezvoustest.DialControl(t, rv1), 500)
	other := publishFile(t, rendezvoustest.DialControl(t, rv1), 7)

	cfg := testConfig()
	cfg.ReclaimGrace = time.Hour
	rv2 := rendezvoustest.Start(t, cfg)
	// Before the publisher is back, the link says "offline, retry", not
	// "no such item".
	if resp, _ := do(t, http.MethodGet, rv2.URL+"/v1/items/"+pub.ID.String()); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("GET before the reclaim: got %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// So do its metadata and its page, which reloads.
	if resp, _ := do(t, http.MethodGet, rv2.URL+"/v1/items/"+pub.ID.String()+"/meta"); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("meta before the reclaim: got %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp, body := do(t, http.MethodGet, rv2.URL+"/i/"+pub.ID.String()); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "Waiting for the sender") || !strings.Contains(string(body), `http-equiv="refresh"`) {
		t.Errorf("page before the reclaim: got %d, want 503 saying it waits for the sender and reloading", resp.StatusCode)
	}
	if resp, _ := do(t, http.MethodGet, rv1.URL+"/v1/items/"+proto.NewItemID().String()+"/meta"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("meta of an unknown id after the grace: got %d, want 404", resp.StatusCode)
	}

	c := rendezvoustest.DialControl(t, rv2)
	meta := proto.Publish{Kind: proto.KindFile, Name: "video.mp4", MIME: "video/mp4", Size: 500}
	refused := []struct {
		name  string
		id    proto.ItemID
		owner string
		want  proto.Status
	}{
		{"reader who knows the id", pub.ID, pub.ID.String(), proto.StatusForbidden},
		{"another item's owner", pub.ID, other.Owner, proto.StatusForbidden},
		{"random id", proto.NewItemID(), pub.Owner, proto.StatusForbidden},
	}
	for _, tt := range refused {
		p := meta
		p.Ref, p.ID, p.Owner = "x", tt.id, tt.owner
		if err := c.Send(&p); err != nil {
			t.Fatal(err)
		}
		if e := recvAs[proto.ErrorMsg](t, c.Recv); e.Status != tt.want {
			t.Errorf("%s: got %+v, want status %d", tt.name, e, tt.want)
		}
	}
	bad := meta
	bad.Ref, bad.ID, bad.Owner, bad.Kind = "x", pub.ID, pub.Owner, "bogus"
	if err := c.Send(&bad); err != nil {
		t.Fatal(err)
	}
	if e := recvAs[proto.ErrorMsg](t, c.Recv); e.Status != proto.StatusMalformed {
		t.Errorf("unknown kind: got %+v, want status %d", e, proto.StatusMalformed)
	}
	if got := getStatus(t, rv2).Items; got != 0 {
		t.Fatalf("items after refused reclaims: got %d, want 0", got)
	}

	p := meta
	p.Ref, p.ID, p.Owner = "ok", pub.ID, pub.Owner
	back := c.Publish(t, p)
	if back.ID != pub.ID || back.Owner != pub.Owner || back.ShareURL != strings.Replace(pub.ShareURL, rv1.URL, rv2.URL, 1) {
		t.Errorf("reclaim: got %+v, want the id and owner of %+v", back, pub)
	}
	var m rendezvous.ItemMeta
	rendezvoustest.GetJSON(t, rv2.URL+"/v1/items/"+pub.ID.String()+"/meta", &m)
	if m.Name != "video.mp4" || m.Size != 500 {
		t.Errorf("meta after reclaim: got %+v, want video.mp4 of 500 bytes", m)
	}
	if st := getStatus(t, rv2); st.Items != 1 || st.ItemsOnline != 1 {
		t.Errorf("after reclaim: items %d online %d, want 1 and 1", st.Items, st.ItemsOnline)
	}
}
