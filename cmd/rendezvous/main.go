// Command rendezvous runs meshup's controlling server: the HTTP API, the
// control WebSocket for publishers, and the relay registry on a libp2p
// node.
//
//	rendezvous --http :8080 --public-url https://share.example.org
//
// With --identity FILE it keeps its token signing key and peer id in FILE
// (created on first start), so that a restart does not invalidate the
// tokens of reads in flight; it writes nothing else.
//
// It also answers STUN Binding requests on UDP --stun (default :3478) and
// --stun-alt (default: the next port), so that relays learn their public
// address and NAT type.
//
// Every limit is a flag and is printed at start-up. Every flag may also be
// set as MESHUP_<FLAG> in the environment or in a --config file; the
// command line wins over the environment, which wins over the file.
// SIGINT or SIGTERM closes the server gracefully: /readyz turns 503 and
// control sessions get a WebSocket close frame, so clients reconnect at
// once; a second signal stops it at once.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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

	"github.com/meshup/meshup/cmd/internal/buildinfo"
	"github.com/meshup/meshup/cmd/internal/cliconf"
	"github.com/meshup/meshup/cmd/internal/clusterflag"
	"github.com/meshup/meshup/cmd/internal/debugsrv"
	"github.com/meshup/meshup/cmd/internal/httpserve"
	"github.com/meshup/meshup/cmd/internal/logflag"
	"github.com/meshup/meshup/cmd/internal/nodeflag"
	"github.com/meshup/meshup/cmd/internal/tlsserve"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// shutdownTimeout bounds a graceful shutdown. The deadlines of
// connections are flags (cmd/internal/httpserve).
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, the next one kills the process at once.
	context.AfterFunc(ctx, stop)
	cliconf.Exit("rendezvous", run(ctx, os.Args[1:], os.Stdout))
}

// options are the command-line flags.
type options struct {
	http      string
	publicURL string
	identity  string // key file
	origins   []string
	log       logflag.Flags
	metrics   bool
	trust     trustOptions
	cluster   clusterflag.Flags
	node      nodeflag.Flags
	cfg       rendezvous.Config
	httpCfg   httpserve.Config
	tls       tlsserve.Flags
}

// parseFlags parses the rendezvous's configuration from args, the
// environment and the config file (cmd/internal/cliconf).
func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("rendezvous", flag.ContinueOnError)
	fs.StringVar(&o.http, "http", ":8080", "HTTP listen `address`")
	fs.StringVar(&o.identity, "identity", "", "identity key `file` (PEM PKCS#8 Ed25519), created with mode 0600 if missing: keeps the token key and peer id across restarts, so reads in flight survive one; the only file the rendezvous writes (default: a new key in memory at every start)")
	fs.Var(fs.Lookup("identity").Value, "key-file", "deprecated alias of --identity")
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
	o.log.Register(fs, slog.LevelInfo)
	fs.BoolVar(&o.metrics, "metrics", true, "serve Prometheus metrics at /metrics on --debug-addr")
	o.trust.register(fs, c)
	o.cluster.Register(fs)
	o.node.Register(fs, "the rendezvous")

	cliconf.IntSizeVar(fs, &c.MaxMessage, "max-message", proto.DefaultMaxMessage, "limit on one control message, in `bytes`")
	fs.IntVar(&c.MaxSessions, "max-sessions", rendezvous.DefaultMaxSessions, "limit on concurrent control sessions")
	fs.IntVar(&c.MaxItemsPerSession, "max-items-per-session", rendezvous.DefaultMaxItemsPerSession, "limit on items one session publishes")
	fs.IntVar(&c.MaxPublishersPerItem, "max-publishers-per-item", rendezvous.DefaultMaxPublishersPerItem, "limit on sessions publishing one item together (swarm upload)")
	fs.IntVar(&c.MaxItems, "max-items", rendezvous.DefaultMaxItems, "limit on items held, online and offline")
	fs.IntVar(&c.MaxLiveChannels, "max-live-channels", rendezvous.DefaultMaxLiveChannels, "limit on live channels in the channel registry")
	cliconf.IntSizeVar(fs, &c.MaxTextMessage, "max-text-message", rendezvous.DefaultMaxTextMessage, "limit on the text of a message item, in `bytes`")
	cliconf.SizeVar(fs, &c.MaxItemSize, "max-item-size", rendezvous.DefaultMaxItemSize, "limit on the declared size of an item, in `bytes`")
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
	fs.IntVar(&c.MaxUnpublishedClips, "max-unpublished-clips", rendezvous.DefaultMaxUnpublishedClips, "unpublished clip ids remembered until they expire, so that a holder re-announcing one after a restart does not bring it back")
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
	cliconf.IntSizeVar(fs, &c.MinBodyRate, "min-body-rate", rendezvous.DefaultMinBodyRate, "slowest request body allowed, in `bytes` per second")
	o.tls.Register(fs) // cmd/internal/tlsserve
	if err := cliconf.Parse(fs, args, stdout); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.httpCfg.LimitLoopback = c.LimitLoopback
	return o, nil
}

// run runs the rendezvous configured by args until ctx is done, then
// closes it: /readyz turns 503, control sessions get a close frame.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	if done, err := o.trust.tool(stdout, os.Getenv, time.Now()); done {
		return err
	}
	if err := o.trust.apply(&o.cfg, os.Getenv); err != nil {
		return err
	}
	log, err := o.log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	signing, p2pKey, err := identity(o.identity, log)
	if err != nil {
		return fmt.Errorf("--identity: %w", err)
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
	if ln, err = o.tls.Wrap(ctx, ln, o.publicURL, log); err != nil {
		return err
	}

	// The rendezvous is a public node: it relays circuits between the
	// relays registered with it, and only those.
	var gate rendezvous.RelayGate
	circuits := o.node.Circuits
	circuits.Allow = gate.Allow
	node, err := mesh.New(mesh.Config{
		ListenAddrs:  o.node.ListenAddrs(),
		Identity:     p2pKey,
		Logger:       log,
		RelayService: &circuits,
		HolePunching: true,
		NATPortMap:   o.node.Portmap,
		// The same rule as the directory's: no dial to a private
		// address unless the operator allows it.
		AllowPrivateAddrs: o.cfg.AllowPrivateAddrs,
		MaxStreamsPerPeer: o.node.Streams,
		MaxStreamWindow:   o.node.Window,
		MaxMemory:         o.node.Memory,
	})
	if err != nil {
		return err
	}
	defer node.Close()

	// The cluster is closed after the server (defers run last first), so
	// that the withdrawals of its relays go out before the leave.
	cluster, err := startCluster(ctx, o, node, log)
	if err != nil {
		return err
	}
	if cluster != nil {
		defer cluster.Close()
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

	log.Info("rendezvous starting", "version", buildinfo.Version())
	log.LogAttrs(ctx, slog.LevelInfo, "limits", srv.Limits()...)
	log.Info("http server limits", o.httpCfg.LogAttrs()...)
	log.LogAttrs(ctx, slog.LevelInfo, "circuit relay limits", circuits.LogAttrs()...)
	log.Info("rendezvous listening", "http", ln.Addr().String(), "public_url", o.publicURL,
		"peer_id", node.ID(), "token_key", srv.Info().TokenKey, "p2p", node.Addrs(), "stun", srv.Info().STUN)

	hs := httpserve.New(o.httpCfg, httpserve.Health(srv.Ready, srv.Handler()), log)
	if o.metrics {
		if err := startDebug(ctx, o, srv, cluster, hs, log); err != nil {
			return err
		}
	}
	return serve(ctx, srv, hs, ln, log)
}

// startCluster joins the cluster when --gossip is set; it returns nil
// when the cluster is off.
func startCluster(ctx context.Context, o *options, node *mesh.Node, log *slog.Logger) (*mesh.Cluster, error) {
	ccfg, clusterOn, err := o.cluster.Config(node, os.Getenv)
	if err != nil {
		return nil, err
	}
	if !clusterOn {
		log.Info("cluster off (no --gossip)")
		return nil, nil
	}
	ccfg.Logger = log
	cluster, err := mesh.NewCluster(ccfg)
	if err != nil {
		return nil, err
	}
	log.LogAttrs(ctx, slog.LevelInfo, "cluster", cluster.Limits()...)
	return cluster, nil
}

// startDebug serves metrics and pprof on the debug listener (loopback by
// default), never on the public port.
func startDebug(ctx context.Context, o *options, srv *rendezvous.Server, cluster *mesh.Cluster, hs *httpserve.Server, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshup_rendezvous_tcp_refused_total", Help: "TCP connections closed at once for --max-tcp-conns-per-ip."},
			func() float64 { return float64(hs.Refused()) }),
		newStatsCollector(srv),
		newMeshCollector(srv),
		buildinfo.Collector(),
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
	return nil
}

// serve serves HTTP until ctx is done or serving fails, then shuts down:
// /readyz turns 503, the rendezvous closes (control sessions get a close
// frame with a reason, so clients reconnect at once; Shutdown does not
// wait for hijacked WebSocket connections, Close ends them), then the
// HTTP server.
func serve(ctx context.Context, srv *rendezvous.Server, hs *httpserve.Server, ln net.Listener, log *slog.Logger) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	select {
	case err := <-serveErr:
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down")
	srv.Drain()
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
