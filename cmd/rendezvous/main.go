// Command rendezvous runs meshup's controlling server: the HTTP API, the
// control WebSocket for publishers, and the relay registry on a libp2p
// node.
//
//	rendezvous --http :8080 --public-url https://share.example.org
//
// With --key-file FILE it keeps its token signing key and peer id in FILE
// (created on first start), so that a restart does not invalidate the
// tokens of reads in flight; it writes nothing else.
//
// It also answers STUN Binding requests on UDP --stun (default :3478) and
// --stun-alt (default: the next port), so that relays learn their public
// address and NAT type.
//
// Every limit is a flag and is printed at start-up. SIGINT or SIGTERM
// closes the server gracefully.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshup/meshup/cmd/internal/clusterflag"
	"github.com/meshup/meshup/cmd/internal/debugsrv"
	"github.com/meshup/meshup/cmd/internal/httpserve"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// shutdownTimeout bounds a graceful shutdown. The deadlines of
// connections are flags (cmd/internal/httpserve).
const shutdownTimeout = 5 * time.Second

func main() {
	if err := run(context.Background(), os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "rendezvous:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	http      string
	p2p       string
	publicURL string
	keyFile   string
	origins   []string
	logLevel  slog.Level
	metrics   bool
	trust     trustOptions
	portmap   bool
	circuits  mesh.RelayService
	streams   int // libp2p streams per peer and protocol
	window    int // yamux receive window per stream, bytes
	cluster   clusterflag.Flags
	cfg       rendezvous.Config
	httpCfg   httpserve.Config
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("rendezvous", flag.ContinueOnError)
	fs.StringVar(&o.http, "http", ":8080", "HTTP listen `address`")
	fs.StringVar(&o.p2p, "p2p", strings.Join(mesh.DefaultListenAddrs, ","), "comma-separated libp2p listen `multiaddrs`")
	fs.StringVar(&o.keyFile, "key-file", "", "identity key `file` (PEM PKCS#8 Ed25519), created with mode 0600 if missing: keeps the token key and peer id across restarts, so reads in flight survive one; the only file the rendezvous writes (default: a new key in memory at every start)")
	fs.StringVar(&o.publicURL, "public-url", "", "base `URL` in share links (default http://127.0.0.1:PORT, or the --http host)")
	fs.Func("allow-origin", "`origin` allowed to open the control WebSocket from a browser, e.g. https://app.example.org; repeatable or comma-separated; * allows any", func(s string) error {
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				o.origins = append(o.origins, v)
			}
		}
		return nil
	})
	fs.StringVar(&c.STUNAddr, "stun", fmt.Sprintf(":%d", rendezvous.DefaultSTUNPort), "UDP `address` of the STUN server; off disables STUN")
	fs.StringVar(&c.STUNAltAddr, "stun-alt", "", "UDP `address` of the alternate STUN port, for NAT type detection (default: the --stun port + 1); off serves --stun only")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn, error")
	fs.BoolVar(&o.metrics, "metrics", true, "serve Prometheus metrics at /metrics on --debug-addr")
	o.trust.register(fs, c)
	o.cluster.Register(fs)

	fs.BoolVar(&o.portmap, "nat-portmap", false, "ask the router for a port mapping with UPnP or NAT-PMP")
	fs.DurationVar(&o.circuits.CircuitDuration, "circuit-duration", mesh.DefaultCircuitDuration, "limit on the life of one relayed connection between relays")
	fs.Int64Var(&o.circuits.CircuitData, "circuit-data", mesh.DefaultCircuitData, "limit on the `bytes` relayed in each direction of one relayed connection")
	fs.IntVar(&o.circuits.MaxReservations, "max-reservations", mesh.DefaultMaxReservations, "limit on circuit reservations held by relays behind NAT")
	fs.IntVar(&o.window, "max-stream-window", mesh.DefaultMaxStreamWindow, "bytes one libp2p stream may have in flight towards the rendezvous, unread (yamux receive window)")
	fs.IntVar(&o.streams, "max-streams-per-peer", mesh.DefaultMaxStreamsPerPeer, "limit on the libp2p streams of one protocol one peer may have open with the rendezvous, per direction (tunnelled connections into one relay are streams)")
	fs.IntVar(&o.circuits.MaxCircuits, "max-circuits", mesh.DefaultMaxCircuits, "limit on relayed connections per relay")

	fs.IntVar(&c.MaxMessage, "max-message", proto.DefaultMaxMessage, "limit on one control message, in `bytes`")
	fs.IntVar(&c.MaxSessions, "max-sessions", rendezvous.DefaultMaxSessions, "limit on concurrent control sessions")
	fs.IntVar(&c.MaxItemsPerSession, "max-items-per-session", rendezvous.DefaultMaxItemsPerSession, "limit on items one session publishes")
	fs.IntVar(&c.MaxPublishersPerItem, "max-publishers-per-item", rendezvous.DefaultMaxPublishersPerItem, "limit on sessions publishing one item together (swarm upload)")
	fs.IntVar(&c.MaxItems, "max-items", rendezvous.DefaultMaxItems, "limit on items held, online and offline")
	fs.IntVar(&c.MaxTextMessage, "max-text-message", rendezvous.DefaultMaxTextMessage, "limit on the text of a message item, in `bytes`")
	fs.Int64Var(&c.MaxItemSize, "max-item-size", rendezvous.DefaultMaxItemSize, "limit on the declared size of an item, in `bytes`")
	fs.IntVar(&c.MaxNeedsPerRelay, "max-needs-per-relay", rendezvous.DefaultMaxNeedsPerRelay, "limit on outstanding needs of one relay")
	fs.IntVar(&c.MaxTunnelConns, "max-tunnel-conns", rendezvous.DefaultMaxTunnelConns, "limit on concurrent tunnelled HTTP connections to one relay behind NAT")
	fs.IntVar(&c.SessionQueue, "session-queue", rendezvous.DefaultSessionQueue, "messages queued per control session before it is closed as too slow; orders fill at most 7/8 of it, beyond which the publisher is busy and needs get 429")
	fs.IntVar(&c.RelayQueue, "relay-queue", rendezvous.DefaultRelayQueue, "messages queued per relay before it is dropped as too slow")
	fs.DurationVar(&c.HeartbeatInterval, "heartbeat", rendezvous.DefaultHeartbeatInterval, "heartbeat interval told to relays")
	fs.DurationVar(&c.DeadAfter, "dead-after", rendezvous.DefaultDeadAfter, "drop a relay silent this long")
	fs.DurationVar(&c.ReadTokenTTL, "read-token-ttl", rendezvous.DefaultReadTokenTTL, "lifetime of read tokens")
	fs.DurationVar(&c.PushTokenTTL, "push-token-ttl", rendezvous.DefaultPushTokenTTL, "lifetime of push tokens and orders")
	fs.DurationVar(&c.ItemTTL, "item-ttl", rendezvous.DefaultItemTTL, "keep an offline item this long for its publisher to return")
	fs.DurationVar(&c.UploadTTL, "upload-ttl", rendezvous.DefaultUploadTTL, "an upload through a legacy protocol (STOR, socket.io, PUT, tus) and the item its relay holds expire this long after creation")
	fs.Int64Var(&c.MaxClipSize, "max-clip-size", rendezvous.DefaultMaxClipSize, "largest clip (pushed whole into relay memory at publish time), in bytes; a larger one is refused at publish")
	fs.DurationVar(&c.ClipTTL, "clip-ttl", rendezvous.DefaultClipTTL, "a clip stays readable from its holder relays this long after publish, with its publisher gone too")
	fs.StringVar(&c.AuthWebhook, "auth-webhook", "", "`URL` of the application's auth webhook, POSTed before a publish, an upload and a read; fails closed")
	fs.DurationVar(&c.AuthWebhookTimeout, "auth-webhook-timeout", rendezvous.DefaultAuthWebhookTimeout, "bound on one auth webhook call (a timeout denies)")
	fs.DurationVar(&c.ReclaimGrace, "reclaim-grace", rendezvous.DefaultReclaimGrace, "after start, answer unknown item ids as offline (503) this long, while publishers reclaim")
	fs.DurationVar(&c.PingInterval, "ping-interval", rendezvous.DefaultPingInterval, "WebSocket ping interval of control sessions")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", rendezvous.DefaultWriteTimeout, "bound on each write to a session or relay")
	// Limits per source, deadlines and the tunnel's origin
	// (rendezvous/limits.go, cmd/internal/httpserve).
	o.httpCfg.Register(fs)
	fs.StringVar(&c.TunnelURL, "tunnel-url", "", "base `URL` of a separate origin serving the tunnel into relays, e.g. https://tunnel.example.org (see README: Tunnel origin)")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", rendezvous.DefaultHandshakeTimeout, "time from a control WebSocket's upgrade to its first message")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", rendezvous.DefaultMaxConnsPerIP, "limit on requests in flight from one IP, WebSockets included")
	fs.Float64Var(&c.RequestRate, "request-rate", rendezvous.DefaultRequestRate, "requests per second allowed from one IP, sustained")
	fs.IntVar(&c.RequestBurst, "request-burst", rendezvous.DefaultRequestBurst, "requests allowed from one IP in a burst")
	fs.IntVar(&c.MaxSessionsPerIP, "max-sessions-per-ip", rendezvous.DefaultMaxSessionsPerIP, "limit on control sessions of one IP")
	fs.IntVar(&c.MaxItemsPerIP, "max-items-per-ip", rendezvous.DefaultMaxItemsPerIP, "limit on items published from one IP, online and offline")
	fs.IntVar(&c.TrackedIPs, "tracked-ips", rendezvous.DefaultTrackedIPs, "IPs remembered by the limits per source")
	fs.BoolVar(&c.LimitLoopback, "limit-loopback", false, "apply the limits per source to loopback too")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", rendezvous.DefaultBodyTimeout, "time a request body may take, plus a second per --min-body-rate bytes")
	fs.IntVar(&c.MinBodyRate, "min-body-rate", rendezvous.DefaultMinBodyRate, "slowest request body allowed, in `bytes` per second")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.httpCfg.LimitLoopback = c.LimitLoopback
	return o, nil
}

// run starts the server and blocks until ctx is done or a signal arrives.
func run(ctx context.Context, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	if done, err := o.trust.tool(os.Stdout, os.Getenv, time.Now()); done {
		return err
	}
	if err := o.trust.apply(&o.cfg, os.Getenv); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel}))
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	signing, p2pKey, err := identity(o.keyFile, log)
	if err != nil {
		return fmt.Errorf("--key-file: %w", err)
	}
	o.cfg.SigningKey = signing

	ln, err := net.Listen("tcp", o.http)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.http, err)
	}
	defer ln.Close()
	if o.publicURL == "" {
		o.publicURL = defaultPublicURL(o.http, ln.Addr())
	}

	// The rendezvous is a public node: it relays circuits between the
	// relays registered with it, and only those.
	var gate rendezvous.RelayGate
	circuits := o.circuits
	circuits.Allow = gate.Allow
	node, err := mesh.New(mesh.Config{
		ListenAddrs:  splitList(o.p2p),
		Identity:     p2pKey,
		Logger:       log,
		RelayService: &circuits,
		HolePunching: true,
		NATPortMap:   o.portmap,
		// The same rule as the directory's: no dial to a private
		// address unless the operator allows it.
		AllowPrivateAddrs: o.cfg.AllowPrivateAddrs,
		MaxStreamsPerPeer: o.streams,
		MaxStreamWindow:   o.window,
	})
	if err != nil {
		return err
	}
	defer node.Close()

	// The cluster is closed after the server (defers run last first), so
	// that the withdrawals of its relays go out before the leave.
	ccfg, clusterOn, err := o.cluster.Config(node, os.Getenv)
	if err != nil {
		return err
	}
	var cluster *mesh.Cluster
	if clusterOn {
		ccfg.Logger = log
		if cluster, err = mesh.NewCluster(ccfg); err != nil {
			return err
		}
		defer cluster.Close()
		log.LogAttrs(ctx, slog.LevelInfo, "cluster", cluster.Limits()...)
	} else {
		log.Info("cluster off (no --gossip)")
	}

	cfg := o.cfg
	cfg.Cluster = cluster
	cfg.PublicURL = o.publicURL
	cfg.Node = node
	cfg.AllowedOrigins = o.origins
	cfg.Logger = log
	srv, err := rendezvous.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	gate.Bind(srv)

	log.LogAttrs(ctx, slog.LevelInfo, "limits", srv.Limits()...)
	log.Info("http server limits", o.httpCfg.LogAttrs()...)
	log.LogAttrs(ctx, slog.LevelInfo, "circuit relay limits", circuits.LogAttrs()...)
	log.Info("rendezvous listening", "http", ln.Addr().String(), "public_url", o.publicURL,
		"peer_id", node.ID(), "token_key", srv.Info().TokenKey, "p2p", node.Addrs(), "stun", srv.Info().STUN)

	hs := httpserve.New(o.httpCfg, nil, log)
	handler := srv.Handler()
	if o.metrics {
		// Metrics and pprof are on the debug listener (loopback by
		// default), never on the public port.
		reg := prometheus.NewRegistry()
		reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshup_rendezvous_tcp_refused_total", Help: "TCP connections closed at once for --max-tcp-conns-per-ip."},
				func() float64 { return float64(hs.Refused()) }),
			newStatsCollector(srv),
			newMeshCollector(srv),
			collectors.NewGoCollector(),
			collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		)
		if cluster != nil {
			reg.MustRegister(newClusterCollector(cluster))
		}
		addr, err := debugsrv.Start(ctx, o.trust.debugAddr, reg, log)
		if err != nil {
			return fmt.Errorf("--debug-addr: %w", err)
		}
		log.Info("debug listener (metrics, pprof)", "addr", addr)
	}
	hs.Handler = handler
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	// Close the rendezvous first: Shutdown does not wait for hijacked
	// WebSocket connections, Close ends them.
	srv.Close()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return fmt.Errorf("shut down http: %w", err)
	}
	return nil
}

// defaultPublicURL derives the public URL from the --http flag and the
// address actually bound: a wildcard or empty host becomes 127.0.0.1.
func defaultPublicURL(flagAddr string, bound net.Addr) string {
	host, _, err := net.SplitHostPort(flagAddr)
	if err != nil {
		host = ""
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	port := "80"
	if tcp, ok := bound.(*net.TCPAddr); ok {
		port = strconv.Itoa(tcp.Port)
	}
	return "http://" + net.JoinHostPort(host, port)
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
