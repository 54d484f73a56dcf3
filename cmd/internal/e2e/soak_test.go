package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
)

// The soak (issue 14): many concurrent readers of several items through
// several relays while relays are killed and restarted, the rendezvous is
// restarted and a sender is restarted with --state. scripts/soak runs the
// full version by hand; scripts/test runs a short one. Every figure comes
// from env, with the short version's values as defaults:
//
//	MESHUP_SOAK=1                 run at all (the test is skipped otherwise)
//	MESHUP_SOAK_DURATION=45s      how long readers keep reading
//	MESHUP_SOAK_READERS=40        concurrent readers
//	MESHUP_SOAK_RELAYS=3          relays
//	MESHUP_SOAK_ITEMS=3           items, each published by its own sender
//	MESHUP_SOAK_ITEM_SIZE=16MiB   bytes per item (suffixes KiB, MiB, GiB)
//	MESHUP_SOAK_RELAY_EVERY=20s   kill one relay (round robin) and restart it this often
//	MESHUP_SOAK_RDV_RESTARTS=1    rendezvous restarts, spread over the run
//	MESHUP_SOAK_BUDGET=32MiB      relay memory budget (small, so 429s happen)
//
// What must hold: every completed read is intact (SHA-256); a reader is
// refused only with a status before any body (429 when over a limit, 503
// while a publisher or the rendezvous is coming back); a body ends short
// only on a relay that was killed, and the reader then resumes with Range
// through the rendezvous and finishes; links (download URLs, share links)
// stay the same across rendezvous and sender restarts.

type soakConfig struct {
	duration    time.Duration
	readers     int
	relays      int
	items       int
	itemSize    int64
	relayEvery  time.Duration
	rdvRestarts int
	budget      int64
}

func soakConfigFromEnv(t *testing.T) soakConfig {
	c := soakConfig{
		duration: 45 * time.Second, readers: 40, relays: 3, items: 3, itemSize: 16 << 20,
		relayEvery: 20 * time.Second, rdvRestarts: 1, budget: 32 << 20,
	}
	env := func(name string, f func(string) error) {
		if v := os.Getenv(name); v != "" {
			if err := f(v); err != nil {
				t.Fatalf("%s=%q: %v", name, v, err)
			}
		}
	}
	dur := func(p *time.Duration) func(string) error {
		return func(v string) (err error) { *p, err = time.ParseDuration(v); return }
	}
	num := func(p *int) func(string) error {
		return func(v string) (err error) { *p, err = strconv.Atoi(v); return }
	}
	size := func(p *int64) func(string) error {
		return func(v string) (err error) { *p, err = parseSize(v); return }
	}
	env("MESHUP_SOAK_DURATION", dur(&c.duration))
	env("MESHUP_SOAK_READERS", num(&c.readers))
	env("MESHUP_SOAK_RELAYS", num(&c.relays))
	env("MESHUP_SOAK_ITEMS", num(&c.items))
	env("MESHUP_SOAK_ITEM_SIZE", size(&c.itemSize))
	env("MESHUP_SOAK_RELAY_EVERY", dur(&c.relayEvery))
	env("MESHUP_SOAK_RDV_RESTARTS", num(&c.rdvRestarts))
	env("MESHUP_SOAK_BUDGET", size(&c.budget))
	return c
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	for suf, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if s, ok := strings.CutSuffix(v, suf); ok {
			v, mult = s, m
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n * mult, err
}

// soakItem is one published item and the sender process serving it.
type soakItem struct {
	file     string
	state    string
	sum      []byte
	size     int64
	download string
	share    string

	mu     sync.Mutex // guards sender
	sender *proc
}

// soakStats counts what readers saw.
type soakStats struct {
	completed, corrupt, resumed, brokenCuts   atomic.Int64
	refused429, refused503, otherStatus       atomic.Int64
	connErrors, reads, failed, bytes          atomic.Int64
	retryAfterMissing, rangeMismatch, started atomic.Int64

	mu      sync.Mutex       // guards reasons
	reasons map[string]int64 // refusals by status and reason, digits elided
}

// refused counts a refusal by its status and the reason in its body, with
// numbers replaced by N so that the same limit counts once.
func (st *soakStats) refused(code int, body []byte) {
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(body, &e)
	reason := strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return 'N'
		}
		return r
	}, e.Error)
	for strings.Contains(reason, "NN") {
		reason = strings.ReplaceAll(reason, "NN", "N")
	}
	if len(reason) > 120 {
		reason = reason[:120]
	}
	key := fmt.Sprintf("%d %s", code, reason)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.reasons == nil {
		st.reasons = map[string]int64{}
	}
	if _, ok := st.reasons[key]; ok || len(st.reasons) < 50 {
		st.reasons[key]++
	}
}

// topReasons returns the refusals by reason, the most frequent first.
func (st *soakStats) topReasons() []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []string
	for k, n := range st.reasons {
		out = append(out, fmt.Sprintf("%6d  %s", n, k))
	}
	sort.Sort(sort.Reverse(sort.StringSlice(out)))
	return out
}

// soakMesh is the set of processes of a soak.
type soakMesh struct {
	t       *testing.T
	rdvPort int
	rdv     string
	budget  int64

	mu       sync.Mutex // guards the fields below
	keyDir   string     // the --key-file of each process, kept across its restarts
	rdvProc  *proc
	relays   []*proc
	relayURL []string
	killed   map[string]bool // relay hosts killed at least once
	peakRSS  int64
}

// keyFile returns the path of the --key-file of the process called name.
func (m *soakMesh) keyFile(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.keyDir == "" {
		m.keyDir = m.t.TempDir()
	}
	return filepath.Join(m.keyDir, name+".key")
}

// startRendezvous starts the rendezvous with its key file, so that the
// tokens of reads in flight stay valid across its restarts.
func (m *soakMesh) startRendezvous() {
	key := m.keyFile("rendezvous")
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rdvProc = start(m.t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", m.rdvPort),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", m.rdv, "--key-file", key,
		"--dead-after", "3s", "--stun", "127.0.0.1:0",
		"--allow-private-addrs") // loopback (issue 8); the items are encrypted, so volunteers carry them
}

// startRelay starts relay i on a fresh port, under the peer id of its key
// file: a restarted relay re-registers under the id it had.
func (m *soakMesh) startRelay(i int) {
	port := freePort(m.t)
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := start(m.t, "relay", nil, "--rendezvous", m.rdv, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--key-file", m.keyFile(fmt.Sprintf("relay-%d", i)),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs", "--budget", strconv.FormatInt(m.budget, 10), "--log", "warn")
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.relays) <= i {
		m.relays = append(m.relays, nil)
		m.relayURL = append(m.relayURL, "")
	}
	m.relays[i], m.relayURL[i] = p, u
}

// killRelay kills relay i after noting its peak RSS, and marks its host as
// killed so that bodies cut there count as resumed, not broken.
func (m *soakMesh) killRelay(i int) {
	m.mu.Lock()
	p, u := m.relays[i], m.relayURL[i]
	m.killed[strings.TrimPrefix(u, "http://")] = true
	m.mu.Unlock()
	m.notePeak(p)
	p.kill()
}

func (m *soakMesh) notePeak(p *proc) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			m.mu.Lock()
			m.peakRSS = max(m.peakRSS, kb<<10)
			m.mu.Unlock()
		}
	}
}

func (m *soakMesh) wasKilled(host string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.killed[host]
}

// startSender runs `meshup send --state` for it and waits for its URLs.
func (m *soakMesh) startSender(it *soakItem) {
	pr, pw := io.Pipe()
	args := []string{"send", "--rendezvous", m.rdv}
	if it.state != "" {
		args = append(args, "--state", it.state)
	}
	p := start(m.t, "meshup", pw, append(args, it.file)...)
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var got []string
	timeout := time.After(30 * time.Second)
	for len(got) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				m.t.Fatalf("meshup send exited early:\n%s", p.log.String())
			}
			got = append(got, l)
		case <-timeout:
			m.t.Fatalf("meshup send printed no URLs:\n%s", p.log.String())
		}
	}
	go io.Copy(io.Discard, pr)
	it.mu.Lock()
	defer it.mu.Unlock()
	if it.download != "" && (got[0] != it.share || got[1] != it.download) {
		m.t.Errorf("restarted sender printed %v, want the same links %s %s", got, it.share, it.download)
	}
	if it.download == "" {
		it.size, it.sum = soakCipher(m.t, it.file, got[0], it.size, it.sum)
	}
	it.share, it.download, it.sender = got[0], got[1], p
}

// soakCipher returns the size and SHA-256 of what readers of link get: the
// file's ciphertext when the link carries a key (meshup send encrypts by
// default), else the file itself (size and sum). Sealing is deterministic,
// so the ciphertext is known from the key and the item id.
func soakCipher(t *testing.T, file, link string, size int64, sum []byte) (int64, []byte) {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		t.Fatal(err)
	}
	key, found, err := proto.ParseE2EFragment(u.Fragment)
	if err != nil {
		t.Fatal(err)
	}
	if !found {
		return size, sum
	}
	id, err := proto.ParseItemID(path.Base(u.Path))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	e := proto.NewE2EItem(key, id)
	h := sha256.New()
	n := proto.E2EChunks(int64(len(plain)))
	var sealed []byte
	for i := range n {
		chunk := plain[i*proto.E2EChunkSize : min(int64(len(plain)), (i+1)*proto.E2EChunkSize)]
		sealed = e.SealChunk(sealed[:0], chunk, uint64(i), i == n-1)
		h.Write(sealed)
	}
	csize, err := proto.E2ECipherSize(int64(len(plain)))
	if err != nil {
		t.Fatal(err)
	}
	return csize, h.Sum(nil)
}

// soakFile writes size bytes from seed to dir and returns its path and
// SHA-256.
func soakFile(t *testing.T, dir string, seed byte, size int64) (string, []byte) {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("item-%d.bin", seed))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8([32]byte{seed}), size); err != nil {
		t.Fatal(err)
	}
	return path, h.Sum(nil)
}

// TestSoak is the soak described above.
func TestSoak(t *testing.T) {
	if os.Getenv("MESHUP_SOAK") == "" {
		t.Skip("set MESHUP_SOAK=1 (scripts/soak, or the short run of scripts/test)")
	}
	cfg := soakConfigFromEnv(t)
	t.Logf("soak: %v, %d readers, %d relays (budget %d MiB), %d items of %d MiB, a relay restart every %v, %d rendezvous restarts",
		cfg.duration, cfg.readers, cfg.relays, cfg.budget>>20, cfg.items, cfg.itemSize>>20, cfg.relayEvery, cfg.rdvRestarts)

	m := &soakMesh{t: t, rdvPort: freePort(t), budget: cfg.budget, killed: map[string]bool{}}
	m.rdv = fmt.Sprintf("http://127.0.0.1:%d", m.rdvPort)
	m.startRendezvous()
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(m.rdv) != nil })
	for i := range cfg.relays {
		m.startRelay(i)
	}
	waitFor(t, "relays to register", 30*time.Second, func() bool { return len(liveRelays(m.rdv)) == cfg.relays })

	dir := t.TempDir()
	items := make([]*soakItem, cfg.items)
	for i := range items {
		file, sum := soakFile(t, dir, byte(i+1), cfg.itemSize)
		items[i] = &soakItem{file: file, sum: sum, size: cfg.itemSize, state: filepath.Join(dir, fmt.Sprintf("state-%d.json", i))}
		m.startSender(items[i])
	}

	var st soakStats
	ctx, cancel := context.WithTimeout(context.Background(), cfg.duration)
	defer cancel()
	var wg sync.WaitGroup
	for r := range cfg.readers {
		wg.Go(func() {
			for k := r; ctx.Err() == nil; k += cfg.readers {
				it := items[k%len(items)]
				it.mu.Lock()
				u := it.download
				it.mu.Unlock()
				soakRead(ctx, m, &st, u, it.size, it.sum)
			}
		})
	}

	// Chaos: a relay killed and restarted every relayEvery, the rendezvous
	// restarted rdvRestarts times, one sender restarted with its state.
	chaos := make(chan struct{})
	var events []string
	go func() {
		defer close(chaos)
		begin := time.Now()
		relayTick := time.NewTicker(cfg.relayEvery)
		defer relayTick.Stop()
		var rdvAt []time.Duration
		for i := range cfg.rdvRestarts {
			rdvAt = append(rdvAt, cfg.duration*time.Duration(2*i+1)/time.Duration(2*cfg.rdvRestarts+1)+cfg.relayEvery/3)
		}
		senderAt := cfg.duration * 2 / 3
		senderDone := false
		next := 0
		for {
			var rdvC <-chan time.Time
			if len(rdvAt) > 0 {
				rdvC = time.After(time.Until(begin.Add(rdvAt[0])))
			}
			var senderC <-chan time.Time
			if !senderDone {
				senderC = time.After(time.Until(begin.Add(senderAt)))
			}
			select {
			case <-ctx.Done():
				return
			case <-relayTick.C:
				i := next % cfg.relays
				next++
				m.killRelay(i)
				m.startRelay(i)
				events = append(events, fmt.Sprintf("%v relay %d killed and restarted", time.Since(begin).Round(time.Second), i))
			case <-rdvC:
				rdvAt = rdvAt[1:]
				m.mu.Lock()
				p := m.rdvProc
				m.mu.Unlock()
				p.kill()
				downAt := time.Now()
				time.Sleep(time.Second)
				m.startRendezvous()
				// Links must come back: every item's download URL stops
				// answering 503 once its sender has reclaimed it.
				back := waitLinks(items, 60*time.Second)
				events = append(events, fmt.Sprintf("%v rendezvous restarted (down 1s); all %d links back after %v: %v",
					time.Since(begin).Round(time.Second), len(items), time.Since(downAt).Round(100*time.Millisecond), back))
				if !back {
					t.Errorf("links not back within 60s of the rendezvous restart")
				}
			case <-senderC:
				senderDone = true
				it := items[0]
				it.mu.Lock()
				p := it.sender
				it.mu.Unlock()
				p.kill()
				m.startSender(it)
				back := waitLinks(items[:1], 30*time.Second)
				events = append(events, fmt.Sprintf("%v sender 0 killed and restarted with --state; same link serving: %v", time.Since(begin).Round(time.Second), back))
				if !back {
					t.Errorf("the restarted sender's link did not come back within 30s")
				}
			}
		}
	}()
	<-ctx.Done()
	<-chaos
	// Readers in the middle of a read finish it (they were admitted); give
	// them a bound.
	readersDone := make(chan struct{})
	go func() { wg.Wait(); close(readersDone) }()
	select {
	case <-readersDone:
	case <-time.After(3 * time.Minute):
		t.Errorf("readers did not finish within 3 minutes of the end")
	}
	m.mu.Lock()
	relays := slicesClone(m.relays)
	m.mu.Unlock()
	for _, p := range relays {
		m.notePeak(p)
	}
	for _, e := range events {
		t.Log(e)
	}
	t.Logf("reads started %d: completed %d, corrupt %d, resumed %d, cut on a live relay %d, failed %d; refused before any body: 429 %d, 503 %d, other %d; connection errors %d; %d MiB read",
		st.started.Load(), st.completed.Load(), st.corrupt.Load(), st.resumed.Load(), st.brokenCuts.Load(), st.failed.Load(),
		st.refused429.Load(), st.refused503.Load(), st.otherStatus.Load(), st.connErrors.Load(), st.bytes.Load()>>20)
	for _, r := range st.topReasons() {
		t.Logf("refused: %s", r)
	}
	t.Logf("relay peak RSS %d MiB, budget %d MiB", m.peakRSS>>20, cfg.budget>>20)
	if st.corrupt.Load() != 0 {
		t.Errorf("%d corrupt reads", st.corrupt.Load())
	}
	if st.brokenCuts.Load() != 0 {
		t.Errorf("%d bodies cut short on a relay that was not killed", st.brokenCuts.Load())
	}
	if st.failed.Load() != 0 || st.otherStatus.Load() != 0 {
		t.Errorf("%d reads failed, %d unexpected statuses", st.failed.Load(), st.otherStatus.Load())
	}
	if st.retryAfterMissing.Load() != 0 || st.rangeMismatch.Load() != 0 {
		t.Errorf("%d refusals without Retry-After, %d resumes answered with the wrong range", st.retryAfterMissing.Load(), st.rangeMismatch.Load())
	}
	if st.completed.Load() == 0 {
		t.Errorf("no read completed")
	}
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

// waitLinks waits until every item's download URL redirects to a relay.
func waitLinks(items []*soakItem, d time.Duration) bool {
	c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	deadline := time.Now().Add(d)
	for _, it := range items {
		it.mu.Lock()
		u := it.download
		it.mu.Unlock()
		for {
			resp, err := c.Get(u)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusTemporaryRedirect {
					break
				}
			}
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return true
}

var soakClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64, ResponseHeaderTimeout: time.Minute}}

// soakRead reads the item at url whole, resuming with Range after a cut,
// and checks it. It gives up on an item only when ctx has ended and it has
// not started reading yet.
func soakRead(ctx context.Context, m *soakMesh, st *soakStats, url string, size int64, want []byte) {
	h := sha256.New()
	var off int64
	started := false
	giveUp := time.Time{}
	for off < size {
		if !started && ctx.Err() != nil {
			return
		}
		if !giveUp.IsZero() && time.Now().After(giveUp) {
			st.failed.Add(1)
			m.t.Logf("read of %s gave up at byte %d of %d", url, off, size)
			return
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if off > 0 {
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
		}
		resp, err := soakClient.Do(req)
		if err != nil {
			st.connErrors.Add(1) // the rendezvous or the relay is restarting
			time.Sleep(200 * time.Millisecond)
			continue
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusPartialContent:
		case http.StatusTooManyRequests, http.StatusServiceUnavailable:
			if resp.Header.Get("Retry-After") == "" {
				st.retryAfterMissing.Add(1)
			}
			if resp.StatusCode == http.StatusTooManyRequests {
				st.refused429.Add(1)
			} else {
				st.refused503.Add(1)
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			st.refused(resp.StatusCode, body)
			resp.Body.Close()
			time.Sleep(time.Duration(200+rand.IntN(800)) * time.Millisecond)
			continue
		default:
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			st.otherStatus.Add(1)
			m.t.Logf("GET %s (from %d): %s: %s", url, off, resp.Status, bytes.TrimSpace(body))
			time.Sleep(time.Second)
			continue
		}
		if !started {
			started = true
			st.started.Add(1)
			// An admitted read must finish: generous bound for a loaded
			// two-core machine.
			giveUp = time.Now().Add(5 * time.Minute)
		}
		if off > 0 {
			var a, b, n int64
			if resp.StatusCode != http.StatusPartialContent {
				st.rangeMismatch.Add(1)
			} else if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &a, &b, &n); err != nil || a != off || n != size {
				st.rangeMismatch.Add(1)
			}
		}
		host := resp.Request.URL.Host
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		off += n
		st.bytes.Add(n)
		if err != nil || (off < size && n == 0) {
			if m.wasKilled(host) {
				st.resumed.Add(1)
			} else {
				st.brokenCuts.Add(1)
				m.t.Logf("body from %s cut at byte %d of %d on a live relay: %v", host, off, size, err)
			}
			continue
		}
		if off < size {
			// A clean end before the last byte is a cut too.
			st.brokenCuts.Add(1)
			m.t.Logf("body from %s ended cleanly at byte %d of %d", host, off, size)
		}
	}
	st.reads.Add(1)
	if !bytes.Equal(h.Sum(nil), want) {
		st.corrupt.Add(1)
		return
	}
	st.completed.Add(1)
}

// TestConcurrentReads reproduces the measurement of issue 14: N concurrent
// whole reads of one item through one relay with default limits, counting
// intact reads, bodies cut short after a 200, and refusals before any body.
//
//	MESHUP_LOAD_READERS=36,48     reader counts to try (required to run)
//	MESHUP_LOAD_ITEM_SIZE=256MiB  item size
func TestConcurrentReads(t *testing.T) {
	counts := os.Getenv("MESHUP_LOAD_READERS")
	if counts == "" {
		t.Skip("set MESHUP_LOAD_READERS=36,48")
	}
	size := int64(256 << 20)
	if v := os.Getenv("MESHUP_LOAD_ITEM_SIZE"); v != "" {
		var err error
		if size, err = parseSize(v); err != nil {
			t.Fatal(err)
		}
	}
	m := &soakMesh{t: t, rdvPort: freePort(t), budget: 256 << 20, killed: map[string]bool{}}
	m.rdv = fmt.Sprintf("http://127.0.0.1:%d", m.rdvPort)
	m.startRendezvous()
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(m.rdv) != nil })
	m.startRelay(0)
	waitFor(t, "relay", 30*time.Second, func() bool { return len(liveRelays(m.rdv)) == 1 })
	file, sum := soakFile(t, t.TempDir(), 7, size)
	it := &soakItem{file: file, sum: sum, size: size}
	m.startSender(it)
	size, sum = it.size, it.sum // what readers get: the ciphertext

	for _, c := range strings.Split(counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil {
			t.Fatal(err)
		}
		var intact, cut, corrupt, refused, other atomic.Int64
		var wg sync.WaitGroup
		begin := time.Now()
		for range n {
			wg.Go(func() {
				resp, err := soakClient.Get(it.download)
				if err != nil {
					other.Add(1)
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode == http.StatusTooManyRequests {
					refused.Add(1)
					return
				}
				if resp.StatusCode != http.StatusOK {
					other.Add(1)
					return
				}
				h := sha256.New()
				got, err := io.Copy(h, resp.Body)
				switch {
				case err != nil || got != size:
					cut.Add(1)
				case !bytes.Equal(h.Sum(nil), sum):
					corrupt.Add(1)
				default:
					intact.Add(1)
				}
			})
		}
		wg.Wait()
		m.notePeak(m.relays[0])
		t.Logf("%d concurrent reads of %d MiB through one relay: %d intact, %d cut short after a 200, %d corrupt, %d refused with 429, %d other; %v; relay peak RSS %d MiB",
			n, size>>20, intact.Load(), cut.Load(), corrupt.Load(), refused.Load(), other.Load(), time.Since(begin).Round(time.Second), m.peakRSS>>20)
		if cut.Load() != 0 || corrupt.Load() != 0 {
			t.Errorf("%d reads cut short, %d corrupt; want 0", cut.Load(), corrupt.Load())
		}
	}
}

// TestRestarts checks, with the real binaries, that restarts cost readers a
// pause, not their links (issue 14): a download running while the
// rendezvous restarts (no state kept) completes intact and the link still
// works afterwards; a download running while `meshup send --state` is
// killed and restarted completes intact, the restarted sender prints the
// same links, and they serve the item.
func TestRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	m := &soakMesh{t: t, rdvPort: freePort(t), budget: 64 << 20, killed: map[string]bool{}}
	m.rdv = fmt.Sprintf("http://127.0.0.1:%d", m.rdvPort)
	m.startRendezvous()
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(m.rdv) != nil })
	m.startRelay(0)
	waitFor(t, "relay", 30*time.Second, func() bool { return len(liveRelays(m.rdv)) == 1 })
	dir := t.TempDir()
	file, sum := soakFile(t, dir, 3, 48<<20)
	it := &soakItem{file: file, sum: sum, size: 48 << 20, state: filepath.Join(dir, "state.json")}
	m.startSender(it)
	size, sum := it.size, it.sum // what readers get: the ciphertext

	// slowRead reads the item at 8 MB/s, calling mid once it is a quarter
	// through, and checks it arrived whole in one response.
	slowRead := func(name string, mid func()) {
		resp, err := soakClient.Get(it.download)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %s, want 200", name, resp.Status)
		}
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var got int64
		begin := time.Now()
		for got < size {
			n, err := resp.Body.Read(buf)
			h.Write(buf[:n])
			if got < size/4 && got+int64(n) >= size/4 {
				mid()
			}
			got += int64(n)
			if err != nil && (err != io.EOF || got != size) {
				t.Fatalf("%s: body ended after %d of %d bytes: %v", name, got, size, err)
			}
			if ahead := time.Duration(float64(got)/8e6*float64(time.Second)) - time.Since(begin); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		if !bytes.Equal(h.Sum(nil), sum) {
			t.Fatalf("%s: %d bytes with the wrong SHA-256", name, got)
		}
		t.Logf("%s: %d MiB intact in one response, in %v", name, size>>20, time.Since(begin).Round(100*time.Millisecond))
	}

	slowRead("read across a rendezvous restart", func() {
		m.rdvProc.kill()
		time.Sleep(time.Second)
		m.startRendezvous()
	})
	if !waitLinks([]*soakItem{it}, 60*time.Second) {
		t.Fatalf("link %s not back after the rendezvous restart", it.download)
	}
	slowRead("read across a sender restart with --state", func() {
		it.sender.kill()
		m.startSender(it) // fails the test if the links differ
	})
	var st soakStats
	soakRead(context.Background(), m, &st, it.download, size, sum)
	if st.completed.Load() != 1 {
		t.Fatalf("read after both restarts: completed %d, corrupt %d", st.completed.Load(), st.corrupt.Load())
	}
}
