package browser

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/proto"
)

// harness is the Go side of the browser tests: it makes the 200 MiB file
// of test 1 from a known PRNG, taps every PartData payload relays receive
// and every request URL they serve, checks that neither the file's
// plaintext nor its name crossed a relay, and answers run.mjs's requests:
// download and decrypt an item the browser encrypted with the Go client
// (client.DownloadTo, proto's e2e1 reader), publish an encrypted item from
// a Go client (client.Publish) for page B to decrypt, make a relay flip a
// byte.
//
// Plaintext detection. The file is indexed by a 64-byte window at every
// 256th offset (819,200 windows for 200 MiB). Every tapped payload is
// scanned at every byte offset with a Rabin-Karp rolling hash, and a hit
// is confirmed by comparing the bytes, so a hash collision can cause no
// false report. Payloads of one part are joined across frames (the last
// 318 bytes of a payload are kept for the next), so any run of at least
// 64+256-1 = 319 consecutive plaintext bytes of the file inside any part
// a relay received contains one indexed window and is found, wherever it
// sits in the part: the check is deterministic, not a sample. Runs shorter
// than 319 bytes are not looked for: a random 64-byte window occurring
// by chance in ciphertext is impossible in practice, and a leak of the
// file would not come in pieces that short.
type harness struct {
	t       *testing.T
	base    string           // rendezvous URL, once the mesh runs
	bigFile string           // the file of tests 1 and 4
	name    []byte           // its name, which must never reach a relay
	goName  []byte           // the name of the Go client's file (test 11), likewise
	plain   []byte           // the big file, then the Go client's file
	index   map[uint64]int64 // window hash -> plaintext offset
	filter  []uint64         // bitmap of window hashes' low bits, before the map
	scanQ   chan tapPayload
	done    chan struct{}

	goClient *client.Client // publisher of the Go -> browser test; serve's goroutine only

	mu      sync.Mutex // guards the fields below
	tapped  int64
	frames  int
	leaks   []string
	urls    []string
	nameHit []string
	tails   map[partKey][]byte
	tamper  proto.ItemID // item whose next payload a relay flips a byte of
	flipped string
}

type partKey struct {
	item proto.ItemID
	off  int64
}

type tapPayload struct {
	key partKey
	b   []byte
}

const (
	leakWindow  = 64
	leakStride  = 256
	leakKeep    = leakWindow + leakStride - 2
	rollBase    = 0x100000001b3
	filterBits  = 1 << 24
	bigFileSize = 200 << 20
)

// newHarness writes the big file under dir, from a seeded PRNG, and
// indexes it.
func newHarness(t *testing.T, dir string) *harness {
	h := &harness{
		t:      t,
		name:   []byte("meshup-secret-plan-Q7x.bin"),
		goName: []byte("meshup-go-secret-R4k.bin"),
		tails:  make(map[partKey][]byte),
		scanQ:  make(chan tapPayload, 64),
		done:   make(chan struct{}),
	}
	h.bigFile = dir + "/" + string(h.name)
	h.plain = make([]byte, bigFileSize+goFileSize)
	rand.NewChaCha8([32]byte{'m', 'e', 's', 'h', 'u', 'p'}).Read(h.plain[:bigFileSize])
	rand.NewChaCha8([32]byte{'g', 'o', 'c', 'l', 'i', 'e', 'n', 't'}).Read(h.plain[bigFileSize:])
	if err := os.WriteFile(h.bigFile, h.plain[:bigFileSize], 0o600); err != nil {
		t.Fatal(err)
	}
	h.index = make(map[uint64]int64, len(h.plain)/leakStride)
	h.filter = make([]uint64, filterBits/64)
	for _, f := range [][2]int{{0, bigFileSize}, {bigFileSize, len(h.plain)}} {
		for off := f[0]; off+leakWindow <= f[1]; off += leakStride {
			x := windowHash(h.plain[off : off+leakWindow])
			h.index[x] = int64(off)
			h.filter[(x%filterBits)/64] |= 1 << (x % 64)
		}
	}
	go h.scanLoop()
	return h
}

func windowHash(b []byte) uint64 {
	var x uint64
	for _, c := range b {
		x = x*rollBase + uint64(c)
	}
	return x
}

// tap is relay.Config.Tap: it flips a byte when armed, and queues a copy
// of the payload for the scanner.
func (h *harness) tap(item proto.ItemID, off int64, b []byte) {
	h.mu.Lock()
	h.tapped += int64(len(b))
	h.frames++
	if !h.tamper.IsZero() && item == h.tamper && len(b) > 0 {
		i := len(b) / 2
		b[i] ^= 1
		h.flipped = fmt.Sprintf("byte %d of a payload of the part at %d", i, off)
		h.tamper = proto.ItemID{}
	}
	h.mu.Unlock()
	h.scanQ <- tapPayload{key: partKey{item, off}, b: bytes.Clone(b)}
}

func (h *harness) scanLoop() {
	defer close(h.done)
	var pow uint64 = 1 // rollBase^(leakWindow-1)
	for range leakWindow - 1 {
		pow *= rollBase
	}
	for p := range h.scanQ {
		h.mu.Lock()
		buf := append(h.tails[p.key], p.b...)
		h.mu.Unlock()
		for _, name := range [][]byte{h.name, h.goName} {
			if bytes.Contains(buf, name) {
				h.mu.Lock()
				h.nameHit = append(h.nameHit, fmt.Sprintf("%s in a payload of item %s", name, p.key.item))
				h.mu.Unlock()
			}
		}
		if len(buf) >= leakWindow {
			x := windowHash(buf[:leakWindow])
			for i := 0; ; i++ {
				if h.filter[(x%filterBits)/64]&(1<<(x%64)) != 0 {
					if off, ok := h.index[x]; ok && bytes.Equal(buf[i:i+leakWindow], h.plain[off:off+leakWindow]) {
						h.mu.Lock()
						what := fmt.Sprintf("the 200 MiB file at offset %d", off)
						if off >= bigFileSize {
							what = fmt.Sprintf("the Go client's file at offset %d", off-bigFileSize)
						}
						h.leaks = append(h.leaks, fmt.Sprintf("item %s part at %d: plaintext of %s", p.key.item, p.key.off, what))
						h.mu.Unlock()
					}
				}
				if i+leakWindow >= len(buf) {
					break
				}
				x = (x-uint64(buf[i])*pow)*rollBase + uint64(buf[i+leakWindow])
			}
		}
		keep := buf[max(0, len(buf)-leakKeep):]
		h.mu.Lock()
		h.tails[p.key] = bytes.Clone(keep)
		h.mu.Unlock()
	}
}

// wrap records the URL of every request a relay serves.
func (h *harness) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.urls = append(h.urls, r.URL.String())
		h.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

// check waits for the scanner and reports what crossed relays.
func (h *harness) check(t *testing.T, ranTest1 bool) {
	close(h.scanQ)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	tokens := 0
	for _, u := range h.urls {
		var claims []byte
		if pu, err := url.Parse(u); err == nil {
			if tok := pu.Query().Get("t"); tok != "" {
				tokens++
				body, _, _ := strings.Cut(tok, ".")
				claims, _ = base64.RawURLEncoding.DecodeString(body)
			}
		}
		for _, name := range []string{string(h.name), string(h.goName)} {
			if strings.Contains(u, name) || strings.Contains(u, url.PathEscape(name)) {
				h.nameHit = append(h.nameHit, "request URL "+u)
			}
			if bytes.Contains(claims, []byte(name)) {
				h.nameHit = append(h.nameHit, "token claims "+string(claims))
			}
		}
	}
	for _, l := range h.leaks {
		t.Errorf("plaintext crossed a relay: %s", l)
	}
	for _, n := range h.nameHit {
		t.Errorf("the file name crossed a relay: %s", n)
	}
	if ranTest1 && h.tapped < bigFileSize {
		t.Errorf("relays received %d bytes of PartData, want at least the %d of test 1: the tap saw nothing", h.tapped, bigFileSize)
	}
	t.Logf("figure: tap: %d bytes in %d PartData payloads scanned at every offset, %d plaintext windows of the 200 MiB file or the Go client's file found (any run of >= %d plaintext bytes would be); "+
		"file names absent from payloads, %d relay request URLs and %d read tokens",
		h.tapped, h.frames, len(h.leaks), leakKeep+1, len(h.urls), tokens)
}

// serve answers run.mjs's requests ("harness: REQUEST" lines on its
// stdout) on its stdin, and copies its other output to ours. It closes
// the Go client it started, if any, when run.mjs's output ends.
func (h *harness) serve(ctx context.Context, stdout io.Reader, stdin io.WriteCloser) {
	defer stdin.Close()
	defer func() {
		if h.goClient != nil {
			h.goClient.Close()
		}
	}()
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		req, ok := strings.CutPrefix(line, "harness: ")
		if !ok {
			continue
		}
		verb, arg, _ := strings.Cut(req, " ")
		var answer string
		switch verb {
		case "decrypt":
			sum, name, err := h.decrypt(ctx, arg)
			if err != nil {
				answer = "error " + strings.ReplaceAll(err.Error(), "\n", " ")
			} else {
				answer = sum + " " + name
			}
		case "publish":
			link, sum, err := h.publish(ctx)
			if err != nil {
				answer = "error " + strings.ReplaceAll(err.Error(), "\n", " ")
			} else {
				answer = link + " " + sum + " " + string(h.goName)
			}
		case "tamper":
			id, err := proto.ParseItemID(arg)
			if err != nil {
				answer = "error " + err.Error()
				break
			}
			h.mu.Lock()
			h.tamper, h.flipped = id, ""
			h.mu.Unlock()
			answer = "armed"
		case "tampered":
			h.mu.Lock()
			answer = h.flipped
			if answer == "" {
				answer = "nothing"
			}
			h.mu.Unlock()
		default:
			answer = "error unknown request"
		}
		fmt.Fprintln(stdin, answer)
	}
}

// decrypt downloads the item of a share link the browser made through
// the Go client's download path (client.DownloadTo, which decrypts with
// proto's e2e1 implementation): the SHA-256 of the plaintext and the name
// from the sealed metadata (client.Inspect).
func (h *harness) decrypt(ctx context.Context, link string) (sum, name string, err error) {
	info, err := client.Inspect(ctx, nil, link)
	if err != nil {
		return "", "", err
	}
	if !info.Encrypted {
		return "", "", errors.New("the item is not encrypted")
	}
	hash := sha256.New()
	n, err := client.DownloadTo(ctx, link, hash, client.FileOptions{})
	if err != nil {
		return "", "", err
	}
	if n != info.Size {
		return "", "", fmt.Errorf("downloaded %d bytes, the item has %d", n, info.Size)
	}
	return hex.EncodeToString(hash.Sum(nil)), info.Name, nil
}

// goFileSize is the size of the file the Go client publishes for page B:
// more than one 64 KiB chunk, the last one short.
const goFileSize = (5 << 20) + 4321

// publish has a Go client (client.New, client.Publish with default
// encryption) publish the Go client's file (made from a seeded PRNG and
// indexed for the leak check like the big file) under h.goName: its share
// link and the SHA-256 of its plaintext. The client serves the item's
// orders until serve returns.
func (h *harness) publish(ctx context.Context) (link, sum string, err error) {
	if h.goClient == nil {
		c, err := client.New(client.Config{Rendezvous: h.base, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return "", "", err
		}
		h.goClient = c
	}
	if err := h.goClient.WaitOnline(ctx); err != nil {
		return "", "", fmt.Errorf("go client online: %w", err)
	}
	data := h.plain[bigFileSize:]
	it, err := h.goClient.Publish(ctx, client.Source{
		Name:   string(h.goName),
		MIME:   "application/octet-stream",
		Size:   int64(len(data)),
		Reader: bytes.NewReader(data),
	})
	if err != nil {
		return "", "", err
	}
	if !it.Encrypted {
		return "", "", errors.New("the Go client published plaintext")
	}
	s := sha256.Sum256(data)
	return it.ShareURL, hex.EncodeToString(s[:]), nil
}

// needBrowser skips t under -short, and unless Node, Chromium,
// playwright-core (npm ci in client/web/test) and the commands named in
// tools are here; with MESHUP_REQUIRE_BROWSER=1 (scripts/test) a missing
// one fails it instead. It returns the client/web/test directory and the
// node binary.
func needBrowser(t *testing.T, tools ...string) (testDir, node string) {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests take minutes; run without -short (scripts/test does)")
	}
	missing := t.Skip
	if os.Getenv("MESHUP_REQUIRE_BROWSER") == "1" {
		missing = t.Fatal
	}
	testDir, err := filepath.Abs("../../../client/web/test")
	if err != nil {
		t.Fatal(err)
	}
	node, err = exec.LookPath("node")
	if err != nil {
		missing("node is not installed")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing(tool + " is not installed (apt-get install " + tool + ")")
		}
	}
	for _, need := range []struct{ path, what string }{
		{chromium, "chromium is not installed (apt-get install chromium)"},
		{filepath.Join(testDir, "node_modules", "playwright-core"), "playwright-core is not installed (npm ci in client/web/test)"},
	} {
		if _, err := os.Stat(need.path); err != nil {
			missing(need.what)
		}
	}
	return testDir, node
}
