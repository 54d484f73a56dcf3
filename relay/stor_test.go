package relay_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// storClient is a STOR/DATA client over gorilla/websocket, as
// WebSocketFileTransfer speaks it.
type storClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialStor(t *testing.T, relayURL string) *storClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(relayURL, "http")+"/v1/stor", nil)
	if err != nil {
		t.Fatalf("dial STOR: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return &storClient{t: t, ws: ws}
}

// storAnswer is a reply of the relay.
type storAnswer struct {
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Message   string `json:"message"`
	BytesRead *int   `json:"bytesRead"`
	Share     string `json:"share"`
	URL       string `json:"url"`
	Expires   string `json:"expires"`
}

func (c *storClient) sendText(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// recv reads one reply, which must be one JSON object in a text frame.
func (c *storClient) recv() storAnswer {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(wait))
	typ, b, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("read reply: %v", err)
	}
	if typ != websocket.TextMessage {
		c.t.Fatalf("reply in a frame of type %d, want text", typ)
	}
	var a storAnswer
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&a); err != nil || dec.More() {
		c.t.Fatalf("reply %q is not exactly one JSON object (%v)", b, err)
	}
	return a
}

// expectClose reads until the relay closes and returns the close code.
func (c *storClient) expectClose() int {
	c.t.Helper()
	c.ws.SetReadDeadline(time.Now().Add(wait))
	for {
		_, _, err := c.ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code
		}
		if err != nil {
			c.t.Fatalf("read: got %v, want a close frame", err)
		}
	}
}

func (c *storClient) stor(name string, size int, typ string) storAnswer {
	c.t.Helper()
	req := map[string]any{"filename": name, "size": size, "parameters": map[string]any{"album": "x", "n": 3}}
	if typ != "" {
		req["type"] = typ
	}
	b, _ := json.Marshal(req)
	c.sendText("STOR: " + string(b))
	return c.recv()
}

// sendBlock sends one block, base64 in a text frame or binary, and checks
// the DATA acknowledgement.
func (c *storClient) sendBlock(b []byte, b64 bool) {
	c.t.Helper()
	var err error
	if b64 {
		err = c.ws.WriteMessage(websocket.TextMessage, []byte(base64.StdEncoding.EncodeToString(b)))
	} else {
		err = c.ws.WriteMessage(websocket.BinaryMessage, b)
	}
	if err != nil {
		c.t.Fatalf("send block: %v", err)
	}
	a := c.recv()
	if a.Type != "DATA" || a.Code != 200 || a.BytesRead == nil || *a.BytesRead != len(b) {
		c.t.Fatalf("block of %d bytes: got reply %+v, want DATA 200 bytesRead %d", len(b), a, len(b))
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestStorUpload uploads with base64 text frames, as older clients do
// (no type), and with binary frames, while a reader streams the item from
// the rendezvous's download URL: it gets its headers, with the final
// Content-Length, before the first block is sent, and the same SHA-256
// in the end. After the uploader has gone the item is still served, with
// Range.
func TestStorUpload(t *testing.T) {
	e := newEnv(t, testRelayConfig())
	for _, tt := range []struct {
		name string
		typ  string
		b64  bool
	}{
		{"base64 without type", "", true},
		{"base64", "base64", true},
		{"binary", "binary", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := randBytes(t, 3<<20+12345)
			c := dialStor(t, e.relays[0].URL)
			a := c.stor("clip.mp4", len(data), tt.typ)
			if a.Type != "STOR" || a.Code != 200 || a.URL == "" || a.Share == "" || a.Expires == "" {
				t.Fatalf("STOR: got %+v, want code 200 with share, url and expires", a)
			}
			if exp, err := time.Parse(time.RFC3339, a.Expires); err != nil || !exp.After(time.Now()) {
				t.Errorf("expires %q: want a time in the future (%v)", a.Expires, err)
			}
			resp := start(t, http.MethodGet, a.URL)
			if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
				t.Fatalf("reader: got status %d length %d, want 200 and %d", resp.StatusCode, resp.ContentLength, len(data))
			}
			if ct := resp.Header.Get("Content-Type"); ct != "video/mp4" {
				t.Errorf("Content-Type: got %q, want video/mp4", ct)
			}
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(resp.Body)
				got <- b
			}()
			for off := 0; off < len(data); {
				n := min(len(data)-off, 100000+off%7)
				c.sendBlock(data[off:off+n], tt.b64)
				off += n
			}
			if g := <-got; sha256.Sum256(g) != sha256.Sum256(data) {
				t.Fatalf("reader got %d bytes, SHA-256 differs from the %d uploaded", len(g), len(data))
			}
			c.ws.Close()
			resp2, body := do(t, http.MethodGet, a.URL, "Range", "bytes=1000-1999")
			if resp2.StatusCode != 206 || !bytes.Equal(body, data[1000:2000]) {
				t.Fatalf("Range after the uploader left: got status %d, %d bytes", resp2.StatusCode, len(body))
			}
		})
	}
}

// TestStorRefusals covers the error replies: each is a reply of the
// message's type with a non-200 code, then a close carrying the status.
func TestStorRefusals(t *testing.T) {
	cfg := testRelayConfig()
	cfg.StorMaxBlock = 4096
	e := newEnv(t, cfg)
	url := e.relays[0].URL
	t.Run("malformed STOR", func(t *testing.T) {
		c := dialStor(t, url)
		c.sendText(`STOR: {"filename": "a", "size": `)
		if a := c.recv(); a.Type != "STOR" || a.Code != 400 || a.Message == "" {
			t.Fatalf("got %+v, want STOR 400 with a message", a)
		}
		if code := c.expectClose(); code != proto.StatusMalformed.CloseCode() {
			t.Errorf("close code: got %d, want %d", code, proto.StatusMalformed.CloseCode())
		}
	})
	t.Run("no size", func(t *testing.T) {
		c := dialStor(t, url)
		c.sendText(`STOR: {"filename": "a"}`)
		if a := c.recv(); a.Type != "STOR" || a.Code != 400 {
			t.Fatalf("got %+v, want STOR 400", a)
		}
	})
	t.Run("unknown verb", func(t *testing.T) {
		c := dialStor(t, url)
		c.sendText(`RETR: {}`)
		if a := c.recv(); a.Type != "STOR" || a.Code != 400 {
			t.Fatalf("got %+v, want STOR 400", a)
		}
	})
	for _, b64 := range []bool{false, true} {
		t.Run(fmt.Sprintf("block over the limit base64=%v", b64), func(t *testing.T) {
			c := dialStor(t, url)
			a := c.stor("big.bin", 1<<20, map[bool]string{true: "base64", false: "binary"}[b64])
			if a.Code != 200 {
				t.Fatalf("STOR: got %+v", a)
			}
			blk := randBytes(t, 4097)
			if b64 {
				c.sendText(base64.StdEncoding.EncodeToString(blk))
			} else {
				c.ws.WriteMessage(websocket.BinaryMessage, blk)
			}
			if a := c.recv(); a.Type != "DATA" || a.Code != 413 {
				t.Fatalf("got %+v, want DATA 413", a)
			}
			if code := c.expectClose(); code != websocket.CloseMessageTooBig {
				t.Errorf("close code: got %d, want %d", code, websocket.CloseMessageTooBig)
			}
			resp, body := do(t, http.MethodGet, a.URL)
			if resp.StatusCode < 400 {
				t.Fatalf("reading the failed upload: got status %d, want an error", resp.StatusCode)
			}
			_ = body
		})
	}
	t.Run("past the size", func(t *testing.T) {
		c := dialStor(t, url)
		if a := c.stor("small.bin", 10, "binary"); a.Code != 200 {
			t.Fatalf("STOR: got %+v", a)
		}
		c.ws.WriteMessage(websocket.BinaryMessage, make([]byte, 11))
		if a := c.recv(); a.Type != "DATA" || a.Code != 413 {
			t.Fatalf("got %+v, want DATA 413", a)
		}
	})
}

// TestStorInterrupted drops the uploader's connection mid-upload: a reader
// streaming the item sees its response cut short (never a complete-looking
// body), and a later read is refused with a status saying why.
func TestStorInterrupted(t *testing.T) {
	e := newEnv(t, testRelayConfig())
	data := randBytes(t, 1<<20)
	c := dialStor(t, e.relays[0].URL)
	a := c.stor("part.bin", len(data), "binary")
	if a.Code != 200 {
		t.Fatalf("STOR: got %+v", a)
	}
	resp := start(t, http.MethodGet, a.URL)
	c.sendBlock(data[:300000], false)
	c.ws.Close()
	got, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("reader: got %d bytes and no error, want the response cut short", len(got))
	}
	checkPrefix(t, got, data)
	resp2, body := do(t, http.MethodGet, a.URL)
	if resp2.StatusCode < 400 || !strings.Contains(string(body), "interrupted") {
		t.Fatalf("read after the interruption: got status %d %s, want an error naming the interruption", resp2.StatusCode, body)
	}
}

// TestStorAuthWebhook runs AUTH against the rendezvous's auth webhook, a
// real local HTTP server that allows the login alice only.
func TestStorAuthWebhook(t *testing.T) {
	var mu sync.Mutex
	var calls []map[string]any
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		json.NewDecoder(r.Body).Decode(&req)
		mu.Lock()
		calls = append(calls, req)
		mu.Unlock()
		cred, _ := req["credentials"].(map[string]any)
		if req["operation"] == "read" {
			if cred["authorization"] != "Bearer r3ad" {
				http.Error(w, "no reader credentials", http.StatusUnauthorized)
			}
			return
		}
		if cred["login"] != "alice" || cred["password"] != "s3cret" {
			http.Error(w, "unknown user", http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"metadata":{"user":"42"}}`)
	}))
	t.Cleanup(hook.Close)
	e := newEnvRV(t, rendezvous.Config{AuthWebhook: hook.URL}, testRelayConfig())

	t.Run("refused", func(t *testing.T) {
		c := dialStor(t, e.relays[0].URL)
		c.sendText(`AUTH: {"login":"mallory","password":"x"}`)
		a := c.recv()
		if a.Type != "AUTH" || a.Code != 403 || !strings.Contains(a.Message, "unknown user") {
			t.Fatalf("got %+v, want AUTH 403 with the webhook's reason", a)
		}
		if code := c.expectClose(); code != proto.StatusForbidden.CloseCode() {
			t.Errorf("close code: got %d, want %d", code, proto.StatusForbidden.CloseCode())
		}
	})
	t.Run("accepted", func(t *testing.T) {
		c := dialStor(t, e.relays[0].URL)
		c.sendText(`AUTH: {"login":"alice","password":"s3cret"}`)
		if a := c.recv(); a.Type != "AUTH" || a.Code != 200 {
			t.Fatalf("got %+v, want AUTH 200", a)
		}
		data := randBytes(t, 5000)
		a := c.stor("a.txt", len(data), "")
		if a.Code != 200 {
			t.Fatalf("STOR: got %+v", a)
		}
		c.sendBlock(data, true)
		resp, body := do(t, http.MethodGet, a.URL, "Authorization", "Bearer r3ad")
		if resp.StatusCode != 200 || !bytes.Equal(body, data) {
			t.Fatalf("read: got status %d, %d bytes", resp.StatusCode, len(body))
		}
		resp, body = do(t, http.MethodGet, a.URL)
		if resp.StatusCode != 403 || !strings.Contains(string(body), "no reader credentials") {
			t.Fatalf("read without credentials: got status %d %s, want 403 with the webhook's reason", resp.StatusCode, body)
		}
	})
	t.Run("no AUTH", func(t *testing.T) {
		c := dialStor(t, e.relays[0].URL)
		if a := c.stor("a.txt", 10, ""); a.Type != "STOR" || a.Code != 403 {
			t.Fatalf("STOR without credentials: got %+v, want 403", a)
		}
	})
	ops := map[string]int{}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range calls {
		ops[fmt.Sprint(c["operation"])]++
	}
	if ops["upload"] == 0 || ops["read"] == 0 {
		t.Errorf("webhook calls by operation: got %v, want upload and read", ops)
	}
}

// TestHeldMultipart reads a held item with two ranges (multipart), then
// checks that the responses left no reader behind: the item can be
// evicted when memory is needed, which an item being read cannot.
func TestHeldMultipart(t *testing.T) {
	cfg := testRelayConfig()
	cfg.Budget = 2 << 20
	e := newEnv(t, cfg)
	rel := e.relays[0]
	data := randBytes(t, 900<<10)
	resp, _ := doBody(t, http.MethodPut, rel.URL+"/v1/upload/m.bin", data)
	url := resp.Header.Get("Location")
	resp, body := do(t, http.MethodGet, url, "Range", "bytes=0-9,100-109")
	if resp.StatusCode != 206 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "multipart/byteranges") ||
		!bytes.Contains(body, data[0:10]) || !bytes.Contains(body, data[100:110]) || resp.ContentLength != int64(len(body)) {
		t.Fatalf("multipart: got %d %q, %d bytes (length %d)", resp.StatusCode, resp.Header.Get("Content-Type"), len(body), resp.ContentLength)
	}
	for i := range 2 {
		if resp, _ := doBody(t, http.MethodPut, rel.URL+"/v1/upload/n"+strconv.Itoa(i), randBytes(t, 900<<10)); resp.StatusCode != 201 {
			t.Fatalf("upload %d: got %d", i, resp.StatusCode)
		}
	}
	if resp, _ := do(t, http.MethodGet, url); resp.StatusCode != 410 {
		t.Fatalf("first item after two more: got %d, want 410 (evicted: no reader left on it)", resp.StatusCode)
	}
}
