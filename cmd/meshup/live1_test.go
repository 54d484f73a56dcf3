package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// startLive runs `meshup live ARGS` with stdin fed by the returned pipe and
// returns the printed link.
func startLive(t *testing.T, ctx context.Context, args []string) (link string, stdin *io.PipeWriter, done chan error) {
	t.Helper()
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done = make(chan error, 1)
	go func() {
		done <- liveFrom(ctx, args, stdinR, outW, io.Discard)
		outW.Close()
	}()
	l, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatalf("meshup live printed no link: %v (%v)", err, <-done)
	}
	go io.Copy(io.Discard, outR)
	return strings.TrimSpace(l), stdinW, done
}

// TestLiveSealedVolunteer: `echo ... | meshup live` seals the channel by
// default and goes through a mesh whose only relay is a VOLUNTEER; `meshup
// get` of the printed link RDV/l/ID#k=KEY streams the plaintext; the
// relay never sees it. Links without the key, or with a wrong one, fail
// with clear words.
func TestLiveSealedVolunteer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var (
		mu   sync.Mutex
		seen bytes.Buffer
	)
	wrap := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPut {
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.TeeReader(r.Body, lockedWriter{&mu, &seen}), r.Body}
			}
			h.ServeHTTP(w, r)
		})
	}
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1, WrapRelay: wrap})
	waitDirect(t, m)
	link, stdin, liveErr := startLive(t, ctx, []string{"--rendezvous", m.URL, "--type", "text/plain", "--name", "log.txt"})
	if !strings.HasPrefix(link, m.URL+"/l/") || !strings.Contains(link, "#k=") {
		t.Fatalf("link %q, want %s/l/ID#k=KEY", link, m.URL)
	}
	stdin.Write(nil) // the push has begun
	rel := m.Relays[0]
	meshtest.Eventually(t, 10*time.Second, "the channel's head on the relay", func() bool { return rel.LiveStats().BytesIn > 0 })

	var out bytes.Buffer
	getErr := make(chan error, 1)
	go func() { getErr <- runGet(ctx, []string{link, "-o", "-"}, &out, io.Discard) }()
	meshtest.Eventually(t, 10*time.Second, "the reader subscribed", func() bool { return rel.LiveStats().Subscribers == 1 })

	// Links without the key, or with a wrong one.
	noFrag, _, _ := strings.Cut(link, "#")
	if err := runGet(ctx, []string{noFrag, "-o", "-"}, io.Discard, io.Discard); !errors.Is(err, errLiveNoKey) {
		t.Errorf("get of the page link without its key: %v", err)
	}
	raw := strings.Replace(noFrag, "/l/", "/v1/live/", 1)
	if err := runGet(ctx, []string{raw, "-o", "-"}, io.Discard, io.Discard); !errors.Is(err, errLiveNoKey) {
		t.Errorf("get of the raw stream without a key: %v", err)
	}
	wrong := noFrag + "#" + proto.NewE2EKey().Fragment()
	if err := runGet(ctx, []string{wrong, "-o", "-"}, io.Discard, io.Discard); !errors.Is(err, proto.ErrLiveIntegrity) || !strings.Contains(err.Error(), "wrong key") {
		t.Errorf("get with a wrong key: %v", err)
	}

	const marker = "PLAINTEXT-MARKER-c0ffee"
	var want bytes.Buffer
	for i := range 50 {
		line := marker + " line " + strings.Repeat("x", i) + "\n"
		stdin.Write([]byte(line))
		want.WriteString(line)
	}
	stdin.Close()
	if err := <-liveErr; err != nil {
		t.Fatalf("meshup live: %v", err)
	}
	if err := <-getErr; err != nil || out.String() != want.String() {
		t.Errorf("meshup get: %d bytes (want %d), err %v", out.Len(), want.Len(), err)
	}
	mu.Lock()
	defer mu.Unlock()
	if seen.Len() < want.Len() || bytes.Contains(seen.Bytes(), []byte(marker)) || bytes.Contains(seen.Bytes(), []byte("log.txt")) {
		t.Errorf("the volunteer relay was given %d bytes with plaintext in them (%v)", seen.Len(), bytes.Contains(seen.Bytes(), []byte(marker)))
	}
}

// waitDirect waits until the rendezvous sends publishers to the mesh's
// first relay directly rather than through its tunnel (it learns with
// STUN that the relay is reachable), so that WrapRelay sees their
// requests.
func waitDirect(t *testing.T, m *devmesh.Mesh) {
	t.Helper()
	meshtest.Eventually(t, 10*time.Second, "the relay reachable directly", func() bool {
		id, secret := proto.NewLiveSecret()
		req, _ := http.NewRequest(http.MethodPost, m.URL+"/v1/live/"+id.String()+"?enc=live1", nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := rendezvoustest.HTTP.Do(req)
		if err != nil {
			return false
		}
		var e proto.LiveEntry
		err = decodeOK(resp, &e)
		return err == nil && strings.HasPrefix(e.PushURL, m.RelayURLs[0]+"/")
	})
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

// TestLivePlainCurl: `meshup live --plain` keeps the plaintext channel of
// issue 12, readable with curl at the printed /v1/live/ID link.
func TestLivePlainCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("no curl")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := startMeshWith(t, devmesh.Config{Relays: 1})
	link, stdin, liveErr := startLive(t, ctx, []string{"--rendezvous", m.URL, "--plain"})
	if link != m.URL+"/v1/live/"+strings.TrimPrefix(link, m.URL+"/v1/live/") || strings.Contains(link, "#") {
		t.Fatalf("link %q, want %s/v1/live/ID", link, m.URL)
	}
	stdin.Write(nil)
	rel := m.Relays[0]
	meshtest.Eventually(t, 10*time.Second, "the channel on the relay", func() bool { return rel.LiveStats().Channels == 1 })
	cmd := exec.CommandContext(ctx, curl, "-sSfNL", link)
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, "curl subscribed", func() bool { return rel.LiveStats().Subscribers == 1 })
	stdin.Write([]byte("plain bytes for curl\n"))
	stdin.Close()
	if err := <-liveErr; err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || out.String() != "plain bytes for curl\n" {
		t.Errorf("curl: %q, %v", out.String(), err)
	}
}

// TestLiveClientAPI: the client library's live API (client/live.go): PublishLive and ReadLive of a sealed channel through a
// volunteer relay: the reader gets the head (and the new one), the bytes
// from the live edge, and a clean end; a link without its key is refused;
// an aborted channel ends for its reader without its end mark.
func TestLiveClientAPI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1})
	rel := m.Relays[0]

	p, err := client.PublishLive(ctx, client.LiveOptions{Rendezvous: m.URL, Meta: proto.LiveMeta{Type: "text/plain", Name: "a.txt"}, Init: []byte("init")})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(p.Link, m.URL+"/l/") || !strings.Contains(p.Link, "#k=") {
		t.Fatalf("link %q", p.Link)
	}
	meshtest.Eventually(t, 10*time.Second, "the head on the relay", func() bool { return rel.LiveStats().BytesIn > 0 })
	noKey, _, _ := strings.Cut(p.Link, "#")
	if _, err := client.ReadLive(ctx, noKey, nil); !errors.Is(err, client.ErrLiveNoKey) {
		t.Errorf("ReadLive without the key: %v", err)
	}
	ls, err := client.ReadLive(ctx, p.Link, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	var heads []proto.LiveHeadInfo
	ls.Reader.OnHead = func(h proto.LiveHeadInfo) { heads = append(heads, h) }
	meshtest.Eventually(t, 10*time.Second, "the reader", func() bool { return rel.LiveStats().Subscribers == 1 })
	p.Sync([]byte("one;"))
	p.Head(proto.LiveMeta{Type: "text/markdown"}, nil)
	p.Write([]byte("two;"))
	if _, err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := ls.WriteTo(&out); err != nil || out.String() != "one;two;" {
		t.Errorf("read %q, %v", out.String(), err)
	}
	if len(heads) != 2 || heads[0].Meta.Name != "a.txt" || string(heads[0].Init) != "init" || heads[1].Meta.Type != "text/markdown" {
		t.Errorf("heads %+v", heads)
	}

	// Aborted: the reader sees no end mark.
	p, err = client.PublishLive(ctx, client.LiveOptions{Rendezvous: m.URL})
	if err != nil {
		t.Fatal(err)
	}
	meshtest.Eventually(t, 10*time.Second, "the head on the relay", func() bool { return rel.LiveStats().Channels == 1 })
	ls, err = client.ReadLive(ctx, p.Link, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	meshtest.Eventually(t, 10*time.Second, "the reader", func() bool { return rel.LiveStats().Subscribers == 1 })
	p.Write([]byte("cut;"))
	p.Abort(errors.New("the camera fell"))
	out.Reset()
	if _, err := ls.WriteTo(&out); !errors.Is(err, proto.ErrLiveNoEnd) || out.String() != "cut;" {
		t.Errorf("aborted channel: read %q, %v; want cut; and no end mark", out.String(), err)
	}
}
