package relay_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// curlHead runs curl with args and returns the status and headers of its
// (last) response and its body; curl must exit 0.
func curlHead(t *testing.T, args ...string) (int, http.Header, []byte) {
	t.Helper()
	hdrFile := filepath.Join(t.TempDir(), "headers")
	out, err := exec.Command("curl", append([]string{"-sS", "-D", hdrFile}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	raw, err := os.ReadFile(hdrFile)
	if err != nil {
		t.Fatal(err)
	}
	// The last response of the dump (a 100 Continue may come first).
	blocks := strings.Split(strings.TrimSpace(string(raw)), "\r\n\r\n")
	tp := textproto.NewReader(bufio.NewReader(strings.NewReader(blocks[len(blocks)-1] + "\r\n\r\n")))
	line, err := tp.ReadLine()
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(line)
	code, _ := strconv.Atoi(f[1])
	mh, _ := tp.ReadMIMEHeader()
	return code, http.Header(mh), out
}

// TestPutResumeCurl drives the resumable PUT with real curl: a first PUT
// whose body comes from a pipe, killed once half the file is at the relay;
// the "bytes */*" and "bytes */TOTAL" queries; a resume with curl -C (which
// sends Content-Range: bytes N-LAST/TOTAL). A reader that started during
// the first PUT streams the item through the interruption, and what it got
// has the file's SHA-256.
func TestPutResumeCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		if os.Getenv("MESHUP_REQUIRE_CURL") == "1" {
			t.Fatal("curl is not installed (scripts/test installs it)")
		}
		t.Skip("curl is not installed")
	}
	e := newEnv(t, testRelayConfig())
	rel := e.relays[0]
	data := randBytes(t, 6<<20+777)
	half := len(data) / 2
	file := filepath.Join(t.TempDir(), "movie.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	url := rel.URL + "/v1/upload/movie.bin"

	// First PUT: its body comes from a pipe we feed, so it is part-way
	// when we kill it.
	cmd := exec.Command("curl", "-sS", "-T", "-", "-H", "Transfer-Encoding:", "-H", "Content-Length: "+strconv.Itoa(len(data)), "-H", "Content-Type: video/mp4", url)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	if _, err := stdin.Write(data[:half]); err != nil {
		t.Fatal(err)
	}
	eventually(t, "half the file at the relay", func() bool { return rel.Server.Stats().Uploads.Bytes == int64(half) })

	// A reader streams the item while it is incomplete.
	code, hdr, _ := curlHead(t, "-X", "PUT", "-H", "Content-Range: bytes */*", url)
	if code != 308 || hdr.Get("Range") != "bytes=0-"+strconv.Itoa(half-1) {
		t.Fatalf("query during the upload: got %d Range %q, want 308 bytes=0-%d", code, hdr.Get("Range"), half-1)
	}
	item := hdr.Get("Meshup-Item-URL")
	if item == "" {
		t.Fatal("no Meshup-Item-URL in the 308")
	}
	resp := start(t, http.MethodGet, item)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("reader: got %d length %d, want 200 and %d", resp.StatusCode, resp.ContentLength, len(data))
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		got <- b
	}()

	cmd.Process.Kill()
	cmd.Wait()

	code, hdr, _ = curlHead(t, "-X", "PUT", "-H", "Content-Range: bytes */"+strconv.Itoa(len(data)), url)
	if code != 308 || hdr.Get("Range") != "bytes=0-"+strconv.Itoa(half-1) {
		t.Fatalf("query after the kill: got %d Range %q, want 308 bytes=0-%d", code, hdr.Get("Range"), half-1)
	}
	// Another client (another Authorization) does not see this upload.
	code, hdr, _ = curlHead(t, "-X", "PUT", "-H", "Authorization: Bearer other", "-H", "Content-Range: bytes */*", url)
	if code != 308 || hdr.Get("Range") != "" {
		t.Fatalf("query by another client: got %d Range %q, want 308 without Range", code, hdr.Get("Range"))
	}

	code, hdr, body := curlHead(t, "-C", strconv.Itoa(half), "-T", file, "-H", "Content-Type: video/mp4", url)
	if code != 201 {
		t.Fatalf("resume: got %d %s, want 201", code, body)
	}
	var ans struct {
		Share, URL, Expires string
		Size                int64
	}
	if err := json.Unmarshal(body, &ans); err != nil || ans.URL == "" || ans.Share == "" || ans.Expires == "" || ans.Size != int64(len(data)) {
		t.Fatalf("201 body %s: want share, url, expires and size (%v)", body, err)
	}
	if hdr.Get("Location") != ans.URL {
		t.Errorf("Location %q, want the download URL %q", hdr.Get("Location"), ans.URL)
	}
	if g := <-got; sha256.Sum256(g) != sha256.Sum256(data) {
		t.Fatalf("reader got %d bytes whose SHA-256 differs from the file's", len(g))
	}
	// And a reader after the upload, with curl.
	out, err := exec.Command("curl", "-sSfL", ans.URL).Output()
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("curl GET after the upload: %d bytes, %v", len(out), err)
	}
	code, _, _ = curlHead(t, "-X", "PUT", "-H", "Content-Range: bytes */*", url)
	if code != 201 {
		t.Errorf("query after completion: got %d, want 201", code)
	}
}

// TestPutUploadURL resumes through the upload's own URL (upload_id),
// from another client, after a chunk uploaded with Content-Range.
func TestPutUploadURL(t *testing.T) {
	e := newEnv(t, testRelayConfig())
	rel := e.relays[0]
	data := randBytes(t, 100000)
	req, _ := http.NewRequest(http.MethodPut, rel.URL+"/v1/upload/a%20b.txt", bytes.NewReader(data[:40000]))
	req.Header.Set("Content-Range", "bytes 0-39999/100000")
	req.Header.Set("Content-Type", "text/plain")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	up := resp.Header.Get("Meshup-Upload-URL")
	if resp.StatusCode != 308 || resp.Header.Get("Range") != "bytes=0-39999" || !strings.Contains(up, "upload_id=") {
		t.Fatalf("first chunk: got %d Range %q upload URL %q", resp.StatusCode, resp.Header.Get("Range"), up)
	}
	// A resume that skips bytes is refused with what the relay has.
	req, _ = http.NewRequest(http.MethodPut, up, bytes.NewReader(data[50000:]))
	req.Header.Set("Content-Range", "bytes 50000-99999/100000")
	resp, err = httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 409 || resp.Header.Get("Range") != "bytes=0-39999" {
		t.Fatalf("gap: got %d Range %q, want 409 with bytes=0-39999", resp.StatusCode, resp.Header.Get("Range"))
	}
	// A resume from an older offset: the overlap is skipped.
	req, _ = http.NewRequest(http.MethodPut, up, bytes.NewReader(data[30000:]))
	req.Header.Set("Content-Range", "bytes 30000-99999/100000")
	req.Header.Set("Authorization", "Bearer someone-else")
	resp, err = httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("resume: got %d %s, want 201", resp.StatusCode, body)
	}
	resp2, got := do(t, http.MethodGet, resp.Header.Get("Location"))
	if resp2.StatusCode != 200 || !bytes.Equal(got, data) {
		t.Fatalf("read: got %d, %d bytes", resp2.StatusCode, len(got))
	}
	if cd := resp2.Header.Get("Content-Type"); !strings.HasPrefix(cd, "text/plain") {
		t.Errorf("Content-Type %q, want text/plain", cd)
	}
}

// TestUploadsThroughTunnel uploads through the rendezvous's tunnel, as an
// uploader does to a relay behind NAT: a PUT in two chunks (the 308's
// Range and upload URL cross the tunnel, and the upload URL names the
// tunnel) and a STOR WebSocket.
func TestUploadsThroughTunnel(t *testing.T) {
	e := newEnv(t, testRelayConfig())
	rel := e.relays[0]
	base := e.rv.URL + "/v1/relays/" + rel.ID()
	data := randBytes(t, 300000)
	req, _ := http.NewRequest(http.MethodPut, base+"/v1/upload/t.bin", bytes.NewReader(data[:100000]))
	req.Header.Set("Content-Range", "bytes 0-99999/300000")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	up := resp.Header.Get("Meshup-Upload-URL")
	if resp.StatusCode != 308 || resp.Header.Get("Range") != "bytes=0-99999" || !strings.HasPrefix(up, base+"/v1/upload/t.bin?upload_id=") {
		t.Fatalf("first chunk through the tunnel: got %d Range %q upload URL %q (want under %s)", resp.StatusCode, resp.Header.Get("Range"), up, base)
	}
	req, _ = http.NewRequest(http.MethodPut, up, bytes.NewReader(data[100000:]))
	req.Header.Set("Content-Range", "bytes 100000-299999/300000")
	resp, err = httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Location") == "" {
		t.Fatalf("second chunk: got %d Location %q, want 201 with Location", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, got := do(t, http.MethodGet, resp.Header.Get("Location")); !bytes.Equal(got, data) {
		t.Fatalf("read: got %d bytes, want the %d uploaded", len(got), len(data))
	}

	c := dialStor(t, base)
	a := c.stor("s.bin", len(data), "binary")
	if a.Code != 200 {
		t.Fatalf("STOR through the tunnel: %+v", a)
	}
	c.sendBlock(data, false)
	if _, got := do(t, http.MethodGet, a.URL); !bytes.Equal(got, data) {
		t.Fatalf("read STOR item: got %d bytes", len(got))
	}
}
