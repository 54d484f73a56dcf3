// Package relay is meshup's upload server. It accepts parts pushed by
// publishers over WebSocket, holds them in bounded memory only as long as it
// takes to forward them, and serves consumers with HTTP Range. It never
// writes part data to disk.
package relay

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/internal/httptunnel"
	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

// Server is a relay. Create it with New, serve its Handler, call Run to join
// the rendezvous, and Close when done.
type Server struct {
	cfg    Config
	id     string // libp2p peer id: the audience of accepted tokens
	log    *slog.Logger
	pool   *bufPool
	budget budget
	stats  stats
	ips    *srclimit.Limiter // limits per source IP
	wbufs  *sync.Pool        // WebSocket write buffers, shared by push connections
	shaper *shaper           // rate limits and monthly volume of what the relay sends (ratelimit.go)
	start  time.Time         // when New ran, for the status

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	key  atomic.Pointer[ed25519.PublicKey]
	link atomic.Pointer[link] // the registered rendezvous link, or nil
	// home is the peer id of the rendezvous this relay is registering
	// or registered with, or nil: it may tunnel HTTP to the relay from
	// the moment it has the relay's Register (tunnelPeerAllowed).
	home atomic.Pointer[string]
	mesh meshState
	// registeredOnce is set at the first registration: from then on a
	// rendezvous that answers oddly is retried (it may be restarting).
	registeredOnce atomic.Bool
	live           liveHub // live channels (live.go)

	tunnel   *httputil.ReverseProxy // the tunnel into relays behind NAT (tunnel.go)
	tunCount httptunnel.Counters
	store    store        // held items of legacy uploads (store.go)
	ad       adapterState // the tus and socket.io adapters (adapters.go)

	mu       sync.Mutex // guards the fields below
	needs    map[uint64]*partStream
	nextNeed uint64
	conns    map[*pushConn]struct{}
	closed   bool
	draining bool // Drain began: new consumer requests are refused
	working  int  // consumer requests in flight (work, drain.go)
}

// New returns a relay with cfg. It does not start any goroutine.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		id:     cfg.Node.ID(),
		log:    cfg.Logger.With("relay", shortID(cfg.Node.ID())),
		pool:   newBufPool(cfg.MaxFrame),
		budget: budget{limit: cfg.Budget},
		ips:    srclimit.New(cfg.MaxConnsPerIP, cfg.RequestRate, cfg.RequestBurst, cfg.TrackedIPs),
		wbufs:  new(sync.Pool),
		shaper: newShaper(cfg.MaxRate, cfg.MaxRatePerConsumer, cfg.MonthlyCap, cfg.Now),
		start:  cfg.Now(),
		ctx:    ctx,
		cancel: cancel,
		needs:  make(map[uint64]*partStream),
		conns:  make(map[*pushConn]struct{}),
	}
	if cfg.TokenKey != nil {
		k := cfg.TokenKey
		s.key.Store(&k)
	}
	s.stats.refusals = make(map[string]int64)
	s.store.init(s)
	s.mesh.init()
	if cfg.PublicIP != "" {
		s.mesh.nat = proto.NATPublic
	}
	cfg.Node.Handle(proto.ProtoPart, s.handlePart)
	cfg.Node.Handle(proto.ProtoLive, s.handleLiveStream) // live.go
	s.tunnel = s.newTunnel()
	return s, nil
}

// ID returns the relay's id (its libp2p peer id).
func (s *Server) ID() string { return s.id }

// Config returns the effective configuration, defaults applied.
func (s *Server) Config() Config { return s.cfg }

func (s *Server) tokenKey() ed25519.PublicKey {
	if k := s.key.Load(); k != nil {
		return *k
	}
	return nil
}

// Handler returns the relay's HTTP API:
//
//	GET  /v1/push         push WebSocket, subprotocol meshup.v1
//	GET  /v1/items/{id}   item bytes with Range (HEAD too); needs a read token
//	GET  /v1/status       JSON status
//	GET  /v1/challenge    proof that this URL reaches this relay (proto/challenge.go)
//	GET  /                the status page, for people (statuspage.go)
//	     /v1/relays/{id}/v1/...  tunnel into a relay behind NAT (public relays, tunnel.go)
//	GET  /v1/stor         STOR/DATA upload WebSocket (stor.go)
//	     /v1/upload/{name}  resumable PUT upload (put.go)
//	     /v1/files/       tus 1.0 uploads (tus.go)
//	     /v1/socket.io/   socket.io upload sessions (socketio.go)
//	GET  /v1/live/{id}    a live channel from the live edge, chunked (live.go)
//	PUT  /v1/live/{id}    a live channel's publisher, chunked; bearer: the channel secret
//	GET  /v1/live/stats   live counters (bytes forwarded per downstream relay, cut-offs)
//	GET  /v1/evsocket/{channel}  EvSocket WebSocket onto a live channel (evsocket.go)
//	GET  /v1/live/{id}    with Upgrade: websocket, a sealed channel's publisher (live_ws.go)
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/push", s.handlePush)
	mux.HandleFunc("GET /v1/items/{id}", s.work(s.handleItem)) // also serves HEAD
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("GET "+proto.ChallengePath, s.handleChallenge)
	mux.HandleFunc("GET /{$}", s.handleStatusPage)
	mux.HandleFunc("OPTIONS /v1/items/{id}", proto.ServePreflight)        // CORS (proto/cors.go)
	mux.HandleFunc(httptunnel.Prefix+"{relay}/{rest...}", s.handleTunnel) // tunnel.go
	s.uploadRoutes(mux)                                                   // legacy upload protocols, those in Config.Uploads (upload.go)
	mux.HandleFunc("GET /v1/live/{id}", s.handleLiveGet)                  // live.go
	mux.HandleFunc("PUT /v1/live/{id}", s.handleLivePush)
	mux.HandleFunc("GET /v1/live/stats", s.handleLiveStats)
	mux.HandleFunc("GET /v1/evsocket/{channel}", s.handleEvSocket) // evsocket.go
	mux.HandleFunc("OPTIONS /v1/live/{id}", proto.ServePreflight)  // CORS for browsers reading sealed channels (live_http.go)
	return s.limitHandler(mux)
}

// goStart adds a goroutine to the WaitGroup unless the relay is closing.
func (s *Server) goStart() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// openPart asks the rendezvous for bytes [off, off+n) of item and returns
// the stream they will arrive on. tok is the read token of the consumer
// request that needs the bytes: the rendezvous orders only what a read
// token covers.
func (s *Server) openPart(item proto.ItemID, off, n int64, tok string, avoid []string) (*partStream, error) {
	l := s.link.Load()
	if l == nil {
		return nil, errNoRendezvous
	}
	ps := &partStream{
		s: s, item: item, off: off, n: n,
		window: int64(s.cfg.Window),
		wake:   make(chan struct{}, 1),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, errShutdown
	}
	s.nextNeed++
	ps.need = s.nextNeed
	s.needs[ps.need] = ps
	s.mu.Unlock()
	if err := l.send(proto.Need{Need: ps.need, Item: item, Off: off, Len: n, Token: tok, Avoid: avoid}); err != nil {
		s.forgetNeed(ps.need, false)
		return nil, errNoRendezvous
	}
	s.stats.needs.Add(1)
	return ps, nil
}

// takeNeed removes and returns the stream waiting for need, if it is for
// exactly the part described.
func (s *Server) takeNeed(need uint64, item proto.ItemID, off, n int64) *partStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	ps := s.needs[need]
	if ps == nil || ps.item != item || ps.off != off || ps.n != n {
		return nil
	}
	delete(s.needs, need)
	return ps
}

// forgetNeed drops a need nobody waits for, telling the rendezvous when
// tell is set.
func (s *Server) forgetNeed(need uint64, tell bool) {
	s.mu.Lock()
	_, ok := s.needs[need]
	delete(s.needs, need)
	s.mu.Unlock()
	if ok && tell {
		if l := s.link.Load(); l != nil {
			l.send(proto.NeedCancel{Need: need})
		}
	}
}

// needDone tells the rendezvous that every byte of ps, a part this relay
// needed, arrived, and the time it spent filling: it settles the order
// and measures the way from the entry relay (proto.NeedDone).
func (s *Server) needDone(ps *partStream, fill time.Duration) {
	if ps.need == 0 {
		return // the entry's side of a forwarded part: the exit reports it
	}
	s.stats.partsCarried(ps.entryID(), ps.n)
	l := s.link.Load()
	if l == nil {
		return
	}
	// Whole milliseconds, rounded up: a part that filled in under one
	// still says it took one, never zero (no rate).
	l.send(proto.NeedDone{Need: ps.need, Bytes: ps.n, MS: int64((fill + time.Millisecond - 1) / time.Millisecond)})
}

// refusedForward is called when this relay, the exit, refused a part
// forwarded by entry because its token did not check out. When the token
// is authentic and only its time is off (this relay's clock is wrong), the
// consumer waiting for the part is told why at once: every entry would be
// refused alike.
func (s *Server) refusedForward(c proto.Claims, entry string, b proto.PartBegin, err error) {
	if proto.TokenStatus(err) != proto.StatusExpired || c.Fwd != s.id || c.Relay != entry {
		return
	}
	if ps := s.takeNeed(c.Ref, b.Item, int64(b.Off), int64(b.Len)); ps != nil {
		ps.fail(err)
	}
}

// needFailed ends the stream waiting for need with the rendezvous's reason.
func (s *Server) needFailed(m *proto.NeedFailed) {
	s.mu.Lock()
	ps := s.needs[m.Need]
	delete(s.needs, m.Need)
	s.mu.Unlock()
	if ps != nil {
		ps.fail(proto.Errorf(m.Status, "%s", m.Reason))
	}
}

// failNeeds ends every stream still waiting for a publisher.
func (s *Server) failNeeds(err error) {
	s.mu.Lock()
	needs := s.needs
	s.needs = make(map[uint64]*partStream)
	s.mu.Unlock()
	for _, ps := range needs {
		ps.fail(err)
	}
}

// Close stops the relay: it closes push connections, fails waiting
// consumers and waits for its goroutines. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*pushConn, 0, len(s.conns))
	for pc := range s.conns {
		conns = append(conns, pc)
	}
	s.mu.Unlock()
	s.cancel()
	for _, pc := range conns {
		pc.close(proto.StatusUnavailable, errShutdown.Msg)
	}
	s.failNeeds(errShutdown)
	s.wg.Wait()
	return nil
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}
