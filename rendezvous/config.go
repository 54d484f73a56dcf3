package rendezvous

import (
	"cmp"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// DefaultMaxPublishersPerItem bounds a swarm (Config.MaxPublishersPerItem).
const DefaultMaxPublishersPerItem = 16

// DefaultMaxUnpublishedClips bounds the unpublished clip ids remembered
// until they expire (Config.MaxUnpublishedClips).
const DefaultMaxUnpublishedClips = 4096

// Default limits and intervals. Each applies when the matching Config field
// is zero.
const (
	DefaultMaxSessions        = 10000
	DefaultMaxItemsPerSession = 1000
	DefaultMaxItems           = 100000
	DefaultMaxTextMessage     = 16 << 10
	DefaultMaxItemSize        = 1 << 40
	DefaultMaxNeedsPerRelay   = 4096
	DefaultMaxTunnelConns     = 256
	DefaultSessionQueue       = 256
	DefaultRelayQueue         = 4096
	DefaultHeartbeatInterval  = time.Second
	DefaultDeadAfter          = 3 * time.Second
	DefaultReadTokenTTL       = 10 * time.Minute
	DefaultPushTokenTTL       = 2 * time.Minute
	DefaultItemTTL            = time.Hour
	DefaultUploadTTL          = time.Hour
	DefaultMaxClipSize        = 500 << 20 // bytes of one clip (issue 12)
	DefaultClipTTL            = 24 * time.Hour
	DefaultReclaimGrace       = 30 * time.Second
	DefaultPingInterval       = 15 * time.Second
	DefaultWriteTimeout       = 10 * time.Second
	DefaultMaxRelays          = 1000
	DefaultMaxRelaysPerIP     = 8
	DefaultVerifyInterval     = 5 * time.Minute
	DefaultVerifyTimeout      = 5 * time.Second
	DefaultNeedRate           = 500 // needs per second, per relay
	DefaultNeedBurst          = 1000
	DefaultItemNeedRate       = 250 // needs per second, per item
	DefaultItemNeedBurst      = 500
	DefaultNeedTokenGrace     = time.Hour
	DefaultDirectoryInterval  = time.Second
)

// Admission modes (Config.Admission).
const (
	// AdmissionOpen admits any relay: with a valid credential as class
	// operator, else as class volunteer.
	AdmissionOpen = "open"
	// AdmissionOperator admits operator relays only.
	AdmissionOperator = "operator"
)

// Relay trust classes.
const (
	// ClassOperator is a relay the operator admitted (admission token,
	// OperatorRelays, or TrustAllRelays): it may carry plaintext items.
	ClassOperator = "operator"
	// ClassVolunteer is a relay anyone runs: it carries end-to-end
	// encrypted items, and plaintext ones only when the publisher allows.
	ClassVolunteer = "volunteer"
)

// Fixed limits of the item metadata a publisher may send.
const (
	// MaxNameLen is the longest item name, in bytes.
	MaxNameLen = 255
	// MaxMIMELen is the longest MIME type, in bytes.
	MaxMIMELen = 127
)

// registerTimeout bounds the register handshake on a new relay stream.
const registerTimeout = 10 * time.Second

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// PublicURL is the base URL under which clients reach this server, used
	// in share and download links, e.g. "http://127.0.0.1:8080". Required.
	PublicURL string
	// Node is the libp2p node relays register with. Required. The Server
	// does not close it.
	Node *mesh.Node
	// SigningKey signs access tokens. When nil a key is generated in memory
	// and lost at exit; it is never written to disk.
	SigningKey ed25519.PrivateKey
	// Cluster, when set, makes the rendezvous a member of a memberlist
	// cluster: it gossips the signed records of its relays and lists the
	// relays of the other members in GET /v1/status. Its Name must be
	// Node's peer id, which relays sign as their home. The Server does not
	// close it; close it after the Server, so that the withdrawals of the
	// relays go out before the leave.
	Cluster *mesh.Cluster
	// AllowedOrigins lists the Origins ("https://app.example.com") whose
	// pages may open the control WebSocket; "*" allows any. Requests without
	// an Origin header (non-browser clients) and same-origin requests (the
	// Origin's host equals the request's Host) are always allowed.
	AllowedOrigins []string

	// MaxMessage limits one control message, in bytes. Defaults to
	// proto.DefaultMaxMessage (64 KiB).
	MaxMessage int
	// MaxSessions limits concurrent control sessions. Defaults to 10000.
	MaxSessions int
	// MaxItemsPerSession limits the items one session has published.
	// Defaults to 1000.
	MaxItemsPerSession int
	// MaxPublishersPerItem limits the sessions publishing one item
	// together (a swarm, proto.Publish.Swarm). Defaults to 16.
	MaxPublishersPerItem int
	// MaxItems limits the items held, online and offline. Defaults to
	// 100000.
	MaxItems int
	// MaxTextMessage limits the text of a "message" item, in bytes.
	// Defaults to 16 KiB.
	MaxTextMessage int
	// MaxItemSize limits the declared size of an item, in bytes. Defaults
	// to 1 TiB.
	MaxItemSize int64
	// MaxNeedsPerRelay limits the outstanding needs (orders) of one relay.
	// Defaults to 4096.
	MaxNeedsPerRelay int
	// MaxTunnelConns limits the concurrent tunnelled HTTP connections to
	// one relay behind NAT (each is a libp2p stream). Defaults to 256.
	MaxTunnelConns int
	// SessionQueue is the number of messages queued for one control
	// session before it is closed as too slow. Orders may fill it only to
	// seven eighths: beyond that the publisher is busy, and needs for its
	// items are refused (StatusOverLimit, so relays answer 429 or retry)
	// rather than the session being dropped, which would cut every reader
	// of its items. Defaults to 256.
	SessionQueue int
	// RelayQueue is the number of messages queued for one relay before it
	// is dropped as too slow. A relay multiplexes many consumers, so it
	// gets a deeper queue. Defaults to 4096.
	RelayQueue int

	// HeartbeatInterval is the heartbeat interval told to relays. Defaults
	// to 1s.
	HeartbeatInterval time.Duration
	// DeadAfter is how long a relay may go without a heartbeat before it is
	// dropped. Defaults to 3s.
	DeadAfter time.Duration
	// ReadTokenTTL is the lifetime of read tokens. Defaults to 10m.
	ReadTokenTTL time.Duration
	// PushTokenTTL is the lifetime of push tokens, and how long an order is
	// remembered. Defaults to 2m.
	PushTokenTTL time.Duration
	// ItemTTL is how long an item whose publisher went offline is kept for
	// the publisher to reclaim it. Defaults to 1h.
	ItemTTL time.Duration
	// UploadTTL is how long an upload through a legacy protocol, and the
	// item a relay holds for it, lasts (issue 11): its uploader is told
	// this expiry, the relay drops the item then. The auth webhook may
	// shorten it. Defaults to 1h.
	UploadTTL time.Duration
	// MaxClipSize limits the size of a clip, the item kind pushed whole
	// into relay memory at publish time (clip.go, issue 12); a larger one
	// is refused at publish time. Defaults to 500 MiB.
	MaxClipSize int64
	// ClipTTL is how long a clip stays readable from its holder relays
	// after it is published, also with its publisher gone. Defaults to 24h.
	ClipTTL time.Duration
	// MaxUnpublishedClips bounds the ids of clips their publishers
	// unpublished that the rendezvous remembers until they would have
	// expired, so that a holder re-announcing one after a restart of the
	// rendezvous does not bring it back (clip_restart.go). Past the bound
	// the oldest are forgotten. Defaults to 4096.
	MaxUnpublishedClips int
	// AuthWebhook, when set, is the URL of the application's auth
	// webhook, asked before an item is published, an upload created and
	// an item read (webhook.go). It fails closed.
	AuthWebhook string
	// AuthWebhookTimeout bounds one call of the webhook. Defaults to 5s.
	AuthWebhookTimeout time.Duration
	// ReclaimGrace is how long after start an item id the rendezvous does
	// not know is answered as offline (503 with Retry-After, a need for it
	// as StatusOffline) rather than not found: the rendezvous keeps no
	// state, so after a restart publishers are still reclaiming their items
	// (issue 14). An unpublished item also answers 503 during the grace.
	// Zero turns it off (the library default, so an embedding program
	// opts in); cmd/rendezvous defaults to DefaultReclaimGrace (30s).
	ReclaimGrace time.Duration
	// PingInterval is the WebSocket ping interval on control sessions; a
	// session silent for twice this long is closed. Defaults to 15s.
	PingInterval time.Duration
	// WriteTimeout bounds each write to a session or relay. Defaults to 10s.
	WriteTimeout time.Duration

	// TunnelURL, when set, is the base URL of a separate origin on which
	// the tunnel into relays is served, e.g. "https://tunnel.example.net".
	// Tunnel URLs are built on it, requests whose Host is its host are
	// served the tunnel only, and the tunnel is not served on PublicURL.
	// Relays are strangers' software: their answers should not share an
	// origin with the web app (see README, "Tunnel origin").
	TunnelURL string
	// HandshakeTimeout bounds the time from a control WebSocket's upgrade
	// to its first valid message (a hello suffices); pongs do not count.
	// Defaults to 10s.
	HandshakeTimeout time.Duration
	// MaxConnsPerIP bounds the requests in flight from one IP, WebSockets
	// included. Defaults to 64.
	MaxConnsPerIP int
	// RequestRate is the sustained rate of requests allowed from one IP,
	// per second; RequestBurst the burst above it. Default to 20 and 100.
	RequestRate  float64
	RequestBurst int
	// MaxSessionsPerIP bounds the control sessions of one IP. Defaults to
	// 16.
	MaxSessionsPerIP int
	// MaxItemsPerIP bounds the items published from one IP, online and
	// offline. Defaults to 2000.
	MaxItemsPerIP int
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

	// STUNAddr is the UDP listen address of the STUN server's primary
	// port, e.g. ":3478" (the IANA port, cmd/rendezvous's default). Empty
	// or "off" disables STUN, so that a library user or a test never binds
	// a well-known port unasked.
	STUNAddr string
	// STUNAltAddr is the STUN server's alternate port: a client that asks
	// both ports from one socket tells an endpoint-independent NAT mapping
	// from a symmetric one. Defaults to the primary's host with the next
	// port (":3479" for ":3478"), or an ephemeral port when the primary's
	// port is 0. "off" serves the primary port only.
	STUNAltAddr string

	// Admission says who may register as a relay: AdmissionOpen (the
	// default) or AdmissionOperator.
	Admission string
	// AdmissionKey verifies the admission tokens relays present
	// (proto.SignAdmission); nil accepts none.
	AdmissionKey ed25519.PublicKey
	// OperatorRelays lists relay peer ids admitted as class operator
	// without a token.
	OperatorRelays []string
	// TrustAllRelays makes every admitted relay class operator and
	// believes its URL without a challenge. For tests and a lab of the
	// operator's own relays.
	TrustAllRelays bool
	// ClockSkew is how far a registering relay's clock (Register.Time) may
	// be from the rendezvous's; a relay further off is refused with a
	// reason naming its clock, since it would misjudge token lifetimes.
	// Defaults to 30s (proto.DefaultClockSkew).
	ClockSkew time.Duration
	// MaxRelays limits registered relays. Defaults to 1000.
	MaxRelays int
	// MaxRelaysPerIP limits registered relays per source IP address.
	// Defaults to 8.
	MaxRelaysPerIP int
	// AllowPrivateAddrs accepts private, loopback, link-local, CGNAT and
	// ULA addresses in relay directories and http_url challenges. Off, only
	// public addresses are (mesh.IsPublicIP). For a LAN, a lab on private
	// ranges, and tests on loopback.
	AllowPrivateAddrs bool
	// VerifyInterval is how often a public relay's http_url is proved
	// again with a challenge. Defaults to 5m.
	VerifyInterval time.Duration
	// VerifyTimeout bounds one challenge fetch. Defaults to 5s.
	VerifyTimeout time.Duration
	// StatusToken, when set, is the bearer token (Authorization: Bearer)
	// that shows the full GET /v1/status, volunteers' addresses included.
	// Without it the public view is all there is.
	StatusToken string
	// NeedRate and NeedBurst limit the needs of one relay (token bucket,
	// per second). Default to 100 and 200.
	NeedRate  float64
	NeedBurst int
	// ItemNeedRate and ItemNeedBurst limit the needs for one item, all
	// relays together. Default to 50 and 100.
	ItemNeedRate  float64
	ItemNeedBurst int
	// NeedTokenGrace is how long after its read token expired a consumer
	// request may still cause needs (a long video outlives its token).
	// Defaults to 1h.
	NeedTokenGrace time.Duration
	// DirectoryInterval is the least time between two directory deltas to
	// one relay: changes within it are coalesced. Defaults to 1s.
	DirectoryInterval time.Duration
	// MaxLiveChannels bounds the live channels the registry holds
	// (live.go). Defaults to DefaultMaxLiveChannels (100000).
	MaxLiveChannels int

	// Logger receives the server's logs. Defaults to slog.Default().
	Logger *slog.Logger
	// Now returns the current time. Defaults to time.Now.
	Now func() time.Time
	// RootCAs, if set, are the certificate authorities trusted for relay
	// URL challenges to https relays instead of the system's (`meshup dev
	// --tls` and its local CA). nil: the system roots.
	RootCAs *x509.CertPool
}

// Validate reports the first problem with c. Zero values are valid (they
// mean defaults); PublicURL and Node are required.
func (c *Config) Validate() error {
	if c.PublicURL == "" {
		return errors.New("rendezvous: config: PublicURL is required")
	}
	if err := checkBaseURL(c.PublicURL, "http", "https"); err != nil {
		return fmt.Errorf("rendezvous: config: PublicURL: %w", err)
	}
	if c.Node == nil {
		return errors.New("rendezvous: config: Node is required")
	}
	if c.Cluster != nil && c.Cluster.Name() != c.Node.ID() {
		return fmt.Errorf("rendezvous: config: Cluster name %q is not the node's peer id %s, which relays name as their home", c.Cluster.Name(), c.Node.ID())
	}
	if c.SigningKey != nil && len(c.SigningKey) != ed25519.PrivateKeySize {
		return fmt.Errorf("rendezvous: config: SigningKey has %d bytes, want %d", len(c.SigningKey), ed25519.PrivateKeySize)
	}
	switch c.Admission {
	case "", AdmissionOpen, AdmissionOperator:
	default:
		return fmt.Errorf("rendezvous: config: Admission %q is not %q or %q", c.Admission, AdmissionOpen, AdmissionOperator)
	}
	if c.AdmissionKey != nil && len(c.AdmissionKey) != ed25519.PublicKeySize {
		return fmt.Errorf("rendezvous: config: AdmissionKey has %d bytes, want %d", len(c.AdmissionKey), ed25519.PublicKeySize)
	}
	if c.NeedRate < 0 || c.ItemNeedRate < 0 {
		return errors.New("rendezvous: config: NeedRate or ItemNeedRate is negative")
	}
	for _, o := range c.AllowedOrigins {
		if o == "*" {
			continue
		}
		if err := checkBaseURL(o, "http", "https"); err != nil {
			return fmt.Errorf("rendezvous: config: allowed origin %q: %w", o, err)
		}
	}
	ints := []struct {
		name string
		v    int64
	}{
		{"MaxMessage", int64(c.MaxMessage)},
		{"MaxSessions", int64(c.MaxSessions)},
		{"MaxItemsPerSession", int64(c.MaxItemsPerSession)},
		{"MaxItems", int64(c.MaxItems)},
		{"MaxPublishersPerItem", int64(c.MaxPublishersPerItem)},
		{"MaxTextMessage", int64(c.MaxTextMessage)},
		{"MaxItemSize", c.MaxItemSize},
		{"MaxNeedsPerRelay", int64(c.MaxNeedsPerRelay)},
		{"MaxTunnelConns", int64(c.MaxTunnelConns)},
		{"SessionQueue", int64(c.SessionQueue)},
		{"RelayQueue", int64(c.RelayQueue)},
		{"HeartbeatInterval", int64(c.HeartbeatInterval)},
		{"DeadAfter", int64(c.DeadAfter)},
		{"ReadTokenTTL", int64(c.ReadTokenTTL)},
		{"PushTokenTTL", int64(c.PushTokenTTL)},
		{"ItemTTL", int64(c.ItemTTL)},
		{"ReclaimGrace", int64(c.ReclaimGrace)},
		{"PingInterval", int64(c.PingInterval)},
		{"WriteTimeout", int64(c.WriteTimeout)},
		{"ClockSkew", int64(c.ClockSkew)},
		{"MaxRelays", int64(c.MaxRelays)},
		{"MaxRelaysPerIP", int64(c.MaxRelaysPerIP)},
		{"VerifyInterval", int64(c.VerifyInterval)},
		{"VerifyTimeout", int64(c.VerifyTimeout)},
		{"NeedBurst", int64(c.NeedBurst)},
		{"ItemNeedBurst", int64(c.ItemNeedBurst)},
		{"NeedTokenGrace", int64(c.NeedTokenGrace)},
		{"DirectoryInterval", int64(c.DirectoryInterval)},
		{"MaxLiveChannels", int64(c.MaxLiveChannels)},
		{"MaxClipSize", c.MaxClipSize},
		{"ClipTTL", int64(c.ClipTTL)},
		{"MaxUnpublishedClips", int64(c.MaxUnpublishedClips)},
	}
	for _, f := range ints {
		if f.v < 0 {
			return fmt.Errorf("rendezvous: config: %s is negative", f.name)
		}
	}
	if c.MaxMessage != 0 && c.MaxMessage < 1024 {
		return fmt.Errorf("rendezvous: config: MaxMessage %d is below 1024 bytes", c.MaxMessage)
	}
	if c.MaxTextMessage != 0 && c.MaxMessage != 0 && c.MaxTextMessage >= c.MaxMessage {
		return fmt.Errorf("rendezvous: config: MaxTextMessage %d does not fit in MaxMessage %d", c.MaxTextMessage, c.MaxMessage)
	}
	if err := c.validateSTUN(); err != nil {
		return err
	}
	if err := c.validateLimits(); err != nil {
		return err
	}
	hb, dead := c.HeartbeatInterval, c.DeadAfter
	if hb == 0 {
		hb = DefaultHeartbeatInterval
	}
	if dead == 0 {
		dead = DefaultDeadAfter
	}
	if dead <= hb {
		return fmt.Errorf("rendezvous: config: DeadAfter %v must exceed HeartbeatInterval %v", dead, hb)
	}
	return nil
}

// withDefaults returns c with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
	c.MaxMessage = cmp.Or(c.MaxMessage, proto.DefaultMaxMessage)
	c.MaxSessions = cmp.Or(c.MaxSessions, DefaultMaxSessions)
	c.MaxItemsPerSession = cmp.Or(c.MaxItemsPerSession, DefaultMaxItemsPerSession)
	c.MaxItems = cmp.Or(c.MaxItems, DefaultMaxItems)
	c.MaxPublishersPerItem = cmp.Or(c.MaxPublishersPerItem, DefaultMaxPublishersPerItem)
	c.MaxTextMessage = cmp.Or(c.MaxTextMessage, DefaultMaxTextMessage)
	c.MaxItemSize = cmp.Or(c.MaxItemSize, DefaultMaxItemSize)
	c.MaxNeedsPerRelay = cmp.Or(c.MaxNeedsPerRelay, DefaultMaxNeedsPerRelay)
	c.MaxTunnelConns = cmp.Or(c.MaxTunnelConns, DefaultMaxTunnelConns)
	c.SessionQueue = cmp.Or(c.SessionQueue, DefaultSessionQueue)
	c.RelayQueue = cmp.Or(c.RelayQueue, DefaultRelayQueue)
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, DefaultHeartbeatInterval)
	c.DeadAfter = cmp.Or(c.DeadAfter, DefaultDeadAfter)
	c.ReadTokenTTL = cmp.Or(c.ReadTokenTTL, DefaultReadTokenTTL)
	c.MaxLiveChannels = cmp.Or(c.MaxLiveChannels, DefaultMaxLiveChannels)
	c.PushTokenTTL = cmp.Or(c.PushTokenTTL, DefaultPushTokenTTL)
	c.ItemTTL = cmp.Or(c.ItemTTL, DefaultItemTTL)
	c.UploadTTL = cmp.Or(c.UploadTTL, DefaultUploadTTL)
	c.MaxClipSize = cmp.Or(c.MaxClipSize, DefaultMaxClipSize)
	c.ClipTTL = cmp.Or(c.ClipTTL, DefaultClipTTL)
	c.MaxUnpublishedClips = cmp.Or(c.MaxUnpublishedClips, DefaultMaxUnpublishedClips)
	c.AuthWebhookTimeout = cmp.Or(c.AuthWebhookTimeout, DefaultAuthWebhookTimeout)
	c.PingInterval = cmp.Or(c.PingInterval, DefaultPingInterval)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.Admission = cmp.Or(c.Admission, AdmissionOpen)
	c.ClockSkew = cmp.Or(c.ClockSkew, proto.DefaultClockSkew)
	c.MaxRelays = cmp.Or(c.MaxRelays, DefaultMaxRelays)
	c.MaxRelaysPerIP = cmp.Or(c.MaxRelaysPerIP, DefaultMaxRelaysPerIP)
	c.VerifyInterval = cmp.Or(c.VerifyInterval, DefaultVerifyInterval)
	c.VerifyTimeout = cmp.Or(c.VerifyTimeout, DefaultVerifyTimeout)
	c.NeedRate = cmp.Or(c.NeedRate, DefaultNeedRate)
	c.NeedBurst = cmp.Or(c.NeedBurst, DefaultNeedBurst)
	c.ItemNeedRate = cmp.Or(c.ItemNeedRate, DefaultItemNeedRate)
	c.ItemNeedBurst = cmp.Or(c.ItemNeedBurst, DefaultItemNeedBurst)
	c.NeedTokenGrace = cmp.Or(c.NeedTokenGrace, DefaultNeedTokenGrace)
	c.DirectoryInterval = cmp.Or(c.DirectoryInterval, DefaultDirectoryInterval)
	if c.STUNAddr == "" {
		c.STUNAddr = STUNOff
	}
	if c.STUNAddr == STUNOff {
		c.STUNAltAddr = STUNOff
	} else if c.STUNAltAddr == "" {
		c.STUNAltAddr, _ = stunAltDefault(c.STUNAddr) // checked by Validate
	}
	c.setLimitDefaults()
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Limits returns every effective limit and interval as slog attributes, so
// that a binary can print them at start-up.
func (s *Server) Limits() []slog.Attr {
	c := &s.cfg
	return append([]slog.Attr{
		slog.String("public_url", c.PublicURL),
		slog.Any("allowed_origins", c.AllowedOrigins),
		slog.Int("max_message", c.MaxMessage),
		slog.Int("max_sessions", c.MaxSessions),
		slog.Int("max_items_per_session", c.MaxItemsPerSession),
		slog.Int("max_items", c.MaxItems),
		slog.Int("max_publishers_per_item", c.MaxPublishersPerItem),
		slog.Int("max_text_message", c.MaxTextMessage),
		slog.Int64("max_item_size", c.MaxItemSize),
		slog.Int("max_needs_per_relay", c.MaxNeedsPerRelay),
		slog.Int("max_tunnel_conns", c.MaxTunnelConns),
		slog.Int("session_queue", c.SessionQueue),
		slog.Int("relay_queue", c.RelayQueue),
		slog.Duration("heartbeat_interval", c.HeartbeatInterval),
		slog.Duration("dead_after", c.DeadAfter),
		slog.Duration("read_token_ttl", c.ReadTokenTTL),
		slog.Duration("push_token_ttl", c.PushTokenTTL),
		slog.Duration("item_ttl", c.ItemTTL),
		slog.Duration("upload_ttl", c.UploadTTL),
		slog.Int64("max_clip_size", c.MaxClipSize),
		slog.Duration("clip_ttl", c.ClipTTL),
		slog.Bool("auth_webhook", c.AuthWebhook != ""),
		slog.Duration("auth_webhook_timeout", c.AuthWebhookTimeout),
		slog.Duration("reclaim_grace", c.ReclaimGrace),
		slog.Duration("ping_interval", c.PingInterval),
		slog.Duration("write_timeout", c.WriteTimeout),
		slog.Duration("register_timeout", registerTimeout),
		slog.String("admission", c.Admission),
		slog.Bool("admission_key", c.AdmissionKey != nil),
		slog.Int("operator_relays", len(c.OperatorRelays)),
		slog.Bool("trust_all_relays", c.TrustAllRelays),
		slog.Duration("clock_skew", c.ClockSkew),
		slog.Int("max_relays", c.MaxRelays),
		slog.Int("max_relays_per_ip", c.MaxRelaysPerIP),
		slog.Bool("allow_private_addrs", c.AllowPrivateAddrs),
		slog.Duration("verify_interval", c.VerifyInterval),
		slog.Duration("verify_timeout", c.VerifyTimeout),
		slog.Int("verify_max_response", proto.MaxChallengeResponse),
		slog.Bool("status_token", c.StatusToken != ""),
		slog.Float64("need_rate", c.NeedRate),
		slog.Int("need_burst", c.NeedBurst),
		slog.Float64("item_need_rate", c.ItemNeedRate),
		slog.Int("item_need_burst", c.ItemNeedBurst),
		slog.Duration("need_token_grace", c.NeedTokenGrace),
		slog.Duration("directory_interval", c.DirectoryInterval),
		slog.Int("directory_max_message", proto.MaxDirectoryMessage),
		slog.Int("directory_max_addrs", proto.MaxPeerAddrs),
		slog.String("stun", c.STUNAddr),
		slog.String("stun_alt", c.STUNAltAddr),
		slog.Any("stun_advertised", s.stunAddrs),
		slog.Int("stun_max_packet", MaxSTUNPacket),
		slog.Int("max_read_checks", proto.MaxReadChecks),
		slog.Int("max_unpublished_clips", c.MaxUnpublishedClips),
	}, append(s.limitAttrs(), c.liveAttrs()...)...)
}

// validateSTUN checks STUNAddr and STUNAltAddr.
func (c *Config) validateSTUN() error {
	primary, alt := c.STUNAddr, c.STUNAltAddr
	if primary == "" || primary == STUNOff {
		if alt != "" && alt != STUNOff {
			return fmt.Errorf("rendezvous: config: STUNAltAddr %q is set but STUN is off", alt)
		}
		return nil
	}
	if err := checkSTUNAddr(primary); err != nil {
		return fmt.Errorf("rendezvous: config: STUNAddr %q: %w", primary, err)
	}
	switch alt {
	case "":
		if _, err := stunAltDefault(primary); err != nil {
			return fmt.Errorf("rendezvous: config: STUNAltAddr default: %w", err)
		}
	case STUNOff:
	default:
		if err := checkSTUNAddr(alt); err != nil {
			return fmt.Errorf("rendezvous: config: STUNAltAddr %q: %w", alt, err)
		}
	}
	return nil
}

// checkBaseURL checks that s is an absolute URL with one of schemes, a host
// and no query or fragment.
func checkBaseURL(s string, schemes ...string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	ok := false
	for _, sc := range schemes {
		if u.Scheme == sc {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("scheme %q is not one of %v", u.Scheme, schemes)
	}
	if u.Host == "" {
		return errors.New("no host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return errors.New("has a query, fragment or user info")
	}
	return nil
}
