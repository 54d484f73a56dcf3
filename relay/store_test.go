package relay_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/rendezvous"
)

// putStream starts a PUT of size bytes whose body is fed by the returned
// writer, and returns a channel that gets the response.
func putStream(t *testing.T, url string, size int) (*io.PipeWriter, chan *http.Response) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodPut, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(size)
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := httpClient.Do(req)
		if err != nil {
			done <- nil
			return
		}
		resp.Body.Close()
		done <- resp
	}()
	t.Cleanup(func() { pw.CloseWithError(io.ErrClosedPipe) })
	return pw, done
}

// TestStreamedUpload: an upload over UploadHold streams through a window.
// With no reader the uploader is held at the window (it waits, it is not
// failed); a reader frees it and gets every byte; bytes the window moved
// past are refused to a later reader with 410.
func TestStreamedUpload(t *testing.T) {
	cfg := testRelayConfig()
	cfg.UploadHold, cfg.UploadWindow = 1<<20, 256<<10
	e := newEnv(t, cfg)
	rel := e.relays[0]
	data := randBytes(t, 4<<20)
	pw, done := putStream(t, rel.URL+"/v1/upload/big.bin", len(data))
	go pw.Write(data)
	eventually(t, "the uploader waiting for readers", func() bool { return rel.Server.Stats().Uploads.Waits > 0 })
	if st := rel.Server.Stats().Uploads; st.Bytes > cfg.UploadWindow+64<<10 || st.HeldMem > cfg.UploadWindow+64<<10 {
		t.Fatalf("with no reader the relay took %d bytes and holds %d, want at most the window of %d", st.Bytes, st.HeldMem, cfg.UploadWindow)
	}
	code, hdr := putQuery(t, rel.URL+"/v1/upload/big.bin?upload_id="+uploadID(t, rel.URL))
	if code != 308 {
		t.Fatalf("query: got %d", code)
	}
	resp, body := do(t, http.MethodGet, hdr.Get("Meshup-Item-URL"))
	if resp.StatusCode != 200 || sha256.Sum256(body) != sha256.Sum256(data) {
		t.Fatalf("reader: got %d, %d bytes not equal to the upload", resp.StatusCode, len(body))
	}
	if r := <-done; r == nil || r.StatusCode != 201 {
		t.Fatalf("uploader: got %v, want 201", r)
	}
	resp, body = do(t, http.MethodGet, hdr.Get("Meshup-Item-URL"))
	if resp.StatusCode != 410 || !strings.Contains(string(body), "window") {
		t.Fatalf("late reader from byte 0: got %d %s, want 410 naming the window", resp.StatusCode, body)
	}
}

// uploadID returns the upload_id of the only PUT upload at the relay
// whose plain path this client started, through a query.
func uploadID(t *testing.T, relayURL string) string {
	t.Helper()
	code, hdr := putQuery(t, relayURL+"/v1/upload/big.bin")
	up := hdr.Get("Meshup-Upload-URL")
	i := strings.Index(up, "upload_id=")
	if code != 308 || i < 0 {
		t.Fatalf("query: got %d upload URL %q", code, up)
	}
	return up[i+len("upload_id="):]
}

// TestHeldEviction: complete held items nobody reads are evicted, oldest
// first, when an upload needs the memory; the evicted item answers 410.
func TestHeldEviction(t *testing.T) {
	cfg := testRelayConfig()
	cfg.Budget = 2 << 20
	e := newEnv(t, cfg)
	rel := e.relays[0]
	var urls []string
	var datas [][]byte
	for i := range 3 {
		data := randBytes(t, 900<<10)
		resp, _ := doBody(t, http.MethodPut, rel.URL+"/v1/upload/f"+string(rune('a'+i)), data)
		if resp.StatusCode != 201 {
			t.Fatalf("upload %d: got %d", i, resp.StatusCode)
		}
		urls, datas = append(urls, resp.Header.Get("Location")), append(datas, data)
	}
	if ev := rel.Server.Stats().Uploads.Evicted; ev != 1 {
		t.Fatalf("evicted: got %d, want 1", ev)
	}
	resp, body := do(t, http.MethodGet, urls[0])
	if resp.StatusCode != 410 || !strings.Contains(string(body), "evicted") {
		t.Fatalf("evicted item: got %d %s, want 410 naming the eviction", resp.StatusCode, body)
	}
	for i := 1; i < 3; i++ {
		if _, got := do(t, http.MethodGet, urls[i]); !bytes.Equal(got, datas[i]) {
			t.Fatalf("item %d: got %d bytes", i, len(got))
		}
	}
}

// TestUploadExpiry: held items are dropped at their expiry, counted on
// both sides; a streamed upload nobody read is failed with a clear error
// to its uploader.
func TestUploadExpiry(t *testing.T) {
	cfg := testRelayConfig()
	cfg.UploadHold, cfg.UploadWindow, cfg.UploadSweep = 1<<20, 128<<10, 20*time.Millisecond
	e := newEnvRV(t, rendezvous.Config{UploadTTL: 300 * time.Millisecond}, cfg)
	rel := e.relays[0]
	data := randBytes(t, 1000)
	resp, body := doBody(t, http.MethodPut, rel.URL+"/v1/upload/small", data)
	if resp.StatusCode != 201 {
		t.Fatalf("upload: got %d %s", resp.StatusCode, body)
	}
	url := resp.Header.Get("Location")

	big := randBytes(t, 2<<20)
	pw, done := putStream(t, rel.URL+"/v1/upload/big", len(big))
	go pw.Write(big)
	r := <-done
	if r == nil || r.StatusCode != http.StatusGone {
		t.Fatalf("unread streamed upload: got %v, want 410", r)
	}
	eventually(t, "the small item expired", func() bool { return rel.Server.Stats().Uploads.Expired >= 2 })
	resp, body = do(t, http.MethodGet, url)
	if resp.StatusCode < 400 {
		t.Fatalf("expired item: got %d %s, want an error", resp.StatusCode, body)
	}
	eventually(t, "expiry counted by the rendezvous", func() bool { return e.rv.Server.Stats().Held.Expired >= 1 })
}

// doBody sends a request with body and returns the response and its body.
func doBody(t *testing.T, method, url string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// putQuery asks how far the PUT upload at url got (Content-Range: bytes */*).
func putQuery(t *testing.T, url string) (int, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Range", "bytes */*")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// TestHeldReannounced: when the relay's link to the rendezvous drops, the
// rendezvous takes its held items offline; the relay registers again and
// re-announces them (soft state, issue 14), and they are read again.
func TestHeldReannounced(t *testing.T) {
	e := newEnv(t, testRelayConfig())
	rel := e.relays[0]
	data := randBytes(t, 50000)
	resp, body := doBody(t, http.MethodPut, rel.URL+"/v1/upload/keep.bin", data)
	if resp.StatusCode != 201 {
		t.Fatalf("upload: got %d %s", resp.StatusCode, body)
	}
	url := resp.Header.Get("Location")
	if err := e.rv.Node.ClosePeer(rel.ID()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the relay's items re-announced", func() bool { return e.rv.Server.Stats().Held.Reannounced >= 1 })
	resp, got := do(t, http.MethodGet, url)
	if resp.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("read after the re-announce: got %d, %d bytes", resp.StatusCode, len(got))
	}
}
