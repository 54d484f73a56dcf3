package relay_test

// The tus and socket.io adapters driven by the real, unmodified Node
// clients (tus-js-client, socket.io-client 4.x) in relay/testdata/node.
// They need node and `npm ci` in relay/testdata/node; without them the
// tests skip, unless MESHUP_NODE_TESTS is set (scripts/test sets it), when
// they fail.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// nodeDir is the directory of the Node clients.
const nodeDir = "testdata/node"

func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(nodeDir, "node_modules", "tus-js-client"))
	}
	if err != nil {
		if os.Getenv("MESHUP_NODE_TESTS") != "" {
			t.Fatalf("node clients: %v (run npm ci in relay/%s)", err, nodeDir)
		}
		t.Skipf("node clients not installed (%v): npm ci in relay/%s", err, nodeDir)
	}
	return node
}

// nodeProc is a Node client printing one JSON event a line.
type nodeProc struct {
	t      *testing.T
	events chan map[string]any
	done   chan error
}

func runNode(t *testing.T, script string, args ...string) *nodeProc {
	t.Helper()
	node := needNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	cmd := exec.CommandContext(ctx, node, append([]string{script}, args...)...)
	cmd.Dir = nodeDir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &nodeProc{t: t, events: make(chan map[string]any, 1024), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var ev map[string]any
			if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
				t.Logf("%s: %s", script, sc.Text())
				continue
			}
			p.events <- ev
		}
		close(p.events)
		err := cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%s: %w; stderr: %s", script, err, stderr.String())
		}
		p.done <- err
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// next returns the next event named name, failing on an error event
// (unless name is "error") or when the process ends first.
func (p *nodeProc) next(name string) map[string]any {
	p.t.Helper()
	for ev := range p.events {
		p.t.Logf("node: %v", ev)
		switch ev["event"] {
		case name:
			return ev
		case "error":
			p.t.Fatalf("node client failed: %v", ev)
		}
	}
	err := <-p.done
	p.done <- err // for the cleanup, which waits for it too
	p.t.Fatalf("node client ended before event %q: %v", name, err)
	return nil
}

// all returns every event left, after the process exited.
func (p *nodeProc) all() []map[string]any {
	var evs []map[string]any
	for ev := range p.events {
		p.t.Logf("node: %v", ev)
		evs = append(evs, ev)
	}
	return evs
}

func writeData(t *testing.T, n int) (string, [32]byte) {
	t.Helper()
	data := make([]byte, n)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "data.bin")
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(file)
	return abs, sha256.Sum256(data)
}

// reading is a reader streaming an item while it is uploaded.
type reading struct {
	n    int64
	sum  [32]byte
	err  error
	done chan struct{}
}

func startReading(url string) *reading {
	r := &reading{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		resp, err := httpClient.Get(url)
		if err != nil {
			r.err = err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			r.err = fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
			return
		}
		h := sha256.New()
		r.n, r.err = io.Copy(h, resp.Body)
		copy(r.sum[:], h.Sum(nil))
	}()
	return r
}

func (r *reading) check(t *testing.T, size int, want [32]byte) {
	t.Helper()
	<-r.done
	if r.err != nil || r.n != int64(size) || r.sum != want {
		t.Errorf("the reader got %d bytes (err %v), SHA-256 equal %v; want %d bytes, equal", r.n, r.err, r.sum == want, size)
	}
}

// cutProxy is a TCP proxy to a relay that cuts its first connection once
// the client has sent it cutAt bytes: a forced disconnect mid-upload.
type cutProxy struct {
	addr  string
	cuts  atomic.Int32
	conns atomic.Int32
}

func startCutProxy(t *testing.T, target string, cutAt int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			first := p.conns.Add(1) == 1
			wg.Go(func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { io.Copy(c, s); c.Close() }()
				if !first {
					io.Copy(s, c)
					return
				}
				if n, _ := io.CopyN(s, c, cutAt); n == cutAt {
					p.cuts.Add(1)
					// RST rather than FIN: the client sees its
					// request fail, as on a dropped network.
					c.(*net.TCPConn).SetLinger(0)
				}
			})
		}
	})
	return p
}

func TestNodeTus(t *testing.T) {
	needNode(t)
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	endpoint := r.URL + "/v1/files/"

	t.Run("forced disconnect, automatic resume", func(t *testing.T) {
		const size = 8 << 20
		file, sum := writeData(t, size)
		proxy := startCutProxy(t, strings.TrimPrefix(r.URL, "http://"), 3<<20)
		p := runNode(t, "tus.mjs", "http://"+proxy.addr+"/v1/files/", file, "upload")
		created := p.next("created")
		rd := startReading(created["item"].(string))
		p.next("retry")
		if head := p.next("head"); head["offset"].(float64) <= 0 {
			t.Errorf("resumed at offset %v, want > 0: the bytes before the cut are kept", head["offset"])
		}
		p.next("done")
		rd.check(t, size, sum)
		if proxy.cuts.Load() != 1 {
			t.Errorf("the proxy cut %d connections, want 1", proxy.cuts.Load())
		}
	})

	t.Run("resume from the stored URL in a new process", func(t *testing.T) {
		const size = 4 << 20
		file, sum := writeData(t, size)
		store := filepath.Join(t.TempDir(), "tus-urls.json")
		p1 := runNode(t, "tus.mjs", endpoint, file, "stop:1048576", store)
		created := p1.next("created")
		rd := startReading(created["item"].(string))
		stopped := p1.next("stopped")
		p1.all()
		p2 := runNode(t, "tus.mjs", endpoint, file, "resume", store)
		prev := p2.next("previous")
		if prev["url"] != stopped["url"] {
			t.Errorf("the new process found upload %v, want %v", prev["url"], stopped["url"])
		}
		head := p2.next("head")
		if head["offset"].(float64) < stopped["offset"].(float64) {
			t.Errorf("resumed at offset %v, want at least the %v accepted", head["offset"], stopped["offset"])
		}
		p2.next("done")
		for _, ev := range p2.all() {
			if ev["event"] == "created" {
				t.Error("the new process created another upload")
			}
		}
		rd.check(t, size, sum)
	})

	t.Run("termination", func(t *testing.T) {
		const size = 2 << 20
		file, _ := writeData(t, size)
		p := runNode(t, "tus.mjs", endpoint, file, "terminate")
		created := p.next("created")
		rd := startReading(created["item"].(string))
		term := p.next("terminated")
		<-rd.done
		if rd.err == nil && rd.n == size {
			t.Errorf("a reader of a terminated upload got all %d bytes and no error", size)
		}
		if resp := tusReq(t, http.MethodHead, term["url"].(string), nil); resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusGone {
			t.Errorf("HEAD after termination: got status %d, want 404 or 410", resp.StatusCode)
		}
	})

	t.Run("checksum mismatch", func(t *testing.T) {
		before := r.Server.AdapterStats().TusChecksumFailed
		file, _ := writeData(t, 256<<10)
		p := runNode(t, "tus.mjs", endpoint, file, "checksum")
		created := p.next("created")
		ev := p.next("error")
		if ev["status"].(float64) != 460 {
			t.Errorf("tus-js-client failed with status %v, want 460", ev["status"])
		}
		base := strings.TrimSuffix(endpoint, "/files/") + "/files/"
		u := created["url"].(string)
		if loc, _ := created["location"].(string); loc != "" && !strings.Contains(loc, "/") {
			u = base + loc
		}
		if resp := tusReq(t, http.MethodHead, u, nil); resp.Header.Get("Upload-Offset") != "0" {
			t.Errorf("after the mismatch: Upload-Offset %q, want 0 (nothing appended)", resp.Header.Get("Upload-Offset"))
		}
		if got := r.Server.AdapterStats().TusChecksumFailed; got <= before {
			t.Errorf("tus_checksum_failed: got %d, want above %d", got, before)
		}
	})
}

func TestNodeSocketIO(t *testing.T) {
	needNode(t)
	cfg := testRelayConfig()
	cfg.Adapters.MaxChunk = 64 << 10
	e := newEnv(t, cfg)
	r := e.relays[0]

	t.Run("polling, upgrade, 5 MiB in 10240-byte chunks", func(t *testing.T) {
		const size = 5 << 20 // 512 chunks exactly: the last one is empty
		file, sum := writeData(t, size)
		p := runNode(t, "socketio.mjs", r.URL, "/v1/socket.io/", file, "10240", "upload")
		if c := p.next("open"); c["transport"] != "polling" {
			t.Errorf("the Engine.IO handshake was over %v, want polling first", c["transport"])
		}
		begin := p.next("begin")
		for _, k := range []string{"share", "url", "expires"} {
			if s, _ := begin[k].(string); s == "" {
				t.Errorf("begin_upload acknowledgement has no %q: %v", k, begin)
			}
		}
		rd := startReading(begin["url"].(string))
		ok := p.next("success")
		if ok["url"] != begin["url"] || ok["share"] != begin["share"] || ok["size"].(float64) != size {
			t.Errorf("upload_success %v does not match the begin acknowledgement %v and size %d", ok, begin, size)
		}
		if ok["upgraded"] != true || ok["transport"] != "websocket" {
			t.Errorf("transport %v (upgraded %v), want upgraded to websocket", ok["transport"], ok["upgraded"])
		}
		if ok["acks"].(float64) != size/10240+1 {
			t.Errorf("%v chunks acknowledged, want %d", ok["acks"], size/10240+1)
		}
		rd.check(t, size, sum)
	})

	for _, tc := range []struct {
		mode string
		code float64
	}{
		{"oversize", http.StatusRequestEntityTooLarge},
		{"malformed", http.StatusBadRequest},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			file, _ := writeData(t, 64<<10+1)
			p := runNode(t, "socketio.mjs", r.URL, "/v1/socket.io/", file, fmt.Sprint(64<<10+1), tc.mode)
			begin := p.next("begin")
			ref := p.next("refused")
			msg, _ := ref["error"].(string)
			if ref["code"] != tc.code || msg == "" {
				t.Errorf("refusal %v: want code %v and a message", ref, tc.code)
			}
			if ue := p.next("upload_error"); ue["error"] != msg {
				t.Errorf("upload_error %v, want the refusal's message %q", ue, msg)
			}
			// The session's upload was aborted before the refusal was sent.
			resp, err := httpClient.Get(begin["url"].(string))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode < 400 {
				t.Errorf("the item of a refused upload: got status %d, want an error", resp.StatusCode)
			}
		})
	}
}

// TestNodeTunnel: tus-js-client and socket.io-client reach a relay behind
// NAT through a public relay's tunnel (/v1/relays/ID/...), as the
// rendezvous's GET /v1/upload hands out for such a relay.
func TestNodeTunnel(t *testing.T) {
	needNode(t)
	_, pub, nat := natAndPublic(t)
	base := pub.URL + "/v1/relays/" + nat.ID()

	t.Run("tus", func(t *testing.T) {
		const size = 3 << 20
		file, sum := writeData(t, size)
		p := runNode(t, "tus.mjs", base+"/v1/files/", file, "upload")
		created := p.next("created")
		rd := startReading(created["item"].(string))
		done := p.next("done")
		if u, _ := done["url"].(string); !strings.HasPrefix(u, base+"/v1/files/") {
			t.Errorf("upload URL %q, want one under the tunnel %s/v1/files/", u, base)
		}
		rd.check(t, size, sum)
		// GET on the upload URL through the tunnel, with Range.
		resp, body := do(t, http.MethodGet, done["url"].(string), "Range", "bytes=1000-1999")
		if want := fmt.Sprintf("bytes 1000-1999/%d", size); resp.StatusCode != http.StatusPartialContent || len(body) != 1000 || resp.Header.Get("Content-Range") != want {
			t.Errorf("GET upload URL through the tunnel: got %d, %d bytes, %q; want 206, 1000 bytes, %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"), want)
		}
		if got := nat.Server.AdapterStats().TusDone; got != 1 {
			t.Errorf("tus uploads done on the relay behind NAT: got %d, want 1", got)
		}
	})

	t.Run("socket.io", func(t *testing.T) {
		const size = 1 << 20
		file, sum := writeData(t, size)
		p := runNode(t, "socketio.mjs", pub.URL, "/v1/relays/"+nat.ID()+"/v1/socket.io/", file, "10240", "upload")
		begin := p.next("begin")
		rd := startReading(begin["url"].(string))
		if ok := p.next("success"); ok["transport"] != "websocket" {
			t.Errorf("transport %v, want upgraded to websocket through the tunnel", ok["transport"])
		}
		rd.check(t, size, sum)
		if got := nat.Server.AdapterStats().SocketIODone; got != 1 {
			t.Errorf("socket.io uploads done on the relay behind NAT: got %d, want 1", got)
		}
	})
}
