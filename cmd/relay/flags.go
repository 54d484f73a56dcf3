package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/meshup/meshup/cmd/internal/buildinfo"
	"github.com/meshup/meshup/cmd/internal/cliconf"
	"github.com/meshup/meshup/cmd/internal/clusterflag"
	"github.com/meshup/meshup/cmd/internal/debugsrv"
	"github.com/meshup/meshup/cmd/internal/httpserve"
	"github.com/meshup/meshup/cmd/internal/logflag"
	"github.com/meshup/meshup/cmd/internal/nodeflag"
	"github.com/meshup/meshup/cmd/internal/tlsserve"
	"github.com/meshup/meshup/cmd/internal/units"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
)

// DefaultDrainTimeout bounds how long a relay told to stop lets the
// transfers in flight finish.
const DefaultDrainTimeout = 30 * time.Second

// options are the relay's command-line flags (also read from MESHUP_*
// environment variables and --config, cmd/internal/cliconf).
type options struct {
	rendezvous   string
	http         string
	publicURL    string
	origins      string
	uploads      string
	identity     string // key file
	debugAddr    string
	allowPrivate bool
	tunnel       bool
	circuitRelay bool
	memLimit     int64 // soft limit of the Go runtime, bytes; -1 none
	drainTimeout time.Duration

	// Volunteer controls (relay/ratelimit.go).
	maxRate, maxRatePerConsumer units.Rate
	monthlyCap                  units.Size

	log     logflag.Flags
	tls     tlsserve.Flags // --tls, --tls-cert, --acme-*, --http-redirect, --tls-dir
	cluster clusterflag.Flags
	node    nodeflag.Flags
	httpCfg httpserve.Config
	cfg     relay.Config
}

// parseFlags parses the relay's configuration from args, the environment
// and the config file.
func parseFlags(args []string, stdout io.Writer) (*options, error) {
	o := &options{}
	c := &o.cfg
	fs := flag.NewFlagSet("relay", flag.ContinueOnError)

	// Where the relay is and whom it serves.
	fs.StringVar(&o.rendezvous, "rendezvous", "", "rendezvous base `URL`, e.g. http://127.0.0.1:8080 (required)")
	fs.StringVar(&o.http, "http", ":8081", "HTTP listen `address` (push WebSocket and item downloads)")
	fs.StringVar(&o.publicURL, "public-url", "", "base `URL` publishers and consumers use to reach this relay (default: http://IP:PORT with the public IP STUN finds and the --http port; with --allow-private-addrs the --http host, 127.0.0.1 for an unspecified one)")
	fs.StringVar(&o.origins, "allow-origin", "", "comma-separated `origins` allowed to push from a browser (the rendezvous's own is always allowed)")
	fs.StringVar(&o.identity, "identity", "", "identity key `file` (PEM PKCS#8 Ed25519), created with mode 0600 if missing: keeps the peer id across restarts (and with it an operator admission token); the only file the relay writes (default: a new key in memory at every start)")
	fs.Var(fs.Lookup("identity").Value, "key-file", "deprecated alias of --identity")
	fs.StringVar(&c.AdmissionToken, "admission-token", "", "the operator's admission `token` for this relay (class operator); better in $"+cliconf.EnvPrefix+"_ADMISSION_TOKEN, which ps does not show")
	fs.StringVar(&c.PublicIP, "public", "", "declare this relay reachable from the internet at this `IP` (its libp2p ports and --public-url); default: learn the NAT with STUN")
	fs.BoolVar(&o.allowPrivate, "allow-private-addrs", false, "dial private, loopback, link-local, CGNAT and ULA addresses (a LAN or a lab); off, the connection gater refuses them")
	fs.StringVar(&o.debugAddr, "debug-addr", debugsrv.DefaultAddr, "listen `address` of /metrics and /debug/pprof; off disables")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", DefaultDrainTimeout, "on SIGTERM or SIGINT, how long transfers in flight may take to finish while new ones are refused (a second signal stops at once)")
	o.log.Register(fs, slog.LevelInfo)
	o.cluster.Register(fs)
	o.tls.Register(fs)
	o.node.Register(fs, "this relay")

	// Uploads through the legacy protocols (relay/upload.go, issue 11).
	cliconf.SizeVar(fs, &c.UploadHold, "upload-hold", relay.DefaultUploadHold, "uploads (STOR, socket.io, PUT, tus) up to this many `bytes` are held whole in memory until they expire; larger ones stream through --upload-window")
	cliconf.SizeVar(fs, &c.UploadWindow, "upload-window", relay.DefaultUploadWindow, "`bytes` a streamed upload keeps ahead of its slowest reader")
	cliconf.IntSizeVar(fs, &c.StorMaxBlock, "stor-max-block", relay.DefaultStorMaxBlock, "largest decoded block of a STOR/DATA upload, `bytes`")

	fs.StringVar(&o.uploads, "uploads", strings.Join(proto.UploadProtocols, ","), "comma-separated upload `protocols` this relay serves, of "+strings.Join(proto.UploadProtocols, ", ")+", or none; the rendezvous sends uploaders of the others elsewhere")

	// The upload adapters (relay/tus.go, relay/socketio.go).
	cliconf.IntSizeVar(fs, &c.Adapters.MaxChunk, "max-upload-chunk", relay.DefaultMaxChunk, "largest chunk an upload adapter holds whole, in `bytes`: a socket.io upload_chunk, a tus PATCH with Upload-Checksum")
	fs.IntVar(&c.Adapters.SocketIOSessions, "socketio-sessions", relay.DefaultSocketIOSessions, "upload sessions open at once on one socket.io connection")
	fs.DurationVar(&c.Adapters.SocketIOPing, "socketio-ping", relay.DefaultSocketIOPing, "Engine.IO ping interval of socket.io connections")
	fs.DurationVar(&c.Adapters.SocketIOPingWait, "socketio-ping-wait", relay.DefaultSocketIOPingWait, "time a socket.io client has to answer a ping (Engine.IO pingTimeout)")

	// Live channels (relay/live.go, issue 12).
	cliconf.SizeVar(fs, &c.Live.Buffer, "live-buffer", relay.DefaultLiveBuffer, "`bytes` of recent chunks kept per live channel (counted in --budget)")
	cliconf.SizeVar(fs, &c.Live.Queue, "live-queue", relay.DefaultLiveQueue, "`bytes` a live subscriber may fall behind the live edge before it is cut off (at most --live-buffer)")
	cliconf.IntSizeVar(fs, &c.Live.MaxChunk, "live-max-chunk", relay.DefaultLiveMaxChunk, "`bytes` per live chunk (a publisher's read, an EvSocket message)")
	fs.IntVar(&c.Live.MaxChannels, "live-channels", relay.DefaultLiveMaxChannels, "limit on live channels carried by this relay")
	fs.IntVar(&c.Live.MaxSubscribers, "live-subscribers", relay.DefaultLiveMaxSubscribers, "limit on subscribers of one live channel on this relay, downstream relays included")

	// Memory and streams.
	cliconf.SizeVar(fs, &c.Budget, "budget", relay.DefaultBudget, "memory for part data, all streams, in `bytes` (256MiB, 1GB, ...)")
	cliconf.LimitSizeVar(fs, &o.memLimit, "memory-limit", 0, "soft limit of the Go runtime's memory, `bytes` (0: --budget + max(64MiB, --budget/4); none or negative: none; the GOMEMLIMIT environment variable overrides it)")
	cliconf.IntSizeVar(fs, &c.Window, "window", relay.DefaultWindow, "`bytes` in flight per part stream")
	cliconf.SizeVar(fs, &c.PartSize, "part-size", relay.DefaultPartSize, "`bytes` per part asked of the rendezvous")
	fs.IntVar(&c.Prefetch, "prefetch", relay.DefaultPrefetch, "read-ahead: parts of one consumer request open at once, possibly through several entry relays")
	fs.IntVar(&c.MaxConns, "max-conns", relay.DefaultMaxConns, "push WebSocket connections")
	fs.IntVar(&c.MaxStreamsPerConn, "max-streams-per-conn", relay.DefaultMaxStreamsPerConn, "open parts per push connection (0: budget/window, every part the budget admits)")

	// Relays behind NAT (issue 10): the tunnel and the circuit relay
	// service a public relay runs, the reservations a relay behind NAT
	// holds on public relays.
	fs.BoolVar(&o.tunnel, "tunnel", true, "when public, serve the HTTP tunnel (/v1/relays/ID/...) into the relays behind NAT connected to this relay")
	fs.IntVar(&c.Assist.TunnelConns, "tunnel-conns", relay.DefaultTunnelConns, "limit on concurrent tunnelled HTTP connections to one relay behind NAT")
	fs.IntVar(&c.Assist.Reservations, "circuit-reservations", relay.DefaultCircuitReservations, "behind NAT: public relays to hold circuit reservations on (negative: none, the rendezvous's only)")
	fs.BoolVar(&o.circuitRelay, "circuit-relay", true, "when public, run the circuit relay v2 service for the relays of the rendezvous's directory")
	fs.DurationVar(&c.NATProbeInterval, "nat-probe-interval", relay.DefaultNATProbeInterval, "interval of STUN probes of the NAT")
	fs.DurationVar(&c.PeerInterval, "peer-interval", relay.DefaultPeerInterval, "interval of dials to mesh peers not yet connected")

	// Timeouts.
	fs.DurationVar(&c.NeedTimeout, "need-timeout", relay.DefaultNeedTimeout, "wait for a publisher to begin a part")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", relay.DefaultIdleTimeout, "wait for any message on a push connection or mesh stream, and idle keep-alive")
	fs.DurationVar(&c.StallTimeout, "stall-timeout", relay.DefaultStallTimeout, "wait for the next bytes of a part a consumer waits for, before asking for the rest through another entry relay")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", relay.DefaultWriteTimeout, "per-write timeout to consumers, publishers and exit relays; also how long a forwarded part waits for the exit relay's credit")
	fs.DurationVar(&c.HandshakeTimeout, "handshake-timeout", relay.DefaultHandshakeTimeout, "WebSocket upgrade, and a push connection's first part with a valid token")
	fs.DurationVar(&c.ClockSkew, "clock-skew", proto.DefaultClockSkew, "clock difference to the rendezvous tolerated in token times")

	// Limits per source and deadlines (relay/limits.go, cmd/internal/httpserve).
	o.httpCfg.Register(fs)
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", relay.DefaultMaxConnsPerIP, "limit on requests in flight from one IP, WebSockets included")
	fs.Float64Var(&c.RequestRate, "request-rate", relay.DefaultRequestRate, "requests per second allowed from one IP, sustained")
	fs.IntVar(&c.RequestBurst, "request-burst", relay.DefaultRequestBurst, "requests allowed from one IP in a burst")
	fs.IntVar(&c.TrackedIPs, "tracked-ips", relay.DefaultTrackedIPs, "IPs remembered by the limits per source")
	fs.BoolVar(&c.LimitLoopback, "limit-loopback", false, "apply the limits per source to loopback too")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", relay.DefaultBodyTimeout, "time a request body may take, plus a second per --min-body-rate bytes")
	cliconf.IntSizeVar(fs, &c.MinBodyRate, "min-body-rate", relay.DefaultMinBodyRate, "slowest request body allowed, in `bytes` per second")

	// Volunteer controls (relay/ratelimit.go): limits on what the relay
	// sends, consumer responses and parts forwarded to other relays.
	fs.Var(&o.maxRate, "max-rate", "limit on the `rate` the relay sends at, all together (consumer responses and parts forwarded to other relays): your uplink, as 10MB/s, 80Mbit/s or 1MiB/s; 0: unlimited")
	fs.Var(&o.maxRatePerConsumer, "max-rate-per-consumer", "limit on the `rate` sent to one consumer IP, as --max-rate; 0: unlimited")
	fs.Var(&o.monthlyCap, "monthly-cap", "`bytes` the relay may send per calendar month (UTC), as 500GiB or 1TB; once reached it takes no new work until the month ends; counted in memory only, so a restart starts from zero; 0: no cap")

	if err := cliconf.Parse(fs, args, stdout); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.rendezvous == "" {
		fs.Usage()
		return nil, errors.New("--rendezvous is required")
	}
	o.httpCfg.LimitLoopback = c.LimitLoopback
	c.Assist.NoTunnel = !o.tunnel
	c.AllowedOrigins = cliconf.SplitList(o.origins)
	c.Uploads = []string{} // none, unless listed
	if o.uploads != "none" {
		c.Uploads = append(c.Uploads, cliconf.SplitList(o.uploads)...)
	}
	c.Rendezvous = o.rendezvous
	c.MaxRate, c.MaxRatePerConsumer, c.MonthlyCap = o.maxRate.BytesPerSecond(), o.maxRatePerConsumer.BytesPerSecond(), o.monthlyCap.Bytes()
	c.Version = buildinfo.Version()
	return o, nil
}
