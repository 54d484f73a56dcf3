// Package httptunnel is the HTTP side of meshup's tunnel into relays that
// browsers and HTTP clients cannot reach directly (issue 10): a reverse
// proxy that carries HTTP/1.1, WebSocket upgrades included, over libp2p
// streams (proto.ProtoHTTP) to a relay's own API, the allow-list of
// response headers such a relay may send, the item policy forced on every
// answer, and byte counters. The rendezvous and public relays serve the
// same tunnel with it, so that its rules hold the same way wherever a
// consumer enters.
//
// The proxy dials only through the Dial function its owner gives it,
// which takes a peer id, never an address: a client names a relay, and
// the owner decides whether that relay may be reached (registered,
// admitted, connected) before the proxy runs.
package httptunnel

import (
	"context"
	"errors"
	"mime"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshup/meshup/proto"
)

// Prefix is the path under which relays are tunnelled:
// Prefix + "{relay peer id}/" + the relay's own path, which must begin
// with "v1/".
const Prefix = "/v1/relays/"

// Headers are the response headers a relay may send through the tunnel;
// every other header is dropped. The relay is a stranger's software
// answering under an origin that is not its own: no Set-Cookie,
// Service-Worker-Allowed, Clear-Site-Data, Refresh, Link, Location,
// Content-Security-Policy of its own or anything else that changes what a
// browser does with the origin. Connection and Upgrade matter for a 101
// only (other hop-by-hop headers are removed by the proxy before).
var Headers = []string{
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
	// Uploads (issue 11): the resumable PUT's 308 names what arrived in
	// Range; tus answers in its own headers; CORS preflights of both.
	"Range",
	"Meshup-Upload-Url",
	"Meshup-Item-Url",
	"Access-Control-Allow-Methods",
	"Access-Control-Allow-Headers",
	"Access-Control-Max-Age",
	"Tus-Resumable",
	"Tus-Version",
	"Tus-Extension",
	"Tus-Max-Size",
	"Tus-Checksum-Algorithm",
	"Upload-Offset",
	"Upload-Length",
	"Upload-Defer-Length",
	"Upload-Expires",
	"Upload-Metadata",
	"Meshup-Share-Url",
}

// FilterResponse keeps the allowed headers of a relay's response and
// forces the item policy on it: nosniff, a sandbox CSP, and attachment
// unless the type may be shown inline (JSON, the relay's API, is text that
// never runs). It is an httputil.ReverseProxy ModifyResponse.
func FilterResponse(res *http.Response) error {
	kept := make(http.Header, len(Headers)+3)
	for _, k := range Headers {
		if v, ok := res.Header[k]; ok {
			kept[k] = v
		}
	}
	// Location only on a 201 Created (an upload's item URL): on a 3xx
	// it would send browsers wherever the relay wants.
	if v, ok := res.Header["Location"]; ok && res.StatusCode == http.StatusCreated {
		kept["Location"] = v
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

// Counters count a tunnel's traffic. The byte counters count every byte
// on the tunnel's streams, headers included, so they bound the item bytes
// the tunnel carried from above. Safe for concurrent use.
type Counters struct {
	Requests atomic.Int64 // requests passed to the proxy
	Failures atomic.Int64 // requests that could not reach their relay
	BytesIn  atomic.Int64 // bytes read from relays (responses, pushes' acks)
	BytesOut atomic.Int64 // bytes written to relays (requests, pushed parts)
}

// Stats is a snapshot of Counters.
type Stats struct {
	Requests int64 `json:"requests"`
	Failures int64 `json:"failures"`
	BytesIn  int64 `json:"bytes_in"`  // from relays
	BytesOut int64 `json:"bytes_out"` // to relays
}

// Snapshot returns the counters' current values.
func (c *Counters) Snapshot() Stats {
	return Stats{
		Requests: c.Requests.Load(),
		Failures: c.Failures.Load(),
		BytesIn:  c.BytesIn.Load(),
		BytesOut: c.BytesOut.Load(),
	}
}

// Config configures a tunnel proxy.
type Config struct {
	// Dial opens a stream of proto.ProtoHTTP to the relay with peer id
	// relay, as a net.Conn whose Close resets the stream. Required. It
	// is called only for relays the request handler admitted.
	Dial func(ctx context.Context, relay string) (net.Conn, error)
	// MaxConnsPerRelay bounds the concurrent connections (streams) to one
	// relay. Zero means no limit.
	MaxConnsPerRelay int
	// Counters receive the tunnel's traffic. Required.
	Counters *Counters
	// OnError is called when a request cannot reach its relay (not when
	// the client went away), after Failures is counted, to log and answer.
	// Required.
	OnError func(w http.ResponseWriter, r *http.Request, err error)
}

// NewProxy returns the reverse proxy of a tunnel. Requests must come from
// a route with path values "relay" (the peer id) and "rest" (the relay's
// path without its leading slash), checked by the caller: the proxy
// carries the request to relay at "/"+rest as it is.
func NewProxy(cfg Config) *httputil.ReverseProxy {
	tr := &http.Transport{
		// The URL host is the relay's peer id; the "port" is http's.
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			c, err := cfg.Dial(ctx, host)
			if err != nil {
				return nil, err
			}
			return &countingConn{Conn: c, n: cfg.Counters}, nil
		},
		MaxIdleConnsPerHost:   16,
		MaxConnsPerHost:       cfg.MaxConnsPerRelay,
		IdleConnTimeout:       time.Minute,
		ResponseHeaderTimeout: 0, // a relay answers once the publisher pushes: its NeedTimeout bounds it
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
		ModifyResponse: FilterResponse,
		Transport:      tr,
		FlushInterval:  -1, // bytes go on as they arrive: relays stream cut-through
		BufferPool:     bufPool,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.Is(err, context.Canceled) {
				return // the client went away
			}
			cfg.Counters.Failures.Add(1)
			cfg.OnError(w, r, err)
		},
	}
}

// countingConn counts the bytes of a tunnel stream.
type countingConn struct {
	net.Conn
	n *Counters
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.BytesIn.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.n.BytesOut.Add(int64(n))
	return n, err
}

// bufSize is the proxy's copy buffer: a response body moves from the
// relay's stream to the client in reads of up to this much, each written
// and flushed at once. The library's default of 32 KiB cost a client
// write(2) and a flush per 32 KiB, and a mesh stream's Read returns what
// has arrived, which on a busy stream is more (issue 10).
const bufSize = 64 << 10

// bufPool recycles the proxies' copy buffers (httputil.BufferPool).
var bufPool = &pool{}

type pool struct{ p sync.Pool }

func (b *pool) Get() []byte {
	if v, ok := b.p.Get().(*[]byte); ok {
		return *v
	}
	return make([]byte, bufSize)
}

func (b *pool) Put(buf []byte) { b.p.Put(&buf) }
