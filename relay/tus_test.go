package relay_test

import (
	"bytes"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tusReq sends a tus request with Tus-Resumable and the headers hdr (pairs).
func tusReq(t *testing.T, method, u string, body []byte, hdr ...string) *http.Response {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i+1] == "" {
			req.Header.Del(hdr[i])
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// tusCreate creates an upload of size bytes and returns its URL and the
// creation response.
func tusCreate(t *testing.T, endpoint string, size int64, hdr ...string) (string, *http.Response) {
	t.Helper()
	h := append([]string{"Upload-Length", strconv.FormatInt(size, 10),
		"Upload-Metadata", "filename " + base64.StdEncoding.EncodeToString([]byte("a b.bin")) + ",filetype " + base64.StdEncoding.EncodeToString([]byte("application/x-test")) + ",flag"}, hdr...)
	resp := tusReq(t, http.MethodPost, endpoint, nil, h...)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: got status %d, want 201", endpoint, resp.StatusCode)
	}
	base, _ := url.Parse(endpoint)
	loc, err := base.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		t.Fatalf("Location %q: %v", resp.Header.Get("Location"), err)
	}
	return loc.String(), resp
}

func checksum(alg string, b []byte) string {
	var sum []byte
	switch alg {
	case "sha1":
		s := sha1.Sum(b)
		sum = s[:]
	case "md5":
		s := md5.Sum(b)
		sum = s[:]
	case "sha256":
		s := sha256.Sum256(b)
		sum = s[:]
	}
	return alg + " " + base64.StdEncoding.EncodeToString(sum)
}

func TestTusProtocol(t *testing.T) {
	e := newEnv(t, testRelayConfig())
	endpoint := e.relays[0].URL + "/v1/files/"

	t.Run("options", func(t *testing.T) {
		resp := tusReq(t, http.MethodOptions, endpoint, nil, "Tus-Resumable", "", "Origin", "https://uppy.example", "Access-Control-Request-Method", "PATCH")
		want := map[string]string{
			"Tus-Version":                  "1.0.0",
			"Tus-Extension":                "creation,creation-with-upload,creation-defer-length,termination,expiration,checksum",
			"Tus-Checksum-Algorithm":       "sha1,md5,sha256",
			"Access-Control-Allow-Origin":  "*",
			"Access-Control-Allow-Methods": "POST, HEAD, PATCH, OPTIONS, GET, DELETE",
		}
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("OPTIONS: got status %d, want 204", resp.StatusCode)
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("OPTIONS %s: got %q, want %q", k, got, v)
			}
		}
		for _, h := range []string{"Upload-Checksum", "Upload-Metadata", "Tus-Resumable", "Authorization"} {
			if !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), h) {
				t.Errorf("Access-Control-Allow-Headers %q lacks %s", resp.Header.Get("Access-Control-Allow-Headers"), h)
			}
		}
	})

	t.Run("refusals", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			hdr  []string
			want int
		}{
			{"no Tus-Resumable", []string{"Tus-Resumable", "", "Upload-Length", "1"}, http.StatusPreconditionFailed},
			{"no length", nil, http.StatusBadRequest},
			{"negative length", []string{"Upload-Length", "-1"}, http.StatusBadRequest},
			{"both lengths", []string{"Upload-Length", "1", "Upload-Defer-Length", "1"}, http.StatusBadRequest},
			{"bad metadata", []string{"Upload-Length", "1", "Upload-Metadata", "filename !!!"}, http.StatusBadRequest},
			{"concatenation", []string{"Upload-Length", "1", "Upload-Concat", "partial"}, http.StatusBadRequest},
		} {
			if resp := tusReq(t, http.MethodPost, endpoint, nil, tc.hdr...); resp.StatusCode != tc.want {
				t.Errorf("%s: got status %d, want %d", tc.name, resp.StatusCode, tc.want)
			}
		}
		if resp := tusReq(t, http.MethodHead, endpoint+"nosuchupload", nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("HEAD of an unknown upload: got status %d, want 404", resp.StatusCode)
		}
	})

	t.Run("upload", func(t *testing.T) {
		data := make([]byte, 300<<10)
		rand.Read(data)
		u, resp := tusCreate(t, endpoint, int64(len(data)))
		exp, err := http.ParseTime(resp.Header.Get("Upload-Expires"))
		if err != nil || !exp.After(time.Now()) {
			t.Errorf("Upload-Expires %q: not a future HTTP date (%v)", resp.Header.Get("Upload-Expires"), err)
		}
		item := resp.Header.Get("Meshup-Item-URL")
		if item == "" {
			t.Fatal("creation answered no Meshup-Item-URL")
		}
		// A reader streams the item from before the first byte.
		got := make(chan []byte, 1)
		go func() {
			resp, err := httpClient.Get(item)
			if err != nil {
				got <- nil
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			got <- b
		}()

		head := tusReq(t, http.MethodHead, u, nil)
		if head.Header.Get("Upload-Offset") != "0" || head.Header.Get("Upload-Length") != strconv.Itoa(len(data)) {
			t.Errorf("HEAD: got offset %q length %q, want 0 and %d", head.Header.Get("Upload-Offset"), head.Header.Get("Upload-Length"), len(data))
		}
		if !strings.Contains(head.Header.Get("Upload-Metadata"), "filename ") {
			t.Errorf("HEAD: Upload-Metadata %q, want the creation's", head.Header.Get("Upload-Metadata"))
		}
		octets := []string{"Content-Type", "application/offset+octet-stream"}
		patch := func(off int, b []byte, hdr ...string) *http.Response {
			return tusReq(t, http.MethodPatch, u, b, append(append([]string{"Upload-Offset", strconv.Itoa(off)}, octets...), hdr...)...)
		}
		// Each checksum algorithm verifies a chunk; a wrong one is 460 and
		// appends nothing.
		off := 0
		for _, alg := range []string{"sha1", "md5", "sha256"} {
			chunk := data[off : off+64<<10]
			if resp := patch(off, chunk, "Upload-Checksum", checksum(alg, chunk[1:])); resp.StatusCode != 460 {
				t.Errorf("PATCH with a wrong %s: got status %d, want 460", alg, resp.StatusCode)
			}
			resp := patch(off, chunk, "Upload-Checksum", checksum(alg, chunk))
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(off+len(chunk)) {
				t.Fatalf("PATCH with %s: got status %d offset %q, want 204 and %d", alg, resp.StatusCode, resp.Header.Get("Upload-Offset"), off+len(chunk))
			}
			if resp.Header.Get("Upload-Expires") == "" {
				t.Error("PATCH answered no Upload-Expires")
			}
			off += len(chunk)
		}
		if resp := patch(off, data[off:off+10], "Upload-Checksum", "crc32 AAAAAA=="); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PATCH with an unsupported algorithm: got status %d, want 400", resp.StatusCode)
		}
		if resp := patch(off-1, data[off-1:off+10]); resp.StatusCode != http.StatusConflict {
			t.Errorf("PATCH at a wrong offset: got status %d, want 409", resp.StatusCode)
		}
		if resp := tusReq(t, http.MethodPatch, u, data[off:off+10], "Upload-Offset", strconv.Itoa(off), "Content-Type", "application/octet-stream"); resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("PATCH with a wrong Content-Type: got status %d, want 415", resp.StatusCode)
		}
		// The rest without a checksum, streamed.
		if resp := patch(off, data[off:]); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
			t.Fatalf("last PATCH: got status %d offset %q, want 204 and %d", resp.StatusCode, resp.Header.Get("Upload-Offset"), len(data))
		}
		if b := <-got; !bytes.Equal(b, data) {
			t.Errorf("the reader got %d bytes, want the %d uploaded", len(b), len(data))
		}
		// GET on the upload URL reads the item, with Range.
		if resp, body := do(t, http.MethodGet, u); resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
			t.Errorf("GET upload URL: got %d and %d bytes, want 200 and the %d uploaded", resp.StatusCode, len(body), len(data))
		}
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Range", "bytes=100-199")
		r, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusPartialContent || !bytes.Equal(b, data[100:200]) {
			t.Errorf("GET upload URL with Range: got %d and %d bytes, want 206 and bytes 100-199", r.StatusCode, len(b))
		}
	})

	t.Run("deferred length, creation-with-upload, termination", func(t *testing.T) {
		data := []byte(strings.Repeat("meshup ", 1000))
		resp := tusReq(t, http.MethodPost, endpoint, data[:100], "Upload-Defer-Length", "1", "Content-Type", "application/offset+octet-stream")
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Upload-Offset") != "100" {
			t.Fatalf("POST with a body: got status %d offset %q, want 201 and 100", resp.StatusCode, resp.Header.Get("Upload-Offset"))
		}
		base, _ := url.Parse(endpoint)
		loc, _ := base.Parse(resp.Header.Get("Location"))
		u := loc.String()
		if h := tusReq(t, http.MethodHead, u, nil); h.Header.Get("Upload-Defer-Length") != "1" {
			t.Errorf("HEAD of a deferred upload: Upload-Defer-Length %q, want 1", h.Header.Get("Upload-Defer-Length"))
		}
		resp = tusReq(t, http.MethodPatch, u, data[100:200], "Upload-Offset", "100", "Upload-Length", strconv.Itoa(len(data)), "Content-Type", "application/offset+octet-stream")
		if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Length") != strconv.Itoa(len(data)) {
			t.Fatalf("PATCH declaring the length: got status %d length %q", resp.StatusCode, resp.Header.Get("Upload-Length"))
		}
		if resp := tusReq(t, http.MethodDelete, u, nil); resp.StatusCode != http.StatusNoContent {
			t.Fatalf("DELETE: got status %d, want 204", resp.StatusCode)
		}
		if resp := tusReq(t, http.MethodHead, u, nil); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusGone {
			t.Errorf("HEAD after DELETE: got status %d, want 404 or 410", resp.StatusCode)
		}
	})
	t.Run("over the length, and one PATCH at a time", func(t *testing.T) {
		u, _ := tusCreate(t, endpoint, 10)
		octets := []string{"Content-Type", "application/offset+octet-stream", "Upload-Offset", "0"}
		if resp := tusReq(t, http.MethodPatch, u, make([]byte, 11), octets...); resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("PATCH past Upload-Length: got status %d, want 413", resp.StatusCode)
		}

		u, _ = tusCreate(t, endpoint, 1<<20)
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPatch, u, pr)
		req.ContentLength = 1 << 20
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Upload-Offset", "0")
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		first := make(chan int, 1)
		go func() {
			resp, err := httpClient.Do(req)
			if err != nil {
				first <- 0
				return
			}
			resp.Body.Close()
			first <- resp.StatusCode
		}()
		pw.Write(make([]byte, 1000))
		eventually(t, "the first PATCH's bytes to arrive", func() bool {
			return tusReq(t, http.MethodHead, u, nil).Header.Get("Upload-Offset") == "1000"
		})
		if resp := tusReq(t, http.MethodPatch, u, make([]byte, 10), "Content-Type", "application/offset+octet-stream", "Upload-Offset", "1000"); resp.StatusCode != http.StatusLocked {
			t.Errorf("a second PATCH while one writes: got status %d, want 423", resp.StatusCode)
		}
		pw.Write(make([]byte, 1<<20-1000))
		pw.Close()
		if code := <-first; code != http.StatusNoContent {
			t.Errorf("the first PATCH: got status %d, want 204", code)
		}
	})
}
