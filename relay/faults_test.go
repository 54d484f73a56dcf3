package relay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestSenderGone closes the publishing client while a consumer reads
// slowly: the relay asks for the missing bytes again for NeedTimeout, then
// the consumer's body must end short with an error, and what it got must be
// a correct prefix; the rendezvous then reports the item offline.
func TestSenderGone(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.NeedTimeout = time.Second
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(20<<20, 5)
	c, it := e.publish(t, data, client.Config{})

	d := startDownload(t, e.itemURL(it.ID, r), 2*partSize)
	d.waitPaused(t)
	c.Close()
	d.resume()
	code, got, err := d.wait(t)
	if code != http.StatusOK {
		t.Fatalf("status: got %d, want 200", code)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("body: got error %v after %d bytes, want io.ErrUnexpectedEOF", err, len(got))
	}
	if len(got) >= len(data) {
		t.Fatalf("body: got all %d bytes, want a short body", len(got))
	}
	checkPrefix(t, got, data)

	eventually(t, "the item offline at the rendezvous", func() bool { return e.rv.Server.Stats().ItemsOnline == 0 })
	resp, err := noRedirect.Get(e.rv.URL + "/v1/items/" + it.ID.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET the item at the rendezvous: status %d, want 503", resp.StatusCode)
	}
	if got := apiError(t, resp, body); got != proto.StatusOffline {
		t.Errorf("error status: got %v, want %v", got, proto.StatusOffline)
	}
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	var st struct {
		Items       int `json:"items"`
		ItemsOnline int `json:"items_online"`
	}
	rendezvoustest.GetJSON(t, e.rv.URL+"/v1/status", &st)
	if st.Items != 1 || st.ItemsOnline != 0 {
		t.Errorf("rendezvous items, online: got %d, %d, want 1, 0", st.Items, st.ItemsOnline)
	}
	eventually(t, "relay idle", func() bool {
		s := r.Server.Stats()
		return s.Reserved == 0 && s.OpenParts == 0 && s.Waiting == 0 && s.PushConns == 0
	})
}

// TestSenderReturnsMidBody closes the publishing client while a consumer
// reads, then takes the item back with a new client (its id and owner
// secret): the started response pauses and then completes intact, with
// the relay asking again for the bytes the consumer had not received
// (issue 14: a started response fails only because its source is gone).
func TestSenderReturnsMidBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	// More than loopback's socket buffers hold, so that parts are still
	// being pushed when the publisher goes (6 MiB was not).
	data := meshtest.RandomBytes(16<<20, 9)
	c, it := e.publish(t, data, client.Config{})

	d := startDownload(t, e.itemURL(it.ID, r), partSize+partSize/2)
	d.waitPaused(t)
	c.Close()
	eventually(t, "the item offline at the rendezvous", func() bool { return e.rv.Server.Stats().ItemsOnline == 0 })
	d.resume()

	c2, err := client.New(client.Config{Rendezvous: e.rv.URL, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c2.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	src := client.Source{Name: "data.bin", MIME: "application/x-test", Size: int64(len(data)), Reader: bytes.NewReader(data), Plain: true, Volunteers: true}
	if _, err := c2.Reclaim(ctx, src, it.ID, it.Owner()); err != nil {
		t.Fatalf("reclaim: %v", err)
	}
	code, got, err := d.wait(t)
	if code != http.StatusOK || err != nil {
		t.Fatalf("download: got status %d, error %v after %d bytes, want 200 and no error", code, err, len(got))
	}
	if i := meshtest.FirstDiff(got, data); i >= 0 {
		t.Fatalf("body of %d bytes differs from the item at offset %d", len(got), i)
	}
	if st := r.Server.Stats(); st.PartRetries == 0 || st.CutShort != 0 {
		t.Errorf("relay stats: part_retries %d cut_short %d, want some retries and no cut", st.PartRetries, st.CutShort)
	}
}

// TestReclaim takes an item back online after its publisher's control
// connection dropped, with the owner secret, and serves it.
func TestReclaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	data := meshtest.RandomBytes(3*partSize+77, 6)

	ctl := rendezvoustest.DialControl(t, e.rv)
	pub := ctl.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "r.bin", MIME: "application/x-test", Size: int64(len(data))})
	ctl.Close()
	url := e.itemURL(pub.ID, r)
	eventually(t, "the item offline", func() bool { return e.rv.Server.Stats().ItemsOnline == 0 })
	if resp, _ := do(t, http.MethodGet, url); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("GET while offline: status %d, want 503", resp.StatusCode)
	}

	ctl = rendezvoustest.DialControl(t, e.rv)
	// Wrong owner secrets are refused.
	if err := ctl.Send(&proto.Publish{Ref: "bad", ID: pub.ID, Owner: "not-the-owner", Kind: proto.KindFile, Size: 1}); err != nil {
		t.Fatal(err)
	}
	m, err := ctl.Recv(wait)
	if em, ok := m.(*proto.ErrorMsg); err != nil || !ok || em.Ref != "bad" || em.Status != proto.StatusForbidden {
		t.Fatalf("reclaim with a wrong owner: got %T %+v, %v, want error %v", m, m, err, proto.StatusForbidden)
	}
	again := ctl.Publish(t, proto.Publish{ID: pub.ID, Owner: pub.Owner, Kind: proto.KindFile, Name: "r.bin", MIME: "application/x-test", Size: int64(len(data))})
	if again.ID != pub.ID {
		t.Fatalf("reclaimed id: got %v, want %v", again.ID, pub.ID)
	}

	d := startDownload(t, url, -1)
	p := dialPush(t, r.PushURL(), nil)
	stream := uint32(0)
	for served := int64(0); served < int64(len(data)); {
		o := recvOrder(t, ctl)
		stream++
		switch end := p.pushPart(t, stream, o, data); end.Status {
		case proto.StatusOK:
			served += o.Len
		case proto.StatusNotWanted:
			// An order the relay withdrew before we began it; a Cancel
			// for it is on its way.
		default:
			t.Fatalf("part %d+%d: PartEnd %v (%s), want OK", o.Off, o.Len, end.Status, end.Reason)
		}
	}
	code, got, err := d.wait(t)
	if code != http.StatusOK || err != nil {
		t.Fatalf("download: status %d, error %v, want 200 and no error", code, err)
	}
	if i := meshtest.FirstDiff(got, data); i >= 0 {
		t.Fatalf("download of %d bytes differs from the item at byte %d", len(got), i)
	}
}

// TestBudget gives a relay room for exactly one request: a second one is
// refused with 429 and Retry-After while the first is in flight, and
// served once it is over.
func TestBudget(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.Prefetch = 2
	cfg.Budget = int64(cfg.Window * cfg.Prefetch)
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(4*partSize, 7)
	_, it := e.publish(t, data, client.Config{})
	url := e.itemURL(it.ID, r)

	first := start(t, http.MethodGet, url)
	if first.StatusCode != http.StatusOK {
		t.Fatalf("first request: status %d, want 200", first.StatusCode)
	}
	if got := r.Server.Stats().Reserved; got != cfg.Budget {
		t.Fatalf("reserved during the first request: got %d, want %d", got, cfg.Budget)
	}
	for _, hdr := range [][]string{nil, {"Range", "bytes=0-9"}} {
		resp, body := do(t, http.MethodGet, url, hdr...)
		if resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("second request (headers %q): status %d, want 429", hdr, resp.StatusCode)
		}
		if ra, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || ra <= 0 {
			t.Errorf("Retry-After: got %q, want a positive number of seconds", resp.Header.Get("Retry-After"))
		}
		if got := apiError(t, resp, body); got != proto.StatusOverLimit {
			t.Errorf("error status: got %v, want %v", got, proto.StatusOverLimit)
		}
	}
	if got := r.Server.Stats().Refusals["budget"]; got != 2 {
		t.Errorf("budget refusals: got %d, want 2", got)
	}

	// The first request is still good: read a little, then give up.
	head := make([]byte, 1000)
	if _, err := io.ReadFull(first.Body, head); err != nil {
		t.Fatal(err)
	}
	checkPrefix(t, head, data)
	first.Body.Close()
	eventually(t, "the budget released", func() bool { return r.Server.Stats().Reserved == 0 })

	resp, body := do(t, http.MethodGet, url, "Range", fmt.Sprintf("bytes=%d-%d", partSize/2, 5*partSize/2))
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("request after the first: status %d, want 206", resp.StatusCode)
	}
	if i := meshtest.FirstDiff(body, data[partSize/2:5*partSize/2+1]); i >= 0 {
		t.Fatalf("request after the first: body differs at byte %d", i)
	}
}

// TestSlowConsumer reads with a throttled reader and samples the relay's
// counters throughout: memory held for the transfer never exceeds what its
// windows allow, because the consumer's pace, not the publisher's, sets
// the rate.
func TestSlowConsumer(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	e := newEnv(t, cfg)
	r := e.relays[0]
	eff := r.Server.Config()
	const frame = 64 << 10
	data := meshtest.RandomBytes(8<<20+99, 8)
	_, it := e.publish(t, data, client.Config{FrameSize: frame})

	var (
		stop                atomic.Bool
		wg                  sync.WaitGroup
		samples             int
		maxHeld, maxReserve int64
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			st := r.Server.Stats()
			samples++
			maxHeld = max(maxHeld, st.BytesIn-st.BytesOut)
			maxReserve = max(maxReserve, st.Reserved)
			time.Sleep(200 * time.Microsecond)
		}
	}()

	resp := start(t, http.MethodGet, e.itemURL(it.ID, r))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	got, err := io.ReadAll(&throttled{r: resp.Body, n: 64 << 10, pause: 5 * time.Millisecond})
	stop.Store(true)
	wg.Wait()
	if err != nil {
		t.Fatalf("read after %d bytes: %v", len(got), err)
	}
	if i := meshtest.FirstDiff(got, data); i >= 0 {
		t.Fatalf("%d bytes differ from the item at byte %d", len(got), i)
	}

	limit := int64(eff.Window)*int64(eff.Prefetch) + frame
	if maxHeld > limit {
		t.Errorf("bytes held by the relay (in - out): got up to %d, want at most Window*Prefetch + one frame = %d", maxHeld, limit)
	}
	if maxReserve > eff.Budget {
		t.Errorf("reserved: got up to %d, want at most the budget %d", maxReserve, eff.Budget)
	}
	if maxHeld <= 0 || maxReserve <= 0 || samples < 10 {
		t.Errorf("sampler saw %d samples, held up to %d, reserved up to %d: it did not watch the transfer", samples, maxHeld, maxReserve)
	}
	st := r.Server.Stats()
	if st.BytesIn != int64(len(data)) || st.BytesOut != int64(len(data)) {
		t.Errorf("bytes in, out: got %d, %d, want %d each (every byte pushed once)", st.BytesIn, st.BytesOut, len(data))
	}
}

// throttled reads at most n bytes per Read and sleeps before each Read.
type throttled struct {
	r     io.Reader
	n     int
	pause time.Duration
}

func (t *throttled) Read(p []byte) (int, error) {
	time.Sleep(t.pause)
	return t.r.Read(p[:min(len(p), t.n)])
}

// TestTwoRelays reads one item through two relays at once: each serves
// its own consumer every byte, whichever entries the parts came through.
func TestTwoRelays(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig(), testRelayConfig())
	data := meshtest.RandomBytes(6*partSize+1, 9)
	_, it := e.publish(t, data, client.Config{})
	var ds []*download
	for _, r := range e.relays {
		ds = append(ds, startDownload(t, e.itemURL(it.ID, r), -1))
	}
	for i, d := range ds {
		code, got, err := d.wait(t)
		if code != http.StatusOK || err != nil {
			t.Fatalf("relay %d: status %d, error %v, want 200 and no error", i, code, err)
		}
		if j := meshtest.FirstDiff(got, data); j >= 0 {
			t.Fatalf("relay %d: %d bytes differ from the item at byte %d", i, len(got), j)
		}
		if st := e.relays[i].Server.Stats(); st.BytesServed != int64(len(data)) {
			t.Errorf("relay %d bytes served: got %d, want %d", i, st.BytesServed, len(data))
		}
	}
}

// TestConsumerGoesAway abandons requests mid-part: the relay must cancel
// their parts and forget them, and the publisher's push connection must go
// on serving later requests.
func TestConsumerGoesAway(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	data := meshtest.RandomBytes(6*partSize+1, 10)
	_, it := e.publish(t, data, client.Config{})
	url := e.itemURL(it.ID, r)

	for i := range int64(4) {
		off := i * partSize
		resp := start(t, http.MethodGet, url, "Range", fmt.Sprintf("bytes=%d-", off))
		if resp.StatusCode != http.StatusPartialContent {
			t.Fatalf("request %d: status %d, want 206", i, resp.StatusCode)
		}
		head := make([]byte, partSize/2)
		if _, err := io.ReadFull(resp.Body, head); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if j := meshtest.FirstDiff(head, data[off:off+int64(len(head))]); j >= 0 {
			t.Fatalf("request %d: byte %d differs", i, j)
		}
		resp.Body.Close()
	}
	eventually(t, "the relay to forget the abandoned parts", func() bool {
		s := r.Server.Stats()
		return s.Reserved == 0 && s.OpenParts == 0 && s.Waiting == 0
	})

	resp, body := do(t, http.MethodGet, url)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if i := meshtest.FirstDiff(body, data); i >= 0 {
		t.Fatalf("%d bytes differ from the item at byte %d", len(body), i)
	}
	// The publisher keeps one connection for bulk parts and one for the
	// small first parts of Range requests.
	if s := r.Server.Stats(); s.PushConns < 1 || s.PushConns > 2 || s.OpenParts != 0 {
		t.Errorf("push conns, open parts: got %d, %d, want 1 or 2, 0 (the publisher's bulk and express connections, nothing left open)", s.PushConns, s.OpenParts)
	}
}

// TestRelayClose closes a relay in the middle of a transfer: the consumer's
// body ends short with correct bytes, and the publisher's push connection
// is closed with StatusUnavailable.
func TestRelayClose(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	data := meshtest.RandomBytes(4*partSize, 12)
	ctl := rendezvoustest.DialControl(t, e.rv)
	pub := ctl.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "c.bin", MIME: "application/x-test", Size: int64(len(data))})
	const n = 1000 // less than the relay's response buffer
	d := startDownload(t, e.itemURL(pub.ID, r), n)
	o := recvOrder(t, ctl)
	p := dialPush(t, o.PushURL, nil)
	p.send(t, proto.PartBegin{Stream: 1, Item: o.Item, Off: uint64(o.Off), Len: uint64(o.Len), Token: o.Token}.AppendFrame(nil))
	p.expectAck(t, 1, func(proto.Ack) bool { return true })
	p.send(t, append(proto.AppendPartDataHeader(nil, 1, n), data[:n]...))
	p.expectAck(t, 1, func(a proto.Ack) bool { return a.Acked == n })
	// Acknowledged end to end means the consumer gets the bytes now, not
	// once more bytes have come.
	d.waitPaused(t)

	r.Close()
	p.expectClose(t, proto.StatusUnavailable.CloseCode())
	d.resume()
	code, got, err := d.wait(t)
	if code != http.StatusOK || err == nil || len(got) != n {
		t.Fatalf("download: status %d, %d bytes, error %v, want 200, the %d bytes pushed and an error", code, len(got), err, n)
	}
	checkPrefix(t, got, data)
	eventually(t, "the rendezvous to drop the relay", func() bool { return e.rv.Server.Stats().Relays == 0 })
}

// TestBusyPublisher drives a publisher by hand that pushes the first part
// of a download at once but, busy, does not begin the second within the
// relay's NeedTimeout (it is online: its control session is open). The
// response has begun, so it must not be cut (issue 14): the relay asks for
// the part again, and the body completes intact when the publisher pushes
// the part it is asked for again.
func TestBusyPublisher(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.NeedTimeout = time.Second
	cfg.Prefetch = 1
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(2*partSize, 21)
	ctl := rendezvoustest.DialControl(t, e.rv)
	pub := ctl.Publish(t, proto.Publish{Kind: proto.KindFile, Name: "busy.bin", MIME: "application/x-test", Size: int64(len(data))})
	d := startDownload(t, e.itemURL(pub.ID, r), -1)

	o := recvOrder(t, ctl)
	if o.Off != 0 {
		t.Fatalf("first order: got offset %d, want 0", o.Off)
	}
	p := dialPush(t, o.PushURL, nil)
	p.pushPart(t, 1, o, data)

	// The second part's order: left alone until the relay gives up on it.
	late := recvOrder(t, ctl)
	if late.Off != partSize {
		t.Fatalf("second order: got offset %d, want %d", late.Off, partSize)
	}
	for {
		m, err := ctl.Recv(wait)
		if err != nil {
			t.Fatalf("waiting for the relay to withdraw the order of the part not begun: %v", err)
		}
		if c, ok := m.(*proto.Cancel); ok && c.Order == late.Order {
			break
		}
	}
	again := recvOrder(t, ctl)
	if again.Off != partSize || again.Len != late.Len {
		t.Fatalf("order after the busy wait: got bytes %d+%d, want %d+%d", again.Off, again.Len, partSize, late.Len)
	}
	p.pushPart(t, 2, again, data)

	code, got, err := d.wait(t)
	if code != http.StatusOK || err != nil {
		t.Fatalf("download: status %d, error %v after %d bytes, want 200 and the whole item", code, err, len(got))
	}
	if i := meshtest.FirstDiff(got, data); i >= 0 {
		t.Fatalf("body of %d bytes differs from the item at offset %d", len(got), i)
	}
	if st := r.Server.Stats(); st.BusyWaits == 0 || st.CutShort != 0 {
		t.Errorf("relay stats: busy_waits %d cut_short %d, want a busy wait and no cut", st.BusyWaits, st.CutShort)
	}
}
