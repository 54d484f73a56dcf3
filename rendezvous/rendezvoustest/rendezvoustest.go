// Package rendezvoustest runs a rendezvous on loopback for tests and drives
// its two protocols by hand: a relay's register stream (Relay) and a
// client's control WebSocket (Control). Like net/http/httptest it starts
// on 127.0.0.1:0 and cleans up through testing.TB.Cleanup.
package rendezvoustest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// Timeout bounds each network step of the helpers.
const Timeout = 10 * time.Second

// HTTP is the client for tests' requests, in place of http.DefaultClient.
// Its transport is its own (httpapi.NewTransport): httptest.Server.Close
// closes the idle connections of http.DefaultTransport, and with tests in
// parallel that can break another test's request.
var HTTP = &http.Client{Transport: httpapi.NewTransport()}

// NoRedirect is HTTP that returns redirects instead of following them.
var NoRedirect = &http.Client{
	Transport:     HTTP.Transport,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Server is a rendezvous serving HTTP on 127.0.0.1 and libp2p on a
// loopback mesh node.
type Server struct {
	// URL is the HTTP base URL, e.g. "http://127.0.0.1:41234"; it is also
	// the rendezvous's PublicURL unless the Config set one.
	URL string
	// Server is the rendezvous.
	Server *rendezvous.Server
	// Node is the rendezvous's mesh node.
	Node *mesh.Node
	// HTTP is the HTTP server.
	HTTP *httptest.Server

	ownNode   bool
	closeOnce sync.Once
}

// Option changes what Start fills in.
type Option func(*options)

type options struct{ strict bool }

// Strict leaves the Config's AllowPrivateAddrs and admission fields as
// they are, for tests of the address rule and of admission.
func Strict() Option { return func(o *options) { o.strict = true } }

// Start starts a rendezvous with cfg. Empty PublicURL, Node, Logger and
// STUNAddr are filled in: the HTTP URL, a fresh loopback node (closed with
// the server), Logger(tb), and "127.0.0.1:0", so that STUN answers on two
// ephemeral loopback ports listed in Info().STUN ("off" disables it).
// Unless Strict is given, AllowPrivateAddrs is set (tests run on
// loopback), and TrustAllRelays too when the Config names no admission
// credential (Admission, AdmissionKey, OperatorRelays), so that tests not
// about trust get operator relays. The server is closed at tb's cleanup;
// Close closes it earlier.
func Start(tb testing.TB, cfg rendezvous.Config, opts ...Option) *Server {
	tb.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if !o.strict {
		cfg.AllowPrivateAddrs = true
		if cfg.Admission == "" && cfg.AdmissionKey == nil && len(cfg.OperatorRelays) == 0 {
			cfg.TrustAllRelays = true
		}
	}
	hs := httptest.NewUnstartedServer(nil)
	s := &Server{URL: "http://" + hs.Listener.Addr().String(), HTTP: hs}
	if cfg.PublicURL == "" {
		cfg.PublicURL = s.URL
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(tb)
	}
	var gate rendezvous.RelayGate
	if cfg.STUNAddr == "" {
		cfg.STUNAddr = "127.0.0.1:0"
	}
	if cfg.Node == nil {
		n, err := mesh.New(mesh.Config{
			ListenAddrs:  []string{"/ip4/127.0.0.1/tcp/0"},
			Logger:       cfg.Logger,
			RelayService: &mesh.RelayService{Allow: gate.Allow},
			HolePunching: true,
			// Tests run on loopback.
			AllowPrivateAddrs: true,
		})
		if err != nil {
			hs.Close()
			tb.Fatalf("rendezvoustest: start mesh node: %v", err)
		}
		cfg.Node, s.ownNode = n, true
	}
	s.Node = cfg.Node
	srv, err := rendezvous.New(cfg)
	if err != nil {
		hs.Close()
		if s.ownNode {
			s.Node.Close()
		}
		tb.Fatalf("rendezvoustest: start rendezvous: %v", err)
	}
	gate.Bind(srv)
	s.Server = srv
	hs.Config.Handler = srv.Handler()
	hs.Start()
	tb.Cleanup(s.Close)
	return s
}

// Close closes the rendezvous, then the HTTP server, then the node if
// Start made it. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.Server.Close()
		s.HTTP.Close()
		if s.ownNode {
			s.Node.Close()
		}
	})
}

// Info fetches GET /v1/info.
func (s *Server) Info(tb testing.TB) rendezvous.Info {
	tb.Helper()
	var info rendezvous.Info
	GetJSON(tb, s.URL+"/v1/info", &info)
	return info
}

// ControlURL returns the ws:// URL of the control channel.
func (s *Server) ControlURL() string {
	return "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/control"
}

// ReadToken returns a read token for item through relay, as a consumer
// gets it: from the redirect of GET /v1/items/{item}?via=relay.
func (s *Server) ReadToken(tb testing.TB, item proto.ItemID, relay string) string {
	tb.Helper()
	resp, err := NoRedirect.Get(s.URL + "/v1/items/" + item.String() + "?via=" + relay)
	if err != nil {
		tb.Fatalf("rendezvoustest: read token: %v", err)
	}
	defer resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusTemporaryRedirect || err != nil || loc.Query().Get("t") == "" {
		body, _ := io.ReadAll(resp.Body)
		tb.Fatalf("rendezvoustest: read token: got %s %q, want a redirect with a token: %s", resp.Status, resp.Header.Get("Location"), body)
	}
	return loc.Query().Get("t")
}

// GetJSON fetches url, expects 200 and decodes the JSON body into v.
func GetJSON(tb testing.TB, url string, v any) {
	tb.Helper()
	GetJSONAuth(tb, url, "", v)
}

// GetJSONAuth is GetJSON with token as an Authorization bearer token,
// unless it is empty (the full GET /v1/status needs the StatusToken).
func GetJSONAuth(tb testing.TB, url, token string, v any) {
	tb.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := HTTP.Do(req)
	if err != nil {
		tb.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("GET %s: read body: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		tb.Fatalf("GET %s: status %d, want 200: %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		tb.Fatalf("GET %s: decode %s: %v", url, body, err)
	}
}

// NewNode starts a mesh node on 127.0.0.1, closed at tb's cleanup.
func NewNode(tb testing.TB) *mesh.Node {
	tb.Helper()
	n, err := mesh.New(mesh.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: Logger(tb), AllowPrivateAddrs: true})
	if err != nil {
		tb.Fatalf("rendezvoustest: start mesh node: %v", err)
	}
	tb.Cleanup(func() { n.Close() })
	return n
}

// Logger returns a logger that writes to tb.Log until tb's cleanup
// begins (see meshtest.Logger).
func Logger(tb testing.TB) *slog.Logger { return meshtest.Logger(tb) }

// Relay is the relay side of a register stream, driven by hand.
type Relay struct {
	// Node is the relay's mesh node.
	Node *mesh.Node
	// ID is the relay's peer id.
	ID string
	// Registered is the rendezvous's answer to the Register.
	Registered proto.Registered

	st       mesh.Stream
	wmu      sync.Mutex // serializes writes
	stopBeat chan struct{}
	beatWG   sync.WaitGroup
	once     sync.Once

	mu       sync.Mutex                // guards the fields below
	peers    map[string]proto.PeerInfo // the directory, deltas applied
	dirMsgs  int                       // Peers messages received
	gotPeers bool
}

// Register starts a relay node, connects it to rv and registers with
// httpURL as the relay's HTTP base URL, declaring the relay public (so
// that consumers and publishers are sent to httpURL, not through the
// tunnel). The stream is reset at tb's cleanup.
func Register(tb testing.TB, rv *Server, httpURL string) *Relay {
	tb.Helper()
	r, err := Dial(tb, rv, NewNode(tb))
	if err != nil {
		tb.Fatal(err)
	}
	if err := r.Send(&proto.Register{
		Version: proto.Version,
		HTTPURL: httpURL,
		Addrs:   r.Node.Addrs(),
		Budget:  64 << 20,
		Window:  1 << 20,
		NAT:     proto.NATPublic,
		Public:  true,
		Uploads: proto.UploadProtocols,
	}); err != nil {
		tb.Fatalf("rendezvoustest: send register: %v", err)
	}
	m, err := r.Recv(Timeout)
	if err != nil {
		tb.Fatalf("rendezvoustest: read registered: %v", err)
	}
	reg, ok := m.(*proto.Registered)
	if !ok {
		tb.Fatalf("rendezvoustest: got %T, want *proto.Registered", m)
	}
	r.Registered = *reg
	return r
}

// Dial opens a register stream from node to rv without sending anything,
// for tests of the handshake itself. The stream is reset at tb's cleanup.
func Dial(tb testing.TB, rv *Server, node *mesh.Node) (*Relay, error) {
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := node.Connect(ctx, rv.Node.Addrs()); err != nil {
		return nil, fmt.Errorf("rendezvoustest: connect to rendezvous: %w", err)
	}
	st, err := node.Open(ctx, rv.Node.ID(), proto.ProtoRegister)
	if err != nil {
		return nil, fmt.Errorf("rendezvoustest: open register stream: %w", err)
	}
	r := &Relay{Node: node, ID: node.ID(), st: st, stopBeat: make(chan struct{})}
	tb.Cleanup(r.Close)
	return r, nil
}

// Send writes m on the register stream. Safe for concurrent use.
func (r *Relay) Send(m proto.Message) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.st.SetWriteDeadline(time.Now().Add(Timeout))
	return proto.WriteMsg(r.st, m)
}

// Recv reads the next message from the rendezvous, waiting at most
// timeout. Not safe for concurrent use.
func (r *Relay) Recv(timeout time.Duration) (proto.Message, error) {
	r.st.SetReadDeadline(time.Now().Add(timeout))
	for {
		m, err := proto.ReadMsg(r.st, proto.DefaultMaxMessage)
		if p, ok := m.(*proto.Peers); ok && err == nil {
			// Directory updates come whenever relays come and go;
			// tests that want them use Directory.
			r.mu.Lock()
			if !p.Delta || r.peers == nil {
				r.peers = make(map[string]proto.PeerInfo)
			}
			for _, e := range p.Peers {
				r.peers[e.ID] = e
			}
			for _, id := range p.Removed {
				delete(r.peers, id)
			}
			r.dirMsgs++
			r.gotPeers = true
			r.mu.Unlock()
			continue
		}
		return m, err
	}
}

// Directory returns the directory of peers as the Peers messages Recv
// skipped built it (deltas applied, sorted by id), or nil if none came.
func (r *Relay) Directory() *proto.Peers {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.gotPeers {
		return nil
	}
	out := &proto.Peers{Peers: []proto.PeerInfo{}}
	for _, p := range r.peers {
		out.Peers = append(out.Peers, p)
	}
	slices.SortFunc(out.Peers, func(a, b proto.PeerInfo) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// DirectoryMessages returns how many Peers messages Recv skipped.
func (r *Relay) DirectoryMessages() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dirMsgs
}

// KeepAlive sends hb every interval until StopHeartbeat or Close.
func (r *Relay) KeepAlive(interval time.Duration, hb proto.Heartbeat) {
	r.beatWG.Add(1)
	go func() {
		defer r.beatWG.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-r.stopBeat:
				return
			case <-t.C:
				if r.Send(&hb) != nil {
					return
				}
			}
		}
	}()
}

// StopHeartbeat stops KeepAlive and waits for it.
func (r *Relay) StopHeartbeat() {
	r.once.Do(func() { close(r.stopBeat) })
	r.beatWG.Wait()
}

// Close stops heartbeats and resets the stream. It is idempotent.
func (r *Relay) Close() {
	r.StopHeartbeat()
	r.st.Reset()
}
