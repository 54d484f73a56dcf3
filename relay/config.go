package relay

import (
	"cmp"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Defaults for Config. Every limit is printed at start-up by the binaries
// (see Config.LogAttrs).
const (
	DefaultBudget            = 256 << 20 // bytes of part memory
	DefaultWindow            = 2 << 20   // bytes in flight per part stream
	DefaultPartSize          = 8 << 20   // bytes per part asked of the rendezvous
	DefaultPrefetch          = 2         // parts open ahead per consumer request
	DefaultMaxConns          = 1024      // push connections
	DefaultMaxStreamsPerConn = 0         // open parts per push connection: 0 means Budget/Window
	DefaultNeedTimeout       = 30 * time.Second
	DefaultIdleTimeout       = 60 * time.Second
	DefaultStallTimeout      = 10 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultHandshakeTimeout  = 10 * time.Second
	DefaultPingInterval      = 15 * time.Second
	DefaultNATProbeInterval  = 5 * time.Minute
	DefaultPeerInterval      = 2 * time.Second
	DefaultUploadHold        = 64 << 20 // bytes of an upload held whole
	DefaultUploadWindow      = 8 << 20  // bytes a streamed upload keeps ahead of its readers
	DefaultUploadSweep       = time.Second
	DefaultStorMaxBlock      = 1 << 20 // decoded bytes of one STOR/DATA block
)

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Node is the relay's libp2p node; its peer id is the relay's id and
	// the audience of the tokens it accepts. Required.
	Node *mesh.Node
	// Rendezvous is the base URL of the rendezvous to join, as in
	// "http://127.0.0.1:8080". Required for Run.
	Rendezvous string
	// PublicURL is the base URL under which publishers and consumers reach
	// this relay's HTTP API, as in "http://127.0.0.1:8081". Required.
	PublicURL string
	// TokenKey is the rendezvous's token public key. If nil, Run learns it
	// from the rendezvous's /v1/info.
	TokenKey ed25519.PublicKey
	// AdmissionToken is the operator's admission token for this relay
	// (rendezvous --issue-relay-token), presented when registering: with
	// it the relay is of class operator. Empty registers as a volunteer.
	AdmissionToken string
	// AllowedOrigins lists the Origins (as "https://host:port") allowed to
	// open push WebSockets from a browser. Requests without Origin (not a
	// browser) and from the rendezvous's own origin are always allowed.
	AllowedOrigins []string

	// Budget bounds the bytes of part data held in memory across all
	// streams. Defaults to DefaultBudget (256 MiB).
	Budget int64
	// Window bounds the bytes in flight per part stream: the credit granted
	// to a publisher beyond what the consumer has taken. Defaults to
	// DefaultWindow (2 MiB).
	Window int
	// PartSize is the size of the parts this relay asks for. Defaults to
	// DefaultPartSize (8 MiB).
	PartSize int64
	// Prefetch is the read-ahead: how many parts of one consumer request
	// are open at once. The rendezvous may order them through different
	// entry relays, which then carry them in parallel; the relay delivers
	// them in order (issue 10). Memory per request is Prefetch*Window.
	// Defaults to 2.
	Prefetch int
	// MaxFrame bounds a push frame body. Defaults to proto.DefaultMaxFrame.
	MaxFrame int
	// MaxConns bounds push WebSocket connections. Defaults to 1024.
	MaxConns int
	// MaxStreamsPerConn bounds open parts per push connection. Defaults
	// to Budget/Window (128 with the default budget and window): every
	// part the budget admits (each consumer request reserves a Window per
	// open part) may then arrive on one publisher's connection, so a
	// request admitted by the budget is never refused a part mid-body
	// (issue 14). A lower limit is told to publishers in the
	// Meshup-Max-Streams header of the push upgrade; they open more
	// connections.
	MaxStreamsPerConn int
	// MaxRanges bounds the ranges of one Range header. Defaults to
	// proto.DefaultMaxRanges.
	MaxRanges int

	// NeedTimeout bounds the wait for a publisher to begin a needed part.
	// Defaults to 30s.
	NeedTimeout time.Duration
	// IdleTimeout bounds the wait for any message on a push connection or
	// a mesh part stream, and idle keep-alive connections. Defaults to 60s.
	IdleTimeout time.Duration
	// StallTimeout bounds the wait for the next bytes of a begun part
	// while its consumer waits for them: after it, the part is asked again
	// from the first byte the consumer has not received, through another
	// entry relay (issue 10, failover). A consumer that reads slowly is
	// never a stall. Defaults to 10s.
	StallTimeout time.Duration
	// WriteTimeout bounds each write to a consumer, a push connection or
	// an exit relay, and a forwarded part's wait for the exit's credit.
	// Defaults to 30s.
	WriteTimeout time.Duration
	// HandshakeTimeout bounds WebSocket upgrades and the registration
	// exchange. Defaults to 10s.
	HandshakeTimeout time.Duration
	// PingInterval is the interval of WebSocket pings on push connections.
	// Defaults to 15s.
	PingInterval time.Duration

	// PublicIP declares that this relay is reachable from the internet at
	// this IP address, on its libp2p listen ports and at PublicURL. When
	// empty the relay learns its NAT with STUN; behind a NAT it is
	// reached through relay circuits and the rendezvous tunnel.
	PublicIP string
	// NATProbeInterval is the interval of STUN probes after the first one.
	// Defaults to 5 minutes.
	NATProbeInterval time.Duration
	// PeerInterval is the interval at which the relay dials the peers of
	// the directory it is not connected to. Defaults to 2s.
	PeerInterval time.Duration

	// ClockSkew is the clock difference to the rendezvous tolerated when
	// checking a token's validity. Defaults to 30s (proto.DefaultClockSkew).
	ClockSkew time.Duration
	// MaxConnsPerIP bounds the requests in flight from one IP, WebSockets
	// included. Defaults to 64.
	MaxConnsPerIP int
	// RequestRate is the sustained rate of requests allowed from one IP,
	// per second; RequestBurst the burst above it. Default to 20 and 100.
	RequestRate  float64
	RequestBurst int
	// TrackedIPs bounds the IPs the limits per source remember. Defaults
	// to 16384.
	TrackedIPs int
	// LimitLoopback applies the limits per source to loopback too. By
	// default loopback is exempt: a reverse proxy or `meshup dev` on the
	// same host is not one source.
	LimitLoopback bool
	// BodyTimeout and MinBodyRate bound a request body: it must arrive
	// within BodyTimeout plus a second per MinBodyRate bytes. Default to
	// 30s and 16 KiB/s.
	BodyTimeout time.Duration
	MinBodyRate int

	// Assist configures what a public relay does for relays behind NAT
	// (the HTTP tunnel) and what a relay behind NAT asks of public relays
	// (circuit reservations); see tunnel.go.
	Assist AssistConfig
	// Adapters configures the tus and socket.io upload adapters
	// (adapters.go).
	Adapters AdapterConfig
	// Uploads are the upload protocols the relay serves (proto.UploadSTOR,
	// UploadSocketIO, UploadPUT, UploadTUS). The others' endpoints answer
	// 404, and the rendezvous sends none of their uploaders here. nil: all
	// four; empty and non-nil: none.
	Uploads []string

	// UploadHold is the largest upload held whole in memory until it
	// expires (issue 11): larger ones, and those of unknown size, stream
	// through a window of UploadWindow bytes, the uploader paced by its
	// readers. Defaults to 64 MiB.
	UploadHold int64
	// UploadWindow bounds the bytes a streamed upload keeps ahead of its
	// slowest reader. Defaults to 8 MiB.
	UploadWindow int64
	// UploadSweep is the interval of the expiry sweep of held items.
	// Defaults to 1s.
	UploadSweep time.Duration
	// StorMaxBlock bounds one decoded block of a STOR/DATA upload.
	// Defaults to 1 MiB.
	StorMaxBlock int

	// Live bounds live channels (live.go, issue 12).
	Live LiveConfig

	// Tap, if set, is called with every PartData payload a publisher
	// pushes, before the relay queues it: the item, the offset of the
	// part it belongs to (payloads of a part come in order), and the
	// bytes, which Tap must not keep. A test hook (it lets tests check
	// that only ciphertext reaches relays); nil in production.
	Tap func(item proto.ItemID, partOff int64, b []byte)

	// Logger receives the server's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time

	// Volunteer controls (ratelimit.go): limits on the bytes the relay
	// sends, consumer responses and parts forwarded to other relays.
	//
	// MaxRate bounds them in bytes per second, all together; 0 means
	// unlimited (the default).
	MaxRate int64
	// MaxRatePerConsumer bounds the item bytes per second sent to one
	// consumer IP; 0 means unlimited (the default).
	MaxRatePerConsumer int64
	// MonthlyCap bounds the bytes sent per calendar month (UTC), counted
	// in memory only (a restart starts from zero); once reached the relay
	// takes no new work until the month ends. 0 means no cap (the
	// default).
	MonthlyCap int64
	// Version is the binary's version, shown in the status.
	Version string
	// RootCAs, if set, are the certificate authorities trusted for the
	// rendezvous's https URL instead of the system's (`meshup dev --tls`
	// and its local CA). nil: the system roots (SSL_CERT_FILE honoured).
	RootCAs *x509.CertPool
}

func (c *Config) setDefaults() {
	c.Budget = cmp.Or(c.Budget, DefaultBudget)
	c.Window = cmp.Or(c.Window, DefaultWindow)
	c.PartSize = cmp.Or(c.PartSize, DefaultPartSize)
	c.Prefetch = cmp.Or(c.Prefetch, DefaultPrefetch)
	c.MaxFrame = cmp.Or(c.MaxFrame, proto.DefaultMaxFrame)
	c.MaxConns = cmp.Or(c.MaxConns, DefaultMaxConns)
	if c.MaxStreamsPerConn == 0 && c.Window > 0 {
		c.MaxStreamsPerConn = int(max(1, c.Budget/int64(c.Window)))
	}
	c.MaxRanges = cmp.Or(c.MaxRanges, proto.DefaultMaxRanges)
	c.NeedTimeout = cmp.Or(c.NeedTimeout, DefaultNeedTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.StallTimeout = cmp.Or(c.StallTimeout, DefaultStallTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.HandshakeTimeout = cmp.Or(c.HandshakeTimeout, DefaultHandshakeTimeout)
	c.PingInterval = cmp.Or(c.PingInterval, DefaultPingInterval)
	c.NATProbeInterval = cmp.Or(c.NATProbeInterval, DefaultNATProbeInterval)
	c.PeerInterval = cmp.Or(c.PeerInterval, DefaultPeerInterval)
	c.UploadHold = cmp.Or(c.UploadHold, DefaultUploadHold)
	c.UploadWindow = cmp.Or(c.UploadWindow, DefaultUploadWindow)
	c.UploadSweep = cmp.Or(c.UploadSweep, DefaultUploadSweep)
	c.StorMaxBlock = cmp.Or(c.StorMaxBlock, DefaultStorMaxBlock)
	if c.Uploads == nil {
		c.Uploads = slices.Clone(proto.UploadProtocols)
	}
	c.setLimitDefaults()
	c.Assist.setDefaults()
	c.Adapters.setDefaults()
	c.Live.setDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Validate reports the first problem with c, after defaults are applied.
func (c *Config) Validate() error {
	switch {
	case c.Node == nil:
		return errors.New("relay: Config.Node is required")
	case c.PublicURL == "":
		return errors.New("relay: Config.PublicURL is required")
	case c.Budget < 0, c.Window < 0, c.PartSize < 0, c.Prefetch < 0, c.MaxFrame < 0,
		c.MaxRate < 0, c.MaxRatePerConsumer < 0, c.MonthlyCap < 0, c.UploadHold < 0, c.StorMaxBlock < 0:
		return errors.New("relay: negative limit in Config")
	case int64(c.Window)*int64(c.Prefetch) > c.Budget:
		return fmt.Errorf("relay: Window*Prefetch (%d) exceeds Budget (%d)", int64(c.Window)*int64(c.Prefetch), c.Budget)
	case c.UploadWindow < heldChunk:
		return fmt.Errorf("relay: UploadWindow %d is below %d", c.UploadWindow, heldChunk)
	case c.MaxFrame < 1024:
		return fmt.Errorf("relay: MaxFrame %d is below 1024", c.MaxFrame)
	case c.TokenKey != nil && len(c.TokenKey) != ed25519.PublicKeySize:
		return errors.New("relay: Config.TokenKey is not an Ed25519 public key")
	}
	if err := c.Live.validate(); err != nil {
		return err
	}
	for i, p := range c.Uploads {
		if !slices.Contains(proto.UploadProtocols, p) {
			return fmt.Errorf("relay: upload protocol %q is not one of %s", p, strings.Join(proto.UploadProtocols, ", "))
		}
		if slices.Contains(c.Uploads[:i], p) {
			return fmt.Errorf("relay: upload protocol %q named twice", p)
		}
	}
	if c.PublicIP != "" {
		if _, err := netip.ParseAddr(c.PublicIP); err != nil {
			return fmt.Errorf("relay: PublicIP: %w", err)
		}
	}
	u, err := url.Parse(c.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("relay: PublicURL %q is not an http(s) URL", c.PublicURL)
	}
	return nil
}

// LogAttrs returns every limit of c, for printing at start-up.
func (c *Config) LogAttrs() []any {
	return append([]any{
		"budget", c.Budget, "window", c.Window, "part_size", c.PartSize,
		"prefetch", c.Prefetch, "max_frame", c.MaxFrame, "max_conns", c.MaxConns,
		"max_streams_per_conn", c.MaxStreamsPerConn, "max_ranges", c.MaxRanges,
		"need_timeout", c.NeedTimeout, "idle_timeout", c.IdleTimeout, "stall_timeout", c.StallTimeout,
		"write_timeout", c.WriteTimeout, "handshake_timeout", c.HandshakeTimeout,
		"ping_interval", c.PingInterval, "allowed_origins", c.AllowedOrigins,
		"public_ip", c.PublicIP, "nat_probe_interval", c.NATProbeInterval,
		"peer_interval", c.PeerInterval,
		"admission_token", c.AdmissionToken != "",
		"rendezvous_read_limit", proto.RelayReadLimit,
		"uploads", c.Uploads,
		"upload_hold", c.UploadHold, "upload_window", c.UploadWindow, "stor_max_block", c.StorMaxBlock,
	}, append(append(append(append(c.limitAttrs(), c.Assist.logAttrs()...), c.rateAttrs()...), c.Adapters.logAttrs()...), c.Live.logAttrs()...)...)
}

// serves reports whether the relay serves upload protocol p.
func (c *Config) serves(p string) bool { return slices.Contains(c.Uploads, p) }
