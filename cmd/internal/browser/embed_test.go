package browser

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// embedPage is the page of another site that embeds the library: it
// imports it from the rendezvous (query parameter rv) with import(),
// publishes 300,000 bytes and fetches them back across origins. It puts
// what it saw in window.result for embed.mjs.
const embedPage = `<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>another site</title></head>
<body><p>A page of another site.</p>
<script type="module">
const rv = new URLSearchParams(location.search).get('rv');
const libraryURL = rv + '/web/v1/meshup.js';
try {
  const { Client } = await import(libraryURL);
  const data = new Uint8Array(300000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 31 + (i >> 8)) & 0xff;
  const c = new Client({ url: rv });
  const item = await c.publish(new Blob([data], { type: 'application/octet-stream' }), { name: 'embedded.bin', encrypt: false, volunteers: true });
  const resp = await fetch(item.downloadURL);
  const got = new Uint8Array(await resp.arrayBuffer());
  const equal = got.length === data.length && got.every((b, i) => b === data[i]);
  const ranged = await fetch(item.downloadURL, { headers: { Range: 'bytes=10-19' } });
  const part = new Uint8Array(await ranged.arrayBuffer());
  const meta = await (await fetch(rv + '/v1/items/' + item.id + '/meta')).json();
  const info = await (await fetch(rv + '/v1/info')).json();
  const sum = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
  window.result = {
    libraryURL, id: item.id, published: data.length, size: got.length, equal,
    status: resp.status, relay: resp.headers.get('Meshup-Relay'), etag: resp.headers.get('ETag'),
    rangeStatus: ranged.status, contentRange: ranged.headers.get('Content-Range'),
    rangeEqual: part.length === 10 && part.every((b, i) => b === data[10 + i]),
    metaSize: meta.size, infoVersion: info.version,
    sha256: Array.from(sum, (b) => b.toString(16).padStart(2, '0')).join(''),
  };
} catch (e) {
  window.result = { error: String(e && e.stack || e) };
}
</script></body></html>`

// TestBrowserEmbed checks that the browser library works from a page of
// another origin (issue 13): a second local HTTP server serves a page
// that imports /web/v1/meshup.js from the rendezvous, publishes an item
// and fetches it back through the rendezvous's redirect and the relay,
// reading bytes and headers across origins (embed.mjs). The page's origin
// is allowed at the rendezvous only (--allow-origin); the relay learns it
// from its registration. The Go side then downloads the item the page
// published and checks its SHA-256.
func TestBrowserEmbed(t *testing.T) {
	testDir, node := needBrowser(t)

	// The other site: its own port, so its own origin.
	site := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, embedPage)
	}))
	t.Cleanup(site.Close)

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rv := rendezvoustest.Start(t, rendezvous.Config{SigningKey: key, DeadAfter: time.Minute, AllowedOrigins: []string{site.URL}})
	relaytest.Start(t, rv.URL, relay.Config{})
	if strings.EqualFold(site.URL, rv.URL) {
		t.Fatal("the site and the rendezvous share an origin")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "embed.mjs", site.URL+"/?rv="+rv.URL)
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var id, sum string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if f := strings.Fields(line); len(f) == 4 && f[0] == "embed:" && f[1] == "ok" {
			id, sum = f[2], f[3]
			break
		}
	}
	if id != "" {
		// The page's item, downloaded by Go while the page is open.
		got, err := embedDownload(ctx, rv.URL+"/v1/items/"+id)
		if err != nil {
			t.Errorf("download the page's item: %v", err)
		} else if s := sha256.Sum256(got); hex.EncodeToString(s[:]) != sum {
			t.Errorf("the page's item: SHA-256 %x, the page says %s", s, sum)
		}
	}
	fmt.Fprintln(stdin, "done")
	stdin.Close()
	io.Copy(io.Discard, stdout)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("embed.mjs: %v", err)
	}
	if id == "" {
		t.Fatal("embed.mjs did not report success")
	}
}

// embedDownload GETs url, following redirects, and returns the body of a 200.
func embedDownload(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := rendezvoustest.HTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return io.ReadAll(resp.Body)
}
