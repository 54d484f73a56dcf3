// Package devmesh runs a whole meshup system in one process on loopback: a
// rendezvous and a few relays, each with its own libp2p node and HTTP
// listener. `meshup dev` and the integration tests use it.
package devmesh

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshup/meshup/cmd/internal/httpserve"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous"
)

// Config configures a Mesh.
type Config struct {
	// HTTPAddr is the rendezvous's listen address. Defaults to
	// "127.0.0.1:0".
	HTTPAddr string
	// Relays is the number of relays. Defaults to 2 (0 means the
	// default; negative is an error).
	Relays int
	// Rendezvous and Relay are templates for the servers' configs; the
	// fields devmesh owns (nodes, URLs) are overwritten. An empty
	// Rendezvous.STUNAddr means "127.0.0.1:0": STUN on two ephemeral
	// loopback ports, so that a dev mesh never clashes with a busy 3478.
	Rendezvous rendezvous.Config
	Relay      relay.Config
	// Logger receives every server's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// WrapRelay, if set, wraps each relay's HTTP handler (tests use it
	// to see what requests reach relays).
	WrapRelay func(http.Handler) http.Handler
	// Volunteers is how many of the relays (the last ones) present no
	// admission token: the rendezvous takes them as volunteer relays.
	Volunteers int
}

// Mesh is a running system. Close it when done.
type Mesh struct {
	URL        string // the rendezvous's base URL
	Rendezvous *rendezvous.Server
	Relays     []*relay.Server
	RelayURLs  []string

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	servers []*http.Server
	nodes   []*mesh.Node
	once    sync.Once
}

var loopbackP2P = []string{"/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"}

// Start starts a mesh and waits until every relay has registered.
func Start(ctx context.Context, cfg Config) (m *Mesh, err error) {
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = "127.0.0.1:0"
	}
	if cfg.Relays == 0 {
		cfg.Relays = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Relays < 0 {
		return nil, fmt.Errorf("devmesh: %d relays", cfg.Relays)
	}
	rctx, cancel := context.WithCancel(context.Background())
	mm := &Mesh{cancel: cancel}
	m = mm
	defer func() {
		// The early returns below set m to nil: close what was started
		// through mm.
		if err != nil {
			mm.Close()
		}
	}()

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("devmesh: listen: %w", err)
	}
	m.URL = "http://" + ln.Addr().String()
	var gate rendezvous.RelayGate
	node, err := mesh.New(mesh.Config{
		ListenAddrs:  loopbackP2P,
		Logger:       cfg.Logger,
		RelayService: &mesh.RelayService{Allow: gate.Allow},
		HolePunching: true,
		// A dev mesh lives on loopback.
		AllowPrivateAddrs: true,
	})
	if err != nil {
		ln.Close()
		return nil, err
	}
	m.nodes = append(m.nodes, node)
	rc := cfg.Rendezvous
	rc.PublicURL, rc.Node = m.URL, node
	// Every relay of a dev mesh is the operator's: each presents an
	// admission token signed with a key that lives only in this process
	// (the production path, with class operator), and loopback addresses
	// are allowed.
	_, admission, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("devmesh: admission key: %w", err)
	}
	rc.AdmissionKey = admission.Public().(ed25519.PublicKey)
	rc.AllowPrivateAddrs = true
	if rc.STUNAddr == "" {
		rc.STUNAddr = "127.0.0.1:0"
	}
	if rc.Logger == nil {
		rc.Logger = cfg.Logger.With("role", "rendezvous")
	}
	m.Rendezvous, err = rendezvous.New(rc)
	if err != nil {
		ln.Close()
		return nil, err
	}
	gate.Bind(m.Rendezvous)
	m.serve(ln, m.Rendezvous.Handler())

	for i := range cfg.Relays {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("devmesh: listen: %w", err)
		}
		node, err := mesh.New(mesh.Config{ListenAddrs: loopbackP2P, Logger: cfg.Logger, HolePunching: true, AllowPrivateAddrs: true})
		if err != nil {
			ln.Close()
			return nil, err
		}
		m.nodes = append(m.nodes, node)
		c := cfg.Relay
		c.Node, c.Rendezvous, c.PublicURL = node, m.URL, "http://"+ln.Addr().String()
		c.AdmissionToken = proto.SignAdmission(admission, proto.AdmissionClaims{Relay: node.ID(), Name: fmt.Sprintf("dev-%d", i)})
		if i >= cfg.Relays-cfg.Volunteers {
			c.AdmissionToken = ""
		}
		if c.Logger == nil {
			c.Logger = cfg.Logger.With("role", "relay", "n", i)
		}
		r, err := relay.New(c)
		if err != nil {
			ln.Close()
			return nil, err
		}
		m.Relays = append(m.Relays, r)
		m.RelayURLs = append(m.RelayURLs, c.PublicURL)
		h := r.Handler()
		if cfg.WrapRelay != nil {
			h = cfg.WrapRelay(h)
		}
		m.serve(ln, h)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			r.Run(rctx)
		}()
	}
	return m, m.waitRegistered(ctx)
}

func (m *Mesh) serve(ln net.Listener, h http.Handler) {
	srv := httpserve.New(httpserve.Config{}, h, nil).Server
	m.servers = append(m.servers, srv)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		srv.Serve(ln)
	}()
}

// waitRegistered waits until every relay is registered.
func (m *Mesh) waitRegistered(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		n := 0
		for _, r := range m.Relays {
			if r.Status().Registered {
				n++
			}
		}
		if n == len(m.Relays) {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("devmesh: relays did not register in time")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Close stops every server and node. It is idempotent.
func (m *Mesh) Close() {
	m.once.Do(func() {
		m.cancel()
		for _, srv := range m.servers {
			srv.Close()
		}
		for _, r := range m.Relays {
			r.Close()
		}
		if m.Rendezvous != nil {
			m.Rendezvous.Close()
		}
		for _, n := range m.nodes {
			n.Close()
		}
		m.wg.Wait()
	})
}
