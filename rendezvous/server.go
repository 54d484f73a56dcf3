// Package rendezvous is meshup's controlling server. It keeps the control
// sessions of publishers (WebSocket, JSON messages), the registry of relays
// (libp2p streams), and the items published; it turns a relay's "need part"
// into an order to the item's publisher and points consumers at relays with
// signed, short-lived tokens. It holds metadata only: no item bytes pass
// through it except the text of short messages.
//
// The Server does not own its HTTP listener: Handler serves the HTTP API
// and the control WebSocket on whatever listener the caller runs, and New
// registers the relay protocol on the caller's mesh.Node. The STUN ports
// are the exception: New opens the UDP ports named in Config and hands them
// to a STUNServer, which callers may also run on their own PacketConns.
package rendezvous

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/internal/httptunnel"
	"github.com/meshup/meshup/proto"
)

// Server is a rendezvous. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	log      *slog.Logger
	key      ed25519.PrivateKey
	pub      ed25519.PublicKey
	mux      *http.ServeMux
	h        http.Handler // mux behind the limits per source
	lim      limitState
	tunnel   *httputil.ReverseProxy
	web      map[string]webFile // the web app's files by path (client/web)
	stats    counters
	verifier *http.Client // fetches relay URL challenges
	webhook  *http.Client // calls the auth webhook (webhook.go)

	tunnelCount httptunnel.Counters // the tunnel's requests and bytes (DataPath)
	live        liveRegistry        // live channels (live.go)

	stun      *STUNServer // nil when STUN is off
	stunAddrs []string    // advertised "host:port" of the STUN ports

	started   time.Time // for Config.ReclaimGrace
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup // sweeper, session handlers, relay streams
	closeOnce sync.Once
	draining  atomic.Bool // Drain was called: /readyz says so

	mu        sync.Mutex // guards the fields below
	closed    bool
	sessions  map[*session]struct{}
	items     map[proto.ItemID]*item
	relays    map[string]*relayConn // by peer id
	orders    map[uint64]*order
	lastOrder uint64
	rr        uint64 // round-robin position among equally loaded relays
	dirDirty  bool   // the directory changed since the last flush

	clips clipState // clips' store orders (clip.go); guarded by mu
}

// New starts a Server: it opens the STUN ports unless they are off,
// registers the relay protocol proto.ProtoRegister on cfg.Node and starts
// the background sweeper. Close stops it.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	key := cfg.SigningKey
	if key == nil {
		var err error
		if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, fmt.Errorf("rendezvous: generate signing key: %w", err)
		}
	}
	files, err := loadWebFiles()
	if err != nil {
		return nil, fmt.Errorf("rendezvous: load web app: %w", err)
	}
	stunLns, err := listenSTUN(cfg.STUNAddr, cfg.STUNAltAddr, cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		web:      files,
		cfg:      cfg,
		log:      cfg.Logger,
		key:      key,
		pub:      key.Public().(ed25519.PublicKey),
		ctx:      ctx,
		cancel:   cancel,
		started:  cfg.Now(),
		sessions: make(map[*session]struct{}),
		items:    make(map[proto.ItemID]*item),
		relays:   make(map[string]*relayConn),
		orders:   make(map[uint64]*order),
	}
	s.tunnel = s.newTunnel()
	s.verifier = s.newVerifier()
	// The webhook fails closed: a call broken by someone closing a shared
	// pool's idle connections would refuse what it was asked about.
	s.webhook = &http.Client{
		Transport:     httpapi.NewTransport(),
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	s.mux = s.routes()
	s.initLimits()
	s.h = s.handler()
	s.startSTUN(stunLns)
	cfg.Node.Handle(proto.ProtoRegister, s.handleRegister)
	cfg.Node.OnDisconnect(s.peerDisconnected)
	s.wg.Add(2)
	go s.sweepLoop()
	go s.directoryLoop()
	return s, nil
}

// Handler returns the HTTP handler of the API, the item pages and the
// control WebSocket.
func (s *Server) Handler() http.Handler { return s.h }

// PublicKey returns the key that verifies the server's tokens.
func (s *Server) PublicKey() ed25519.PublicKey { return s.pub }

// Close closes every control session, relay stream and STUN port and
// waits for the server's goroutines to end. It is idempotent and always
// returns nil; the mesh.Node is left open for its owner to close.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		sessions := make([]*session, 0, len(s.sessions))
		for c := range s.sessions {
			sessions = append(sessions, c)
		}
		relays := make([]*relayConn, 0, len(s.relays))
		for _, r := range s.relays {
			relays = append(relays, r)
		}
		s.mu.Unlock()
		s.cancel()
		if s.stun != nil {
			s.stun.Close()
		}
		for _, c := range sessions {
			// A close frame with a code and a reason, so that clients
			// reconnect at once (to this server restarted, or to the
			// next behind the same name) rather than time out.
			c.fail(closeGoingAway, closeReasonShutdown)
		}
		for _, r := range relays {
			r.fail("server closing")
		}
	})
	s.wg.Wait()
	return nil
}

// closeReasonShutdown is the reason of the close frame control sessions
// get when the server shuts down.
const closeReasonShutdown = "rendezvous shutting down: reconnect"

// ErrDraining is the reason Ready gives once Drain was called.
var ErrDraining = errors.New("rendezvous: draining")

// Drain marks the server as shutting down: Ready reports ErrDraining, so
// that a load balancer stops sending new clients, while the server goes
// on serving until Close.
func (s *Server) Drain() {
	if !s.draining.Swap(true) {
		s.log.Info("draining: readyz reports not ready")
	}
}

// Ready returns nil while the server takes new clients (GET /readyz),
// else why not.
func (s *Server) Ready() error {
	if s.draining.Load() || s.ctx.Err() != nil {
		return ErrDraining
	}
	return nil
}

// goStart reserves a slot in s.wg for a goroutine or handler, unless the
// server is closing. The caller calls s.wg.Done when it ends.
func (s *Server) goStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// sweepInterval returns how often the sweeper runs: often enough to notice
// a silent relay soon after DeadAfter.
func (s *Server) sweepInterval() time.Duration {
	return min(max(s.cfg.DeadAfter/4, 10*time.Millisecond), time.Second)
}

// sweepLoop drops dead relays, expired offline items and stale orders until
// the server closes.
func (s *Server) sweepLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweep(s.cfg.Now())
		}
	}
}

// sweep does one pass of the sweeper at time now.
func (s *Server) sweep(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.relays {
		if now.Sub(r.lastSeen) > s.cfg.DeadAfter {
			r.fail("no heartbeat")
		}
	}
	for id, it := range s.items {
		if !it.online() && now.Sub(it.offlineSince) > s.cfg.ItemTTL {
			delete(s.items, id)
			s.countItemLocked(it, -1)
			s.stats.itemsPurged.Add(1)
			s.log.Debug("offline item expired", "item", id)
		}
	}
	s.sweepHeldLocked(now) // held.go
	s.sweepClipsLocked(now)
	for id, o := range s.orders {
		if now.Sub(o.created) > s.cfg.PushTokenTTL {
			// The push token has expired: the order is done or will never
			// be. The relay times its need out on its own.
			s.forgetOrderLocked(o)
			s.log.Debug("order expired", "order", id)
		}
	}
}
