package relay_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// wait bounds every wait in the tests: for a message, a status change, a
// transfer. Tests never assert how long anything takes: it is only the
// point where a stuck test gives up, so it is generous. A 32 MiB transfer
// under -race, with every package's tests running at once on two cores,
// once took more than 20 s (TestSenderReturnsMidBody).
const wait = time.Minute

// Sizes used by the tests: parts of 1 MiB and a window of 256 KiB, so that
// a transfer of a few MiB crosses several parts and many credit rounds.
const (
	partSize = 1 << 20
	window   = 256 << 10
)

// testRelayConfig is the relay configuration of most tests.
func testRelayConfig() relay.Config {
	return relay.Config{PartSize: partSize, Window: window}
}

// env is a rendezvous with relays joined to it, all on loopback.
type env struct {
	rv     *rendezvoustest.Server
	key    ed25519.PrivateKey // the rendezvous's token signing key
	relays []*relaytest.Server
}

// newEnv starts a rendezvous and one relay per config. The rendezvous runs
// STUN on loopback, where relays find themselves public.
func newEnv(t *testing.T, relays ...relay.Config) *env {
	t.Helper()
	return newEnvRV(t, rendezvous.Config{}, relays...)
}

// newEnvRV is newEnv with the rendezvous configured by rc.
func newEnvRV(t *testing.T, rc rendezvous.Config, relays ...relay.Config) *env {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// DeadAfter is long so that a CPU-starved -race run does not drop a
	// relay between heartbeats.
	rc.SigningKey, rc.DeadAfter = key, time.Minute
	e := &env{key: key, rv: rendezvoustest.Start(t, rc)}
	for _, cfg := range relays {
		e.relays = append(e.relays, relaytest.Start(t, e.rv.URL, cfg))
	}
	return e
}

// publish publishes data as a file item with a real client and returns the
// item; the client is closed at the test's cleanup.
func (e *env) publish(t *testing.T, data []byte, cfg client.Config) (*client.Client, *client.Item) {
	t.Helper()
	return e.publishVia(t, data, cfg, "")
}

// publishVia is publish with the entry relay pinned to the relay with
// peer id via (client.Source.Via); empty leaves it to the rendezvous.
func (e *env) publishVia(t *testing.T, data []byte, cfg client.Config, via string) (*client.Client, *client.Item) {
	t.Helper()
	cfg.Rendezvous = e.rv.URL
	if cfg.Logger == nil {
		cfg.Logger = relaytest.Logger(t)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	it, err := c.Publish(ctx, client.Source{Plain: true, Volunteers: true, Name: "data.bin", MIME: "application/x-test", Size: int64(len(data)), Reader: bytes.NewReader(data), Via: via})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return c, it
}

// itemURL returns the rendezvous download URL of id pinned to relay r.
func (e *env) itemURL(id proto.ItemID, r *relaytest.Server) string {
	return e.rv.URL + "/v1/items/" + id.String() + "?via=" + url.QueryEscape(r.ID())
}

// relayURL asks the rendezvous for id pinned to relay r and returns the
// relay URL with the read token it redirects to.
func (e *env) relayURL(t *testing.T, id proto.ItemID, r *relaytest.Server) string {
	t.Helper()
	resp, err := noRedirect.Get(e.itemURL(id, r))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("GET item at the rendezvous: got status %d, want 307", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, r.URL+"/") {
		t.Fatalf("redirect to %q, want a URL under %s", loc, r.URL)
	}
	return loc
}

// readToken returns the read token of a relay URL from relayURL.
func readToken(t *testing.T, relayURL string) string {
	t.Helper()
	u, err := url.Parse(relayURL)
	if err != nil {
		t.Fatal(err)
	}
	tok := u.Query().Get("t")
	if tok == "" {
		t.Fatalf("no token in %q", relayURL)
	}
	return tok
}

var noRedirect = &http.Client{
	Transport:     rendezvoustest.HTTP.Transport,
	Timeout:       wait,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// httpClient follows redirects; it has no overall timeout, because tests
// that read slowly bound their reads themselves.
var httpClient = rendezvoustest.HTTP

// do sends a request with the given headers, following redirects, and
// returns the response with its whole body read.
func do(t *testing.T, method, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	resp := start(t, method, url, hdr...)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body after %d bytes: %v", method, url, len(body), err)
	}
	return resp, body
}

// start sends a request and returns the response with its body unread.
// The body is closed at the test's cleanup.
func start(t *testing.T, method, url string, hdr ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// apiError decodes a JSON error body and checks its layout.
func apiError(t *testing.T, resp *http.Response, body []byte) proto.Status {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("error Content-Type: got %q, want application/json", ct)
	}
	var e struct {
		Status *proto.Status `json:"status"`
		Error  string        `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Status == nil {
		t.Fatalf("error body %q: not a JSON error (%v)", body, err)
	}
	if e.Error == "" {
		t.Errorf("error body %s has no error text", body)
	}
	return *e.Status
}

// checkPrefix fails unless got is a prefix of want.
func checkPrefix(t *testing.T, got, want []byte) {
	t.Helper()
	if len(got) > len(want) {
		t.Fatalf("got %d bytes, more than the %d of the item", len(got), len(want))
	}
	if i := meshtest.FirstDiff(got, want[:len(got)]); i >= 0 {
		t.Fatalf("byte %d: got %#02x, want %#02x (received bytes are not a prefix of the item)", i, got[i], want[i])
	}
}

// eventually polls cond until it holds or the wait is over.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	meshtest.Eventually(t, wait, what, cond)
}

// gatedReader reads from r; once it has returned at least stopAt bytes it
// blocks until open is closed. It records what it read.
type gatedReader struct {
	r      io.Reader
	stopAt int
	open   chan struct{}
	paused chan struct{} // closed when the reader reaches stopAt

	mu   sync.Mutex // guards the fields below
	got  []byte
	once bool
}

func newGatedReader(r io.Reader, stopAt int) *gatedReader {
	return &gatedReader{r: r, stopAt: stopAt, open: make(chan struct{}), paused: make(chan struct{})}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	g.mu.Lock()
	n := len(g.got)
	g.mu.Unlock()
	if n >= g.stopAt {
		g.mu.Lock()
		if !g.once {
			g.once = true
			close(g.paused)
		}
		g.mu.Unlock()
		<-g.open
	} else if len(p) > g.stopAt-n {
		p = p[:g.stopAt-n]
	}
	k, err := g.r.Read(p)
	g.mu.Lock()
	g.got = append(g.got, p[:k]...)
	g.mu.Unlock()
	return k, err
}

func (g *gatedReader) bytes() []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return bytes.Clone(g.got)
}

// download is a consumer GET running in the background.
type download struct {
	done chan struct{}
	resp *http.Response
	body *gatedReader
	err  error // the request's or the body's error; set before done closes
}

// startDownload GETs url (following redirects) in a goroutine and reads
// the body through a gatedReader that pauses after stopAt bytes until
// resume is called. A negative stopAt never pauses.
func startDownload(t *testing.T, url string, stopAt int, hdr ...string) *download {
	t.Helper()
	if stopAt < 0 {
		stopAt = int(^uint(0) >> 1)
	}
	d := &download{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		d.resume()
		<-d.done
	})
	d.body = newGatedReader(nil, stopAt)
	go func() {
		defer close(d.done)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			d.err = err
			return
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			d.err = err
			return
		}
		defer resp.Body.Close()
		d.resp = resp
		d.body.r = resp.Body
		_, d.err = io.Copy(io.Discard, d.body)
	}()
	return d
}

// resume lets a paused download go on. It is idempotent.
func (d *download) resume() {
	d.body.mu.Lock()
	defer d.body.mu.Unlock()
	select {
	case <-d.body.open:
	default:
		close(d.body.open)
	}
}

// waitPaused waits until the download has read its stopAt bytes.
func (d *download) waitPaused(t *testing.T) {
	t.Helper()
	select {
	case <-d.body.paused:
	case <-d.done:
		t.Fatalf("download ended before pausing: %v, %d bytes", d.err, len(d.body.bytes()))
	case <-time.After(wait):
		t.Fatalf("download did not reach its pause within %v", wait)
	}
}

// wait waits for the download to end and returns its status, body and
// error.
func (d *download) wait(t *testing.T) (int, []byte, error) {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(wait):
		t.Fatalf("download did not end within %v", wait)
	}
	code := 0
	if d.resp != nil {
		code = d.resp.StatusCode
	}
	return code, d.body.bytes(), d.err
}

// pushWS is the publisher side of a push WebSocket, driven by hand.
type pushWS struct {
	ws *websocket.Conn
}

// dialPush opens a push WebSocket with subprotocol meshup.v1 and optional
// extra request headers. The connection is closed at the test's cleanup.
func dialPush(t *testing.T, pushURL string, hdr http.Header) *pushWS {
	t.Helper()
	ws, resp, err := dialPushRaw(pushURL, []string{proto.Subprotocol}, hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial %s (HTTP %d): %v", pushURL, status, err)
	}
	if ws.Subprotocol() != proto.Subprotocol {
		t.Fatalf("subprotocol: got %q, want %q", ws.Subprotocol(), proto.Subprotocol)
	}
	t.Cleanup(func() { ws.Close() })
	return &pushWS{ws: ws}
}

func dialPushRaw(pushURL string, subprotocols []string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{HandshakeTimeout: wait, Subprotocols: subprotocols}
	return d.Dial(pushURL, hdr)
}

// send writes one binary message.
func (p *pushWS) send(t *testing.T, msg []byte) {
	t.Helper()
	p.ws.SetWriteDeadline(time.Now().Add(wait))
	if err := p.ws.WriteMessage(websocket.BinaryMessage, msg); err != nil {
		t.Fatalf("write push message: %v", err)
	}
}

// next reads the next frame from the relay. A close from the relay is
// returned as a *websocket.CloseError.
func (p *pushWS) next() (proto.Header, []byte, error) {
	p.ws.SetReadDeadline(time.Now().Add(wait))
	mt, data, err := p.ws.ReadMessage()
	if err != nil {
		return proto.Header{}, nil, err
	}
	if mt != websocket.BinaryMessage {
		return proto.Header{}, nil, fmt.Errorf("relay sent message type %d, want binary", mt)
	}
	return proto.ReadFrame(bytes.NewReader(data), nil, proto.DefaultMaxFrame)
}

// expectEnd reads frames until a PartEnd for stream and returns it. Acks
// are skipped.
func (p *pushWS) expectEnd(t *testing.T, stream uint32) proto.PartEnd {
	t.Helper()
	for {
		h, body, err := p.next()
		if err != nil {
			t.Fatalf("waiting for PartEnd of stream %d: %v", stream, err)
		}
		if h.Type != proto.FramePartEnd {
			continue
		}
		e, err := proto.DecodePartEnd(body)
		if err != nil {
			t.Fatalf("decode PartEnd: %v", err)
		}
		if e.Stream == stream {
			return e
		}
	}
}

// expectAck reads frames until an Ack for stream that satisfies ok and
// returns it; a PartEnd for stream fails the test.
func (p *pushWS) expectAck(t *testing.T, stream uint32, ok func(proto.Ack) bool) proto.Ack {
	t.Helper()
	for {
		h, body, err := p.next()
		if err != nil {
			t.Fatalf("waiting for Ack of stream %d: %v", stream, err)
		}
		switch h.Type {
		case proto.FrameAck:
			a, err := proto.DecodeAck(body)
			if err != nil {
				t.Fatalf("decode Ack: %v", err)
			}
			if a.Stream == stream && ok(a) {
				return a
			}
		case proto.FramePartEnd:
			e, _ := proto.DecodePartEnd(body)
			if e.Stream == stream {
				t.Fatalf("got PartEnd %v (%s) for stream %d, want an Ack", e.Status, e.Reason, stream)
			}
		}
	}
}

// expectClose reads until the relay closes the connection and checks that
// its close code is one of codes.
func (p *pushWS) expectClose(t *testing.T, codes ...int) int {
	t.Helper()
	for {
		_, _, err := p.next()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			t.Fatalf("got error %v, want a close frame with code %v", err, codes)
		}
		for _, c := range codes {
			if ce.Code == c {
				return c
			}
		}
		t.Fatalf("close code: got %d (%q), want one of %v", ce.Code, ce.Text, codes)
	}
}

// pushPart pushes data[o.Off:o.Off+o.Len] as stream, sending only within
// the credit the relay grants, and returns the relay's PartEnd.
func (p *pushWS) pushPart(t *testing.T, stream uint32, o *proto.Order, data []byte) proto.PartEnd {
	t.Helper()
	p.send(t, proto.PartBegin{Stream: stream, Item: o.Item, Off: uint64(o.Off), Len: uint64(o.Len), Token: o.Token}.AppendFrame(nil))
	part := data[o.Off : o.Off+o.Len]
	var sent uint64
	for {
		h, body, err := p.next()
		if err != nil {
			t.Fatalf("push stream %d: %v", stream, err)
		}
		switch h.Type {
		case proto.FrameAck:
			a, err := proto.DecodeAck(body)
			if err != nil {
				t.Fatalf("decode Ack: %v", err)
			}
			if a.Stream != stream {
				continue
			}
			for sent < a.Limit {
				k := min(a.Limit-sent, 64<<10)
				f := proto.AppendPartDataHeader(nil, stream, int(k))
				p.send(t, append(f, part[sent:sent+k]...))
				sent += k
			}
		case proto.FramePartEnd:
			e, err := proto.DecodePartEnd(body)
			if err != nil {
				t.Fatalf("decode PartEnd: %v", err)
			}
			if e.Stream == stream {
				return e
			}
		}
	}
}

// recvOrder reads control messages until an Order and returns it.
func recvOrder(t *testing.T, ctl *rendezvoustest.Control) *proto.Order {
	t.Helper()
	for {
		m, err := ctl.Recv(wait)
		if err != nil {
			t.Fatalf("waiting for an order: %v", err)
		}
		if o, ok := m.(*proto.Order); ok {
			return o
		}
	}
}

// signPush signs a push token for the part [off, off+n) of item at relay.
func (e *env) signPush(relayID string, item proto.ItemID, off, n int64, ref uint64, exp time.Time) string {
	return proto.SignToken(e.key, proto.Claims{
		Dir: proto.DirPush, Relay: relayID, Item: item, Off: off, Len: n, Ref: ref, Exp: exp.Unix(),
	})
}

// newEnvKey returns a fresh signing key that no rendezvous of the test
// trusts.
func newEnvKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}
