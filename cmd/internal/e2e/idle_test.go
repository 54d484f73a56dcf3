package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
)

// TestIdleWebSocketMemory measures what an idle WebSocket costs the real
// binaries: it opens MESHUP_IDLE_CONNS (default 10000) push WebSockets to a
// relay, then as many control WebSockets to the rendezvous, and prints the
// growth of each process's resident set per connection. It is a benchmark
// (scripts/bench), not a test: it runs only with MESHUP_BENCH_IDLE=1 and
// asserts nothing about the figures.
func TestIdleWebSocketMemory(t *testing.T) {
	if os.Getenv("MESHUP_BENCH_IDLE") == "" {
		t.Skip("benchmark; run by scripts/bench (MESHUP_BENCH_IDLE=1)")
	}
	n := 10000
	if s := os.Getenv("MESHUP_IDLE_CONNS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("MESHUP_IDLE_CONNS: %v", err)
		}
		n = v
	}
	lim := meshtest.RaiseNoFile(t) // inherited by the binaries
	if max := lim - 512; n > max {
		t.Logf("RLIMIT_NOFILE %d: %d connections instead of %d", lim, max, n)
		n = max
	}

	port := freePort(t)
	rdv := fmt.Sprintf("http://127.0.0.1:%d", port)
	// Deadlines long enough that nothing idle is closed while measured;
	// loopback is exempt from the limits per source by default.
	// Metrics are served on the debug listeners only (issue 8).
	rdvDebug := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	relayDebug := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	rp := start(t, "rendezvous", nil, "--http", fmt.Sprintf("127.0.0.1:%d", port),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--public-url", rdv, "--stun", "off",
		"--allow-private-addrs", "--debug-addr", rdvDebug,
		"--max-sessions", strconv.Itoa(2*n), "--handshake-timeout", "10m", "--log-level", "warn")
	waitFor(t, "rendezvous", 20*time.Second, func() bool { return liveRelays(rdv) != nil })
	// The relay's own port: its URL is not in the rendezvous's public
	// status while unverified (no STUN here, so it is not public).
	relayPort := freePort(t)
	relay := start(t, "relay", nil, "--rendezvous", rdv, "--http", fmt.Sprintf("127.0.0.1:%d", relayPort), "--p2p", "/ip4/127.0.0.1/tcp/0",
		"--allow-private-addrs", "--debug-addr", relayDebug,
		"--max-conns", strconv.Itoa(2*n), "--handshake-timeout", "10m", "--log", "warn")
	waitFor(t, "relay to register", 20*time.Second, func() bool { return len(liveRelays(rdv)) == 1 })
	pushURL := fmt.Sprintf("ws://127.0.0.1:%d/v1/push", relayPort)

	// measure opens n connections with dial, lets the server settle and
	// returns its RSS growth per connection.
	measure := func(what string, p *proc, base string, dial func() (*websocket.Conn, error)) {
		time.Sleep(time.Second)
		before := rss(t, p.pid())
		mb := memMetrics(base)
		conns := make([]*websocket.Conn, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		sem := make(chan struct{}, 64)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				ws, err := dial()
				if err != nil {
					errs <- err
					return
				}
				conns[i] = ws
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("%s: dial: %v", what, err)
		}
		// Settle: by default past the Go runtime's forced GC (every two
		// minutes), which also shrinks the stacks that the set-up of
		// each connection grew.
		settle := 125 * time.Second
		if s := os.Getenv("MESHUP_IDLE_SETTLE"); s != "" {
			d, err := time.ParseDuration(s)
			if err != nil {
				t.Fatalf("MESHUP_IDLE_SETTLE: %v", err)
			}
			settle = d
		}
		time.Sleep(settle)
		after := rss(t, p.pid())
		ma := memMetrics(base)
		per := func(k string) float64 { return (ma[k] - mb[k]) / float64(n) / 1024 }
		fmt.Printf("idle %s WebSockets: %d connections, %s RSS %.1f -> %.1f MiB: %.1f KiB per connection (heap in use %.1f KiB, stacks %.1f KiB, goroutines %.1f per connection)\n",
			what, n, p.name, float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(n)/1024,
			per("go_memstats_heap_inuse_bytes"), per("go_memstats_stack_inuse_bytes"), (ma["go_goroutines"]-mb["go_goroutines"])/float64(n))
		for _, ws := range conns {
			ws.Close()
		}
	}

	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, Subprotocols: []string{proto.Subprotocol}, ReadBufferSize: 1024, WriteBufferSize: 1024}
	measure("push", relay, relayDebug, func() (*websocket.Conn, error) {
		ws, _, err := d.Dial(pushURL, nil)
		return ws, err
	})
	hello, _ := proto.EncodeMessage(&proto.Hello{Client: "bench"})
	measure("control", rp, rdvDebug, func() (*websocket.Conn, error) {
		ws, _, err := d.Dial("ws://"+strings.TrimPrefix(rdv, "http://")+"/v1/control", http.Header{})
		if err != nil {
			return nil, err
		}
		if _, _, err := ws.ReadMessage(); err != nil { // the welcome
			return nil, err
		}
		if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
			return nil, err
		}
		go func() { // answers pings, so that the session stays
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
		return ws, nil
	})
}

// memMetrics reads the Go runtime gauges of a binary's /metrics at
// host:port (empty when it has none).
func memMetrics(hostport string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + hostport + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[name] = v
		}
	}
	return out
}
