package rendezvous

import (
	"context"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
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

// tunnelBase returns the base URL under which relay id is tunnelled: on
// Config.TunnelURL when set, else on the public URL.
func (s *Server) tunnelBase(id string) string {
	if s.cfg.TunnelURL != "" {
		return s.cfg.TunnelURL + tunnelPrefix + id
	}
	return s.cfg.PublicURL + tunnelPrefix + id
}

// tunnelHeaders are the response headers a relay may send through the
// tunnel; every other header is dropped. The relay is a stranger's
// software answering under an origin of ours: no Set-Cookie,
// Service-Worker-Allowed, Clear-Site-Data, Refresh, Link, Location,
// Content-Security-Policy of its own or anything else that changes what a
// browser does with the origin. Connection and Upgrade matter for a 101
// only (other hop-by-hop headers are removed by the proxy before).
var tunnelHeaders = []string{
	"Accept-Ranges",
	"Access-Control-Allow-Origin",
	"Access-Control-Expose-Headers",
	"Cache-Control",
	"Connection",
	"Content-Disposition",
	"Content-Length",
	"Content-Range",
	"Content-Type",
	"Date",
	"Etag",
	"Last-Modified",
	"Meshup-Relay",
	"Retry-After",
	"Sec-Websocket-Accept",
	"Sec-Websocket-Extensions",
	"Sec-Websocket-Protocol",
	"Upgrade",
	"Vary",
}

// filterTunnelResponse keeps the allowed headers of a relay's response and
// forces the item policy on it: nosniff, a sandbox CSP, and attachment
// unless the type may be shown inline (JSON, the relay's API, is text that
// never runs).
func filterTunnelResponse(res *http.Response) error {
	kept := make(http.Header, len(tunnelHeaders)+3)
	for _, k := range tunnelHeaders {
		if v, ok := res.Header[k]; ok {
			kept[k] = v
		}
	}
	res.Header = kept
	if res.StatusCode == http.StatusSwitchingProtocols {
		return nil
	}
	kept.Set("X-Content-Type-Options", "nosniff")
	mt := proto.NormalizeMIME(kept.Get("Content-Type"))
	// A response without a type gets one: Go's server would otherwise
	// sniff the body and might call it text/html.
	if !proto.InlineMIME(mt) && mt != "application/json" {
		name := ""
		if _, params, err := mime.ParseMediaType(kept.Get("Content-Disposition")); err == nil {
			name = params["filename"]
		}
		proto.SetItemHeaders(kept, mt, name)
		return nil
	}
	csp := proto.ItemCSP
	if proto.InlineMIME(mt) && mt != "text/plain" {
		csp = proto.MediaCSP
	}
	kept.Set("Content-Security-Policy", csp)
	return nil
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
		ModifyResponse: filterTunnelResponse,
		Transport:      tr,
		FlushInterval:  -1, // bytes go on as they arrive: the relay streams cut-through
		BufferPool:     &tunnelBufPool{},
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

// tunnelBufSize is the proxy's copy buffer: a response body moves from the
// relay's stream to the client in reads of up to this much, each written
// and flushed at once. The library's default of 32 KiB cost a client
// write(2) and a flush per 32 KiB, and a mesh.Stream Read returns what has
// arrived, which on a busy stream is more (issue 10).
const tunnelBufSize = 64 << 10

// tunnelBufPool recycles the proxy's copy buffers (httputil.BufferPool).
type tunnelBufPool struct{ p sync.Pool }

func (b *tunnelBufPool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, tunnelBufSize)
}

func (b *tunnelBufPool) Put(buf []byte) { b.p.Put(&buf) }

// handleTunnel serves /v1/relays/{relay}/{rest...}.
func (s *Server) handleTunnel(w http.ResponseWriter, r *http.Request) {
	if !s.onTunnelOrigin(r) {
		writeError(w, 0, proto.StatusNotFound, "the relay tunnel is served on "+s.cfg.TunnelURL)
		return
	}
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
