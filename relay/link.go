package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshup/meshup/internal/httpapi"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// link is the relay's registration with the rendezvous: one libp2p stream
// (proto.ProtoRegister) carrying heartbeats and needs out, and failed needs
// in. One goroutine reads it, one writes it.
type link struct {
	st      mesh.Stream
	out     chan proto.Message // bounded; a full queue drops the link
	done    chan struct{}
	origin  string   // the rendezvous web app's origin, allowed to push
	origins []string // the other origins the rendezvous allows (Registered.Origins), allowed to push

	home     string    // the rendezvous's peer id: home of our directory record
	recordAt time.Time // when the last record was signed; writer only

	// Read checks (readcheck.go): whether the rendezvous asks its auth
	// webhook about reads (Registered.ReadChecks; nil: it did not say),
	// and the checks waiting for its verdict.
	readChecks *bool
	checks     pendingChecks
}

var errLinkFull = errors.New("relay: rendezvous link queue full")

// maxRegisteredOrigins bounds the origins taken from Registered.Origins.
const maxRegisteredOrigins = 256

// send queues m for the rendezvous without blocking.
func (l *link) send(m proto.Message) error {
	select {
	case <-l.done:
		return errNoRendezvous
	default:
	}
	select {
	case l.out <- m:
		return nil
	default:
		return errLinkFull
	}
}

// ErrNotRendezvous means the server named as the rendezvous answered, but
// not as a meshup rendezvous of this protocol version: an HTML page, a
// 404, a document without a token key. Run gives up on it at once instead
// of retrying.
var ErrNotRendezvous = errors.New("not a meshup rendezvous")

// FetchInfo reads the rendezvous's GET /v1/info. An answer that is not a
// meshup rendezvous's is an error wrapping ErrNotRendezvous; a failure to
// connect, or a 5xx or 429 status, is not (it may pass).
func FetchInfo(ctx context.Context, base string) (proto.Info, ed25519.PublicKey, error) {
	return fetchInfo(ctx, http.DefaultClient, base)
}

// fetchInfo is FetchInfo with client hc.
func fetchInfo(ctx context.Context, hc *http.Client, base string) (proto.Info, ed25519.PublicKey, error) {
	var info proto.Info
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimSuffix(base, "/") + "/v1/info"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return info, nil, fmt.Errorf("rendezvous info: %w: %w", ErrNotRendezvous, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return info, nil, fmt.Errorf("rendezvous info: %w", err)
	}
	defer resp.Body.Close()
	notUs := func(why string, args ...any) error {
		return fmt.Errorf("rendezvous info: %s is %w: %s", u, ErrNotRendezvous, fmt.Sprintf(why, args...))
	}
	switch {
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusTooManyRequests:
		return info, nil, fmt.Errorf("rendezvous info: %s", resp.Status)
	case resp.StatusCode != http.StatusOK:
		return info, nil, notUs("%s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return info, nil, notUs("content type %q, want application/json", ct)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&info); err != nil {
		return info, nil, notUs("%v", err)
	}
	key, err := base64.RawURLEncoding.DecodeString(info.TokenKey)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return info, nil, notUs("token_key is not an Ed25519 public key")
	}
	if info.Version != proto.Version {
		return info, nil, notUs("protocol version %d, want %d", info.Version, proto.Version)
	}
	return info, ed25519.PublicKey(key), nil
}

// Run joins the rendezvous named in Config and keeps the registration alive,
// re-joining with backoff when it drops. It returns when ctx is done or the
// server is closed.
func (s *Server) Run(ctx context.Context) error {
	if s.cfg.Rendezvous == "" {
		return errors.New("relay: Config.Rendezvous is required to run")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()

	// The rendezvous reaches the relay's HTTP API through libp2p streams
	// when browsers cannot reach the relay directly.
	// Public relays do the same for the relays behind NAT connected to
	// them; nobody else may (tunnelListener).
	tl, err := s.cfg.Node.Listen(proto.ProtoHTTP)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	tl = tunnelListener{tl, s}
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: s.cfg.HandshakeTimeout, IdleTimeout: s.cfg.IdleTimeout, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	go hs.Serve(tl)
	defer hs.Close()

	backoff := 250 * time.Millisecond
	var lost time.Time // when a registration that had been up for long dropped
	for {
		start := time.Now()
		err := s.joinOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, ErrNotRendezvous) && !s.registeredOnce.Load() {
			// Pointed at the wrong server: say so rather than retry.
			return fmt.Errorf("relay: --rendezvous %s: %w", s.cfg.Rendezvous, err)
		}
		if time.Since(start) > time.Minute {
			backoff, lost = 250*time.Millisecond, time.Now()
		}
		if time.Since(lost) < 30*time.Second {
			// Most likely the rendezvous restarted: re-register quickly,
			// so that consumers' needs are asked again soon (issue 14).
			backoff = min(backoff, 2*time.Second)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Warn("rendezvous link down; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 15*time.Second)
	}
}

// joinOnce registers once and serves the link until it drops.
func (s *Server) joinOnce(ctx context.Context) error {
	// One request per join: no connection is kept.
	tr := httpapi.NewTransport()
	tr.DisableKeepAlives = true
	if s.cfg.RootCAs != nil { // meshup dev --tls: its local CA
		tr.TLSClientConfig = &tls.Config{RootCAs: s.cfg.RootCAs}
	}
	info, key, err := fetchInfo(ctx, &http.Client{Transport: tr}, s.cfg.Rendezvous)
	if err != nil {
		return err
	}
	if s.cfg.TokenKey == nil {
		s.key.Store(&key)
	}
	// Learn the NAT before registering: it decides whether consumers
	// reach this relay directly or through the rendezvous.
	s.probeNAT(ctx, info.STUN)
	cctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	peer, err := s.cfg.Node.Connect(cctx, info.Addrs)
	if err != nil {
		if !s.cfg.Node.AllowPrivateAddrs() && !slices.ContainsFunc(info.Addrs, mesh.IsPublicMultiaddr) {
			return fmt.Errorf("register with rendezvous: none of its addresses %v is public (relay --allow-private-addrs dials private ones): %w", info.Addrs, err)
		}
		return fmt.Errorf("register with rendezvous: %w", err)
	}
	if peer != info.PeerID {
		return fmt.Errorf("register with rendezvous: peer is %s, info says %s", peer, info.PeerID)
	}
	// The rendezvous counts the relay registered as it sends Registered,
	// and may send a consumer through its tunnel at once (a restarted
	// rendezvous redirects readers to a relay whose URL it has yet to
	// verify): let it tunnel from now on, before the reply is read.
	s.home.Store(&peer)
	defer s.home.CompareAndSwap(&peer, nil)
	st, err := s.cfg.Node.Open(cctx, peer, proto.ProtoRegister)
	if err != nil {
		return fmt.Errorf("register with rendezvous: %w", err)
	}
	defer st.Reset()
	st.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	err = proto.WriteMsg(st, proto.Register{
		Version:   proto.Version,
		HTTPURL:   s.cfg.PublicURL,
		Addrs:     s.cfg.Node.Addrs(),
		Budget:    s.cfg.Budget,
		Window:    s.cfg.Window,
		NAT:       s.natType(),
		Public:    s.isPublic(),
		Tunnel:    s.servesTunnel(),
		Uploads:   s.cfg.Uploads,
		Record:    s.signRecord(peer),
		Admission: s.cfg.AdmissionToken,
		Time:      s.cfg.Now().UnixMilli(),
	})
	if err != nil {
		return fmt.Errorf("register with rendezvous: %w", err)
	}
	m, err := proto.ReadMsg(st, proto.RelayReadLimit)
	if err != nil {
		return fmt.Errorf("register with rendezvous: %w", err)
	}
	if e, ok := m.(*proto.ErrorMsg); ok {
		return fmt.Errorf("register with rendezvous: refused: %w", proto.Errorf(e.Status, "%s", e.Reason))
	}
	reg, ok := m.(*proto.Registered)
	if !ok {
		return fmt.Errorf("register with rendezvous: got %s, want registered", m.MessageType())
	}
	st.SetDeadline(time.Time{})
	s.setObserved(reg.Observed)
	s.updateAddrs()
	hb := time.Duration(reg.HeartbeatMS) * time.Millisecond
	if hb <= 0 {
		hb = time.Second
	}

	l := &link{st: st, out: make(chan proto.Message, 4096), done: make(chan struct{}), origin: originOf(info.PublicURL), origins: reg.Origins[:min(len(reg.Origins), maxRegisteredOrigins)], home: peer, recordAt: time.Now()}
	l.readChecks = reg.ReadChecks
	s.resetDirectory() // each register stream starts from an empty directory
	s.link.Store(l)
	s.registeredOnce.Store(true)
	s.reannounceLive(l) // live.go: soft state
	s.log.Info("registered with rendezvous", "rendezvous", shortID(peer), "heartbeat", hb)
	s.reannounceClips(l) // clip.go: clips with their sealed metadata, before reannounce repeats them without
	s.reannounce(l)      // the items this relay holds (store.go), soft state
	defer func() {
		s.link.CompareAndSwap(l, nil)
		close(l.done)
		s.failNeeds(errNoRendezvous)
	}()

	var loops sync.WaitGroup
	defer loops.Wait()
	lctx, lcancel := context.WithCancel(ctx)
	defer lcancel()
	loops.Go(func() { s.peerLoop(lctx) })
	loops.Go(func() { s.natLoop(lctx, info.STUN) })
	if !s.isPublic() {
		loops.Go(func() { s.reserveLoop(lctx, info.Addrs) })
	}

	writeErr := make(chan error, 1)
	go func() {
		err := s.linkWriter(ctx, l, hb)
		st.Reset() // stops the reader if the writer ended first (ctx done)
		writeErr <- err
	}()
	readErr := s.linkReader(l)
	st.Reset() // stops the writer if the reader ended first
	if werr := <-writeErr; readErr == nil {
		readErr = werr
	}
	return readErr
}

func (s *Server) linkReader(l *link) error {
	for {
		// The limit is derived from the largest directory message the
		// rendezvous sends (proto.RelayReadLimit).
		m, err := proto.ReadMsg(l.st, proto.RelayReadLimit)
		if err != nil {
			return fmt.Errorf("read from rendezvous: %w", err)
		}
		switch m := m.(type) {
		case *proto.NeedFailed:
			s.needFailed(m)
		case *proto.Peers:
			s.applyDirectory(m)
		case *proto.Held:
			if m.Ref == proto.HoldClip {
				s.clipSealed(m) // clip.go
				break
			}
			if !s.heldAnswer(m.Ref, m) && m.Ref != "re" {
				s.log.Debug("held answer nobody waits for", "ref", m.Ref)
			}
		case *proto.Release:
			s.releaseClip(m) // clip.go: its owner unpublished it
		case *proto.ReadVerdict:
			l.checks.answer(m) // readcheck.go
		case *proto.ErrorMsg:
			if !s.heldAnswer(m.Ref, m) {
				s.log.Info("rendezvous error", "ref", m.Ref, "status", m.Status, "reason", m.Reason)
			}
		default:
			s.log.Debug("ignoring rendezvous message", "type", m.MessageType())
		}
	}
}

func (s *Server) linkWriter(ctx context.Context, l *link, hb time.Duration) error {
	tick := time.NewTicker(hb)
	defer tick.Stop()
	var buf, lastMesh []byte
	write := func(m proto.Message) error {
		var err error
		buf, err = proto.AppendMsgFrame(buf[:0], m)
		if err != nil {
			return err
		}
		l.st.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		_, err = l.st.Write(buf)
		return err
	}
	for {
		var m proto.Message
		select {
		case <-ctx.Done():
			return nil
		case m = <-l.out:
		case <-tick.C:
			hbm := s.heartbeatMsg(s.Stats())
			hbm.Record = s.recordDue(l, time.Now())
			// The mesh view travels only when it changed.
			ms := s.meshStatus()
			if b, err := json.Marshal(ms); err == nil && !bytes.Equal(b, lastMesh) {
				hbm.Mesh, lastMesh = &ms, b
			}
			m = hbm
		}
		if err := write(m); err != nil {
			return fmt.Errorf("write to rendezvous: %w", err)
		}
	}
}

func originOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// readToken returns the read token of a consumer request: the t query
// parameter, or an Authorization bearer token.
func readToken(r *http.Request) string {
	if tok := r.URL.Query().Get("t"); tok != "" {
		return tok
	}
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok
}
