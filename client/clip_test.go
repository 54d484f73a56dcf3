package client_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// Clips (issue 12): pushed whole into relay memory at publish time,
// readable after the publisher left, from either holder.

// clipMesh is a rendezvous and n relays with cfg.
func clipMesh(t *testing.T, rcfg rendezvous.Config, n int, cfg relay.Config) (*rendezvoustest.Server, []*relaytest.Server) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rcfg.SigningKey = key
	rcfg.DeadAfter = time.Minute
	rv := rendezvoustest.Start(t, rcfg)
	var relays []*relaytest.Server
	for range n {
		c := cfg
		if c.PartSize == 0 {
			c.PartSize = partSize
		}
		if c.Window == 0 {
			c.Window = 256 << 10
		}
		relays = append(relays, relaytest.Start(t, rv.URL, c))
	}
	return rv, relays
}

func newClipClient(t *testing.T, rvURL string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Rendezvous: rvURL, Logger: relaytest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// holds reports whether relay r holds every byte of the clip: a complete
// held item.
func heldDone(r *relaytest.Server) (held int, done int64) {
	st := r.Server.Stats().Uploads
	return st.Held, st.Done
}

// exitOf returns the relay the rendezvous sends a read of url to.
func exitOf(t *testing.T, url string, relays []*relaytest.Server) *relaytest.Server {
	t.Helper()
	resp, err := rendezvoustest.NoRedirect.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("GET %s: got %s, want 307", url, resp.Status)
	}
	for _, r := range relays {
		if strings.HasPrefix(loc, r.URL+"/") {
			return r
		}
	}
	return nil
}

// getRange reads url with a Range header (none when rng is empty) and
// returns the status, body and Expires header.
func getRange(t *testing.T, url, rng string) (int, []byte, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	resp, err := rendezvoustest.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: body: %v", url, err)
	}
	return resp.StatusCode, body, resp.Header.Get("Expires")
}

// checkReads reads the plaintext clip at url whole and with Ranges, from
// a holder (which says when it expires).
func checkReads(t *testing.T, url string, data []byte) {
	t.Helper()
	checkReadsFrom(t, url, data, true)
}

func checkReadsFrom(t *testing.T, url string, data []byte, holder bool) {
	t.Helper()
	code, body, exp := getRange(t, url, "")
	if code != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET whole: got %d, %d bytes (first diff %d), want 200, %d bytes", code, len(body), meshtest.FirstDiff(body, data), len(data))
	}
	if holder && exp == "" {
		t.Errorf("GET whole: no Expires header")
	}
	for _, r := range []struct {
		h        string
		from, to int
	}{
		{"bytes=1000-2999", 1000, 3000},
		{fmt.Sprintf("bytes=%d-", len(data)-70000), len(data) - 70000, len(data)},
		{"bytes=-5", len(data) - 5, len(data)},
	} {
		code, body, _ := getRange(t, url, r.h)
		if code != http.StatusPartialContent || !bytes.Equal(body, data[r.from:r.to]) {
			t.Fatalf("GET Range %s: got %d, %d bytes, want 206, bytes %d-%d", r.h, code, len(body), r.from, r.to)
		}
	}
}

func TestClipOutlivesPublisher(t *testing.T) {
	t.Parallel()
	rv, relays := clipMesh(t, rendezvous.Config{}, 2, relay.Config{})
	plain := meshtest.RandomBytes(3<<20+5, 7)
	secret := meshtest.RandomBytes(1<<20+3, 8)
	c := newClipClient(t, rv.URL)
	pit, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Name: "clip.bin", Size: int64(len(plain)), Reader: bytes.NewReader(plain)})
	if err != nil {
		t.Fatalf("PublishClip plain: %v", err)
	}
	eit, err := c.PublishClip(ctx(t), client.Source{Name: "secret.png", MIME: "image/png", Size: int64(len(secret)), Reader: bytes.NewReader(secret)})
	if err != nil {
		t.Fatalf("PublishClip encrypted: %v", err)
	}
	if d := time.Until(pit.Expires); d < rendezvous.DefaultClipTTL-time.Minute || d > rendezvous.DefaultClipTTL {
		t.Errorf("clip expires in %v, want about %v (--clip-ttl)", d, rendezvous.DefaultClipTTL)
	}
	for _, r := range relays {
		eventually(t, "both clips stored on relay "+r.ID(), func() bool { held, done := heldDone(r); return held == 2 && done == 2 })
	}
	// Both holders serve them: the rendezvous redirects to each in turn
	// when the reader avoids the other.
	exits := map[string]bool{}
	for _, r := range relays {
		eventually(t, "the rendezvous knows both holders", func() bool {
			return exitOf(t, pit.DownloadURL+"?avoid="+r.ID(), relays) != r
		})
		exits[exitOf(t, pit.DownloadURL+"?avoid="+r.ID(), relays).ID()] = true
	}
	if len(exits) != 2 {
		t.Fatalf("reads went to %d holders, want 2", len(exits))
	}

	c.Close() // the publisher leaves
	beforeNeeds := relays[0].Server.Stats().Needs + relays[1].Server.Stats().Needs
	for _, r := range relays {
		checkReads(t, pit.DownloadURL+"?avoid="+r.ID(), plain)
	}
	var got bytes.Buffer
	if _, err := client.DownloadTo(ctx(t), eit.ShareURL, &got, client.FileOptions{}); err != nil || !bytes.Equal(got.Bytes(), secret) {
		t.Fatalf("encrypted clip after the publisher left: got %d bytes, %v, want %d bytes intact", got.Len(), err, len(secret))
	}
	if n := relays[0].Server.Stats().Needs + relays[1].Server.Stats().Needs; n != beforeNeeds {
		t.Errorf("relays asked for %d parts, want none: a clip is read from memory", n-beforeNeeds)
	}

	// One holder dies: the other serves every byte.
	dead := exitOf(t, pit.DownloadURL, relays)
	if dead == nil {
		t.Fatal("read not sent to a relay of the mesh")
	}
	dead.Close()
	eventually(t, "the rendezvous drops the dead holder", func() bool {
		e := exitOf(t, pit.DownloadURL, relays)
		return e != nil && e != dead
	})
	checkReads(t, pit.DownloadURL, plain)
	got.Reset()
	if _, err := client.DownloadTo(ctx(t), eit.ShareURL, &got, client.FileOptions{}); err != nil || !bytes.Equal(got.Bytes(), secret) {
		t.Fatalf("encrypted clip from the last holder: got %d bytes, %v, want %d bytes intact", got.Len(), err, len(secret))
	}
}

func TestClipRefused(t *testing.T) {
	t.Parallel()
	rv, _ := clipMesh(t, rendezvous.Config{MaxClipSize: 8 << 20}, 1, relay.Config{Budget: 4 << 20, Prefetch: 2})
	c := newClipClient(t, rv.URL)
	tests := []struct {
		name   string
		size   int
		status proto.Status
		says   string
	}{
		{"over max-clip-size", 9 << 20, proto.StatusTooLarge, "--max-clip-size"},
		{"no relay has room", 5 << 20, proto.StatusOverLimit, "no relay has room"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := make([]byte, tt.size)
			_, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Size: int64(len(data)), Reader: bytes.NewReader(data)})
			var pe *proto.Error
			if !errors.As(err, &pe) || pe.Status != tt.status || !strings.Contains(pe.Msg, tt.says) {
				t.Fatalf("PublishClip of %d bytes: got %v, want status %v saying %q", tt.size, err, tt.status, tt.says)
			}
		})
	}
	if got := rv.Server.Stats().Clips.Refused; got != 2 {
		t.Errorf("clips refused: got %d, want 2", got)
	}
	// One that fits is taken.
	data := meshtest.RandomBytes(1<<20, 3)
	if _, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Size: int64(len(data)), Reader: bytes.NewReader(data)}); err != nil {
		t.Fatalf("PublishClip of 1 MiB: %v", err)
	}
}

// TestClipEviction: a relay with a small budget evicts the least recently
// used complete clip for a new one; the rendezvous stops sending reads of
// the evicted clip to it (its publisher, online, serves it through the
// need path), and keeps sending the others'.
func TestClipEviction(t *testing.T) {
	t.Parallel()
	rv, relays := clipMesh(t, rendezvous.Config{}, 1, relay.Config{Budget: 8 << 20, Prefetch: 2})
	r := relays[0]
	c := newClipClient(t, rv.URL)
	const size = 3 << 20
	var data [3][]byte
	var items [3]*client.Item
	publishClip := func(i int) {
		data[i] = meshtest.RandomBytes(size, uint64(10+i))
		it, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Size: size, Reader: bytes.NewReader(data[i])})
		if err != nil {
			t.Fatalf("PublishClip %d: %v", i, err)
		}
		items[i] = it
		eventually(t, fmt.Sprintf("clip %d stored", i), func() bool { _, done := heldDone(r); return done == int64(i+1) })
	}
	publishClip(0)
	publishClip(1)
	// Clip 0 is read after clip 1 was stored: clip 1 is the least
	// recently used.
	checkReads(t, items[0].DownloadURL, data[0])
	publishClip(2)
	eventually(t, "one clip evicted", func() bool { return r.Server.Stats().Uploads.Evicted == 1 })
	if held, _ := heldDone(r); held != 2 {
		t.Fatalf("relay holds %d items, want 2", held)
	}
	for _, i := range []int{0, 2} {
		before := r.Server.Stats()
		checkReads(t, items[i].DownloadURL, data[i])
		if after := r.Server.Stats(); after.Needs != before.Needs {
			t.Errorf("clip %d: %d parts asked of its publisher, want none (held)", i, after.Needs-before.Needs)
		}
	}
	before := r.Server.Stats()
	checkReadsFrom(t, items[1].DownloadURL, data[1], false)
	if after := r.Server.Stats(); after.Needs == before.Needs || after.Uploads.Requests != before.Uploads.Requests {
		t.Errorf("evicted clip 1: needs %d -> %d, held responses %d -> %d; want it read from its publisher, not from memory",
			before.Needs, after.Needs, before.Uploads.Requests, after.Uploads.Requests)
	}
}

// TestClipReplicated: when a holder dies while the publisher is online,
// the rendezvous orders the clip onto another relay.
func TestClipReplicated(t *testing.T) {
	t.Parallel()
	rv, relays := clipMesh(t, rendezvous.Config{}, 3, relay.Config{})
	c := newClipClient(t, rv.URL)
	data := meshtest.RandomBytes(2<<20+1, 21)
	it, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Size: int64(len(data)), Reader: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	holders := func() (out []*relaytest.Server) {
		for _, r := range relays {
			if _, done := heldDone(r); done == 1 {
				out = append(out, r)
			}
		}
		return out
	}
	eventually(t, "two relays hold the clip", func() bool { return len(holders()) == 2 })
	first := holders()
	first[0].Close()
	eventually(t, "a third relay holds the clip", func() bool {
		for _, r := range relays {
			if r != first[0] && r != first[1] {
				_, done := heldDone(r)
				return done == 1
			}
		}
		return false
	})
	c.Close()
	var live []*relaytest.Server
	for _, r := range relays {
		if r != first[0] {
			live = append(live, r)
		}
	}
	// Each of the two live holders serves it, the publisher gone.
	for i, r := range live {
		other := live[1-i]
		eventually(t, "reads of the clip avoiding "+other.ID()+" go to "+r.ID(), func() bool {
			return exitOf(t, it.DownloadURL+"?avoid="+other.ID(), relays) == r
		})
		checkReads(t, it.DownloadURL+"?avoid="+other.ID(), data)
	}
}

// TestClipEvictedReplicated: two relays with small budgets both evict the
// least recently used clip for a new one; the rendezvous orders it again,
// onto neither of them, and a relay that comes up later gets the copy
// while the publisher is online.
func TestClipEvictedReplicated(t *testing.T) {
	t.Parallel()
	rv, relays := clipMesh(t, rendezvous.Config{}, 2, relay.Config{Budget: 8 << 20, Prefetch: 2})
	c := newClipClient(t, rv.URL)
	const size = 3 << 20
	var data [3][]byte
	var items [3]*client.Item
	for i := range 3 {
		data[i] = meshtest.RandomBytes(size, uint64(30+i))
		it, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Size: size, Reader: bytes.NewReader(data[i])})
		if err != nil {
			t.Fatalf("PublishClip %d: %v", i, err)
		}
		items[i] = it
		for _, r := range relays {
			eventually(t, fmt.Sprintf("clip %d stored on %s", i, r.ID()), func() bool { _, done := heldDone(r); return done == int64(i+1) })
		}
		if i == 1 {
			for _, r := range relays { // clip 0 is read after clip 1 was stored on both
				checkReads(t, items[0].DownloadURL+"?avoid="+r.ID(), data[0])
			}
		}
	}
	for _, r := range relays {
		eventually(t, "clip 1 evicted on "+r.ID(), func() bool { return r.Server.Stats().Uploads.Evicted == 1 })
	}
	third := relaytest.Start(t, rv.URL, relay.Config{PartSize: partSize, Window: 256 << 10})
	eventually(t, "the evicted clip stored on the new relay", func() bool { _, done := heldDone(third); return done == 1 })
	all := append(relays, third)
	// The new relay counts the clip stored before its hold reaches the
	// rendezvous: until then the publisher serves reads through any exit.
	eventually(t, "reads of the evicted clip sent to the new relay", func() bool {
		return exitOf(t, items[1].DownloadURL, all) == third
	})
	c.Close()
	checkReads(t, items[1].DownloadURL, data[1])
}

// TestClipSourceFails: a clip whose source fails half-way is not taken for
// stored: WaitClipStored reports it once no push is left.
func TestClipSourceFails(t *testing.T) {
	t.Parallel()
	rv, _ := clipMesh(t, rendezvous.Config{}, 1, relay.Config{})
	c := newClipClient(t, rv.URL)
	data := meshtest.RandomBytes(2<<20, 41)
	it, err := c.PublishClip(ctx(t), client.Source{Plain: true, Volunteers: true, Size: int64(len(data)), Reader: failingSource{data: data, failAt: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitClipStored(ctx(t), it, 10*time.Millisecond)
	if err == nil || st.Holders != 0 {
		t.Fatalf("WaitClipStored: got %+v, %v; want an error and no holder", st, err)
	}
}

// TestClipUnpublished: the holders of an encrypted clip keep its sealed
// metadata with it; when its owner unpublishes it, every holder drops it
// at once: its memory is back in the budget, and a read with a token
// issued before answers 410 saying why.
func TestClipUnpublished(t *testing.T) {
	t.Parallel()
	rv, relays := clipMesh(t, rendezvous.Config{}, 2, relay.Config{})
	base := map[*relaytest.Server]int64{}
	for _, r := range relays {
		base[r] = r.Server.Stats().Reserved
	}
	c := newClipClient(t, rv.URL)
	data := meshtest.RandomBytes(1<<20+3, 31)
	it, err := c.PublishClip(ctx(t), client.Source{Name: "secret.png", MIME: "image/png", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.WaitClipStored(ctx(t), it, 10*time.Millisecond)
	if err != nil || st.Sealed < 1 {
		t.Fatalf("WaitClipStored: %+v, %v; want a holder keeping the sealed metadata", st, err)
	}
	for _, r := range relays {
		eventually(t, "relay "+r.ID()+" holds the clip with its sealed metadata", func() bool {
			st := r.Server.Stats().Clips
			return st.Held == 1 && st.Sealed == 1
		})
		if st := r.Server.Stats(); st.Reserved <= base[r]+int64(len(data)) {
			t.Fatalf("relay %s: %d bytes of budget in use, want more than the clip's %d", r.ID(), st.Reserved, len(data))
		}
	}
	resp, err := rendezvoustest.NoRedirect.Get(it.DownloadURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tokenURL := resp.Header.Get("Location") // a read token issued before the unpublish
	if resp.StatusCode != http.StatusTemporaryRedirect || tokenURL == "" {
		t.Fatalf("GET %s: %s, want a redirect to a holder", it.DownloadURL, resp.Status)
	}

	c.Unpublish(it.ID)
	for _, r := range relays {
		eventually(t, "relay "+r.ID()+" dropped the clip and freed its memory", func() bool {
			st := r.Server.Stats()
			return st.Clips.Released == 1 && st.Clips.Held == 0 && st.Uploads.Held == 0 && st.Reserved == base[r]
		})
	}
	code, body, _ := getRange(t, tokenURL, "")
	if code != http.StatusGone || !strings.Contains(string(body), "unpublished by its owner") {
		t.Errorf("GET with a token from before: got %d %q, want 410 saying it was unpublished", code, body)
	}
	if code, _, _ := getRange(t, it.DownloadURL, ""); code != http.StatusNotFound {
		t.Errorf("GET from the rendezvous: got %d, want 404", code)
	}
	if got := rv.Server.Stats().Clips.Released; got != 2 {
		t.Errorf("rendezvous sent %d releases, want 2", got)
	}
}

// TestClipForgedMetaDetected: sealed metadata a holder could forge (the
// rendezvous takes it from a holder's announcement after a restart) does
// not pass at the reader. A rendezvous wrapped to serve the clip's meta
// with a forgery (sealed under another key, as a holder without the link's
// key must) makes the download fail with ErrWrongKey, saying the sealed
// name and type do not open, and write nothing; the honest rendezvous
// beside it serves the same clip intact.
func TestClipForgedMetaDetected(t *testing.T) {
	t.Parallel()
	rv, _ := clipMesh(t, rendezvous.Config{}, 1, relay.Config{})
	c := newClipClient(t, rv.URL)
	data := meshtest.RandomBytes(200<<10+9, 41)
	it, err := c.PublishClip(ctx(t), client.Source{Name: "secret.png", MIME: "image/png", Size: int64(len(data)), Reader: bytes.NewReader(data)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitClipStored(ctx(t), it, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	c.Close()
	forged, err := proto.NewE2EItem(proto.NewE2EKey(), it.ID).SealMeta(proto.E2EMeta{Name: "invoice.exe", Type: "application/x-msdownload"})
	if err != nil {
		t.Fatal(err)
	}
	target, err := url.Parse(rv.URL)
	if err != nil {
		t.Fatal(err)
	}
	lying := httputil.NewSingleHostReverseProxy(target)
	lying.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasSuffix(resp.Request.URL.Path, "/meta") {
			return nil
		}
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			return err
		}
		resp.Body.Close()
		m["meta"] = forged
		b, _ := json.Marshal(m)
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	ls := httptest.NewServer(lying)
	t.Cleanup(ls.Close)
	var got bytes.Buffer
	_, err = client.DownloadTo(ctx(t), strings.Replace(it.ShareURL, rv.URL, ls.URL, 1), &got, client.FileOptions{})
	if !errors.Is(err, client.ErrWrongKey) || !strings.Contains(err.Error(), "sealed name and type do not open") || got.Len() != 0 {
		t.Fatalf("download with forged metadata: %d bytes, %v; want ErrWrongKey saying the sealed name and type do not open, nothing written", got.Len(), err)
	}
	got.Reset()
	if _, err := client.DownloadTo(ctx(t), it.ShareURL, &got, client.FileOptions{}); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("download from the honest rendezvous: %d bytes, %v; want %d intact", got.Len(), err, len(data))
	}
}
