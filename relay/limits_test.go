package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous"
)

// TestItemHeaders checks that an item is served as the type it was
// published with, never sniffed, in a sandbox, and as an attachment unless
// its type is on the inline list: an item published as text/html or
// image/svg+xml never runs as a page of the relay's origin.
func TestItemHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	tests := []struct {
		mime      string
		wantType  string
		wantDisp  string
		wantMedia bool // the media CSP, which lets the browser's own media page load the item
	}{
		{"text/html", "text/html", "attachment", false},
		{"text/html; charset=utf-8", "text/html", "attachment", false},
		{"image/svg+xml", "image/svg+xml", "attachment", false},
		{"application/xhtml+xml", "application/xhtml+xml", "attachment", false},
		{"application/javascript", "application/javascript", "attachment", false},
		{"TEXT/HTML", "text/html", "attachment", false},
		{"not a type", "application/octet-stream", "attachment", false},
		{"", "application/octet-stream", "attachment", false},
		{"video/mp4", "video/mp4", "inline", true},
		{"video/webm; codecs=vp9", "video/webm", "inline", true},
		{"audio/ogg", "audio/ogg", "inline", true},
		{"image/png", "image/png", "inline", true},
		{"image/jpeg", "image/jpeg", "inline", true},
		{"image/gif", "image/gif", "inline", true},
		{"image/webp", "image/webp", "inline", true},
		{"image/avif", "image/avif", "inline", true},
		{"text/plain; charset=iso-8859-1", "text/plain; charset=utf-8", "inline", false},
	}
	for _, tt := range tests {
		t.Run(tt.mime, func(t *testing.T) {
			t.Parallel()
			item := proto.NewItemID()
			tok := proto.SignToken(e.key, proto.Claims{
				Dir: proto.DirRead, Relay: r.ID(), Item: item, Len: 10, Size: 10,
				Name: "x.bin", MIME: tt.mime, Exp: time.Now().Add(time.Hour).Unix(),
			})
			resp, _ := do(t, http.MethodHead, r.URL+"/v1/items/"+item.String()+"?t="+tok)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("HEAD: got %d, want 200", resp.StatusCode)
			}
			checkItemHeaders(t, resp.Header, tt.wantType, tt.wantDisp, tt.wantMedia)
		})
	}

	// And the bytes of such an item arrive intact, as an attachment.
	data := []byte("<html><script>alert(document.cookie)</script></html>")
	c, err := client.New(client.Config{Rendezvous: e.rv.URL, Logger: meshtest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	it, err := c.Publish(ctx, client.Source{Name: "page.html", MIME: "text/html", Size: int64(len(data)), Reader: bytes.NewReader(data), Plain: true, Volunteers: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, body := do(t, http.MethodGet, e.relayURL(t, it.ID, r))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET: got %d %q, want 200 with the item", resp.StatusCode, body)
	}
	checkItemHeaders(t, resp.Header, "text/html", "attachment", false)
}

func checkItemHeaders(t *testing.T, h http.Header, wantType, wantDisp string, media bool) {
	t.Helper()
	if got := h.Get("Content-Type"); got != wantType {
		t.Errorf("Content-Type: got %q, want %q", got, wantType)
	}
	if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options: got %q, want nosniff", got)
	}
	csp := h.Get("Content-Security-Policy")
	if !strings.HasPrefix(csp, "sandbox;") || !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "allow-") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy: got %q, want a sandbox without scripts", csp)
	}
	if got := strings.Contains(csp, "media-src"); got != media {
		t.Errorf("Content-Security-Policy %q: media-src present %v, want %v", csp, got, media)
	}
	disp := h.Get("Content-Disposition")
	if d, _, _ := strings.Cut(disp, ";"); d != wantDisp {
		t.Errorf("Content-Disposition: got %q, want %s", disp, wantDisp)
	}
}

// TestTokenClockSkew runs relays whose clocks are off: 25 s either way
// still works, 40 s is refused with a reason that names the clock. Push
// tokens live 5 s here, so that a clock 40 s ahead is outside the 30 s of
// skew allowed on either side of the token's life.
func TestTokenClockSkew(t *testing.T) {
	t.Parallel()
	shifted := func(d time.Duration) relay.Config {
		c := testRelayConfig()
		c.Now = func() time.Time { return time.Now().Add(d) }
		return c
	}
	// The rendezvous would refuse the relays 40 s off at registration
	// (TestRegisterClock in rendezvous); here it lets them in, to check
	// that the relays' own token checks name the clock too.
	e := newEnvRV(t, rendezvous.Config{PushTokenTTL: 5 * time.Second, ClockSkew: time.Hour},
		shifted(25*time.Second), shifted(-25*time.Second), shifted(40*time.Second), shifted(-40*time.Second))
	ahead25, behind25, ahead40, behind40 := e.relays[0], e.relays[1], e.relays[2], e.relays[3]

	// By hand: a PartBegin with a token fresh from the rendezvous's clock.
	for _, tc := range []struct {
		name   string
		r      int
		want   proto.Status
		reason string
	}{
		{"25s ahead", 0, proto.StatusNotWanted, ""},
		{"25s behind", 1, proto.StatusNotWanted, ""},
		{"40s ahead", 2, proto.StatusExpired, "relay clock ahead by ~4"}, // ~40s or ~41s: times are whole seconds
		{"40s behind", 3, proto.StatusExpired, "relay clock behind by ~"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.relays[tc.r]
			now := time.Now()
			item := proto.NewItemID()
			tok := proto.SignToken(e.key, proto.Claims{Dir: proto.DirPush, Relay: r.ID(), Item: item, Len: 100, Ref: 1, Iat: now.Unix(), Exp: now.Add(5 * time.Second).Unix()})
			p := dialPush(t, r.PushURL(), nil)
			p.send(t, proto.PartBegin{Stream: 1, Item: item, Len: 100, Token: tok}.AppendFrame(nil))
			end := p.expectEnd(t, 1)
			if end.Status != tc.want || !strings.Contains(end.Reason, tc.reason) || (tc.reason != "" && !strings.Contains(end.Reason, "check the clock")) {
				t.Errorf("PartEnd: got %v %q, want %v with %q", end.Status, end.Reason, tc.want, tc.reason)
			}
		})
	}

	// End to end: a download through a relay 25 s ahead (and one 25 s
	// behind) arrives intact; through one 40 s ahead the publisher's part
	// is refused and the reader is told why.
	data := meshtest.RandomBytes(2*partSize+77, 7)
	_, it := e.publish(t, data, client.Config{})
	for _, r := range []int{0, 1} {
		resp, body := do(t, http.MethodGet, e.itemURL(it.ID, e.relays[r]))
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Errorf("download via relay %d: got %d, %d bytes, want 200 with the item (first diff at %d)", r, resp.StatusCode, len(body), meshtest.FirstDiff(body, data))
		}
	}
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, ahead40))
	if resp.StatusCode == http.StatusOK {
		t.Fatalf("download via the relay 40 s ahead: got 200, want a refusal")
	}
	if !strings.Contains(string(body), "clock") {
		t.Errorf("download via the relay 40 s ahead: got %d %s, want a reason naming the clock", resp.StatusCode, body)
	}
	_, _ = ahead25, behind25
	_ = behind40
}

// TestPushHandshakeDeadline checks that a push connection that begins no
// part with a valid token is closed at the handshake deadline with a code
// and a reason, however many pongs and unknown frames it sends, while an
// authenticated connection beside it lives on.
func TestPushHandshakeDeadline(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.HandshakeTimeout = 500 * time.Millisecond
	cfg.PingInterval = 50 * time.Millisecond // pongs flow all along
	e := newEnv(t, cfg)
	r := e.relays[0]

	idle := dialPush(t, r.PushURL(), nil)
	noisy := dialPush(t, r.PushURL(), nil)
	authed := dialPush(t, r.PushURL(), nil)
	item := proto.NewItemID()
	tok := e.signPush(r.ID(), item, 0, 100, 1, time.Now().Add(time.Minute))
	authed.send(t, proto.PartBegin{Stream: 1, Item: item, Len: 100, Token: tok}.AppendFrame(nil))
	if end := authed.expectEnd(t, 1); end.Status != proto.StatusNotWanted {
		t.Fatalf("PartEnd: got %v, want not wanted", end.Status)
	}
	stop := make(chan struct{})
	go func() { // unknown frames do not extend the deadline either
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				noisy.ws.WriteMessage(websocket.BinaryMessage, append(proto.AppendHeader(nil, 0x7f, 3), 1, 2, 3))
			}
		}
	}()
	defer close(stop)

	for name, p := range map[string]*pushWS{"idle": idle, "sending unknown frames": noisy} {
		err := readUntilClose(p.ws)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != proto.StatusTimeout.CloseCode() || !strings.Contains(ce.Text, "valid token") {
			t.Errorf("%s connection: got %v, want close %d naming the token", name, err, proto.StatusTimeout.CloseCode())
		}
	}
	// The authenticated connection outlived the deadline: it still
	// answers.
	authed.send(t, proto.PartBegin{Stream: 2, Item: item, Len: 100, Token: tok}.AppendFrame(nil))
	if end := authed.expectEnd(t, 2); end.Status != proto.StatusNotWanted {
		t.Errorf("authenticated connection after the deadline: PartEnd %v, want not wanted", end.Status)
	}
	if n := r.Server.Status().Stats.Refusals["handshake_timeout"]; n < 2 {
		t.Errorf("refusals[handshake_timeout]: got %d, want >= 2", n)
	}
}

// readUntilClose reads (answering pings with pongs) until the connection
// ends and returns the error that ended it.
func readUntilClose(ws *websocket.Conn) error {
	ws.SetReadDeadline(time.Now().Add(wait))
	ws.SetPingHandler(func(data string) error {
		// A pong that races the relay's close is lost; what counts is
		// the close frame read next.
		ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// dialFrom dials TCP from the loopback address src, so that a test can be
// several sources on one machine.
func dialFrom(src string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return d.DialContext
}

// TestUnknownFramesMemory sends one unknown 1 MiB frame, without any token,
// on each of many push connections: they are skipped by length, so the
// relay's heap stays far below its budget.
func TestUnknownFramesMemory(t *testing.T) {
	n := 1000
	if testing.Short() {
		n = 200
	}
	n = min(n, (meshtest.RaiseNoFile(t)-256)/2)
	cfg := testRelayConfig()
	cfg.Budget = 64 << 20
	cfg.MaxConns = n + 10
	cfg.HandshakeTimeout = time.Minute // a slow -race run must not close them mid-frame
	e := newEnv(t, cfg)
	r := e.relays[0]

	frame := append(proto.AppendHeader(nil, 0x7e, 1<<20), make([]byte, 1<<20)...)
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	conns := make([]*websocket.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ws, _, err := dialPushRaw(r.PushURL(), []string{proto.Subprotocol}, nil)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = ws
			ws.SetWriteDeadline(time.Now().Add(wait))
			if err := ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("push connection: %v", err)
	}
	t.Cleanup(func() {
		for _, ws := range conns {
			ws.Close()
		}
	})
	eventually(t, "relay to skip every frame", func() bool { return r.Server.Status().Stats.UnknownFrames >= int64(n) })
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapInuse) - int64(before.HeapInuse)
	t.Logf("%d connections, each with a 1 MiB unknown frame: heap grew %.1f MiB (budget %d MiB)", n, float64(grew)/(1<<20), cfg.Budget>>20)
	// Connections cost their buffers and goroutines (both sides are in
	// this process); a frame buffered whole would cost n MiB.
	if limit := cfg.Budget / 2; grew > limit {
		t.Errorf("heap grew by %d MiB, want under %d MiB (half the budget)", grew>>20, limit>>20)
	}
	// Every connection is still open (nothing was wrong with skipping)
	// and closes at the handshake deadline; an honest transfer is fine.
	data := meshtest.RandomBytes(partSize+3, 9)
	_, it := e.publish(t, data, client.Config{})
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, r))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("honest download: got %d, %d bytes, want 200 with the item", resp.StatusCode, len(body))
	}
}

// TestIdleUnauthenticatedFlood opens 2000 push WebSockets from one IP
// that never authenticate: those over the per-IP cap are refused with 429
// and Retry-After, the others are closed at the handshake deadline with a
// code and a reason, and an honest transfer from another IP beside them
// finishes intact.
func TestIdleUnauthenticatedFlood(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	n = min(n, (meshtest.RaiseNoFile(t)-256)/2)
	cfg := testRelayConfig()
	cfg.LimitLoopback = true
	cfg.MaxConnsPerIP = 50
	cfg.RequestRate, cfg.RequestBurst = 1e6, 1e6 // this test is about connections
	cfg.HandshakeTimeout = 3 * time.Second
	e := newEnv(t, cfg)
	r := e.relays[0]

	const attacker = "127.0.0.3"
	d := websocket.Dialer{HandshakeTimeout: wait, Subprotocols: []string{proto.Subprotocol}, NetDialContext: dialFrom(attacker)}
	var upgraded, refused, other atomic.Int64
	var wrong atomic.Value
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	closes := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			ws, resp, err := d.Dial(r.PushURL(), nil)
			<-sem
			if err != nil {
				if resp != nil && resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
					refused.Add(1)
				} else {
					other.Add(1)
					wrong.Store(fmt.Sprintf("dial: %v (resp %v)", err, resp))
				}
				return
			}
			upgraded.Add(1)
			closes <- readUntilClose(ws)
			ws.Close()
		}()
	}

	// Beside the flood, from 127.0.0.1: publish and download.
	data := meshtest.RandomBytes(2*partSize+5, 11)
	_, it := e.publish(t, data, client.Config{})
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, r))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Errorf("honest download during the flood: got %d, %d bytes, want 200 with the item", resp.StatusCode, len(body))
	}

	wg.Wait()
	close(closes)
	if v := wrong.Load(); v != nil {
		t.Errorf("%d dials neither upgraded nor refused with 429 + Retry-After, e.g. %s", other.Load(), v)
	}
	if got := upgraded.Load(); got > int64(cfg.MaxConnsPerIP) || got == 0 {
		t.Errorf("upgraded: got %d, want 1..%d (the per-IP cap)", got, cfg.MaxConnsPerIP)
	}
	for err := range closes {
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != proto.StatusTimeout.CloseCode() || ce.Text == "" {
			t.Errorf("idle connection ended with %v, want close %d with a reason", err, proto.StatusTimeout.CloseCode())
			break
		}
	}
	st := r.Server.Status().Stats
	t.Logf("%d dials from %s: %d upgraded then closed at the deadline, %d refused (refusals %v)", n, attacker, upgraded.Load(), refused.Load(), st.Refusals)
	if st.Refusals["conns_per_ip"] != refused.Load() {
		t.Errorf("refusals[conns_per_ip]: got %d, want %d", st.Refusals["conns_per_ip"], refused.Load())
	}
}

// TestMaxConnsAtomic opens more push connections at once than MaxConns:
// exactly MaxConns are upgraded.
func TestMaxConnsAtomic(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.MaxConns = 20
	e := newEnv(t, cfg)
	r := e.relays[0]
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	var conns sync.Map
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			ws, resp, err := dialPushRaw(r.PushURL(), []string{proto.Subprotocol}, nil)
			if err == nil {
				ok.Add(1)
				conns.Store(i, ws)
				return
			}
			if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
				refused.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	conns.Range(func(_, v any) bool { v.(*websocket.Conn).Close(); return true })
	if ok.Load() != int64(cfg.MaxConns) || refused.Load() != 60-int64(cfg.MaxConns) {
		t.Errorf("got %d upgraded and %d refused, want %d and %d", ok.Load(), refused.Load(), cfg.MaxConns, 60-cfg.MaxConns)
	}
}

// TestSlowBody sends a request whose body never arrives: the relay answers
// and then closes the connection at the body deadline instead of holding
// it.
func TestSlowBody(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.BodyTimeout = 300 * time.Millisecond
	e := newEnv(t, cfg)
	r := e.relays[0]
	conn, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/status HTTP/1.1\r\nHost: relay\r\nContent-Length: 100000\r\n\r\nabc")
	conn.SetReadDeadline(time.Now().Add(wait))
	got, err := io.ReadAll(conn) // the response, then EOF when the relay gives up
	if err != nil {
		t.Fatalf("read: %v, want the relay to close the connection", err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 200") {
		t.Errorf("response: got %.40q, want 200", got)
	}
}

// TestRequestRatePerIP checks the token bucket per IP: requests beyond the
// burst are refused with 429 and Retry-After, counted by reason, while
// another IP is served.
func TestRequestRatePerIP(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.LimitLoopback = true
	cfg.RequestRate, cfg.RequestBurst = 0.01, 5
	e := newEnv(t, cfg)
	r := e.relays[0]
	from := func(src string) *http.Client {
		return &http.Client{Timeout: wait, Transport: &http.Transport{DialContext: dialFrom(src)}}
	}
	attacker, other := from("127.0.0.3"), from("127.0.0.4")
	for i := range cfg.RequestBurst + 3 {
		resp, err := attacker.Get(r.URL + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		want := http.StatusOK
		if i >= cfg.RequestBurst {
			want = http.StatusTooManyRequests
		}
		if resp.StatusCode != want || (want == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "100") {
			t.Errorf("request %d: got %d, Retry-After %q; want %d (Retry-After 100 when refused)", i, resp.StatusCode, resp.Header.Get("Retry-After"), want)
		}
	}
	resp, err := other.Get(r.URL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("another IP: got %d, want 200", resp.StatusCode)
	}
	if n := r.Server.Status().Stats.Refusals["rate_per_ip"]; n != 3 {
		t.Errorf("refusals[rate_per_ip]: got %d, want 3", n)
	}
}
