// Package httpserve builds the HTTP servers of the meshup binaries (relay,
// rendezvous, meshup dev) with the deadlines every connection owes and a
// cap on TCP connections per source IP, all set by flags and printed at
// start-up.
//
// What each deadline bounds:
//
//	ReadHeaderTimeout  request line and headers (slowloris)
//	IdleTimeout        a keep-alive connection between requests
//	MaxConnsPerIP      TCP connections of one IP that are not upgraded
//	                   WebSockets (those are counted by the servers)
//
// Request bodies and WebSocket handshakes are bounded by the servers
// themselves (relay.Config and rendezvous.Config BodyTimeout,
// MinBodyRate, HandshakeTimeout), since only they know which requests
// carry a body. There is deliberately no http.Server.ReadTimeout: it would
// also cancel the context of a long download (net/http reads in the
// background while the handler writes) and WriteTimeout would cut it.
package httpserve

import (
	"flag"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/mesh/srclimit"
)

// Defaults of Config.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultMaxConnsPerIP     = 256
)

// Config configures the HTTP server of a binary. Zero values mean the
// defaults.
type Config struct {
	// ReadHeaderTimeout bounds the request line and headers. Defaults to
	// 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long between
	// requests. Defaults to 60s.
	IdleTimeout time.Duration
	// MaxConnsPerIP bounds the TCP connections of one source IP, not
	// counting upgraded WebSockets; beyond it new connections are closed
	// at once. Defaults to 256; negative means no limit.
	MaxConnsPerIP int
	// LimitLoopback applies MaxConnsPerIP to loopback too; by default a
	// reverse proxy on the same host is not one source.
	LimitLoopback bool
}

// Register adds the flags of c to fs.
func (c *Config) Register(fs *flag.FlagSet) {
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", DefaultReadHeaderTimeout, "bound on reading a request's line and headers")
	fs.DurationVar(&c.IdleTimeout, "http-idle-timeout", DefaultIdleTimeout, "close a keep-alive HTTP connection idle this long")
	fs.IntVar(&c.MaxConnsPerIP, "max-tcp-conns-per-ip", DefaultMaxConnsPerIP, "limit on TCP connections of one IP, WebSockets not counted; -1 for none")
}

func (c *Config) setDefaults() {
	if c.ReadHeaderTimeout == 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxConnsPerIP == 0 {
		c.MaxConnsPerIP = DefaultMaxConnsPerIP
	}
}

// LogAttrs returns the effective settings, for the start-up line.
func (c Config) LogAttrs() []any {
	c.setDefaults()
	return []any{
		"read_header_timeout", c.ReadHeaderTimeout, "http_idle_timeout", c.IdleTimeout,
		"max_tcp_conns_per_ip", c.MaxConnsPerIP, "limit_loopback", c.LimitLoopback,
	}
}

// Server is an http.Server with the deadlines and the per-IP cap of a
// Config.
type Server struct {
	*http.Server
	cfg Config

	refused atomic.Int64

	mu    sync.Mutex // guards conns
	conns map[netip.Addr]int
}

// New returns a server of h configured by cfg; log receives the server's
// own errors at Debug (they are a stranger's broken requests).
func New(cfg Config, h http.Handler, log *slog.Logger) *Server {
	cfg.setDefaults()
	s := &Server{cfg: cfg, conns: make(map[netip.Addr]int)}
	s.Server = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ConnState:         s.connState,
	}
	if log != nil {
		s.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	}
	return s
}

// Refused returns the connections closed at once for MaxConnsPerIP.
func (s *Server) Refused() int64 { return s.refused.Load() }

// connState counts the connections of each IP: a new connection over the
// cap is closed before a byte is read. A connection leaves the count when
// it closes or is hijacked (a WebSocket, counted by the server behind).
func (s *Server) connState(c net.Conn, st http.ConnState) {
	if s.cfg.MaxConnsPerIP < 0 {
		return
	}
	ip, ok := srclimit.SourceIP(c.RemoteAddr().String())
	if !ok || (ip.IsLoopback() && !s.cfg.LimitLoopback) {
		return
	}
	switch st {
	case http.StateNew:
		s.mu.Lock()
		s.conns[ip]++
		over := s.conns[ip] > s.cfg.MaxConnsPerIP
		s.mu.Unlock()
		if over {
			s.refused.Add(1)
			c.Close() // net/http then reports StateClosed
		}
	case http.StateClosed, http.StateHijacked:
		s.mu.Lock()
		if s.conns[ip]--; s.conns[ip] <= 0 {
			delete(s.conns, ip)
		}
		s.mu.Unlock()
	}
}
