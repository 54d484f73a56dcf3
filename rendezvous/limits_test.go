package rendezvous_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// lyingRelay starts a real relay whose HTTP answers, reached through the
// rendezvous tunnel only (it registers as behind a symmetric NAT), are
// wrapped by lie. It returns the relay's id.
func lyingRelay(t *testing.T, rv *rendezvoustest.Server, lie func(http.Handler) http.Handler) string {
	t.Helper()
	node := rendezvoustest.NewNode(t)
	srv, err := relay.New(relay.Config{Node: node, PublicURL: "http://10.0.0.2:8081", TokenKey: rv.Server.PublicKey(), Logger: rendezvoustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ln, err := node.Listen(proto.ProtoHTTP)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: lie(srv.Handler())}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	reg, err := rendezvoustest.Dial(t, rv, node)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://10.0.0.2:8081", NAT: proto.NATSymmetric}); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Recv(rendezvoustest.Timeout); err != nil {
		t.Fatal(err)
	}
	reg.KeepAlive(100*time.Millisecond, proto.Heartbeat{})
	return node.ID()
}

// TestTunnelHeaders checks that a relay answering through the tunnel with
// headers that would take over the rendezvous's origin (cookies, a Service
// Worker scope, clearing site data, its own lax CSP, HTML) has them
// stripped, and gets nosniff, a sandbox and an attachment instead.
func TestTunnelHeaders(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	id := lyingRelay(t, rv, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hd := w.Header()
			hd.Set("Set-Cookie", "owner=stolen; Path=/")
			hd.Set("Service-Worker-Allowed", "/")
			hd.Set("Clear-Site-Data", `"*"`)
			hd.Set("Refresh", "0; url=https://evil.example")
			hd.Set("Link", "</evil.js>; rel=preload")
			hd.Set("Location", "https://evil.example")
			hd.Set("Access-Control-Allow-Credentials", "true")
			hd.Set("Content-Security-Policy", "sandbox allow-scripts allow-same-origin")
			hd.Set("X-Content-Type-Options", "")
			if r.URL.Path == "/v1/status" && r.URL.Query().Has("html") {
				hd.Set("Content-Type", "text/html")
				hd.Set("Content-Disposition", `inline; filename="x.html"`)
				io.WriteString(w, "<script>alert(localStorage.owner)</script>")
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	base := rv.URL + "/v1/relays/" + id
	for _, tc := range []struct {
		path     string
		wantType string
		wantDisp string
	}{
		{"/v1/status", "application/json", ""},         // the relay's real answer
		{"/v1/status?html", "text/html", "attachment"}, // the lie
	} {
		resp, body := do(t, "GET", base+tc.path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s through the tunnel: got %d %s, want 200", tc.path, resp.StatusCode, body)
		}
		h := resp.Header
		for _, k := range []string{"Set-Cookie", "Service-Worker-Allowed", "Clear-Site-Data", "Refresh", "Link", "Location", "Access-Control-Allow-Credentials"} {
			if v := h.Values(k); len(v) > 0 {
				t.Errorf("GET %s: header %s %q passed the tunnel, want it dropped", tc.path, k, v)
			}
		}
		if got := h.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("GET %s: X-Content-Type-Options %q, want nosniff", tc.path, got)
		}
		if got := h.Get("Content-Security-Policy"); got != proto.ItemCSP {
			t.Errorf("GET %s: Content-Security-Policy %q, want %q", tc.path, got, proto.ItemCSP)
		}
		if got := h.Get("Content-Type"); !strings.HasPrefix(got, tc.wantType) {
			t.Errorf("GET %s: Content-Type %q, want %s", tc.path, got, tc.wantType)
		}
		if d, _, _ := strings.Cut(h.Get("Content-Disposition"), ";"); d != tc.wantDisp {
			t.Errorf("GET %s: Content-Disposition %q, want %q", tc.path, h.Get("Content-Disposition"), tc.wantDisp)
		}
	}
}

// TestTunnelOrigin checks --tunnel-url: tunnel URLs are built on it, the
// tunnel is served on its host only, and that host serves nothing else.
func TestTunnelOrigin(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.TunnelURL = "http://tunnel.example:8443"
	rv := rendezvoustest.Start(t, cfg)
	id := lyingRelay(t, rv, func(h http.Handler) http.Handler { return h })

	ctl := rendezvoustest.DialControl(t, rv)
	want := "ws://tunnel.example:8443/v1/relays/" + id + "/v1/push"
	if len(ctl.Welcome.Relays) != 1 || ctl.Welcome.Relays[0].PushURL != want {
		t.Errorf("welcome relays: got %+v, want push URL %s", ctl.Welcome.Relays, want)
	}
	get := func(host, path string) int {
		req, _ := http.NewRequest("GET", rv.URL+path, nil)
		req.Host = host
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	mainHost := strings.TrimPrefix(rv.URL, "http://")
	tunnelPath := "/v1/relays/" + id + "/v1/status"
	if got := get("tunnel.example:8443", tunnelPath); got != http.StatusOK {
		t.Errorf("tunnel on its origin: got %d, want 200", got)
	}
	if got := get(mainHost, tunnelPath); got != http.StatusNotFound {
		t.Errorf("tunnel on the main origin: got %d, want 404", got)
	}
	for _, p := range []string{"/", "/v1/info", "/web/send.js", "/v1/control"} {
		if got := get("tunnel.example:8443", p); got != http.StatusNotFound {
			t.Errorf("GET %s on the tunnel origin: got %d, want 404", p, got)
		}
	}
	if got := get(mainHost, "/v1/info"); got != http.StatusOK {
		t.Errorf("GET /v1/info on the main origin: got %d, want 200", got)
	}
	bad := testConfig()
	bad.TunnelURL = rv.URL
	bad.PublicURL = rv.URL
	if err := bad.Validate(); err == nil {
		t.Errorf("TunnelURL on the public host: Validate passed, want an error")
	}
}

// TestMessageHeaders checks that a message item is served with the safe
// item headers too.
func TestMessageHeaders(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	ctl := rendezvoustest.DialControl(t, rv)
	for mime, wantDisp := range map[string]string{"text/html": "attachment", "image/svg+xml": "attachment", "text/plain": "inline"} {
		pub := ctl.Publish(t, proto.Publish{Ref: mime, Kind: proto.KindMessage, Text: "<svg onload=alert(1)>", MIME: mime})
		resp, body := do(t, "GET", pub.DownloadURL)
		if resp.StatusCode != http.StatusOK || string(body) != "<svg onload=alert(1)>" {
			t.Fatalf("GET %s message: got %d %q", mime, resp.StatusCode, body)
		}
		h := resp.Header
		if d, _, _ := strings.Cut(h.Get("Content-Disposition"), ";"); d != wantDisp {
			t.Errorf("%s: Content-Disposition %q, want %s", mime, h.Get("Content-Disposition"), wantDisp)
		}
		if h.Get("X-Content-Type-Options") != "nosniff" || !strings.HasPrefix(h.Get("Content-Security-Policy"), "sandbox") {
			t.Errorf("%s: nosniff %q, CSP %q, want nosniff and a sandbox", mime, h.Get("X-Content-Type-Options"), h.Get("Content-Security-Policy"))
		}
	}
}

// readUntilClose reads (answering pings) until the connection ends and
// returns the error that ended it.
func readUntilClose(ws *websocket.Conn) error {
	ws.SetReadDeadline(time.Now().Add(wait + 10*time.Second)) // past any handshake deadline of these tests
	ws.SetPingHandler(func(data string) error {
		ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			return err
		}
	}
}

// dialControlFrom opens a control WebSocket from the loopback address src
// and reads nothing.
func dialControlFrom(rv *rendezvoustest.Server, src string) (*websocket.Conn, *http.Response, error) {
	nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	d := websocket.Dialer{HandshakeTimeout: wait, Subprotocols: []string{proto.Subprotocol}, NetDialContext: nd.DialContext}
	return d.Dial(rv.ControlURL(), nil)
}

// TestControlHandshakeDeadline checks that a control session that sends no
// message is closed at the handshake deadline with a code and a reason,
// though it answers every ping, while a session that said hello lives on.
func TestControlHandshakeDeadline(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.HandshakeTimeout = time.Second
	cfg.PingInterval = 200 * time.Millisecond // pings (and pongs) flow all along
	rv := rendezvoustest.Start(t, cfg)
	greeted := rendezvoustest.DialControl(t, rv) // sends hello
	silent, _, err := dialControlFrom(rv, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// The greeted session keeps talking (and so answers pings) while the
	// silent one waits for its end.
	stop := make(chan struct{})
	talked := make(chan int)
	go func() {
		n := 0
		defer func() { talked <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			greeted.Publish(t, proto.Publish{Ref: fmt.Sprint(n), Kind: proto.KindMessage, Text: "talking"})
			n++
		}
	}()
	err = readUntilClose(silent)
	close(stop)
	<-talked
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != proto.StatusTimeout.CloseCode() || !strings.Contains(ce.Text, "hello") {
		t.Errorf("silent session: got %v, want close %d asking for a hello", err, proto.StatusTimeout.CloseCode())
	}
	pub := greeted.Publish(t, proto.Publish{Ref: "1", Kind: proto.KindMessage, Text: "still here"})
	if pub.ID.IsZero() {
		t.Errorf("greeted session after the deadline: no item")
	}
	if n := rv.Server.Stats().Rejected[rendezvous.RejectHandshake]; n != 1 {
		t.Errorf("rejected[%s]: got %d, want 1", rendezvous.RejectHandshake, n)
	}
}

// TestControlFlood opens 2000 idle control WebSockets from one IP: those
// over the per-IP session cap are refused with 429 and Retry-After, the
// others are closed at the handshake deadline with a code and a reason,
// and an honest client of another IP publishes and reads meanwhile.
func TestControlFlood(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 300
	}
	n = min(n, (meshtest.RaiseNoFile(t)-256)/2)
	cfg := testConfig()
	cfg.LimitLoopback = true
	cfg.MaxSessionsPerIP = 16
	cfg.RequestRate, cfg.RequestBurst = 1e6, 1e6 // this test is about sessions
	cfg.MaxConnsPerIP = 4 * n                    // not requests in flight: 64 slow dials and 16 sessions exceed the default on a loaded machine
	// Long enough for the flood to be over before the first sessions
	// are closed at the deadline, on a loaded machine too; those closed
	// earlier free their slots, and are allowed for below.
	cfg.HandshakeTimeout = 10 * time.Second
	rv := rendezvoustest.Start(t, cfg)

	var upgraded, refused, early atomic.Int64
	var dialing atomic.Int64
	dialing.Store(int64(n))
	var wrong atomic.Value
	closes := make(chan error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			ws, resp, err := dialControlFrom(rv, "127.0.0.3")
			<-sem
			dialing.Add(-1)
			if err != nil {
				if resp != nil && resp.StatusCode == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "" {
					refused.Add(1)
				} else {
					wrong.Store(fmt.Sprintf("%v (resp %v)", err, resp))
				}
				return
			}
			upgraded.Add(1)
			err = readUntilClose(ws)
			if dialing.Load() > 0 {
				early.Add(1) // its slot was free for the dials still to come
			}
			closes <- err
			ws.Close()
		}()
	}
	honest := rendezvoustest.DialControl(t, rv) // from 127.0.0.1
	pub := honest.Publish(t, proto.Publish{Ref: "h", Kind: proto.KindMessage, Text: "honest"})
	if resp, body := do(t, "GET", pub.DownloadURL); resp.StatusCode != http.StatusOK || string(body) != "honest" {
		t.Errorf("honest read during the flood: got %d %q", resp.StatusCode, body)
	}
	wg.Wait()
	close(closes)
	if v := wrong.Load(); v != nil {
		t.Errorf("a dial neither upgraded nor refused with 429 + Retry-After: %s", v)
	}
	if got, max := upgraded.Load(), int64(cfg.MaxSessionsPerIP); got < max || got > max+early.Load() {
		t.Errorf("upgraded: got %d, want %d (the per-IP session cap), plus up to the %d closed at the deadline while the flood went on", got, max, early.Load())
	}
	for err := range closes {
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != proto.StatusTimeout.CloseCode() || ce.Text == "" {
			t.Errorf("idle session ended with %v, want close %d with a reason", err, proto.StatusTimeout.CloseCode())
			break
		}
	}
	rej := rv.Server.Stats().Rejected
	t.Logf("%d control dials from one IP: %d sessions closed at the deadline, %d refused; rejected %v", n, upgraded.Load(), refused.Load(), rej)
	if rej[rendezvous.RejectSessionsPerIP] != uint64(refused.Load()) {
		t.Errorf("rejected[%s]: got %d, want %d", rendezvous.RejectSessionsPerIP, rej[rendezvous.RejectSessionsPerIP], refused.Load())
	}
}

// TestItemsPerIP runs 100 clients of one IP publishing until the per-IP
// item cap: exactly the cap is published, every refusal is over-limit with
// a reason, offline items still count, and a client of another IP
// publishes meanwhile.
func TestItemsPerIP(t *testing.T) {
	t.Parallel()
	const clients, cap = 100, 250
	cfg := testConfig()
	cfg.LimitLoopback = true
	cfg.MaxSessionsPerIP = clients
	cfg.MaxConnsPerIP = clients + 10
	cfg.RequestRate, cfg.RequestBurst = 1e6, 1e6
	cfg.MaxItemsPerIP = cap
	rv := rendezvoustest.Start(t, cfg)

	dial := func(src string) *rendezvoustest.Control {
		ws, _, err := dialControlFrom(rv, src)
		if err != nil {
			t.Fatal(err)
		}
		c := &rendezvoustest.Control{Conn: ws}
		if _, err := c.Recv(wait); err != nil { // the welcome
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		return c
	}
	var published, refusedN atomic.Int64
	var wrong atomic.Value
	var wg sync.WaitGroup
	ctls := make([]*rendezvoustest.Control, clients)
	for i := range ctls {
		ctls[i] = dial("127.0.0.3")
	}
	for i, c := range ctls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				if err := c.Send(&proto.Publish{Ref: fmt.Sprint(i, "-", j), Kind: proto.KindMessage, Text: "x"}); err != nil {
					wrong.Store(err.Error())
					return
				}
				m, err := c.Recv(wait)
				if err != nil {
					wrong.Store(err.Error())
					return
				}
				switch m := m.(type) {
				case *proto.Published:
					published.Add(1)
				case *proto.ErrorMsg:
					if m.Status != proto.StatusOverLimit || !strings.Contains(m.Reason, "limit") {
						wrong.Store(fmt.Sprintf("%+v", m))
					}
					refusedN.Add(1)
					return
				}
			}
		}()
	}
	honest := dial("127.0.0.1")
	if pub := honest.Publish(t, proto.Publish{Ref: "h", Kind: proto.KindMessage, Text: "honest"}); pub.ID.IsZero() {
		t.Errorf("honest publish: no item")
	}
	wg.Wait()
	if v := wrong.Load(); v != nil {
		t.Fatalf("unexpected answer: %s", v)
	}
	if published.Load() != cap || refusedN.Load() != clients {
		t.Errorf("published %d, refused %d, want %d and %d", published.Load(), refusedN.Load(), cap, clients)
	}
	// Offline items count too: the clients leave, come back, and are
	// still at the cap.
	for _, c := range ctls {
		c.Close()
	}
	eventually(t, "the sessions to end", func() bool { return getStatus(t, rv).Sessions == 1 })
	back := dial("127.0.0.3")
	back.Send(&proto.Publish{Ref: "again", Kind: proto.KindMessage, Text: "x"})
	m, err := back.Recv(wait)
	if em, ok := m.(*proto.ErrorMsg); err != nil || !ok || em.Status != proto.StatusOverLimit {
		t.Errorf("publish after the clients left: got %+v %v, want over limit", m, err)
	}
	t.Logf("100 clients of one IP: %d items published, %d refused at the cap (rejected %v)", published.Load(), refusedN.Load(), rv.Server.Stats().Rejected)
}

// TestSlowBody sends a request whose body never arrives: the rendezvous
// answers and then closes the connection at the body deadline instead of
// holding it.
func TestSlowBody(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.BodyTimeout = 300 * time.Millisecond
	rv := rendezvoustest.Start(t, cfg)
	conn, err := net.Dial("tcp", strings.TrimPrefix(rv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/info HTTP/1.1\r\nHost: rv\r\nContent-Length: 100000\r\n\r\nabc")
	conn.SetReadDeadline(time.Now().Add(wait))
	got, err := io.ReadAll(conn) // the response, then EOF when the server gives up
	if err != nil {
		t.Fatalf("read: %v, want the rendezvous to close the connection", err)
	}
	if !strings.HasPrefix(string(got), "HTTP/1.1 200") {
		t.Errorf("response: got %.40q, want 200", got)
	}
}
