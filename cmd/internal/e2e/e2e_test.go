// Package e2e holds meshup's end-to-end tests: the real binaries as separate
// processes on loopback, and whole meshes in one process.
package e2e

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestProcesses runs a rendezvous, two relays and a sender as real
// processes and reads a large random item through them with an HTTP
// client: whole, by ranges, slowly, while the sender dies, and while a relay
// dies. Relays and the rendezvous must write nothing to disk throughout.
// MESHUP_E2E_SIZE sets the item size (default 1 GiB).
func TestProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	size := int64(1 << 30)
	if s := os.Getenv("MESHUP_E2E_SIZE"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("MESHUP_E2E_SIZE: %v", err)
		}
		size = v
	}
	const (
		window   = 2 << 20
		prefetch = 2
		budget   = 32 << 20
	)

	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	rp := start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "--public-url", rdv,
		"--dead-after", "2s", "--stun", "127.0.0.1:0",
		// Loopback, and the relays are the test's own (issue 8).
		"--allow-private-addrs", "--trust-all-relays")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	relayArgs := func() []string {
		return []string{"--rendezvous", rdv, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--allow-private-addrs",
			"--budget", strconv.Itoa(budget), "--window", strconv.Itoa(window), "--prefetch", strconv.Itoa(prefetch),
			// The relay asks again for a part whose sender is gone for
			// this long before cutting the body (issue 14).
			"--need-timeout", "10s"}
	}
	relayA := start(t, "relay", nil, relayArgs()...)
	waitFor(t, "relay A to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 1 })
	var idA string
	for id := range liveRelays(rdv) {
		idA = id
	}
	relayB := start(t, "relay", nil, relayArgs()...)
	waitFor(t, "relay B to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 2 })
	var idB, urlB string
	for id, u := range liveRelays(rdv) {
		if id != idA {
			idB, urlB = id, u
		}
	}

	file, sum := randomFile(t, size)
	sp, share, download := sender(t, rdv, file, "--plain", "--volunteers")
	if !strings.HasSuffix(share, "/i/"+filepath.Base(download)) || !strings.HasPrefix(download, rdv+"/v1/items/") {
		t.Fatalf("sender printed %q and %q", share, download)
	}
	src, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	servers := []*proc{rp, relayA, relayB}
	before := make([]int64, len(servers))
	for i, p := range servers {
		before[i] = writeBytes(t, p.pid())
	}

	t.Run("whole item", func(t *testing.T) {
		start := time.Now()
		resp := get(t, download+"?via="+idA, "")
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatalf("after %d bytes: %v", n, err)
		}
		if n != size || !bytes.Equal(h.Sum(nil), sum) {
			t.Fatalf("got %d bytes with SHA-256 %x, want %d bytes with %x", n, h.Sum(nil), size, sum)
		}
		el := time.Since(start)
		t.Logf("%d MiB through one relay in %v (%.0f MB/s)", size>>20, el.Round(time.Millisecond), float64(size)/el.Seconds()/1e6)
	})

	t.Run("ranges", func(t *testing.T) {
		for _, tc := range []struct {
			name, header string
			start, n     int64
		}{
			{"middle", fmt.Sprintf("bytes=%d-%d", size/2-500_000, size/2+499_999), size/2 - 500_000, 1_000_000},
			{"suffix", "bytes=-1234567", size - 1234567, 1234567},
			{"open-ended", fmt.Sprintf("bytes=%d-", size-3_000_001), size - 3_000_001, 3_000_001},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := get(t, download, tc.header)
				defer resp.Body.Close()
				wantCR := fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.start+tc.n-1, size)
				if resp.StatusCode != http.StatusPartialContent || resp.Header.Get("Content-Range") != wantCR {
					t.Fatalf("got %s %q, want 206 %q", resp.Status, resp.Header.Get("Content-Range"), wantCR)
				}
				got, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				want := make([]byte, tc.n)
				if _, err := src.ReadAt(want, tc.start); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("got %d bytes differing from the item's %d bytes at %d", len(got), tc.n, tc.start)
				}
			})
		}
	})

	t.Run("no disk writes", func(t *testing.T) {
		for i, p := range servers {
			if after := writeBytes(t, p.pid()); after != before[i] {
				t.Errorf("%s wrote %d bytes to disk, want 0", p.name, after-before[i])
			}
		}
	})

	t.Run("slow consumer is paced", func(t *testing.T) {
		// Read at 10 MB/s through relay B and watch its status: bytes taken
		// from the sender may lead bytes given to the consumer by at most
		// the windows of the open parts.
		const rate, total = 10e6, 40e6
		baseRSS := rss(t, relayB.pid())
		resp := get(t, download+"?via="+idB, "")
		defer resp.Body.Close()
		maxLead, samples := int64(0), 0
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
				var st struct {
					Stats struct {
						BytesIn  int64 `json:"bytes_in"`
						BytesOut int64 `json:"bytes_out"`
						Reserved int64 `json:"reserved"`
					} `json:"stats"`
				}
				if getJSON(urlB+"/v1/status", &st) == nil {
					maxLead = max(maxLead, st.Stats.BytesIn-st.Stats.BytesOut)
					samples++
				}
			}
		}()
		start := time.Now()
		buf := make([]byte, 64<<10)
		var got int64
		for got < total {
			n, err := resp.Body.Read(buf)
			got += int64(n)
			if err != nil {
				t.Fatalf("after %d bytes: %v", got, err)
			}
			if ahead := time.Duration(float64(got)/rate*float64(time.Second)) - time.Since(start); ahead > 0 {
				time.Sleep(ahead)
			}
		}
		done <- struct{}{}
		<-done
		peak := rssPeak(t, relayB.pid())
		t.Logf("relay B: %d status samples, max lead of received over delivered %d KiB (window %d KiB x prefetch %d); RSS before %d MiB, peak %d MiB; budget %d MiB",
			samples, maxLead>>10, window>>10, prefetch, baseRSS>>20, peak>>20, budget>>20)
		if limit := int64(window*prefetch + 1<<20); maxLead > limit {
			t.Errorf("relay held %d bytes ahead of the consumer, want <= %d: the sender is not paced", maxLead, limit)
		}
		if peak > baseRSS+budget {
			t.Errorf("relay peak RSS %d MiB, want <= %d MiB (baseline + budget)", peak>>20, (baseRSS+budget)>>20)
		}
	})

	t.Run("sender dies mid-transfer", func(t *testing.T) {
		resp := get(t, download+"?via="+idA, "")
		defer resp.Body.Close()
		prefix := make([]byte, 16<<20)
		if _, err := io.ReadFull(resp.Body, prefix); err != nil {
			t.Fatal(err)
		}
		sp.kill()
		rest, err := io.ReadAll(resp.Body)
		if err == nil {
			t.Fatalf("response ended cleanly after %d bytes of %d, want an error", len(prefix)+len(rest), size)
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Logf("body error: %v", err)
		}
		got := append(prefix, rest...)
		want := make([]byte, len(got))
		if _, err := src.ReadAt(want, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("the %d bytes that arrived are not the item's first bytes", len(got))
		}
		t.Logf("consumer got %d of %d bytes, then %v", len(got), size, err)
		waitFor(t, "item to show offline", 10*time.Second, func() bool {
			r, err := http.Get(download)
			if err != nil {
				return false
			}
			r.Body.Close()
			return r.StatusCode == http.StatusServiceUnavailable
		})
	})

	t.Run("relay dies", func(t *testing.T) {
		_, _, download := sender(t, rdv, file, "--plain", "--volunteers")
		relayA.kill()
		waitFor(t, "rendezvous to drop relay A", 15*time.Second, func() bool {
			_, ok := liveRelays(rdv)[idA]
			return !ok
		})
		for range 4 {
			resp := get(t, download, "bytes=0-999999")
			if !strings.HasPrefix(resp.Request.URL.String(), urlB) {
				t.Errorf("consumer sent to %s, want relay B at %s", resp.Request.URL.Host, urlB)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != 1_000_000 {
				t.Fatalf("got %d bytes, %v; want 1000000", n, err)
			}
		}
	})

	t.Run("still no disk writes", func(t *testing.T) {
		for _, i := range []int{0, 2} {
			if after := writeBytes(t, servers[i].pid()); after != before[i] {
				t.Errorf("%s wrote %d bytes to disk, want 0", servers[i].name, after-before[i])
			}
		}
	})
}

// get issues a GET with an optional Range header and fails the test on a
// transport error or a status other than 200 or 206.
func get(t *testing.T, url, rangeHeader string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusPartialContent {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("GET %s: %s: %s", url, resp.Status, body)
	}
	return resp
}

// randomFile writes size random bytes to a file in a temporary directory
// and returns its path and SHA-256.
func randomFile(t *testing.T, size int64) (string, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "item.bin")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	h := sha256.New()
	w := io.MultiWriter(f, h)
	if _, err := io.CopyN(w, rng, size); err != nil {
		t.Fatal(err)
	}
	return path, h.Sum(nil)
}
