package mesh

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// The cluster joins the publicly reachable nodes (rendezvous instances,
// public relays) with hashicorp/memberlist: SWIM failure detection, and
// gossip of the relay directory so that several rendezvous instances share
// one mesh.
//
// Trust. memberlist has no per-node identity. All gossip is encrypted and
// authenticated with the cluster key (AES-GCM); a node without the key can
// neither join nor inject anything. Relay records are in addition signed
// by the relay's libp2p key, so a member can pass records on but cannot
// make one up or alter one: every record received is verified before use.
//
// Directory life cycle. A relay registers with one member, its home, and
// hands it a signed record; the home publishes it. Other members keep the
// newest record per relay (highest Seq) until:
//   - it expires (Expires; the relay re-signs before that and the home
//     publishes the refreshed record),
//   - the home withdraws it because the relay's registration ended
//     (Withdraw gossips a tombstone naming relay, home and Seq; it is
//     authenticated by the cluster key only, since a relay that is gone
//     cannot sign, and it removes only that home's records up to that Seq,
//     so the relay's next record wins again), or
//   - memberlist declares the home dead or left.
//
// New records and tombstones spread by gossip (TransmitLimitedQueue, each
// receiver passing news on); the periodic TCP push-pull carries the whole
// directory, so a node that joins late, or missed gossip, catches up.

// Defaults of ClusterConfig. Each applies when the field is zero.
const (
	DefaultGossipBindAddr = "0.0.0.0:7946"
	DefaultMaxRecords     = 10000
	// DefaultMaxRecordSize keeps a record, with memberlist's encryption and
	// framing, inside one 1400-byte gossip packet.
	DefaultMaxRecordSize        = 1200
	DefaultMaxRecordTTL         = time.Hour
	DefaultClusterProbeInterval = 5 * time.Second // memberlist's WAN profile
	DefaultClusterProbeTimeout  = 3 * time.Second
	DefaultGossipInterval       = 500 * time.Millisecond
	DefaultPushPullInterval     = time.Minute
	DefaultSuspicionMult        = 6
	DefaultRejoinInterval       = 30 * time.Second
	DefaultLeaveTimeout         = 5 * time.Second
	// DefaultCallbackQueue is the number of OnRecord and OnLeave calls
	// queued before further ones are dropped (and counted).
	DefaultCallbackQueue = 1024
)

// maxPushState is what the directory may take in one push-pull state:
// memberlist refuses states over 20 MB, membership included.
const maxPushState = 16 << 20

// ClusterConfig configures a Cluster. Zero values mean the documented
// defaults.
type ClusterConfig struct {
	// Name is this member's name, unique in the cluster. Defaults to the
	// peer id of Node. A rendezvous must use its peer id: relays name it
	// as their Home.
	Name string
	// Node supplies the default Name. Optional when Name is set.
	Node *Node
	// BindAddr is the "ip:port" memberlist listens on, UDP and TCP.
	// Defaults to "0.0.0.0:7946". Port 0 picks a free port.
	BindAddr string
	// AdvertiseAddr is the "ip:port" other members reach this one at.
	// Defaults to the bound IP and port; with an unspecified bind IP,
	// memberlist picks a private address of the host, and fails when it
	// has none: then set this.
	AdvertiseAddr string
	// Key encrypts and authenticates all gossip: 16, 24 or 32 bytes
	// (AES-128, -192, -256). Required: the cluster never runs in clear.
	Key []byte
	// Join lists "host:port" addresses of members to join at start, and
	// again whenever this member finds itself alone.
	Join []string
	// Logger receives the cluster's logs; memberlist's own lines go to it
	// at Debug (warnings and errors at Warn). Defaults to slog.Default().
	Logger *slog.Logger
	// OnRecord is called with every record that enters the directory or
	// replaces an older one there, local or learned. Optional.
	OnRecord func(RelayRecord)
	// OnLeave is called with the name of every member that left or was
	// declared dead. Optional.
	//
	// OnRecord and OnLeave are called in order from one goroutine; they
	// must not block for long (at most CallbackQueue calls wait, further
	// ones are dropped and counted).
	OnLeave func(node string)

	// MaxRecords limits the relay directory. Defaults to 10000.
	MaxRecords int
	// MaxRecordSize limits one encoded record, signature included, in
	// bytes. Defaults to 1200, which fits a gossip packet; larger records
	// would spread by push-pull only.
	MaxRecordSize int
	// MaxRecordTTL refuses records that expire further in the future, so
	// that a leaked record cannot live forever. Defaults to 1h.
	MaxRecordTTL time.Duration
	// CallbackQueue bounds the queue of OnRecord and OnLeave calls.
	// Defaults to 1024.
	CallbackQueue int

	// ProbeInterval is memberlist's failure-probe interval. Defaults to 5s.
	ProbeInterval time.Duration
	// ProbeTimeout is how long a probe waits for an ack. Defaults to 3s.
	ProbeTimeout time.Duration
	// GossipInterval is how often gossip is sent. Defaults to 500ms.
	GossipInterval time.Duration
	// PushPullInterval is how often the full state is synced with a random
	// member over TCP. Defaults to 1m.
	PushPullInterval time.Duration
	// SuspicionMult scales how long a suspect member has to refute before
	// it is declared dead. Defaults to 6.
	SuspicionMult int
	// RejoinInterval is how often a member that is alone retries Join.
	// Defaults to 30s.
	RejoinInterval time.Duration
	// LeaveTimeout bounds the wait for the leave message to go out on
	// Close. Defaults to 5s.
	LeaveTimeout time.Duration
}

// Validate reports the first problem with c.
func (c *ClusterConfig) Validate() error {
	if c.Name == "" && c.Node == nil {
		return errors.New("mesh: cluster config: Name or Node is required")
	}
	switch len(c.Key) {
	case 16, 24, 32:
	case 0:
		return errors.New("mesh: cluster config: Key is required (gossip is always encrypted)")
	default:
		return fmt.Errorf("mesh: cluster config: Key has %d bytes, want 16, 24 or 32", len(c.Key))
	}
	if c.BindAddr != "" {
		if _, _, err := splitHostPort(c.BindAddr); err != nil {
			return fmt.Errorf("mesh: cluster config: BindAddr: %w", err)
		}
	}
	if c.AdvertiseAddr != "" {
		host, port, err := splitHostPort(c.AdvertiseAddr)
		if err != nil {
			return fmt.Errorf("mesh: cluster config: AdvertiseAddr: %w", err)
		}
		if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() || port == 0 {
			return fmt.Errorf("mesh: cluster config: AdvertiseAddr %q is not a specific ip:port", c.AdvertiseAddr)
		}
	}
	for _, j := range c.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("mesh: cluster config: Join address %q: %w", j, err)
		}
	}
	ints := []struct {
		name string
		v    int64
	}{
		{"MaxRecords", int64(c.MaxRecords)},
		{"MaxRecordSize", int64(c.MaxRecordSize)},
		{"MaxRecordTTL", int64(c.MaxRecordTTL)},
		{"CallbackQueue", int64(c.CallbackQueue)},
		{"ProbeInterval", int64(c.ProbeInterval)},
		{"ProbeTimeout", int64(c.ProbeTimeout)},
		{"GossipInterval", int64(c.GossipInterval)},
		{"PushPullInterval", int64(c.PushPullInterval)},
		{"SuspicionMult", int64(c.SuspicionMult)},
		{"RejoinInterval", int64(c.RejoinInterval)},
		{"LeaveTimeout", int64(c.LeaveTimeout)},
	}
	for _, f := range ints {
		if f.v < 0 {
			return fmt.Errorf("mesh: cluster config: %s is negative", f.name)
		}
	}
	d := c.withDefaults()
	if d.MaxRecordSize < 256 || d.MaxRecordSize > 64<<10 {
		return fmt.Errorf("mesh: cluster config: MaxRecordSize %d is not within 256 B..64 KiB", d.MaxRecordSize)
	}
	if d.MaxRecords*(d.MaxRecordSize+4) > maxPushState {
		return fmt.Errorf("mesh: cluster config: MaxRecords %d of %d bytes exceed the %d-byte push-pull state", d.MaxRecords, d.MaxRecordSize, maxPushState)
	}
	if d.ProbeTimeout >= d.ProbeInterval {
		return fmt.Errorf("mesh: cluster config: ProbeTimeout %v must be below ProbeInterval %v", d.ProbeTimeout, d.ProbeInterval)
	}
	return nil
}

// withDefaults returns c with zero fields set to their defaults.
func (c ClusterConfig) withDefaults() ClusterConfig {
	if c.Name == "" && c.Node != nil {
		c.Name = c.Node.ID()
	}
	c.BindAddr = cmp.Or(c.BindAddr, DefaultGossipBindAddr)
	c.MaxRecords = cmp.Or(c.MaxRecords, DefaultMaxRecords)
	c.MaxRecordSize = cmp.Or(c.MaxRecordSize, DefaultMaxRecordSize)
	c.MaxRecordTTL = cmp.Or(c.MaxRecordTTL, DefaultMaxRecordTTL)
	c.CallbackQueue = cmp.Or(c.CallbackQueue, DefaultCallbackQueue)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, DefaultClusterProbeInterval)
	c.ProbeTimeout = cmp.Or(c.ProbeTimeout, DefaultClusterProbeTimeout)
	c.GossipInterval = cmp.Or(c.GossipInterval, DefaultGossipInterval)
	c.PushPullInterval = cmp.Or(c.PushPullInterval, DefaultPushPullInterval)
	c.SuspicionMult = cmp.Or(c.SuspicionMult, DefaultSuspicionMult)
	c.RejoinInterval = cmp.Or(c.RejoinInterval, DefaultRejoinInterval)
	c.LeaveTimeout = cmp.Or(c.LeaveTimeout, DefaultLeaveTimeout)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func splitHostPort(s string) (string, int, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", ps, err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("host %q is not an IP address", host)
	}
	return host, int(port), nil
}

// Reasons a received record or message is dropped, as counted in
// ClusterStats.Dropped.
const (
	DropMalformed    = "malformed"      // undecodable message or record
	DropTooLarge     = "too_large"      // over MaxRecordSize
	DropUnknownType  = "unknown_type"   // a message type this version does not know
	DropBadSignature = "bad_signature"  // record not signed by its relay
	DropExpired      = "expired"        // record past its Expires
	DropTTL          = "ttl_too_long"   // record expires beyond MaxRecordTTL
	DropHomeUnknown  = "home_unknown"   // record's home is not a live member
	DropWithdrawn    = "withdrawn"      // record older than a tombstone of its home
	DropFull         = "directory_full" // MaxRecords reached
)

// Sentinel errors of the cluster.
var (
	// ErrClusterClosed means the cluster has been closed.
	ErrClusterClosed = errors.New("mesh: cluster closed")
	// ErrNotHome means a record published here names another home.
	ErrNotHome = errors.New("mesh: relay record names another home")
	// ErrRecordRefused means a record is expired, too large, too
	// long-lived, older than the one held, or the directory is full.
	ErrRecordRefused = errors.New("mesh: relay record refused")
)

// MemberState is a cluster member's state.
type MemberState uint8

// Member states. memberlist keeps suspicion to itself: a suspect member
// reads alive until it is declared dead or refutes.
const (
	MemberAlive MemberState = iota
	MemberDead              // failed: declared dead by the others
	MemberLeft              // left gracefully (Close)
)

func (s MemberState) String() string {
	switch s {
	case MemberAlive:
		return "alive"
	case MemberDead:
		return "dead"
	case MemberLeft:
		return "left"
	}
	return fmt.Sprintf("MemberState(%d)", uint8(s))
}

// MarshalText makes a MemberState read as its name in JSON.
func (s MemberState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// metaLeaving is the node meta of a member that is closing. memberlist's
// Node.State is not kept up to date and a leave looks like a death to the
// EventDelegate, so a closing member first gossips this meta (UpdateNode)
// and the others tell "left" from "dead" by it.
const metaLeaving = "leaving"

// Member is a cluster member.
type Member struct {
	Name  string      `json:"name"`
	Addr  string      `json:"addr"` // ip:port of its gossip
	State MemberState `json:"state"`
}

// ClusterStats is a snapshot of a Cluster's counters. Counters only grow;
// Members, Records and LocalRecords are current values.
type ClusterStats struct {
	Members      int // live members, this one included
	Records      int // records in the directory
	LocalRecords int // records whose home is this member

	Published      uint64 // records accepted through Publish
	Learned        uint64 // new or newer records accepted from gossip
	Withdrawn      uint64 // records removed by a tombstone, here or received
	Expired        uint64 // records removed at their Expires
	HomeGone       uint64 // records removed because their home left or failed
	MemberJoins    uint64 // members seen joining (or coming back)
	MemberLeaves   uint64 // members that left gracefully
	MemberFailures uint64 // members declared dead
	CallbacksLost  uint64 // OnRecord/OnLeave calls dropped: queue full

	// Dropped counts refused records and messages by reason (the Drop
	// constants).
	Dropped map[string]uint64
}

// Cluster is this process's membership in the memberlist cluster, and its
// copy of the relay directory. Its methods are safe for concurrent use.
type Cluster struct {
	cfg   ClusterConfig
	log   *slog.Logger
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	addr  string // advertised ip:port
	// deadRetention is how long Members keeps listing a departed member.
	deadRetention time.Duration

	callbacks chan func()
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	closeOnce sync.Once

	numMembers atomic.Int64 // live members, from events
	leaving    atomic.Bool  // Close has begun: NodeMeta says metaLeaving
	published  atomic.Uint64
	learned    atomic.Uint64
	withdrawn  atomic.Uint64
	expired    atomic.Uint64
	homeGone   atomic.Uint64
	joins      atomic.Uint64
	leaves     atomic.Uint64
	failures   atomic.Uint64
	cbLost     atomic.Uint64

	mu       sync.Mutex // guards the fields below
	closed   bool
	records  map[string]RelayRecord // by relay peer id
	tombs    map[string]tombstone   // by relay peer id
	members  map[string]Member      // live members by name, from events
	departed map[string]departure   // by name
	dropped  map[string]uint64
}

// tombstone remembers a withdrawn record so that late copies of it are not
// taken back in.
type tombstone struct {
	home  string
	seq   uint64
	until time.Time
}

type departure struct {
	m     Member
	since time.Time
}

// NewCluster starts memberlist on cfg.BindAddr and joins cfg.Join. A failed
// join is logged, not returned: the member retries every RejoinInterval
// while it is alone, so members can start in any order. Close leaves the
// cluster.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cluster{
		cfg:       cfg,
		log:       cfg.Logger.With("cluster", cfg.Name),
		callbacks: make(chan func(), cfg.CallbackQueue),
		ctx:       ctx,
		cancel:    cancel,
		records:   make(map[string]RelayRecord),
		tombs:     make(map[string]tombstone),
		members:   make(map[string]Member),
		departed:  make(map[string]departure),
		dropped:   make(map[string]uint64),
	}
	c.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return int(max(c.numMembers.Load(), 1)) },
		RetransmitMult: memberlist.DefaultWANConfig().RetransmitMult,
	}

	mc := memberlist.DefaultWANConfig()
	mc.Name = cfg.Name
	host, port, _ := splitHostPort(cfg.BindAddr) // checked by Validate
	if host == "" {
		host = "0.0.0.0"
	}
	mc.BindAddr, mc.BindPort = host, port
	if cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitHostPort(cfg.AdvertiseAddr)
	}
	mc.SecretKey = cfg.Key
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.PushPullInterval = cfg.PushPullInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.Delegate = (*clusterDelegate)(c)
	mc.Events = (*clusterEvents)(c)
	mc.Logger = log.New(&memberlistLog{log: c.log}, "", 0)
	c.deadRetention = mc.GossipToTheDeadTime

	ml, err := memberlist.Create(mc)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("mesh: start cluster on %s: %w", cfg.BindAddr, err)
	}
	c.ml = ml
	c.addr = ml.LocalNode().Address()
	c.wg.Add(2)
	go c.callbackLoop()
	go c.sweepLoop()
	if len(cfg.Join) > 0 {
		if _, err := c.Join(cfg.Join); err != nil {
			c.log.Warn("cluster join failed; retrying while alone", "join", cfg.Join, "every", cfg.RejoinInterval, "err", err)
		}
		c.wg.Add(1)
		go c.rejoinLoop()
	}
	return c, nil
}

// Name returns this member's name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Addr returns the "ip:port" other members reach this one at; give it to
// others as a Join address.
func (c *Cluster) Addr() string { return c.addr }

// Join joins the cluster through the members at addrs ("host:port") and
// returns how many it reached. It fails only when it reached none.
func (c *Cluster) Join(addrs []string) (int, error) {
	if c.isClosed() {
		return 0, ErrClusterClosed
	}
	n, err := c.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("mesh: join cluster via %s: %w", strings.Join(addrs, ","), err)
	}
	c.log.Info("joined cluster", "via", n, "members", c.ml.NumMembers())
	return n, nil
}

// Limits returns the effective settings as slog attributes, so that a
// binary can print them at start-up. The key is never included.
func (c *Cluster) Limits() []slog.Attr {
	cf := &c.cfg
	return []slog.Attr{
		slog.String("name", cf.Name),
		slog.String("bind", cf.BindAddr),
		slog.String("advertise", c.Addr()),
		slog.Any("join", cf.Join),
		slog.Int("key_bits", 8*len(cf.Key)),
		slog.Int("max_records", cf.MaxRecords),
		slog.Int("max_record_size", cf.MaxRecordSize),
		slog.Duration("max_record_ttl", cf.MaxRecordTTL),
		slog.Int("callback_queue", cf.CallbackQueue),
		slog.Duration("probe_interval", cf.ProbeInterval),
		slog.Duration("probe_timeout", cf.ProbeTimeout),
		slog.Duration("gossip_interval", cf.GossipInterval),
		slog.Duration("push_pull_interval", cf.PushPullInterval),
		slog.Int("suspicion_mult", cf.SuspicionMult),
		slog.Duration("rejoin_interval", cf.RejoinInterval),
		slog.Duration("leave_timeout", cf.LeaveTimeout),
	}
}

// Publish verifies r, the record of a relay registered here, puts it in
// the directory and gossips it. r.Home must be this member's name.
func (c *Cluster) Publish(r RelayRecord) error {
	if r.Home != c.cfg.Name {
		return fmt.Errorf("publish record of %s: %w: %q, this member is %q", r.Relay, ErrNotHome, r.Home, c.cfg.Name)
	}
	if err := VerifyRecord(r); err != nil {
		return fmt.Errorf("publish record of %s: %w", r.Relay, err)
	}
	msg, err := appendRecordMsg(nil, &r)
	if err != nil {
		return fmt.Errorf("publish record of %s: %w", r.Relay, err)
	}
	if len(msg)-1 > c.cfg.MaxRecordSize {
		return fmt.Errorf("publish record of %s: %w: %d bytes, limit %d", r.Relay, ErrRecordRefused, len(msg)-1, c.cfg.MaxRecordSize)
	}
	if reason := c.checkTimes(&r, time.Now()); reason != "" {
		return fmt.Errorf("publish record of %s: %w: %s", r.Relay, ErrRecordRefused, reason)
	}
	stored, reason, err := c.store(r, true)
	if err != nil {
		return err
	}
	if reason != "" {
		return fmt.Errorf("publish record of %s: %w: %s", r.Relay, ErrRecordRefused, reason)
	}
	if !stored {
		return nil // the same record again
	}
	c.published.Add(1)
	c.queue.QueueBroadcast(&broadcast{name: r.Relay, msg: msg})
	c.log.Debug("relay record published", "relay", r.Relay, "seq", r.Seq)
	return nil
}

// Withdraw removes the record of relay from the directory if this member
// is its home, and gossips a tombstone so that the others drop it too. It
// is a no-op for relays homed elsewhere or unknown.
func (c *Cluster) Withdraw(relay string) {
	c.mu.Lock()
	r, ok := c.records[relay]
	if !ok || r.Home != c.cfg.Name || c.closed {
		c.mu.Unlock()
		return
	}
	delete(c.records, relay)
	c.tombs[relay] = tombstone{home: r.Home, seq: r.Seq, until: time.Unix(r.Expires, 0)}
	c.mu.Unlock()
	c.withdrawn.Add(1)
	msg := appendWithdrawMsg(nil, relay, r.Home, r.Seq)
	c.queue.QueueBroadcast(&broadcast{name: relay, msg: msg})
	c.log.Debug("relay record withdrawn", "relay", relay, "seq", r.Seq)
}

// Directory returns the records held, sorted by relay.
func (c *Cluster) Directory() []RelayRecord {
	c.mu.Lock()
	out := slices.Collect(maps.Values(c.records))
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b RelayRecord) int { return strings.Compare(a.Relay, b.Relay) })
	return out
}

// Members returns the live members, this one included, and the members
// that left or failed recently, sorted by name.
//
// It reads what memberlist's events reported: memberlist.Members hands
// out pointers that its goroutines keep writing.
func (c *Cluster) Members() []Member {
	c.mu.Lock()
	out := slices.Collect(maps.Values(c.members))
	for _, d := range c.departed {
		out = append(out, d.m)
	}
	c.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Stats returns a snapshot of the counters. It is safe to call after
// Close.
func (c *Cluster) Stats() ClusterStats {
	st := ClusterStats{
		Members:        int(c.numMembers.Load()),
		Published:      c.published.Load(),
		Learned:        c.learned.Load(),
		Withdrawn:      c.withdrawn.Load(),
		Expired:        c.expired.Load(),
		HomeGone:       c.homeGone.Load(),
		MemberJoins:    c.joins.Load(),
		MemberLeaves:   c.leaves.Load(),
		MemberFailures: c.failures.Load(),
		CallbacksLost:  c.cbLost.Load(),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Records = len(c.records)
	for _, r := range c.records {
		if r.Home == c.cfg.Name {
			st.LocalRecords++
		}
	}
	st.Dropped = maps.Clone(c.dropped)
	return st
}

// Close leaves the cluster gracefully (waiting at most LeaveTimeout for
// the news to go out: first that it is leaving, then the leave), then shuts memberlist down and waits for the
// cluster's goroutines. It is idempotent and returns nil.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		c.leaving.Store(true)
		if c.numMembers.Load() > 1 {
			if err := c.ml.UpdateNode(c.cfg.LeaveTimeout / 2); err != nil {
				c.log.Debug("cluster: announce leave", "err", err)
			}
		}
		if err := c.ml.Leave(c.cfg.LeaveTimeout / 2); err != nil {
			c.log.Warn("cluster leave", "err", err)
		}
		if err := c.ml.Shutdown(); err != nil {
			c.log.Warn("cluster shutdown", "err", err)
		}
		c.cancel()
		c.wg.Wait()
		c.log.Info("left cluster")
	})
	return nil
}

func (c *Cluster) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// checkTimes returns a drop reason when r is expired or lives too long.
func (c *Cluster) checkTimes(r *RelayRecord, now time.Time) string {
	exp := time.Unix(r.Expires, 0)
	switch {
	case !exp.After(now):
		return DropExpired
	case exp.Sub(now) > c.cfg.MaxRecordTTL:
		return DropTTL
	}
	return ""
}

// store puts a verified record into the directory. It reports whether the
// record was new or newer, or else a drop reason; holding the same record
// already is neither. Records of remote homes need the home to be a live
// member.
func (c *Cluster) store(r RelayRecord, local bool) (stored bool, reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false, "", ErrClusterClosed
	}
	old, had := c.records[r.Relay]
	switch {
	case had && old.Seq >= r.Seq:
		if old.Seq > r.Seq && local {
			return false, "older than the record held", nil
		}
		return false, "", nil // a copy, or stale gossip: normal
	}
	if t, ok := c.tombs[r.Relay]; ok && t.home == r.Home && r.Seq <= t.seq {
		return false, DropWithdrawn, nil
	}
	if _, ok := c.members[r.Home]; !local && !ok {
		return false, DropHomeUnknown, nil
	}
	if !had && len(c.records) >= c.cfg.MaxRecords {
		return false, DropFull, nil
	}
	c.records[r.Relay] = r
	delete(c.tombs, r.Relay)
	c.callbackLocked(r)
	return true, "", nil
}

// callbackLocked queues OnRecord for r.
func (c *Cluster) callbackLocked(r RelayRecord) {
	if c.cfg.OnRecord == nil {
		return
	}
	fn := c.cfg.OnRecord
	c.queueCallback(func() { fn(r) })
}

// queueCallback queues fn for the callback goroutine without blocking.
func (c *Cluster) queueCallback(fn func()) {
	select {
	case c.callbacks <- fn:
	default:
		c.cbLost.Add(1)
	}
}

func (c *Cluster) callbackLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case fn := <-c.callbacks:
			fn()
		}
	}
}

// drop counts a refused record or message.
func (c *Cluster) drop(reason string, args ...any) {
	c.mu.Lock()
	c.dropped[reason]++
	c.mu.Unlock()
	c.log.Debug("gossip dropped", append([]any{"reason", reason}, args...)...)
}

// sweepInterval is how often expired records and tombstones are removed.
func (c *Cluster) sweepInterval() time.Duration {
	return min(max(c.cfg.ProbeInterval, 50*time.Millisecond), time.Second)
}

func (c *Cluster) sweepLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.sweepInterval())
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.sweep(time.Now())
			// Prune panics on a queue that never held anything.
			if c.queue.NumQueued() > c.cfg.MaxRecords {
				c.queue.Prune(c.cfg.MaxRecords)
			}
		}
	}
}

// sweep removes what has expired at now.
func (c *Cluster) sweep(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, r := range c.records {
		if r.Expires <= now.Unix() {
			delete(c.records, id)
			c.expired.Add(1)
			c.log.Debug("relay record expired", "relay", id, "home", r.Home)
		}
	}
	for id, t := range c.tombs {
		if !t.until.After(now) {
			delete(c.tombs, id)
		}
	}
	for name, d := range c.departed {
		if now.Sub(d.since) > c.deadRetention {
			delete(c.departed, name)
		}
	}
}

// rejoinLoop retries Join while this member is alone.
func (c *Cluster) rejoinLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RejoinInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			if c.numMembers.Load() > 1 {
				continue
			}
			if _, err := c.Join(c.cfg.Join); err != nil {
				c.log.Debug("cluster rejoin failed", "err", err)
			}
		}
	}
}

// memberlistLog turns memberlist's log lines ("[WARN] memberlist: ...")
// into slog records: Debug for DEBUG and INFO, Warn for WARN and ERR.
type memberlistLog struct{ log *slog.Logger }

func (w *memberlistLog) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelDebug
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, msg, ok := strings.Cut(rest, "] "); ok {
			if tag == "WARN" || tag == "ERR" {
				level = slog.LevelWarn
			}
			line = msg
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.Log(context.Background(), level, "memberlist: "+line)
	return len(p), nil
}
