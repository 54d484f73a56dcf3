package httpserve_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/httpserve"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

const wait = 20 * time.Second

// serve serves the handler of a fresh rendezvous with cfg on loopback and
// returns its address.
func serve(t *testing.T, cfg httpserve.Config) (string, *httpserve.Server) {
	t.Helper()
	rv := rendezvoustest.Start(t, rendezvous.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := httpserve.New(cfg, rv.Server.Handler(), rendezvoustest.Logger(t))
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String(), hs
}

func dialFrom(src, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: wait}
	return d.Dial("tcp", addr)
}

// TestIdleKeepAlive checks that a keep-alive connection idle between
// requests is closed at IdleTimeout.
func TestIdleKeepAlive(t *testing.T) {
	t.Parallel()
	addr, _ := serve(t, httpserve.Config{IdleTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /v1/info HTTP/1.1\r\nHost: x\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(wait))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close {
		t.Fatalf("first response: %d, close %v; want 200 and keep-alive", resp.StatusCode, resp.Close)
	}
	// Then nothing: the server closes the idle connection.
	if n, err := br.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection: read %d bytes, err %v; want EOF from the server", n, err)
	}
}

// TestSlowloris holds 2000 partial requests from one IP while a normal
// client of another IP asks for GET /v1/status: connections over the
// per-IP cap are closed at once, the others at the header deadline, and
// every normal request is answered. The normal client's latencies are
// reported, not asserted.
func TestSlowloris(t *testing.T) {
	n := 2000
	if testing.Short() {
		n = 400
	}
	n = min(n, (meshtest.RaiseNoFile(t)-256)/2)
	cfg := httpserve.Config{ReadHeaderTimeout: 5 * time.Second, MaxConnsPerIP: 256, LimitLoopback: true}
	addr, hs := serve(t, cfg)

	const attacker = "127.0.0.3"
	var wg, ready sync.WaitGroup
	var mu sync.Mutex
	var ended []string // how each attacking connection ended
	for range n {
		wg.Add(1)
		ready.Add(1)
		go func() {
			defer wg.Done()
			conn, err := dialFrom(attacker, addr)
			if err != nil {
				ready.Done()
				mu.Lock()
				ended = append(ended, "dial: "+err.Error())
				mu.Unlock()
				return
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
			ready.Done()
			conn.SetReadDeadline(time.Now().Add(wait))
			_, err = io.ReadAll(conn)
			what := "closed"
			if err != nil {
				what = err.Error()
			}
			mu.Lock()
			ended = append(ended, what)
			mu.Unlock()
		}()
	}

	// The normal client, from 127.0.0.1, while the attack holds.
	ready.Wait()
	client := &http.Client{Timeout: wait}
	var lat []time.Duration
	for range 200 {
		start := time.Now()
		resp, err := client.Get("http://" + addr + "/v1/status")
		if err != nil {
			t.Fatalf("GET /v1/status during the slowloris: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /v1/status during the slowloris: %d", resp.StatusCode)
		}
		lat = append(lat, time.Since(start))
	}
	wg.Wait()
	slices.Sort(lat)
	pct := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	for _, e := range ended {
		if e != "closed" && !strings.Contains(e, "reset") {
			t.Errorf("an attacking connection ended with %q, want closed by the server", e)
			break
		}
	}
	t.Logf("slowloris of %d partial requests from one IP: %d closed at once (per-IP cap %d), the rest at the %v header deadline; GET /v1/status from another IP: p50 %v, p99 %v, max %v over %d requests",
		n, hs.Refused(), cfg.MaxConnsPerIP, cfg.ReadHeaderTimeout, pct(0.5), pct(0.99), lat[len(lat)-1], len(lat))
	if want := int64(max(0, n-cfg.MaxConnsPerIP)); hs.Refused() < want {
		t.Errorf("refused: got %d, want at least %d", hs.Refused(), want)
	}
}
