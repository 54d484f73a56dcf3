package rendezvous

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"time"

	"github.com/meshup/meshup/proto"
)

// The tunnel lets browsers and HTTP clients reach relays behind NAT. A
// request to /v1/relays/{relay}/{rest} is proxied to the relay's own API at
// /{rest}, over HTTP/1.1 carried by libp2p streams (proto.ProtoHTTP) on the
// connection the relay keeps with the rendezvous. WebSocket upgrades (the
// push channel) pass through too. Only registered relays are reachable, and
// only their /v1/ API: the tunnel never dials an address a client names.

// tunnelPrefix is the path under which relays are tunnelled.
const tunnelPrefix = "/v1/relays/"

// tunnelBase returns the base URL under which relay id is tunnelled.
func (s *Server) tunnelBase(id string) string {
	return s.cfg.PublicURL + tunnelPrefix + id
}

// newTunnel returns the reverse proxy that serves the tunnel.
func (s *Server) newTunnel() *httputil.ReverseProxy {
	tr := &http.Transport{
		// The URL host is the relay's peer id; the "port" is http's.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return s.cfg.Node.DialConn(ctx, host, proto.ProtoHTTP)
		},
		MaxIdleConnsPerHost:   16,
		MaxConnsPerHost:       s.cfg.MaxTunnelConns,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: 0, // a relay answers once the publisher pushes: NeedTimeout bounds it
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			relay := pr.In.PathValue("relay")
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = relay
			pr.Out.URL.Path = "/" + pr.In.PathValue("rest")
			pr.Out.URL.RawPath = ""
			pr.Out.Host = relay
			pr.SetXForwarded()
		},
		Transport:     tr,
		FlushInterval: -1, // bytes go on as they arrive: the relay streams cut-through
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			s.stats.tunnelFailures.Add(1)
			s.log.Info("tunnel to relay failed", "relay", r.PathValue("relay"), "err", err)
			writeError(w, http.StatusBadGateway, proto.StatusUnavailable, "relay unreachable through the tunnel")
		},
	}
}

// handleTunnel serves /v1/relays/{relay}/{rest...}.
func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.PathValue("rest"), "v1/") {
		writeError(w, 0, proto.StatusNotFound, "only a relay's /v1/ API is tunnelled")
		return
	}
	if !s.IsRelay(r.PathValue("relay")) {
		writeError(w, 0, proto.StatusUnavailable, "no such relay is registered")
		return
	}
	s.stats.tunnelled.Add(1)
	s.tunnel.ServeHTTP(w, r)
}
