package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
)

// Live channels (issue 12).

// liveEntry asks the rendezvous at base where to push channel (id, secret).
func liveEntry(t *testing.T, base string, id proto.ItemID, secret string) proto.LiveEntry {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/live/"+id.String(), nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST /v1/live: %s %s", resp.Status, b)
	}
	var e proto.LiveEntry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		t.Fatal(err)
	}
	return e
}

// liveRedirect returns where the rendezvous sends a reader of the channel
// pinned to relay via, without following it.
func liveRedirect(t *testing.T, base string, id proto.ItemID, via string) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(base + "/v1/live/" + id.String() + "?via=" + url.QueryEscape(via))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("GET /v1/live via %s: %s, want 307", via, resp.Status)
	}
	return resp.Header.Get("Location")
}

// throttledReader reads at most rate bytes per second from r until fast is
// set.
type throttledReader struct {
	r    io.Reader
	rate int
	fast *atomic.Bool
}

func (t *throttledReader) Read(p []byte) (int, error) {
	if t.fast.Load() {
		return t.r.Read(p)
	}
	n := min(len(p), t.rate/10)
	time.Sleep(100 * time.Millisecond) // rate shaping, not synchronisation
	return t.r.Read(p[:n])
}

// TestLiveFanOut: a live channel with five subscribers through two relays.
// The publisher pushes to relay A; two readers read from A and three from
// B, one of them a real TCP reader throttled to 10 KiB/s with a small
// receive buffer. The throttled reader is cut off (its body is reset, and
// B counts the cut with its reason); the four others receive every byte
// in order and end cleanly; A sent exactly one copy to B; and the
// publisher was never held back by the slow reader (it writes only as
// fast as the four others read, so a stall would hang the test).
func TestLiveFanOut(t *testing.T) {
	m := startMesh(t, 2, relay.Config{Live: relay.LiveConfig{Buffer: 2 << 20, Queue: 1 << 20}})
	id, secret := proto.NewLiveSecret()
	entry := liveEntry(t, m.URL, id, secret)
	var a, b *relay.Server
	for _, r := range m.Relays {
		if r.ID() == entry.Relay {
			a = r
		} else {
			b = r
		}
	}
	if a == nil || b == nil {
		t.Fatalf("entry relay %s is not one of the mesh's", entry.Relay)
	}
	// The rendezvous sends readers to a relay with a mesh connection to
	// the source; ?via pins B, so wait for B's connection first.
	waitFor(t, "the two relays connected over the mesh", 10*time.Second, func() bool {
		return b.Config().Node.Connected(a.ID())
	})

	// The publisher: a chunked PUT fed by a pipe. The channel exists
	// once the relay has the request, before the first byte.
	pr, pw := io.Pipe()
	pubDone := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPut, entry.PushURL, pr)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("push: %s", resp.Status)
			}
		}
		pubDone <- err
	}()
	if _, err := pw.Write([]byte{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "channel on the entry relay", 10*time.Second, func() bool { return a.LiveStats().Channels == 1 })

	// Four fast readers: two on A, two on B.
	type result struct {
		sum     [32]byte
		n       int64
		trailer string
		err     error
	}
	var progress [4]atomic.Int64
	wake := make(chan struct{}, 1)
	results := make([]chan result, 4)
	ready := make(chan struct{}, 4)
	for i := range 4 {
		via := a.ID()
		if i >= 2 {
			via = b.ID()
		}
		loc := liveRedirect(t, m.URL, id, via)
		results[i] = make(chan result, 1)
		go func() {
			resp, err := http.Get(loc)
			if err != nil {
				results[i] <- result{err: err}
				ready <- struct{}{}
				return
			}
			defer resp.Body.Close()
			ready <- struct{}{}
			h := sha256.New()
			buf := make([]byte, 32<<10)
			var res result
			for {
				n, err := resp.Body.Read(buf)
				h.Write(buf[:n])
				res.n += int64(n)
				progress[i].Store(res.n)
				select {
				case wake <- struct{}{}:
				default:
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					res.err = err
					break
				}
			}
			copy(res.sum[:], h.Sum(nil))
			res.trailer = resp.Trailer.Get(relay.LiveEndTrailer)
			results[i] <- res
		}()
	}
	for range 4 {
		<-ready
	}

	// The slow reader: raw TCP on B with a 4 KiB receive buffer, reading
	// 10 KiB/s until it is cut.
	u, _ := url.Parse(liveRedirect(t, m.URL, id, b.ID()))
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host)
	var fast atomic.Bool
	slowDone := make(chan error, 1)
	slowN := make(chan int64, 1)
	br := bufio.NewReaderSize(&throttledReader{r: conn, rate: 10 << 10, fast: &fast}, 1024)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("slow reader: %s %s", resp.Status, b)
	}
	go func() {
		n, err := io.Copy(io.Discard, resp.Body)
		slowN <- n
		slowDone <- err
	}()
	waitFor(t, "six subscribers on the relays (B's copy counted on A)", 10*time.Second, func() bool {
		return a.LiveStats().Subscribers == 3 && b.LiveStats().Subscribers == 3
	})

	// Publish until B cut the slow reader off, then 1 MiB more. Each
	// chunk waits for the fast readers to be within 256 KiB.
	h := sha256.New()
	var sent int64
	const chunk = 32 << 10
	cutAt := int64(-1)
	for i := uint64(0); cutAt < 0 || sent < cutAt+1<<20; i++ {
		if sent > 256<<20 {
			t.Fatalf("slow reader not cut off after %d bytes", sent)
		}
		p := meshtest.RandomBytes(chunk, i)
		if _, err := pw.Write(p); err != nil {
			t.Fatal(err)
		}
		h.Write(p)
		sent += chunk
		for {
			low := sent
			for j := range progress {
				low = min(low, progress[j].Load())
			}
			if sent-low <= 256<<10 {
				break
			}
			select {
			case <-wake:
			case <-time.After(30 * time.Second):
				t.Fatalf("fast readers stalled at %d of %d bytes", low, sent)
			}
		}
		if cutAt < 0 && b.LiveStats().Cutoffs["slow_subscriber"] > 0 {
			cutAt = sent
			fast.Store(true)
		}
	}
	pw.Close()
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	var want [32]byte
	copy(want[:], h.Sum(nil))
	for i, rc := range results {
		r := <-rc
		if r.err != nil || r.n != sent || r.sum != want || r.trailer != "ok" {
			t.Errorf("fast reader %d: got %d bytes (intact %v), trailer %q, err %v; want %d intact bytes, trailer ok", i, r.n, r.sum == want, r.trailer, r.err, sent)
		}
	}
	serr := <-slowDone
	n := <-slowN
	if serr == nil || n >= sent {
		t.Errorf("slow reader: got %d of %d bytes, err %v; want it cut off with an error", n, sent, serr)
	}
	t.Logf("published %d bytes; the slow reader was cut at %d published, after reading %d (%v)", sent, cutAt, n, serr)

	sa, sb := a.LiveStats(), b.LiveStats()
	if len(sa.Forwarded) != 1 || sa.Forwarded[b.ID()] != sent {
		t.Errorf("entry relay forwarded %v, want exactly one copy (%d bytes) to %s", sa.Forwarded, sent, b.ID())
	}
	if len(sb.Forwarded) != 0 {
		t.Errorf("second relay forwarded %v, want nothing", sb.Forwarded)
	}
	if sb.Cutoffs["slow_subscriber"] != 1 || len(sa.Cutoffs) != 0 {
		t.Errorf("cut-offs: A %v, B %v; want one slow subscriber on B", sa.Cutoffs, sb.Cutoffs)
	}
	waitFor(t, "channels gone from both relays", 10*time.Second, func() bool {
		return a.LiveStats().Channels == 0 && b.LiveStats().Channels == 0
	})
}

// TestLiveAccess: pushing needs the channel's secret, and a relay does
// not carry a channel it was not asked for by the rendezvous.
func TestLiveAccess(t *testing.T) {
	m := startMesh(t, 1, relay.Config{})
	id, secret := proto.NewLiveSecret()
	_, other := proto.NewLiveSecret()
	for _, tc := range []struct {
		name, secret string
		want         int
	}{
		{"no secret", "", http.StatusForbidden},
		{"another channel's secret", other, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, m.URL+"/v1/live/"+id.String(), nil)
			req.Header.Set("Authorization", "Bearer "+tc.secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("POST at the rendezvous: got %s, want %d", resp.Status, tc.want)
			}
			req, _ = http.NewRequest(http.MethodPut, m.RelayURLs[0]+"/v1/live/"+id.String(), nil)
			req.Header.Set("Authorization", "Bearer "+tc.secret)
			resp, err = http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("PUT at the relay: got %s, want %d", resp.Status, tc.want)
			}
		})
	}
	liveEntry(t, m.URL, id, secret) // the right secret is accepted
	resp, err := http.Get(m.RelayURLs[0] + "/v1/live/" + id.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET of a channel not pushed yet, at the relay: got %s, want 404", resp.Status)
	}
	// Through the rendezvous, which knows the channel from the POST and
	// sends the reader to its source relay with a token saying so: still
	// 404, which a reader that came before the publisher asks again on.
	resp, err = http.Get(m.URL + "/v1/live/" + id.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || resp.Request.URL.Host == strings.TrimPrefix(m.URL, "http://") {
		t.Errorf("GET of a channel not pushed yet, through the rendezvous: got %s from %s, want 404 from its relay", resp.Status, resp.Request.URL.Host)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.URL+"/v1/live/"+proto.NewItemID().String(), nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET of an unknown channel at the rendezvous: got %s, want 404", resp.Status)
	}
}

// TestEvSocketBroadcast: an unmodified evsocket-client sender (npm, under
// Node) broadcasts a 5 MB file to three evsocket-client receivers through
// the rendezvous's /v1/evsocket/{channel} (tunnelled to the relay that
// carries the channel); each receiver's bytes are intact, and an HTTP
// reader of the same channel (/v1/live/{id}) gets the same bytes and a
// clean end at "complete". Needs node and `npm ci` in
// testdata/evsocket; skipped without them unless MESHUP_REQUIRE_NODE=1.
func TestEvSocketBroadcast(t *testing.T) {
	node, err := exec.LookPath("node")
	dir, _ := filepath.Abs("testdata/evsocket")
	if _, serr := os.Stat(filepath.Join(dir, "node_modules", "evsocket-client")); err != nil || serr != nil {
		if os.Getenv("MESHUP_REQUIRE_NODE") != "" {
			t.Fatalf("node (%v) or testdata/evsocket/node_modules (%v) missing", err, serr)
		}
		t.Skip("needs node and `npm ci` in cmd/internal/e2e/testdata/evsocket")
	}
	m := startMesh(t, 2, relay.Config{})
	data := meshtest.RandomBytes(5_000_000, 12)
	file := filepath.Join(t.TempDir(), "file.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	name := "evsocket-test-channel-" + proto.NewItemID().String() // the capability
	id, err := proto.LiveID(name)
	if err != nil {
		t.Fatal(err)
	}
	ws := "ws" + strings.TrimPrefix(m.URL, "http") + "/v1/evsocket/" + name
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "broadcast.mjs"), ws, file, "3")
	cmd.Stderr = testWriter{t}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() || lines.Text() != "ready" {
		t.Fatalf("node: got %q (%v), want ready", lines.Text(), lines.Err())
	}
	// The same channel over HTTP, through the rendezvous's redirect.
	resp, err := http.Get(m.URL + "/v1/live/" + id.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTP reader: %s", resp.Status)
	}
	httpDone := make(chan []byte, 1)
	go func() {
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.Trailer.Get(relay.LiveEndTrailer) != "ok" {
			t.Errorf("HTTP reader: %d bytes, err %v, trailer %q; want a clean end", len(b), err, resp.Trailer.Get(relay.LiveEndTrailer))
		}
		httpDone <- b
	}()
	fmt.Fprintln(stdin, "go")
	want := fmt.Sprintf("%x", sha256.Sum256(data))
	for range 3 {
		if !lines.Scan() {
			t.Fatalf("node ended early: %v", lines.Err())
		}
		var r struct {
			Receiver int      `json:"receiver"`
			Type     string   `json:"type"`
			Bytes    int      `json:"bytes"`
			SHA256   string   `json:"sha256"`
			Events   []string `json:"events"`
		}
		if err := json.Unmarshal(lines.Bytes(), &r); err != nil {
			t.Fatalf("node: %q: %v", lines.Text(), err)
		}
		if r.Bytes != len(data) || r.SHA256 != want || r.Type != "application/octet-stream" {
			t.Errorf("receiver %d: %d bytes, sha256 %s, type %q, events %v; want %d bytes, sha256 %s", r.Receiver, r.Bytes, r.SHA256, r.Type, r.Events, len(data), want)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("node: %v", err)
	}
	if b := <-httpDone; sha256.Sum256(b) != sha256.Sum256(data) {
		t.Errorf("HTTP reader: %d bytes, not the file's %d", len(b), len(data))
	}
}

// testWriter logs what is written to it.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestEvSocketSlowMember: an EvSocket member that stops reading (a 4 KiB
// receive buffer) is cut off when it falls behind the live edge: its
// connection ends (with close code 1008 and the reason when the close
// frame could be written within a second, else dropped), and the cut is
// counted; the member beside it gets every byte, and the sender was never
// held back by it.
func TestEvSocketSlowMember(t *testing.T) {
	m := startMesh(t, 1, relay.Config{Live: relay.LiveConfig{Buffer: 1 << 20, Queue: 256 << 10}})
	r := m.Relays[0]
	u := "ws" + strings.TrimPrefix(m.RelayURLs[0], "http") + "/v1/evsocket/slow-member-test-" + proto.NewItemID().String()
	dial := func(rcvbuf int) *websocket.Conn {
		d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
			nd := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
				if rcvbuf > 0 {
					c.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
				}
				return nil
			}}
			return nd.Dial(network, addr)
		}}
		ws, _, err := d.Dial(u, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		var m proto.EvMessage
		if err := ws.ReadJSON(&m); err != nil || m.Event != proto.EvSync {
			t.Fatalf("greeting: got %+v, %v; want %s", m, err, proto.EvSync)
		}
		return ws
	}
	fast, slow := dial(0), dial(4096)
	sender := dial(0)
	var got atomic.Int64
	wake := make(chan struct{}, 1)
	fastDone := make(chan error, 1)
	go func() {
		for {
			typ, b, err := fast.ReadMessage()
			if err != nil {
				fastDone <- err
				return
			}
			if typ == websocket.BinaryMessage {
				if ev, p, err := proto.DecodeEvBinary(b); err == nil && ev == proto.EvStreaming {
					got.Add(int64(len(p)))
				}
			} else if m, _ := proto.DecodeEvText(b); m.Event == proto.EvComplete {
				fastDone <- nil
				return
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}()
	chunk := meshtest.RandomBytes(10240, 3)
	msg, _ := proto.AppendEvBinary(nil, proto.EvStreaming, chunk)
	var sent int64
	for r.LiveStats().Cutoffs["slow_subscriber"] == 0 {
		if sent > 64<<20 {
			t.Fatalf("slow member not cut off after %d bytes", sent)
		}
		if err := sender.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		sent += int64(len(chunk))
		for sent-got.Load() > 64<<10 {
			select {
			case <-wake:
			case <-time.After(30 * time.Second):
				t.Fatalf("fast member stalled at %d of %d bytes", got.Load(), sent)
			}
		}
	}
	if err := sender.WriteMessage(websocket.TextMessage, []byte(`{"event":"complete","data":{}}`)); err != nil {
		t.Fatal(err)
	}
	if err := <-fastDone; err != nil || got.Load() != sent {
		t.Errorf("fast member: got %d of %d bytes, err %v", got.Load(), sent, err)
	}
	var cerr error
	var slowN int
	slow.SetReadDeadline(time.Now().Add(20 * time.Second))
	for cerr == nil {
		var b []byte
		_, b, cerr = slow.ReadMessage()
		slowN += len(b)
	}
	t.Logf("slow member read %d bytes, then %v", slowN, cerr)
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(cerr, &ce):
		if ce.Code != websocket.ClosePolicyViolation || !strings.Contains(ce.Text, "fell behind") {
			t.Errorf("slow member: got %v, want close 1008 saying it fell behind", cerr)
		}
	case errors.As(cerr, &ne) && ne.Timeout():
		t.Errorf("slow member: its connection was not ended (%v)", cerr)
	}
}
