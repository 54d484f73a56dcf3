package relay_test

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
)

// TestEgress reads one item published by a real client through a real
// relay with the Range requests a video player or download manager sends
// (RFC 9110 section 14).
func TestEgress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	data := meshtest.RandomBytes(20<<20+12345, 1)
	size := int64(len(data))
	_, it := e.publish(t, data, client.Config{})
	url := e.itemURL(it.ID, r)
	sum := sha256.Sum256(data)

	var etag, lastModified string
	t.Run("full", func(t *testing.T) {
		resp, body := do(t, http.MethodGet, url)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status: got %d, want 200", resp.StatusCode)
		}
		if resp.ContentLength != size {
			t.Errorf("Content-Length: got %d, want %d", resp.ContentLength, size)
		}
		if got := resp.Header.Get("Accept-Ranges"); got != "bytes" {
			t.Errorf("Accept-Ranges: got %q, want bytes", got)
		}
		if got := resp.Header.Get("Content-Type"); got != "application/x-test" {
			t.Errorf("Content-Type: got %q, want application/x-test", got)
		}
		if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err != nil || params["filename"] != "data.bin" {
			t.Errorf("Content-Disposition: got %q, want filename data.bin", resp.Header.Get("Content-Disposition"))
		}
		etag = resp.Header.Get("ETag")
		if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || len(etag) < 3 {
			t.Errorf("ETag: got %q, want a strong entity tag", etag)
		}
		lastModified = resp.Header.Get("Last-Modified")
		if got := sha256.Sum256(body); got != sum {
			t.Fatalf("SHA-256 of %d bytes: got %x, want %x (first difference at byte %d)", len(body), got, sum, meshtest.FirstDiff(body, data))
		}
	})
	if etag == "" {
		t.Fatal("no ETag from the full GET; the tests below need it")
	}

	t.Run("single ranges", func(t *testing.T) {
		tests := []struct {
			name       string
			rng        string
			start, end int64 // inclusive
		}{
			{"middle", "bytes=1000000-1999999", 1000000, 1999999},
			{"first byte", "bytes=0-0", 0, 0},
			{"suffix", "bytes=-1000", size - 1000, size - 1},
			{"suffix longer than item", fmt.Sprintf("bytes=-%d", size+5), 0, size - 1},
			{"open", fmt.Sprintf("bytes=%d-", size-3*partSize/2), size - 3*partSize/2, size - 1},
			{"across part boundaries", fmt.Sprintf("bytes=%d-%d", partSize-7, 3*partSize+7), partSize - 7, 3*partSize + 7},
			{"exactly one part", fmt.Sprintf("bytes=%d-%d", 2*partSize, 3*partSize-1), 2 * partSize, 3*partSize - 1},
			{"end past the item", fmt.Sprintf("bytes=%d-%d", size-10, size+1000), size - 10, size - 1},
			{"adjacent ranges coalesced", "bytes=10-19,20-29", 10, 29},
			{"unsorted overlapping coalesced", "bytes=20-29,10-19,15-24", 10, 29},
			{"many ranges merging into one", "bytes=" + strings.TrimSuffix(strings.Repeat("100-199,", 40), ",") + ",0-99", 0, 199},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := do(t, http.MethodGet, url, "Range", tt.rng)
				if resp.StatusCode != http.StatusPartialContent {
					t.Fatalf("status: got %d, want 206", resp.StatusCode)
				}
				want := fmt.Sprintf("bytes %d-%d/%d", tt.start, tt.end, size)
				if got := resp.Header.Get("Content-Range"); got != want {
					t.Errorf("Content-Range: got %q, want %q", got, want)
				}
				if n := tt.end - tt.start + 1; resp.ContentLength != n {
					t.Errorf("Content-Length: got %d, want %d", resp.ContentLength, n)
				}
				if i := meshtest.FirstDiff(body, data[tt.start:tt.end+1]); i >= 0 {
					t.Errorf("body of %d bytes differs from bytes %d-%d at offset %d", len(body), tt.start, tt.end, i)
				}
			})
		}
	})

	t.Run("multipart", func(t *testing.T) {
		tests := []struct {
			name   string
			rng    string
			ranges [][2]int64 // inclusive
		}{
			{"two small", "bytes=0-9,100-199", [][2]int64{{0, 9}, {100, 199}}},
			{"across a part boundary and suffix", fmt.Sprintf("bytes=5-6,%d-%d,-3", partSize-2, partSize+1), [][2]int64{{5, 6}, {partSize - 2, partSize + 1}, {size - 3, size - 1}}},
			{"descending order sorted", "bytes=500-509,0-4", [][2]int64{{0, 4}, {500, 509}}},
			{"forty ranges merging into two", "bytes=" + strings.Repeat("500-509,0-4,", 20) + "505-520", [][2]int64{{0, 4}, {500, 520}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := do(t, http.MethodGet, url, "Range", tt.rng)
				if resp.StatusCode != http.StatusPartialContent {
					t.Fatalf("status: got %d, want 206", resp.StatusCode)
				}
				if resp.ContentLength != int64(len(body)) {
					t.Errorf("Content-Length: got %d, want the %d bytes of the body", resp.ContentLength, len(body))
				}
				mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
				if err != nil || mt != "multipart/byteranges" || params["boundary"] == "" {
					t.Fatalf("Content-Type: got %q, want multipart/byteranges with a boundary", resp.Header.Get("Content-Type"))
				}
				if cr := resp.Header.Get("Content-Range"); cr != "" {
					t.Errorf("Content-Range on a multipart response: got %q, want none", cr)
				}
				mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
				for i, rg := range tt.ranges {
					p, err := mr.NextPart()
					if err != nil {
						t.Fatalf("part %d: %v", i, err)
					}
					want := fmt.Sprintf("bytes %d-%d/%d", rg[0], rg[1], size)
					if got := p.Header.Get("Content-Range"); got != want {
						t.Errorf("part %d Content-Range: got %q, want %q", i, got, want)
					}
					if got := p.Header.Get("Content-Type"); got != "application/x-test" {
						t.Errorf("part %d Content-Type: got %q, want application/x-test", i, got)
					}
					got, err := io.ReadAll(p)
					if err != nil {
						t.Fatalf("part %d: %v", i, err)
					}
					if !bytes.Equal(got, data[rg[0]:rg[1]+1]) {
						t.Errorf("part %d: got %d bytes %x..., want bytes %d-%d of the item", i, len(got), got[:min(len(got), 8)], rg[0], rg[1])
					}
				}
				if p, err := mr.NextPart(); err != io.EOF {
					t.Errorf("after %d parts: got part %v, err %v, want io.EOF", len(tt.ranges), p, err)
				}
			})
		}
	})

	t.Run("unsatisfiable", func(t *testing.T) {
		for _, rng := range []string{"bytes=999999999-", fmt.Sprintf("bytes=%d-", size), "bytes=-0"} {
			t.Run(rng, func(t *testing.T) {
				needs := r.Server.Stats().Needs
				resp, _ := do(t, http.MethodGet, url, "Range", rng)
				if resp.StatusCode != http.StatusRequestedRangeNotSatisfiable {
					t.Fatalf("status: got %d, want 416", resp.StatusCode)
				}
				if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes */%d", size); got != want {
					t.Errorf("Content-Range: got %q, want %q", got, want)
				}
				if got := r.Server.Stats().Needs; got != needs {
					t.Errorf("needs: got %d, want %d (a 416 asks for no part)", got, needs)
				}
			})
		}
	})

	// Requests whose Range is ignored get the whole item; the cases read a
	// prefix and the length only, the full GET above checks whole bodies.
	t.Run("range ignored", func(t *testing.T) {
		tests := []struct {
			name string
			hdr  []string
		}{
			{"garbage", []string{"Range", "bytes=abc"}},
			{"unknown unit", []string{"Range", "lines=1-2"}},
			{"end before start", []string{"Range", "bytes=20-10"}},
			{"more ranges than MaxRanges after merging", []string{"Range", "bytes=" + strings.TrimSuffix(strings.Repeat("0-0,", proto.DefaultMaxRanges+1), ",") + ",2-2,4-4,6-6,8-8,10-10,12-12,14-14,16-16,18-18,20-20,22-22,24-24,26-26,28-28,30-30,32-32"}},
			{"If-Range other ETag", []string{"Range", "bytes=5-9", "If-Range", `"not-the-etag"`}},
			{"If-Range weak ETag", []string{"Range", "bytes=5-9", "If-Range", "W/" + etag}},
			{"If-Range other date", []string{"Range", "bytes=5-9", "If-Range", time.Unix(1e9, 0).UTC().Format(http.TimeFormat)}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp := start(t, http.MethodGet, url, tt.hdr...)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("status: got %d, want 200", resp.StatusCode)
				}
				if resp.ContentLength != size {
					t.Errorf("Content-Length: got %d, want %d", resp.ContentLength, size)
				}
				if cr := resp.Header.Get("Content-Range"); cr != "" {
					t.Errorf("Content-Range: got %q, want none", cr)
				}
				head := make([]byte, 3*partSize/2)
				if _, err := io.ReadFull(resp.Body, head); err != nil {
					t.Fatalf("read the first %d bytes: %v", len(head), err)
				}
				if i := meshtest.FirstDiff(head, data[:len(head)]); i >= 0 {
					t.Errorf("body differs from the item at byte %d", i)
				}
			})
		}
	})

	t.Run("If-Range matches", func(t *testing.T) {
		tests := []struct{ name, ifRange string }{
			{"ETag", etag},
			{"Last-Modified", lastModified},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.ifRange == "" {
					t.Fatal("the full GET had no such header")
				}
				resp, body := do(t, http.MethodGet, url, "Range", "bytes=5-9", "If-Range", tt.ifRange)
				if resp.StatusCode != http.StatusPartialContent {
					t.Fatalf("status: got %d, want 206", resp.StatusCode)
				}
				if got, want := resp.Header.Get("Content-Range"), fmt.Sprintf("bytes 5-9/%d", size); got != want {
					t.Errorf("Content-Range: got %q, want %q", got, want)
				}
				if !bytes.Equal(body, data[5:10]) {
					t.Errorf("body: got %x, want %x", body, data[5:10])
				}
			})
		}
	})

	t.Run("HEAD", func(t *testing.T) {
		tests := []struct {
			name       string
			hdr        []string
			wantStatus int
			wantLength int64
			wantRange  string
		}{
			{"whole", nil, http.StatusOK, size, ""},
			{"range", []string{"Range", "bytes=100-199"}, http.StatusPartialContent, 100, fmt.Sprintf("bytes 100-199/%d", size)},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := r.Server.Stats()
				resp, body := do(t, http.MethodHead, url, tt.hdr...)
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantStatus)
				}
				if got := resp.Header.Get("Content-Length"); got != strconv.FormatInt(tt.wantLength, 10) {
					t.Errorf("Content-Length: got %q, want %d", got, tt.wantLength)
				}
				if got := resp.Header.Get("Content-Range"); got != tt.wantRange {
					t.Errorf("Content-Range: got %q, want %q", got, tt.wantRange)
				}
				if got := resp.Header.Get("ETag"); got != etag {
					t.Errorf("ETag: got %q, want %q", got, etag)
				}
				if got := resp.Header.Get("Accept-Ranges"); got != "bytes" {
					t.Errorf("Accept-Ranges: got %q, want bytes", got)
				}
				if len(body) != 0 {
					t.Errorf("body: got %d bytes, want none", len(body))
				}
				after := r.Server.Stats()
				if after.Needs != before.Needs || after.BytesOut != before.BytesOut {
					t.Errorf("needs, bytes out: got %d, %d, want %d, %d (HEAD moves no part)", after.Needs, after.BytesOut, before.Needs, before.BytesOut)
				}
				if after.Requests != before.Requests+1 {
					t.Errorf("requests: got %d, want %d (the HEAD did not reach the relay)", after.Requests, before.Requests+1)
				}
			})
		}
	})

	t.Run("budget released", func(t *testing.T) {
		eventually(t, "reserved budget back to 0", func() bool { return r.Server.Stats().Reserved == 0 })
	})
}

// TestReadTokens checks that a relay serves only requests that carry a
// valid read token for this relay and this item.
func TestReadTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig(), testRelayConfig())
	a, b := e.relays[0], e.relays[1]
	data := meshtest.RandomBytes(3*partSize+5, 2)
	_, it := e.publish(t, data, client.Config{})

	urlA := e.relayURL(t, it.ID, a)
	tokA := readToken(t, urlA)
	path := "/v1/items/" + it.ID.String()
	now := time.Now()
	claims := func(relay string, item proto.ItemID, exp time.Time) proto.Claims {
		return proto.Claims{Dir: proto.DirRead, Relay: relay, Item: item, Len: int64(len(data)), Size: int64(len(data)), Exp: exp.Unix()}
	}
	sign := func(c proto.Claims) string { return proto.SignToken(e.key, c) }
	tampered := func() string {
		// Same signature, claims changed to cover a larger item.
		c := claims(a.ID(), it.ID, now.Add(time.Hour))
		c.Len, c.Size = 1<<40, 1<<40
		forged := sign(c)
		claims, _, _ := strings.Cut(forged, ".")
		_, sig, _ := strings.Cut(tokA, ".")
		return claims + "." + sig
	}
	flipSig := func() string {
		i := len(tokA) - 10
		c := byte('A')
		if tokA[i] == 'A' {
			c = 'B'
		}
		return tokA[:i] + string(c) + tokA[i+1:]
	}
	other := proto.NewItemID()

	tests := []struct {
		name       string
		url        string
		hdr        []string
		wantHTTP   int
		wantStatus proto.Status
	}{
		{"valid token in query", urlA, []string{"Range", "bytes=0-9"}, http.StatusPartialContent, proto.StatusOK},
		{"valid token as bearer", a.URL + path, []string{"Range", "bytes=0-9", "Authorization", "Bearer " + tokA}, http.StatusPartialContent, proto.StatusOK},
		{"no token", a.URL + path, nil, http.StatusUnauthorized, proto.StatusUnauthorized},
		{"empty token", a.URL + path + "?t=", nil, http.StatusUnauthorized, proto.StatusUnauthorized},
		{"garbled token", a.URL + path + "?t=not-a-token", nil, http.StatusUnauthorized, proto.StatusUnauthorized},
		{"tampered claims", a.URL + path + "?t=" + tampered(), nil, http.StatusUnauthorized, proto.StatusUnauthorized},
		{"tampered signature", a.URL + path + "?t=" + flipSig(), nil, http.StatusUnauthorized, proto.StatusUnauthorized},
		{"signed by another key", a.URL + path + "?t=" + proto.SignToken(newEnvKey(t), claims(a.ID(), it.ID, now.Add(time.Hour))), nil, http.StatusUnauthorized, proto.StatusUnauthorized},
		{"token for another relay", b.URL + path + "?t=" + tokA, nil, http.StatusForbidden, proto.StatusWrongRelay},
		{"expired", a.URL + path + "?t=" + sign(claims(a.ID(), it.ID, now.Add(-time.Minute))), nil, http.StatusUnauthorized, proto.StatusExpired},
		{"token for another item", a.URL + "/v1/items/" + other.String() + "?t=" + tokA, nil, http.StatusForbidden, proto.StatusForbidden},
		{"push token", a.URL + path + "?t=" + e.signPush(a.ID(), it.ID, 0, int64(len(data)), 0, now.Add(time.Hour)), nil, http.StatusForbidden, proto.StatusForbidden},
		{"bad item id", a.URL + "/v1/items/not-an-item?t=" + tokA, nil, http.StatusNotFound, proto.StatusNotFound},
		{"unknown item", a.URL + "/v1/items/" + other.String() + "?t=" + sign(claims(a.ID(), other, now.Add(time.Hour))), nil, http.StatusNotFound, proto.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, http.MethodGet, tt.url, tt.hdr...)
			if resp.StatusCode != tt.wantHTTP {
				t.Fatalf("status: got %d %s, want %d", resp.StatusCode, body, tt.wantHTTP)
			}
			if tt.wantStatus == proto.StatusOK {
				if !bytes.Equal(body, data[:10]) {
					t.Errorf("body: got %x, want %x", body, data[:10])
				}
				return
			}
			if got := apiError(t, resp, body); got != tt.wantStatus {
				t.Errorf("error status: got %d (%v), want %d (%v)", got, got, tt.wantStatus, tt.wantStatus)
			}
			if resp.Header.Get("ETag") != "" || resp.Header.Get("Content-Range") != "" {
				t.Errorf("refused response carries item headers: ETag %q, Content-Range %q", resp.Header.Get("ETag"), resp.Header.Get("Content-Range"))
			}
		})
	}
}

// TestEmptyItem reads an item of zero bytes: there is nothing to ask the
// publisher for, and every range is unsatisfiable.
func TestEmptyItem(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	_, it := e.publish(t, nil, client.Config{})
	url := e.itemURL(it.ID, r)
	tests := []struct {
		name      string
		method    string
		hdr       []string
		wantCode  int
		wantRange string
	}{
		{"GET", http.MethodGet, nil, http.StatusOK, ""},
		{"HEAD", http.MethodHead, nil, http.StatusOK, ""},
		{"range", http.MethodGet, []string{"Range", "bytes=0-"}, http.StatusRequestedRangeNotSatisfiable, "bytes */0"},
		{"suffix", http.MethodGet, []string{"Range", "bytes=-10"}, http.StatusRequestedRangeNotSatisfiable, "bytes */0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := do(t, tt.method, url, tt.hdr...)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if got := resp.Header.Get("Content-Length"); got != "0" {
				t.Errorf("Content-Length: got %q, want 0", got)
			}
			if got := resp.Header.Get("Content-Range"); got != tt.wantRange {
				t.Errorf("Content-Range: got %q, want %q", got, tt.wantRange)
			}
			if len(body) != 0 {
				t.Errorf("body: got %d bytes, want none", len(body))
			}
		})
	}
	if s := r.Server.Stats(); s.Needs != 0 || s.Reserved != 0 {
		t.Errorf("needs, reserved: got %d, %d, want 0, 0", s.Needs, s.Reserved)
	}
}

// TestEgressCORS checks what a page's script (the web app's download
// Service Worker, following the rendezvous's redirect) needs to read an
// item and resume it: any origin may read, Content-Range is exposed, and
// errors carry the header too. Requests with a Range are counted.
func TestEgressCORS(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	_, it := e.publish(t, meshtest.RandomBytes(3<<20, 2), client.Config{})
	url := e.relayURL(t, it.ID, r)
	before := r.Server.Stats().Ranges

	tests := []struct {
		name     string
		url      string
		hdr      []string
		wantCode int
	}{
		{"full", url, []string{"Origin", "null"}, http.StatusOK},
		{"range", url, []string{"Origin", "null", "Range", "bytes=1048576-"}, http.StatusPartialContent},
		{"suffix", url, []string{"Range", "bytes=-10"}, http.StatusPartialContent},
		{"no token", r.URL + "/v1/items/" + it.ID.String(), []string{"Origin", "null"}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, _ := do(t, http.MethodGet, tt.url, tt.hdr...)
			if resp.StatusCode != tt.wantCode {
				t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantCode)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != "*" {
				t.Errorf("Access-Control-Allow-Origin: got %q, want *", got)
			}
			if got := resp.Header.Get("Access-Control-Expose-Headers"); !strings.Contains(got, "Content-Range") {
				t.Errorf("Access-Control-Expose-Headers: got %q, want Content-Range among them", got)
			}
		})
	}
	if got := r.Server.Stats().Ranges - before; got != 2 {
		t.Errorf("range requests counted: got %d, want 2", got)
	}
}

// TestManyReadersFewStreamsPerConn has more parts open at once than one
// push connection may carry: the publisher, told the limit in the push
// upgrade, opens more connections, so every read completes and no part is
// refused (issue 14: admission that never breaks a started response).
func TestManyReadersFewStreamsPerConn(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.MaxStreamsPerConn = 2
	e := newEnv(t, cfg)
	r := e.relays[0]
	data := meshtest.RandomBytes(4*partSize, 21)
	_, it := e.publish(t, data, client.Config{})

	const readers = 6 // up to 2 parts open each: 12 parts, 6 connections
	var wg sync.WaitGroup
	errs := make(chan error, readers)
	for range readers {
		wg.Go(func() {
			resp, err := httpClient.Get(e.itemURL(it.ID, r))
			if err != nil {
				errs <- err
				return
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil {
				errs <- fmt.Errorf("status %d, %d bytes, %v", resp.StatusCode, len(body), err)
				return
			}
			if i := meshtest.FirstDiff(body, data); i >= 0 {
				errs <- fmt.Errorf("%d bytes differ from the item at byte %d", len(body), i)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := r.Server.Stats()
	if st.Refusals["streams_per_conn"] != 0 || st.CutShort != 0 {
		t.Errorf("refusals streams_per_conn %d, cut short %d, want 0 and 0", st.Refusals["streams_per_conn"], st.CutShort)
	}
	if st.PushConns < 2 {
		t.Errorf("push connections: got %d, want several (the limit is 2 parts each)", st.PushConns)
	}
}
