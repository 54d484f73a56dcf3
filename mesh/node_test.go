package mesh_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
)

const wait = 20 * time.Second

// newNode starts a node on loopback. It dials private addresses (the
// tests run on loopback) unless cfg is for a gater test, which passes
// strict.
func newNode(t *testing.T, cfg mesh.Config, strict ...bool) *mesh.Node {
	t.Helper()
	if len(cfg.ListenAddrs) == 0 {
		cfg.ListenAddrs = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	cfg.AllowPrivateAddrs = len(strict) == 0 || !strict[0]
	n, err := mesh.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// TestCircuit connects two nodes through a third one's circuit relay
// service: the connection is reported relayed, carries a stream both ways,
// and the relay meters it. A node the relay does not admit cannot reserve.
func TestCircuit(t *testing.T) {
	t.Parallel()
	var admitted []string
	r := newNode(t, mesh.Config{RelayService: &mesh.RelayService{Allow: func(p string) bool {
		for _, a := range admitted {
			if a == p {
				return true
			}
		}
		return false
	}}})
	a := newNode(t, mesh.Config{HolePunching: true})
	b := newNode(t, mesh.Config{HolePunching: true})
	stranger := newNode(t, mesh.Config{})
	admitted = []string{a.ID(), b.ID()}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	if _, err := stranger.Reserve(ctx, r.Addrs()); err == nil {
		t.Error("a node the relay does not admit got a reservation")
	}
	rsv, err := a.Reserve(ctx, r.Addrs())
	if err != nil {
		t.Fatal(err)
	}
	if rsv.Relay != r.ID() || len(rsv.Addrs) == 0 || time.Until(rsv.Expires) < time.Minute {
		t.Fatalf("reservation: got %+v, want circuit addresses on %s for an hour", rsv, r.ID())
	}
	for _, s := range rsv.Addrs {
		if !strings.HasSuffix(s, "/p2p/"+r.ID()+"/p2p-circuit") {
			t.Errorf("circuit address %q, want one ending in /p2p/%s/p2p-circuit", s, r.ID())
		}
	}

	// b reaches a only through the circuit.
	var circuit []string
	for _, s := range rsv.Addrs {
		circuit = append(circuit, s+"/p2p/"+a.ID())
	}
	echoed := make(chan []byte, 1)
	a.Handle("/test/echo", func(st mesh.Stream) {
		defer st.Close()
		if st.Kind() != mesh.Relayed {
			t.Errorf("a's side of the stream: kind %v, want relayed", st.Kind())
		}
		b, _ := io.ReadAll(st)
		echoed <- b
		st.Write(b)
	})
	if _, err := b.Connect(ctx, circuit); err != nil {
		t.Fatal(err)
	}
	st, err := b.Open(ctx, a.ID(), "/test/echo")
	if err != nil {
		t.Fatal(err)
	}
	if st.Kind() != mesh.Relayed || !strings.Contains(st.RemoteAddr(), "/p2p-circuit") {
		t.Errorf("stream over the circuit: kind %v, remote %s; want relayed", st.Kind(), st.RemoteAddr())
	}
	payload := bytes.Repeat([]byte("meshup"), 100000) // 600 KB: above the library's default 128 KiB circuit limit
	go func() {
		st.Write(payload)
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo over the circuit: %d bytes, %v; want the %d bytes back", len(got), err, len(payload))
	}
	if got := <-echoed; !bytes.Equal(got, payload) {
		t.Errorf("a received %d bytes, want %d", len(got), len(payload))
	}

	peers := b.Peers()
	var kind mesh.ConnKind = 255
	for _, p := range peers {
		if p.ID == a.ID() {
			kind = p.Kind
		}
	}
	if kind != mesh.Relayed {
		t.Errorf("b's peers: %+v, want a relayed", peers)
	}
	rs := r.RelayStats()
	// At least one circuit: a slow first dial on a loaded machine may
	// start a second over the other transport (the TCP-first ranker dials
	// QUIC 250 ms later), and one of the two is kept.
	if rs.Bytes < 2*int64(len(payload)) || rs.CircuitsTotal < 1 || rs.Reservations != 1 || rs.ReservationsDenied != 1 {
		t.Errorf("relay stats: %+v, want >= %d bytes, a circuit, 1 reservation, 1 denied", rs, 2*len(payload))
	}
}

// TestTunnel carries HTTP over libp2p streams, as the rendezvous does to
// reach relays behind NAT.
func TestTunnel(t *testing.T) {
	t.Parallel()
	server := newNode(t, mesh.Config{})
	dialer := newNode(t, mesh.Config{})
	ln, err := server.Listen("/test/http")
	if err != nil {
		t.Fatal(err)
	}
	block := make(chan struct{})
	gone := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("hello " + r.RemoteAddr))
	})
	mux.HandleFunc("/forever", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			close(gone)
		case <-block:
		}
	})
	hs := &http.Server{Handler: mux}
	go hs.Serve(ln)
	t.Cleanup(func() { close(block); hs.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := dialer.Connect(ctx, server.Addrs()); err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return dialer.DialConn(ctx, server.ID(), "/test/http")
	}}
	c := &http.Client{Transport: tr}
	resp, err := c.Get("http://relay/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello "+dialer.ID() {
		t.Errorf("body: got %q, want hello and the dialer's peer id", body)
	}

	// A client that gives up frees the server's handler at once: the
	// dialer's Close resets the stream.
	rctx, rcancel := context.WithCancel(ctx)
	req, _ := http.NewRequestWithContext(rctx, "GET", "http://relay/forever", nil)
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rcancel()
	resp.Body.Close()
	select {
	case <-gone:
	case <-time.After(wait):
		t.Error("the server's handler did not see the client go")
	}
}

// TestIdentity checks that a node started with a key has the peer id of
// that key, again after a restart, and that a short key is refused.
func TestIdentity(t *testing.T) {
	t.Parallel()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	want, err := mesh.PeerID(key)
	if err != nil {
		t.Fatal(err)
	}
	a := newNode(t, mesh.Config{Identity: key})
	if a.ID() != want {
		t.Fatalf("peer id: got %s, want %s", a.ID(), want)
	}
	a.Close()
	if b := newNode(t, mesh.Config{Identity: key}); b.ID() != want {
		t.Errorf("peer id after a restart: got %s, want %s", b.ID(), want)
	}
	if c := newNode(t, mesh.Config{}); c.ID() == want {
		t.Errorf("a node without Identity has the key's peer id %s", want)
	}
	if _, err := mesh.New(mesh.Config{Identity: key[:10]}); err == nil {
		t.Error("New with a 10-byte Identity: got no error")
	}
}

// TestMaxStreamWindowInvalid: a window yamux cannot use is refused. (The
// bound itself does not show on loopback: yamux grows a stream's window
// only when the reader empties it within a few round trips, which on
// loopback, with round trips of microseconds, it never does.)
func TestMaxStreamWindowInvalid(t *testing.T) {
	for _, w := range []int{-1, 1000} {
		if _, err := mesh.New(mesh.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MaxStreamWindow: w}); err == nil {
			t.Errorf("MaxStreamWindow %d: got no error", w)
		}
	}
}
