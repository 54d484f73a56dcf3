// Package relaytest runs a relay on loopback for tests. Like
// net/http/httptest it starts on 127.0.0.1:0, and it cleans up through
// testing.TB.Cleanup. The relay joins a rendezvous given by URL (start one
// with rendezvous/rendezvoustest) over a real libp2p node.
package relaytest

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// Timeout bounds the wait for the relay to register.
const Timeout = 10 * time.Second

// Server is a relay serving HTTP on 127.0.0.1 and libp2p on a loopback
// mesh node, registered with a rendezvous.
type Server struct {
	// URL is the relay's HTTP base URL and PublicURL, e.g.
	// "http://127.0.0.1:41234".
	URL string
	// Server is the relay.
	Server *relay.Server
	// Node is the relay's mesh node.
	Node *mesh.Node
	// HTTP is the HTTP server.
	HTTP *httptest.Server

	cancel    context.CancelFunc
	runDone   chan struct{}
	closeOnce sync.Once
}

// Start starts a relay with cfg, joins it to the rendezvous at
// rendezvousURL and waits until it is registered. Empty Node, PublicURL,
// Rendezvous and Logger are filled in: a fresh node on
// /ip4/127.0.0.1/tcp/0, the HTTP URL, rendezvousURL and Logger(tb). The
// relay is closed at tb's cleanup; Close closes it earlier.
func Start(tb testing.TB, rendezvousURL string, cfg relay.Config) *Server {
	tb.Helper()
	hs := httptest.NewUnstartedServer(nil)
	s := &Server{URL: "http://" + hs.Listener.Addr().String(), HTTP: hs, runDone: make(chan struct{})}
	if cfg.Logger == nil {
		cfg.Logger = Logger(tb)
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = s.URL
	}
	if cfg.Rendezvous == "" {
		cfg.Rendezvous = rendezvousURL
	}
	var ownNode *mesh.Node // closed with the relay when Start made it
	if cfg.Node == nil {
		n, err := mesh.New(mesh.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, Logger: cfg.Logger, HolePunching: true, AllowPrivateAddrs: true})
		if err != nil {
			hs.Close()
			tb.Fatalf("relaytest: start mesh node: %v", err)
		}
		cfg.Node, ownNode = n, n
	}
	s.Node = cfg.Node
	srv, err := relay.New(cfg)
	if err != nil {
		hs.Close()
		if ownNode != nil {
			ownNode.Close()
		}
		tb.Fatalf("relaytest: start relay: %v", err)
	}
	s.Server = srv
	hs.Config.Handler = srv.Handler()
	hs.Start()

	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		defer close(s.runDone)
		srv.Run(ctx)
	}()
	tb.Cleanup(func() {
		s.Close()
		if ownNode != nil {
			ownNode.Close()
		}
	})

	deadline := time.Now().Add(Timeout)
	for !srv.Status().Registered {
		if time.Now().After(deadline) {
			tb.Fatalf("relaytest: relay %s did not register with %s within %v", s.URL, cfg.Rendezvous, Timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

// ID returns the relay's id (its libp2p peer id).
func (s *Server) ID() string { return s.Server.ID() }

// PushURL returns the ws:// URL of the relay's push WebSocket.
func (s *Server) PushURL() string {
	return "ws" + strings.TrimPrefix(s.URL, "http") + "/v1/push"
}

// Close stops the relay's rendezvous link, closes the relay and its HTTP
// server, dropping open client connections. It leaves a node that the
// caller passed in Config open. It is idempotent.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.cancel()
		s.Server.Close()
		s.HTTP.CloseClientConnections()
		s.HTTP.Close()
		<-s.runDone
	})
}

// Logger returns a logger that writes to tb.Log at Debug level; see
// rendezvoustest.Logger, which it is.
func Logger(tb testing.TB) *slog.Logger { return rendezvoustest.Logger(tb) }
