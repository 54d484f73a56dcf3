package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous"
)

// Sealed live channels (format live1, proto/livee2e.go).

// liveEntrySealed asks the rendezvous at base where to push the sealed
// channel (id, secret).
func liveEntrySealed(t *testing.T, base string, id proto.ItemID, secret string) proto.LiveEntry {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/live/"+id.String()+"?enc=live1", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /v1/live?enc=live1: %s %s", resp.Status, b)
	}
	var e proto.LiveEntry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	if e.Share != base+"/l/"+id.String() {
		t.Errorf("entry share %q, want %s/l/%s", e.Share, base, id)
	}
	return e
}

func startMeshWith(t testing.TB, cfg devmesh.Config) *devmesh.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := devmesh.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// sealedPublisher is a sealed channel's publisher: a chunked PUT of
// live1 records fed by a LiveWriter.
type sealedPublisher struct {
	lw   *proto.LiveWriter
	pw   *io.PipeWriter
	cw   *countingWriter
	done chan error
}

// sealedOnWrappedRelay starts a mesh of one volunteer relay whose own
// listener is wrapped by wrap, and a sealed channel's publisher pushing
// to that listener; the caller writes the head.
func sealedOnWrappedRelay(t *testing.T, wrap func(http.Handler) http.Handler) (*devmesh.Mesh, proto.ItemID, proto.E2EKey, *sealedPublisher) {
	t.Helper()
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1, WrapRelay: wrap})
	id, secret := proto.NewLiveSecret()
	k := proto.NewE2EKey()
	// The wrapper sees the relay's own listener only, not its tunnel:
	// wait until the rendezvous sends publishers there directly.
	var entry proto.LiveEntry
	waitFor(t, "the relay reachable directly", 10*time.Second, func() bool {
		entry = liveEntrySealed(t, m.URL, id, secret)
		return strings.HasPrefix(entry.PushURL, m.RelayURLs[0]+"/")
	})
	return m, id, k, startSealedPublisher(t, entry, secret, k)
}

func startSealedPublisher(t *testing.T, entry proto.LiveEntry, secret string, k proto.E2EKey) *sealedPublisher {
	pr, pw := io.Pipe()
	p := &sealedPublisher{pw: pw, cw: &countingWriter{w: pw}, done: make(chan error, 1)}
	p.lw = proto.NewLiveWriter(p.cw, k, entry.Channel)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, entry.PushURL, pr)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("Content-Type", proto.LiveContentType)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("push: %s %s", resp.Status, b)
			}
		}
		pr.CloseWithError(err)
		p.done <- err
	}()
	return p
}

// sealedReader reads a sealed channel from url in the background.
type sealedReader struct {
	out   bytes.Buffer
	head  proto.LiveHeadInfo // the latest
	heads int                // heads seen
	ctype string
	err   error
	done  chan struct{}
}

func readSealed(t *testing.T, url string, k proto.E2EKey, id proto.ItemID) *sealedReader {
	t.Helper()
	return readSealedWith(t, url, k, id, nil)
}

// readSealedWith is readSealed with the reader's options set by opt.
func readSealedWith(t *testing.T, url string, k proto.E2EKey, id proto.ItemID, opt func(*proto.LiveReader)) *sealedReader {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	r := &sealedReader{ctype: resp.Header.Get("Content-Type"), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		defer resp.Body.Close()
		lr := proto.NewLiveReader(resp.Body, k, id)
		lr.OnHead = func(h proto.LiveHeadInfo) { r.head = h; r.heads++ }
		if opt != nil {
			opt(lr)
		}
		if _, r.err = lr.Head(); r.err != nil {
			return
		}
		_, r.err = lr.WriteTo(&r.out)
		io.Copy(io.Discard, resp.Body) // the trailer comes after the last record
		if r.err == nil && resp.Trailer.Get(relay.LiveEndTrailer) != "ok" {
			r.err = errors.New("clean end without the trailer")
		}
	}()
	return r
}

func (r *sealedReader) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatal("sealed reader did not end")
	}
}

// TestLive1Relays: a sealed channel through two VOLUNTEER relays (the
// rendezvous lets volunteers carry sealed channels). Readers get the head
// first and start at the latest sync record (or the live edge when there
// is none yet); the downstream relay gets the records intact over the
// mesh, and the entry relay forwards one copy for two readers there.
func TestLive1Relays(t *testing.T) {
	m := startMeshWith(t, devmesh.Config{Relays: 2, Volunteers: 2})
	id, secret := proto.NewLiveSecret()
	k := proto.NewE2EKey()
	// Volunteers carry sealed channels only; an unknown format is refused.
	for _, q := range []string{"", "?enc=e2e1"} {
		req, _ := http.NewRequest(http.MethodPost, m.URL+"/v1/live/"+id.String()+q, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("POST /v1/live/ID%s on a mesh of volunteers: %s %s, want a refusal", q, resp.Status, b)
		}
	}
	entry := liveEntrySealed(t, m.URL, id, secret)
	var a, b *relay.Server
	for _, r := range m.Relays {
		if r.ID() == entry.Relay {
			a = r
		} else {
			b = r
		}
	}
	waitFor(t, "the two relays connected over the mesh", 10*time.Second, func() bool {
		return b.Config().Node.Connected(a.ID())
	})
	pub := startSealedPublisher(t, entry, secret, k)
	meta := proto.LiveMeta{Type: "video/webm;codecs=vp8", Name: "cam.webm"}
	if err := pub.lw.Head(meta, []byte("INIT")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the channel's head on the entry relay", 10*time.Second, func() bool {
		return a.LiveStats().BytesIn == pub.cw.n.Load()
	})
	// inRing waits until the entry relay holds everything written.
	inRing := func() {
		t.Helper()
		waitFor(t, "the records in the entry relay's ring", 10*time.Second, func() bool {
			return a.LiveStats().BytesIn == pub.cw.n.Load()
		})
	}

	// R0 joins before any sync record: from the live edge.
	r0 := readSealed(t, liveRedirect(t, m.URL, id, a.ID()), k, id)
	waitFor(t, "R0 subscribed", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 1 })
	var all bytes.Buffer
	write := func(sync bool, s string) {
		t.Helper()
		var err error
		if sync {
			_, err = pub.lw.Sync([]byte(s))
		} else {
			_, err = pub.lw.Write([]byte(s))
		}
		if err != nil {
			t.Fatal(err)
		}
		all.WriteString(s)
	}
	write(false, "d0;")
	write(true, "S0;")
	write(false, "d1;")
	write(false, "d2;")
	inRing()
	// R1 joins mid-stream: from S0.
	r1 := readSealed(t, liveRedirect(t, m.URL, id, a.ID()), k, id)
	waitFor(t, "R1 subscribed", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 2 })
	write(false, "d3;")
	write(true, "S1;")
	write(false, "d4;")
	inRing()
	// R2 and R3 join on B: B's copy starts at S1, with the head first.
	before := pub.cw.n.Load()
	r2 := readSealed(t, liveRedirect(t, m.URL, id, b.ID()), k, id)
	r3 := readSealed(t, liveRedirect(t, m.URL, id, b.ID()), k, id)
	waitFor(t, "R2 and R3 subscribed on B", 10*time.Second, func() bool {
		return b.LiveStats().Subscribers == 2 && a.LiveStats().Subscribers == 3
	})
	write(false, "d5;")
	write(true, "S2;")
	write(false, strings.Repeat("x", 3*proto.LiveMaxPlain)) // several records
	if err := pub.lw.Close(); err != nil {
		t.Fatal(err)
	}
	pub.pw.Close()
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}
	s := all.String()
	want := []string{s[strings.Index(s, "S0;")-len("d0;"):], s[strings.Index(s, "S0;"):], s[strings.Index(s, "S1;"):], s[strings.Index(s, "S1;"):]}
	for i, r := range []*sealedReader{r0, r1, r2, r3} {
		r.wait(t)
		if r.err != nil || r.out.String() != want[i] || r.head.Meta != meta || string(r.head.Init) != "INIT" || r.ctype != proto.LiveContentType {
			t.Errorf("R%d: got %d bytes (want %d, equal %v), head %+v, Content-Type %q, err %v", i, r.out.Len(), len(want[i]), r.out.String() == want[i], r.head, r.ctype, r.err)
		}
	}
	// One copy to B: the records from S1 on (the head is sent apart).
	sa, sb := a.LiveStats(), b.LiveStats()
	headLen := int64(proto.LiveMinRecord + 4 + len(`{"type":"video/webm;codecs=vp8","name":"cam.webm"}`) + len("INIT"))
	s1Off := headLen + 2*int64(proto.LiveMinRecord+3) + 3*int64(proto.LiveMinRecord+3) // d0 S0 d1 d2 d3 before S1
	wantFwd := pub.cw.n.Load() - s1Off
	if len(sa.Forwarded) != 1 || sa.Forwarded[b.ID()] != wantFwd {
		t.Errorf("entry relay forwarded %v, want one copy of %d bytes to B (written %d, %d before R2 joined)", sa.Forwarded, wantFwd, pub.cw.n.Load(), before)
	}
	if len(sb.Forwarded) != 0 {
		t.Errorf("B forwarded %v", sb.Forwarded)
	}
	waitFor(t, "channels gone from both relays", 10*time.Second, func() bool {
		return a.LiveStats().Channels == 0 && b.LiveStats().Channels == 0
	})
}

// tamperWriter is a hostile relay's response writer: it passes a sealed
// channel's records on, flipping a byte of, or dropping, record number
// `at` (counted from 0, the head included).
type tamperWriter struct {
	http.ResponseWriter
	mode string
	at   int
	buf  []byte
	n    int
}

func (tw *tamperWriter) Unwrap() http.ResponseWriter { return tw.ResponseWriter }

func (tw *tamperWriter) Write(p []byte) (int, error) {
	tw.buf = append(tw.buf, p...)
	for len(tw.buf) >= 4 {
		l := 4 + int(binary.BigEndian.Uint32(tw.buf))
		if len(tw.buf) < l {
			break
		}
		rec := tw.buf[:l]
		if tw.n == tw.at {
			switch tw.mode {
			case "flip":
				rec[l-20] ^= 1
			case "drop":
				rec = nil
			}
		}
		tw.n++
		if _, err := tw.ResponseWriter.Write(rec); err != nil {
			return 0, err
		}
		tw.buf = tw.buf[l:]
	}
	return len(p), nil
}

// TestLive1HostileRelay: a relay that lies (a real relay behind a proxy
// that flips a byte of, or drops, a record of what it sends to some
// readers) is caught by the Go reader with the named error, and the bytes
// the relay is given contain no plaintext.
func TestLive1HostileRelay(t *testing.T) {
	var (
		mu   sync.Mutex
		seen bytes.Buffer // what the relay received from the publisher
	)
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v1/live/") {
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.TeeReader(r.Body, writerFunc(func(p []byte) (int, error) {
					mu.Lock()
					defer mu.Unlock()
					return seen.Write(p)
				})), r.Body}
			}
			if mode := r.URL.Query().Get("tamper"); mode != "" {
				w = &tamperWriter{ResponseWriter: w, mode: mode, at: 3}
			}
			h.ServeHTTP(w, r)
		})
	}
	m, id, k, pub := sealedOnWrappedRelay(t, wrap)
	a := m.Relays[0]
	pub.lw.Head(proto.LiveMeta{Type: "text/plain"}, nil)
	waitFor(t, "the channel on the relay", 10*time.Second, func() bool { return a.LiveStats().BytesIn == pub.cw.n.Load() })
	loc := liveRedirect(t, m.URL, id, a.ID())
	if !strings.HasPrefix(loc, m.RelayURLs[0]+"/") {
		t.Fatalf("readers sent to %s, not to the relay's own listener", loc)
	}
	honest := readSealed(t, loc, k, id)
	flipped := readSealed(t, loc+"&tamper=flip", k, id)
	dropped := readSealed(t, loc+"&tamper=drop", k, id)
	wrongKey := readSealed(t, loc, proto.NewE2EKey(), id)
	waitFor(t, "four readers", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 4 })
	const marker = "PLAINTEXT-MARKER-7f3a"
	var want bytes.Buffer
	for i := range 6 {
		s := fmt.Sprintf("%s %d;", marker, i)
		pub.lw.Write([]byte(s))
		want.WriteString(s)
	}
	pub.lw.Close()
	pub.pw.Close()
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}
	honest.wait(t)
	if honest.err != nil || honest.out.String() != want.String() {
		t.Errorf("honest reader: %q, %v", honest.out.String(), honest.err)
	}
	flipped.wait(t)
	var re *proto.LiveRecordError
	if !errors.Is(flipped.err, proto.ErrLiveIntegrity) || !errors.As(flipped.err, &re) || re.Seq != 2 || !strings.HasPrefix(want.String(), flipped.out.String()) || flipped.out.Len() != len(fmt.Sprintf("%s 0;%s 1;", marker, marker)) {
		t.Errorf("reader of a flipped byte: %q, %v; want records 0 and 1, then an integrity error at record 2", flipped.out.String(), flipped.err)
	}
	dropped.wait(t)
	if !errors.Is(dropped.err, proto.ErrLiveMissing) || dropped.err.Error() != "record 2 missing (got 3): the relay dropped or reordered data" {
		t.Errorf("reader of a dropped record: %q, %v", dropped.out.String(), dropped.err)
	}
	wrongKey.wait(t)
	if !errors.Is(wrongKey.err, proto.ErrLiveIntegrity) || wrongKey.out.Len() != 0 {
		t.Errorf("reader with a wrong key: %q, %v", wrongKey.out.String(), wrongKey.err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen.Len() < want.Len() {
		t.Fatalf("the relay saw %d bytes, fewer than the %d of plaintext", seen.Len(), want.Len())
	}
	if bytes.Contains(seen.Bytes(), []byte(marker)) || bytes.Contains(seen.Bytes(), []byte("text/plain")) {
		t.Errorf("the relay saw plaintext")
	}
}

// teeWriter is a recording relay's response writer: it passes the
// relay's bytes on and keeps a copy.
type teeWriter struct {
	http.ResponseWriter
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (tw *teeWriter) Unwrap() http.ResponseWriter { return tw.ResponseWriter }

func (tw *teeWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	tw.buf.Write(p)
	tw.mu.Unlock()
	return tw.ResponseWriter.Write(p)
}

// TestLive1ReplayedChannel: a relay that replays (a real relay behind a
// proxy that records a sealed channel's bytes as a reader got them, and
// serves later readers the recording instead of the channel) is caught
// by the reader's clock: a reader that gets the recording 10 minutes
// later and then nothing fails with the stale error after its CatchUp; a
// reader that gets a whole channel replayed 20 minutes later fails at its
// last record; a reader of the real relay at the same time gets every
// byte from where it joined. The clock of the publisher and the readers
// is a fake one (real time plus an offset the test moves on), so no one
// waits 10 minutes.
func TestLive1ReplayedChannel(t *testing.T) {
	var (
		mu       sync.Mutex
		recorded bytes.Buffer // what the recording reader got from the relay
		replay   []byte       // what the proxy serves: a recording taken earlier
		offset   atomic.Int64
	)
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Query().Get("replay") {
			case "record":
				w = &teeWriter{ResponseWriter: w, mu: &mu, buf: &recorded}
			case "serve": // the recording, then nothing until the reader leaves
				mu.Lock()
				b := replay
				mu.Unlock()
				w.Header().Set("Content-Type", proto.LiveContentType)
				w.Write(b)
				http.NewResponseController(w).Flush()
				if r.URL.Query().Get("stall") != "" {
					<-r.Context().Done()
				}
				return
			}
			h.ServeHTTP(w, r)
		})
	}
	m, id, k, pub := sealedOnWrappedRelay(t, wrap)
	a := m.Relays[0]
	pub.lw.Now = now
	pub.lw.Head(proto.LiveMeta{Type: "text/plain"}, nil)
	inRing := func() {
		t.Helper()
		waitFor(t, "the records in the relay's ring", 10*time.Second, func() bool { return a.LiveStats().BytesIn == pub.cw.n.Load() })
	}
	inRing()
	loc := liveRedirect(t, m.URL, id, a.ID())
	if !strings.HasPrefix(loc, m.RelayURLs[0]+"/") {
		t.Fatalf("readers sent to %s, not to the relay's own listener", loc)
	}
	withClock := func(catchUp time.Duration) func(*proto.LiveReader) {
		return func(lr *proto.LiveReader) { lr.Now, lr.CatchUp = now, catchUp }
	}
	recorder := readSealedWith(t, loc+"&replay=record", k, id, withClock(0))
	waitFor(t, "the recording reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 1 })
	pub.lw.Sync([]byte("old0;"))
	pub.lw.Write([]byte("old1;"))
	pub.lw.Write([]byte("old2;"))
	inRing()
	waitFor(t, "the recording of the head and 3 records", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return int64(recorded.Len()) == pub.cw.n.Load()
	})
	take := func() {
		mu.Lock()
		defer mu.Unlock()
		replay = bytes.Clone(recorded.Bytes())
	}
	take()

	// 10 minutes later.
	offset.Add(int64(10 * time.Minute))
	pub.lw.Sync([]byte("new0;"))
	pub.lw.Write([]byte("new1;"))
	inRing()
	honest := readSealedWith(t, loc, k, id, withClock(0))
	// The stalled replay's reader gives up after 1 s of no live edge
	// (the real clock: the CatchUp timer); it never gets one.
	stalled := readSealedWith(t, loc+"&replay=serve&stall=1", k, id, withClock(time.Second))
	waitFor(t, "the honest reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 2 })
	stalled.wait(t)
	var se *proto.LiveStaleError
	if !errors.Is(stalled.err, proto.ErrLiveStale) || !errors.As(stalled.err, &se) || se.Lag < 10*time.Minute || !strings.HasPrefix("old0;old1;old2;", stalled.out.String()) {
		t.Errorf("reader of a stalled replay: %q, %v; want a prefix of the recording, then a stale error 10 minutes behind", stalled.out.String(), stalled.err)
	}
	if stalled.err != nil && !strings.HasPrefix(stalled.err.Error(), "the channel is 10m") {
		t.Errorf("stale error %q, want it to say how far behind", stalled.err)
	}
	pub.lw.Write([]byte("new2;"))
	pub.lw.Close()
	pub.pw.Close()
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}
	honest.wait(t)
	if honest.err != nil || honest.out.String() != "new0;new1;new2;" {
		t.Errorf("reader of the real relay: %q, %v; want new0;new1;new2;", honest.out.String(), honest.err)
	}
	recorder.wait(t)
	const all = "old0;old1;old2;new0;new1;new2;"
	if recorder.err != nil || recorder.out.String() != all {
		t.Errorf("recording reader: %q, %v", recorder.out.String(), recorder.err)
	}

	// The whole channel, replayed 20 minutes after it went live (10
	// after its end): the last record comes, the live edge never did.
	take()
	offset.Add(int64(10 * time.Minute))
	whole := readSealedWith(t, loc+"&replay=serve", k, id, withClock(0))
	whole.wait(t)
	if !errors.Is(whole.err, proto.ErrLiveStale) || whole.out.String() != all {
		t.Errorf("reader of a whole replayed channel: %q, %v; want everything but the end, and a stale error", whole.out.String(), whole.err)
	}
	// Replayed within MaxLag of its end, the same recording reads
	// cleanly up to its last record (it is live enough), which shows
	// the reader fails for the time, not the bytes.
	offset.Add(int64(-10 * time.Minute))
	fresh := readSealedWith(t, loc+"&replay=serve", k, id, withClock(0))
	fresh.wait(t)
	if fresh.out.String() != all || fresh.err == nil || fresh.err.Error() != "clean end without the trailer" {
		t.Errorf("reader of the recording at the channel's time: %q, %v; want all of it and a clean end (the proxy sends no trailer)", fresh.out.String(), fresh.err)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// wsPublisher dials a sealed channel's WebSocket publish.
func wsPublisher(t *testing.T, pushURL string, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	t.Helper()
	u := "ws" + strings.TrimPrefix(pushURL, "http")
	return websocket.DefaultDialer.Dial(u, hdr)
}

// closeCode reads until the relay closes and returns its close code and
// reason, and the text messages seen.
func closeCode(ws *websocket.Conn) (int, string, []string) {
	var texts []string
	ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		typ, b, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code, ce.Text, texts
			}
			return -1, err.Error(), texts
		}
		if typ == websocket.TextMessage {
			texts = append(texts, string(b))
		}
	}
}

// TestLive1WebSocketPublish: the browser's way to publish a sealed
// channel, through the rendezvous's tunnel (relays not reachable
// directly): a good session ends cleanly (close 1000) and readers get it
// all; a bad first message, a wrong secret, a disallowed origin, a
// record over the limit and a dropped socket are refused or end the
// channel not cleanly, with the close codes of the spec.
func TestLive1WebSocketPublish(t *testing.T) {
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1, Rendezvous: rendezvous.Config{STUNAddr: rendezvous.STUNOff}})
	a := m.Relays[0]
	k := proto.NewE2EKey()

	t.Run("clean", func(t *testing.T) {
		id, secret := proto.NewLiveSecret()
		entry := liveEntrySealed(t, m.URL, id, secret)
		if !strings.HasPrefix(entry.PushURL, m.URL+"/v1/relays/") {
			t.Fatalf("push URL %s is not through the rendezvous's tunnel", entry.PushURL)
		}
		// As a page of the rendezvous publishes: with its origin.
		ws, _, err := wsPublisher(t, entry.PushURL, http.Header{"Origin": {m.URL}})
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"secret":%q,"enc":"live1"}`, secret))
		_, ok, err := ws.ReadMessage()
		if err != nil || string(ok) != `{"ok":true}` {
			t.Fatalf("answer %q, %v", ok, err)
		}
		lw := proto.NewLiveWriter(writerFunc(func(p []byte) (int, error) {
			return len(p), ws.WriteMessage(websocket.BinaryMessage, p)
		}), k, id)
		lw.Head(proto.LiveMeta{Type: "video/webm"}, []byte("init"))
		waitFor(t, "the head on the relay", 10*time.Second, func() bool { return a.LiveStats().Channels == 1 && a.LiveStats().BytesIn > 0 })
		// The relay's messages, read from here on by one goroutine.
		texts := make(chan string, 16)
		closed := make(chan [2]any, 1)
		go func() {
			for {
				typ, b, err := ws.ReadMessage()
				if err != nil {
					var ce *websocket.CloseError
					if errors.As(err, &ce) {
						closed <- [2]any{ce.Code, ce.Text}
					} else {
						closed <- [2]any{-1, err.Error()}
					}
					close(texts)
					return
				}
				if typ == websocket.TextMessage {
					texts <- string(b)
				}
			}
		}()
		r := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
		for msg := range texts {
			if msg == `{"subscribers":1}` {
				break
			}
		}
		lw.Sync([]byte("cluster;"))
		lw.Write([]byte("frames;"))
		lw.Close()
		select {
		case c := <-closed:
			if c[0] != websocket.CloseNormalClosure {
				t.Errorf("close %v %q, want 1000", c[0], c[1])
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the relay did not close after the last record")
		}
		r.wait(t)
		if r.err != nil || r.out.String() != "cluster;frames;" {
			t.Errorf("reader: %q, %v", r.out.String(), r.err)
		}
	})

	hello := func(t *testing.T, entry proto.LiveEntry, msg string) *websocket.Conn {
		ws, _, err := wsPublisher(t, entry.PushURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		ws.WriteMessage(websocket.TextMessage, []byte(msg))
		return ws
	}
	t.Run("bad first message", func(t *testing.T) {
		id, secret := proto.NewLiveSecret()
		entry := liveEntrySealed(t, m.URL, id, secret)
		ws, _, err := wsPublisher(t, entry.PushURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.BinaryMessage, []byte("not a hello"))
		if code, reason, _ := closeCode(ws); code != 4000+int(proto.StatusMalformed) {
			t.Errorf("close %d %q, want %d", code, reason, 4000+int(proto.StatusMalformed))
		}
		ws = hello(t, entry, `{"secret":"`+secret+`","enc":"e2e1"}`)
		if code, reason, _ := closeCode(ws); code != 4000+int(proto.StatusMalformed) || !strings.Contains(reason, "live1") {
			t.Errorf("wrong enc: close %d %q", code, reason)
		}
		_, other := proto.NewLiveSecret()
		ws = hello(t, entry, `{"secret":"`+other+`","enc":"live1"}`)
		if code, reason, _ := closeCode(ws); code != 4000+int(proto.StatusForbidden) {
			t.Errorf("wrong secret: close %d %q", code, reason)
		}
		_, resp, err := wsPublisher(t, entry.PushURL, http.Header{"Origin": {"https://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("disallowed origin: %v, %v", resp, err)
		}
	})

	t.Run("record over the limit", func(t *testing.T) {
		id, secret := proto.NewLiveSecret()
		entry := liveEntrySealed(t, m.URL, id, secret)
		ws := hello(t, entry, fmt.Sprintf(`{"secret":%q,"enc":"live1"}`, secret))
		ws.ReadMessage() // ok
		ls := proto.NewLiveSealer(k, id)
		head, _ := proto.AppendLiveHead(nil, proto.LiveMeta{Type: "x/y"}, nil)
		ws.WriteMessage(websocket.BinaryMessage, ls.SealRecord(nil, proto.LiveHead, 0, 0, time.Now(), head))
		waitFor(t, "the head on the relay", 10*time.Second, func() bool { return a.LiveStats().Channels == 1 && a.LiveStats().BytesIn > 0 })
		r := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
		waitFor(t, "a reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 1 })
		ws.WriteMessage(websocket.BinaryMessage, ls.SealRecord(nil, proto.LiveData, 0, 0, time.Now(), []byte("fine;")))
		ws.WriteMessage(websocket.BinaryMessage, make([]byte, proto.LiveMaxRecord+1))
		if code, reason, _ := closeCode(ws); code != 4000+int(proto.StatusTooLarge) {
			t.Errorf("close %d %q, want %d", code, reason, 4000+int(proto.StatusTooLarge))
		}
		r.wait(t)
		if !errors.Is(r.err, proto.ErrLiveNoEnd) || r.out.String() != "fine;" {
			t.Errorf("reader: %q, %v; want fine; and no end mark", r.out.String(), r.err)
		}
	})

	t.Run("dropped socket", func(t *testing.T) {
		id, secret := proto.NewLiveSecret()
		entry := liveEntrySealed(t, m.URL, id, secret)
		ws := hello(t, entry, fmt.Sprintf(`{"secret":%q,"enc":"live1"}`, secret))
		ws.ReadMessage() // ok
		lw := proto.NewLiveWriter(writerFunc(func(p []byte) (int, error) {
			return len(p), ws.WriteMessage(websocket.BinaryMessage, p)
		}), k, id)
		lw.Head(proto.LiveMeta{Type: "x/y"}, nil)
		waitFor(t, "the head on the relay", 10*time.Second, func() bool { return a.LiveStats().Channels == 1 && a.LiveStats().BytesIn > 0 })
		r := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
		waitFor(t, "a reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 1 })
		// A second publisher is refused; the first goes on.
		ws2 := hello(t, entry, fmt.Sprintf(`{"secret":%q,"enc":"live1"}`, secret))
		if code, reason, _ := closeCode(ws2); code != 4000+int(proto.StatusConflict) {
			t.Errorf("second publisher: close %d %q, want %d", code, reason, 4000+int(proto.StatusConflict))
		}
		in := a.LiveStats().BytesIn
		lw.Write([]byte("before the drop;"))
		waitFor(t, "the record on the relay", 10*time.Second, func() bool { return a.LiveStats().BytesIn > in })
		ws.UnderlyingConn().Close()
		r.wait(t)
		if !errors.Is(r.err, proto.ErrLiveNoEnd) || r.out.String() != "before the drop;" {
			t.Errorf("reader: %q, %v; want the bytes before the drop and no end mark", r.out.String(), r.err)
		}
	})
}

// TestLive1HeadChange: a publisher that changes its head mid-stream (a
// new recorder). A reader there before gets both heads in order; a
// reader joining after the change gets the new head first and starts at
// the live edge (the sync record before the new head is not a place to
// join under it), then at the next sync for later readers.
func TestLive1HeadChange(t *testing.T) {
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1})
	a := m.Relays[0]
	id, secret := proto.NewLiveSecret()
	k := proto.NewE2EKey()
	entry := liveEntrySealed(t, m.URL, id, secret)
	pub := startSealedPublisher(t, entry, secret, k)
	inRing := func() {
		t.Helper()
		waitFor(t, "the records in the relay's ring", 10*time.Second, func() bool { return a.LiveStats().BytesIn == pub.cw.n.Load() })
	}
	m0, m1 := proto.LiveMeta{Type: "video/webm;codecs=vp8"}, proto.LiveMeta{Type: "video/webm;codecs=vp9", Name: "second.webm"}
	pub.lw.Head(m0, []byte("init0"))
	pub.lw.Sync([]byte("A;"))
	inRing()
	early := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
	waitFor(t, "the early reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 1 })
	pub.lw.Write([]byte("a1;"))
	pub.lw.Head(m1, []byte("init1"))
	pub.lw.Write([]byte("b0;"))
	inRing()
	late := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
	waitFor(t, "the late reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 2 })
	pub.lw.Write([]byte("b1;"))
	pub.lw.Sync([]byte("B;"))
	inRing()
	later := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
	waitFor(t, "the later reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 3 })
	pub.lw.Write([]byte("b2;"))
	pub.lw.Close()
	pub.pw.Close()
	if err := <-pub.done; err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		r     *sealedReader
		want  string
		head  proto.LiveMeta
		init  string
		heads int
	}{
		{"early", early, "A;a1;b0;b1;B;b2;", m1, "init1", 2},
		{"late", late, "b1;B;b2;", m1, "init1", 1},
		{"later", later, "B;b2;", m1, "init1", 1},
	} {
		c.r.wait(t)
		if c.r.err != nil || c.r.out.String() != c.want || c.r.head.Meta != c.head || string(c.r.head.Init) != c.init || c.r.heads != c.heads {
			t.Errorf("%s reader: %q, head %+v, %d heads, err %v; want %q under %+v after %d heads", c.name, c.r.out.String(), c.r.head, c.r.heads, c.r.err, c.want, c.head, c.heads)
		}
	}
}

// TestLive1BadRecordPut: a PUT publisher whose body holds a record with a
// length out of bounds is answered 4xx with the reason, and the channel
// ends for its readers without its end mark.
func TestLive1BadRecordPut(t *testing.T) {
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1})
	a := m.Relays[0]
	id, secret := proto.NewLiveSecret()
	k := proto.NewE2EKey()
	entry := liveEntrySealed(t, m.URL, id, secret)
	pr, pw := io.Pipe()
	type answer struct {
		code int
		body string
		err  error
	}
	ans := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, entry.PushURL, pr)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+secret)
		req.Header.Set("Content-Type", proto.LiveContentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ans <- answer{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ans <- answer{code: resp.StatusCode, body: string(b)}
	}()
	ls := proto.NewLiveSealer(k, id)
	head, _ := proto.AppendLiveHead(nil, proto.LiveMeta{Type: "x/y"}, nil)
	pw.Write(ls.SealRecord(nil, proto.LiveHead, 0, 0, time.Now(), head))
	waitFor(t, "the head on the relay", 10*time.Second, func() bool { return a.LiveStats().BytesIn > 0 })
	r := readSealed(t, m.URL+"/v1/live/"+id.String(), k, id)
	waitFor(t, "a reader", 10*time.Second, func() bool { return a.LiveStats().Subscribers == 1 })
	pw.Write(ls.SealRecord(nil, proto.LiveData, 0, 0, time.Now(), []byte("ok;")))
	bad := binary.BigEndian.AppendUint32(nil, proto.LiveMaxRecord) // one byte too long with its len field
	pw.Write(bad)
	var got answer
	select {
	case got = <-ans:
	case <-time.After(30 * time.Second):
		t.Fatal("no answer to the bad record")
	}
	pw.Close()
	if got.err != nil || got.code < 400 || got.code >= 500 || !strings.Contains(got.body, "bad record") {
		t.Errorf("answer %d %q, %v; want 4xx naming the bad record", got.code, got.body, got.err)
	}
	r.wait(t)
	if !errors.Is(r.err, proto.ErrLiveNoEnd) || r.out.String() != "ok;" {
		t.Errorf("reader: %q, %v; want ok; and no end mark", r.out.String(), r.err)
	}
}

// TestLive1WebSocketShutdown: a relay shutting down closes its WebSocket
// publishers with 1001 and the reason.
func TestLive1WebSocketShutdown(t *testing.T) {
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1})
	id, secret := proto.NewLiveSecret()
	entry := liveEntrySealed(t, m.URL, id, secret)
	ws, _, err := wsPublisher(t, entry.PushURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, fmt.Appendf(nil, `{"secret":%q,"enc":"live1"}`, secret))
	if _, ok, err := ws.ReadMessage(); err != nil || string(ok) != `{"ok":true}` {
		t.Fatalf("answer %q, %v", ok, err)
	}
	go m.Close()
	if code, reason, _ := closeCode(ws); code != websocket.CloseGoingAway {
		t.Errorf("close %d %q, want 1001", code, reason)
	}
}
