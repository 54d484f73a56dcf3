// Command relay runs a meshup relay (upload server): it joins a rendezvous,
// accepts parts pushed by publishers and streams them to consumers. It
// keeps part data in bounded memory and never writes it to disk; the only
// file it may write is the identity key file named by --key-file, which
// keeps its peer id across restarts.
//
//	relay --rendezvous http://HOST:8080 --http :8081 --public-url http://MYHOST:8081
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
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
	"github.com/meshup/meshup/relay"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "relay:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)
	rdv := fs.String("rendezvous", "", "rendezvous base URL, e.g. http://127.0.0.1:8080 (required)")
	httpAddr := fs.String("http", ":8081", "HTTP listen address (push WebSocket and item downloads)")
	publicURL := fs.String("public-url", "", "base URL publishers and consumers use to reach this relay (default: from --http, with 127.0.0.1 for an unspecified host)")
	p2p := fs.String("p2p", strings.Join(mesh.DefaultListenAddrs, ","), "comma-separated libp2p listen multiaddrs")
	origins := fs.String("allow-origin", "", "comma-separated Origins allowed to push from a browser (the rendezvous's own is always allowed)")
	logLevel := fs.String("log", "info", "log level: debug, info, warn, error")
	portmap := fs.Bool("nat-portmap", false, "ask the home router for a port mapping with UPnP or NAT-PMP")
	allowPrivate := fs.Bool("allow-private-addrs", false, "dial private, loopback, link-local, CGNAT and ULA addresses (a LAN or a lab); off, the connection gater refuses them")
	keyFile := fs.String("key-file", "", "identity key `file` (PEM PKCS#8 Ed25519), created with mode 0600 if missing: keeps the peer id across restarts (and with it an operator admission token); the only file the relay writes (default: a new key in memory at every start)")
	maxStreams := fs.Int("max-streams-per-peer", mesh.DefaultMaxStreamsPerPeer, "limit on the libp2p streams of one protocol one peer may have open with this relay, per direction")
	maxWindow := fs.Int("max-stream-window", mesh.DefaultMaxStreamWindow, "bytes one libp2p stream may have in flight towards this relay, unread (yamux receive window): forwarded parts wait there outside --budget")
	debugAddr := fs.String("debug-addr", debugsrv.DefaultAddr, "listen `address` of /metrics and /debug/pprof; off disables")
	var clusterFlags clusterflag.Flags
	clusterFlags.Register(fs)
	var cfg relay.Config
	// For relays behind NAT (issue 10): the tunnel and the circuit relay
	// service a public relay runs, the reservations a relay behind NAT
	// holds on public relays.
	tunnel := fs.Bool("tunnel", true, "when public, serve the HTTP tunnel (/v1/relays/ID/...) into the relays behind NAT connected to this relay")
	fs.IntVar(&cfg.Assist.TunnelConns, "tunnel-conns", relay.DefaultTunnelConns, "limit on concurrent tunnelled HTTP connections to one relay behind NAT")
	fs.IntVar(&cfg.Assist.Reservations, "circuit-reservations", relay.DefaultCircuitReservations, "behind NAT: public relays to hold circuit reservations on (negative: none, the rendezvous's only)")
	circuitRelay := fs.Bool("circuit-relay", true, "when public, run the circuit relay v2 service for the relays of the rendezvous's directory")
	var circuits mesh.RelayService
	fs.DurationVar(&circuits.CircuitDuration, "circuit-duration", mesh.DefaultCircuitDuration, "limit on the life of one relayed connection between relays")
	fs.Int64Var(&circuits.CircuitData, "circuit-data", mesh.DefaultCircuitData, "limit on the `bytes` relayed in each direction of one relayed connection")
	fs.IntVar(&circuits.MaxReservations, "max-reservations", mesh.DefaultMaxReservations, "limit on circuit reservations held by relays behind NAT")
	fs.IntVar(&circuits.MaxCircuits, "max-circuits", mesh.DefaultMaxCircuits, "limit on relayed connections per relay")
	fs.StringVar(&cfg.AdmissionToken, "admission-token", "", "the operator's admission `token` for this relay (class operator); default $"+envAdmissionToken)
	fs.StringVar(&cfg.PublicIP, "public", "", "declare this relay reachable from the internet at this `IP` (its libp2p ports and --public-url); default: learn the NAT with STUN")
	fs.DurationVar(&cfg.NATProbeInterval, "nat-probe-interval", relay.DefaultNATProbeInterval, "interval of STUN probes of the NAT")
	fs.DurationVar(&cfg.PeerInterval, "peer-interval", relay.DefaultPeerInterval, "interval of dials to mesh peers not yet connected")
	fs.Int64Var(&cfg.Budget, "budget", relay.DefaultBudget, "bytes of memory for part data, all streams")
	memLimit := fs.Int64("memory-limit", 0, "soft limit of the Go runtime's memory, `bytes` (0: 1.5 x --budget + 64 MiB; negative: none; the GOMEMLIMIT environment variable overrides it)")
	fs.IntVar(&cfg.Window, "window", relay.DefaultWindow, "bytes in flight per part stream")
	// Live channels (relay/live.go, issue 12).
	fs.Int64Var(&cfg.Live.Buffer, "live-buffer", relay.DefaultLiveBuffer, "bytes of recent chunks kept per live channel (counted in --budget)")
	fs.Int64Var(&cfg.Live.Queue, "live-queue", relay.DefaultLiveQueue, "bytes a live subscriber may fall behind the live edge before it is cut off (at most --live-buffer)")
	fs.IntVar(&cfg.Live.MaxChunk, "live-max-chunk", relay.DefaultLiveMaxChunk, "bytes per live chunk (a publisher's read, an EvSocket message)")
	fs.IntVar(&cfg.Live.MaxChannels, "live-channels", relay.DefaultLiveMaxChannels, "limit on live channels carried by this relay")
	fs.IntVar(&cfg.Live.MaxSubscribers, "live-subscribers", relay.DefaultLiveMaxSubscribers, "limit on subscribers of one live channel on this relay, downstream relays included")
	fs.Int64Var(&cfg.PartSize, "part-size", relay.DefaultPartSize, "bytes per part asked of the rendezvous")
	fs.IntVar(&cfg.Prefetch, "prefetch", relay.DefaultPrefetch, "read-ahead: parts of one consumer request open at once, possibly through several entry relays")
	fs.IntVar(&cfg.MaxConns, "max-conns", relay.DefaultMaxConns, "push WebSocket connections")
	fs.IntVar(&cfg.MaxStreamsPerConn, "max-streams-per-conn", relay.DefaultMaxStreamsPerConn, "open parts per push connection (0: budget/window, every part the budget admits)")
	fs.DurationVar(&cfg.NeedTimeout, "need-timeout", relay.DefaultNeedTimeout, "wait for a publisher to begin a part")
	fs.DurationVar(&cfg.IdleTimeout, "idle-timeout", relay.DefaultIdleTimeout, "wait for any message on a push connection or mesh stream, and idle keep-alive")
	fs.DurationVar(&cfg.StallTimeout, "stall-timeout", relay.DefaultStallTimeout, "wait for the next bytes of a part a consumer waits for, before asking for the rest through another entry relay")
	fs.DurationVar(&cfg.WriteTimeout, "write-timeout", relay.DefaultWriteTimeout, "per-write timeout to consumers and publishers")
	// Limits per source and deadlines (relay/limits.go, cmd/internal/httpserve).
	var hcfg httpserve.Config
	hcfg.Register(fs)
	fs.DurationVar(&cfg.HandshakeTimeout, "handshake-timeout", relay.DefaultHandshakeTimeout, "WebSocket upgrade, and a push connection's first part with a valid token")
	fs.DurationVar(&cfg.ClockSkew, "clock-skew", proto.DefaultClockSkew, "clock difference to the rendezvous tolerated in token times")
	fs.IntVar(&cfg.MaxConnsPerIP, "max-conns-per-ip", relay.DefaultMaxConnsPerIP, "limit on requests in flight from one IP, WebSockets included")
	fs.Float64Var(&cfg.RequestRate, "request-rate", relay.DefaultRequestRate, "requests per second allowed from one IP, sustained")
	fs.IntVar(&cfg.RequestBurst, "request-burst", relay.DefaultRequestBurst, "requests allowed from one IP in a burst")
	fs.IntVar(&cfg.TrackedIPs, "tracked-ips", relay.DefaultTrackedIPs, "IPs remembered by the limits per source")
	fs.BoolVar(&cfg.LimitLoopback, "limit-loopback", false, "apply the limits per source to loopback too")
	fs.DurationVar(&cfg.BodyTimeout, "body-timeout", relay.DefaultBodyTimeout, "time a request body may take, plus a second per --min-body-rate bytes")
	fs.IntVar(&cfg.MinBodyRate, "min-body-rate", relay.DefaultMinBodyRate, "slowest request body allowed, in `bytes` per second")
	if err := fs.Parse(args); err != nil {
		return err
	}
	hcfg.LimitLoopback = cfg.LimitLoopback
	cfg.Assist.NoTunnel = !*tunnel
	if *rdv == "" {
		fs.Usage()
		return errors.New("--rendezvous is required")
	}
	if cfg.AdmissionToken == "" {
		cfg.AdmissionToken = strings.TrimSpace(os.Getenv(envAdmissionToken))
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	p2pKey, err := identity(*keyFile, log)
	if err != nil {
		return fmt.Errorf("--key-file: %w", err)
	}

	ln, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	defer ln.Close()
	if *publicURL == "" {
		*publicURL = defaultPublicURL(ln.Addr().(*net.TCPAddr), cfg.PublicIP)
	}
	// The circuit relay service admits the directory's relays, and only
	// while this relay is public (relay.CircuitGate); the gate is bound
	// to the relay once it exists.
	var gate relay.CircuitGate
	var service *mesh.RelayService
	if *circuitRelay {
		circuits.Allow = gate.Allow
		service = &circuits
	}
	node, err := mesh.New(mesh.Config{
		ListenAddrs:  splitList(*p2p),
		Identity:     p2pKey,
		Logger:       log,
		HolePunching: true,
		NATPortMap:   *portmap,
		RelayService: service,
		// No dial to an address a stranger supplied, unless allowed.
		AllowPrivateAddrs: *allowPrivate,
		MaxStreamsPerPeer: *maxStreams,
		MaxStreamWindow:   *maxWindow,
	})
	if err != nil {
		return err
	}
	defer node.Close()

	// A public relay run by the operator joins the cluster for failure
	// detection of itself and the rendezvous; it uses no directory.
	ccfg, clusterOn, err := clusterFlags.Config(node, os.Getenv)
	if err != nil {
		return err
	}
	if clusterOn {
		ccfg.Logger = log
		cluster, err := mesh.NewCluster(ccfg)
		if err != nil {
			return err
		}
		defer cluster.Close()
		log.LogAttrs(ctx, slog.LevelInfo, "cluster", cluster.Limits()...)
	}

	cfg.Node, cfg.Rendezvous, cfg.PublicURL, cfg.Logger = node, *rdv, *publicURL, log
	cfg.AllowedOrigins = splitList(*origins)
	srv, err := relay.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	gate.Bind(srv)
	eff := srv.Config()
	limit := setMemoryLimit(*memLimit, eff.Budget)
	log.Info("relay starting", "id", srv.ID(), "http", ln.Addr().String(), "public_url", *publicURL, "p2p", node.Addrs(), "rendezvous", *rdv)
	log.Info("relay limits", append(eff.LogAttrs(), "allow_private_addrs", *allowPrivate, "memory_limit", limit)...)
	log.Info("http server limits", hcfg.LogAttrs()...)
	if service != nil {
		log.LogAttrs(ctx, slog.LevelInfo, "circuit relay limits (serves the directory's relays while public)", circuits.LogAttrs()...)
	} else {
		log.Info("circuit relay service off (--circuit-relay=false)")
	}
	hs := httpserve.New(hcfg, srv.Handler(), log)

	// Metrics and pprof are on the debug listener (loopback by default),
	// never on the public port.
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatusCollector(srv), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshup_relay_tcp_refused_total", Help: "TCP connections closed at once for --max-tcp-conns-per-ip."},
			func() float64 { return float64(hs.Refused()) }))
	daddr, err := debugsrv.Start(ctx, *debugAddr, reg, log)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	log.Info("debug listener (metrics, pprof)", "addr", daddr)
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	go func() { errc <- srv.Run(ctx) }()
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// envAdmissionToken holds the relay's admission token, which is better
// kept out of ps than passed as a flag.
const envAdmissionToken = "MESHUP_ADMISSION_TOKEN"

func defaultPublicURL(a *net.TCPAddr, publicIP string) string {
	host := a.IP.String()
	switch {
	case publicIP != "":
		host = publicIP
	case a.IP.IsUnspecified():
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, fmt.Sprint(a.Port))
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// setMemoryLimit sets the Go runtime's soft memory limit and returns it
// (math.MaxInt64 for none). The budget counts the memory that part data
// pins; the heap holds that, the per-connection state and the garbage not
// yet collected, and with the default GOGC it may grow to twice what is
// live before a collection: a relay working at its budget would peak near
// twice it. Under the limit the collector works harder instead, so the
// relay stays near what its operator allowed (issue 14). GOMEMLIMIT, when
// set, wins: the runtime has read it already.
func setMemoryLimit(limit, budget int64) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1) // reads the current limit
	}
	switch {
	case limit == 0:
		limit = budget + budget/2 + 64<<20
	case limit < 0:
		limit = math.MaxInt64
	}
	debug.SetMemoryLimit(limit)
	return limit
}
