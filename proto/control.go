package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Control messages are JSON objects with a "type" field. On the control
// WebSocket each text message holds one; on libp2p streams each FrameMsg
// frame holds one. Receivers ignore unknown fields, and report unknown types
// with ErrUnknownType so that the caller can skip them.

// DefaultMaxMessage is the default limit on one control message (64 KiB).
const DefaultMaxMessage = 64 << 10

// Sentinel errors of the message codec.
var (
	// ErrUnknownType means a message's type is not one this version knows.
	// Callers skip such messages.
	ErrUnknownType = errors.New("proto: unknown message type")
	// ErrBadMessage means a message is not a JSON object with a known
	// layout.
	ErrBadMessage = errors.New("proto: malformed message")
	// ErrMessageTooLarge means a message is over the size limit.
	ErrMessageTooLarge = errors.New("proto: message too large")
)

// Message is a control message.
type Message interface {
	// MessageType returns the value of the message's "type" field.
	MessageType() string
}

// Item kinds.
const (
	KindFile    = "file"    // bytes pushed on order
	KindMessage = "message" // short text carried whole by the rendezvous
	KindClip    = "clip"    // pushed whole into relay memory at once
)

// Hello (client -> rendezvous) names the client software. A client sends
// it (or any other message) right after the Welcome: the rendezvous closes
// a control channel that sends no valid message within its handshake
// deadline (close StatusTimeout), and pongs do not count.
type Hello struct {
	Client string `json:"client,omitempty"`
}

// Welcome (rendezvous -> client) is the first message of a control channel.
// Relays lists the relays the client may be ordered to push to, so that it
// can open push connections before the first order; an Order's PushURL
// stays authoritative (it may name a tunnel the list does not).
type Welcome struct {
	Session     string      `json:"session"`
	MaxMessage  int         `json:"max_message"`  // bytes, the limit on control messages
	PingSeconds int         `json:"ping_seconds"` // WebSocket ping interval
	Relays      []RelayInfo `json:"relays"`
}

// RelayInfo names a relay a client may push to.
type RelayInfo struct {
	ID      string `json:"id"`       // relay peer id, as in Order.Relay
	PushURL string `json:"push_url"` // ws:// or wss:// URL of the relay's /v1/push
}

// Publish (client -> rendezvous) announces an item. Only metadata travels,
// except for KindMessage, whose Text is the whole item. To take an item
// back online after a reconnect, set ID and Owner from the Published reply.
type Publish struct {
	Ref   string `json:"ref,omitempty"` // echoed in Published or Error
	ID    ItemID `json:"id,omitzero"`
	Owner string `json:"owner,omitempty"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
	MIME  string `json:"mime"`
	Size  int64  `json:"size"` // bytes
	Text  string `json:"text,omitempty"`
	// Via pins the entry relay (a relay peer id) that parts are pushed
	// to, for diagnosis of one path. Empty lets the rendezvous choose.
	Via string `json:"via,omitempty"`
	// Enc names the end-to-end encryption of the item's bytes: E2EVersion,
	// or empty for plaintext. For an encrypted item Size is the ciphertext
	// size, Name is empty, MIME is application/octet-stream, and Meta holds
	// the sealed name, type and modification time (see e2e.go).
	Enc  string `json:"enc,omitempty"`
	Meta string `json:"meta,omitempty"`
	// Volunteers lets relays of class volunteer carry a plaintext item.
	// Without it a plaintext item is carried by operator relays only;
	// encrypted items go through any relay.
	Volunteers bool `json:"volunteers,omitempty"`
	// Swarm, with ID and Owner, joins the item as one more publisher
	// instead of taking it over from the session that holds it (issue 10,
	// swarm upload): every member holds the same bytes (for an encrypted
	// item, the same key), and the rendezvous spreads orders over them and
	// keeps going when one leaves. Kind, Size and Enc must match the item's;
	// a mismatch is refused with StatusConflict. Without Swarm, the newest
	// session of the owner wins, as after a reconnect.
	Swarm bool `json:"swarm,omitempty"`
	// Modified is the modification time of a plaintext item's source, in
	// Unix seconds, or 0 when unknown. It is the item's Last-Modified and
	// part of its ETag, so that a validator stays the same when the item
	// is reclaimed after a restart of the rendezvous and a reader's
	// If-Range still matches (issue 14). An encrypted item sends 0: its
	// time is sealed in Meta, and its ETag is its id and size (its bytes
	// are authenticated by the reader anyway).
	Modified int64 `json:"modified,omitempty"`
}

// Published (rendezvous -> client) confirms a Publish.
type Published struct {
	Ref         string `json:"ref,omitempty"`
	ID          ItemID `json:"id"`
	Owner       string `json:"owner"` // secret that reclaims the item after a reconnect
	ShareURL    string `json:"share_url"`
	DownloadURL string `json:"download_url"`
	// ExpiresMS (appended for clips, issue 12) is when a clip expires, in
	// Unix milliseconds: until then its holder relays keep it readable
	// after the publisher leaves. Zero for other kinds.
	ExpiresMS int64 `json:"expires_ms,omitempty"`
}

// Unpublish (client -> rendezvous) withdraws an item.
type Unpublish struct {
	ID ItemID `json:"id"`
}

// Order (rendezvous -> client) tells a publisher to push one part to a
// relay.
type Order struct {
	Order   uint64 `json:"order"`
	Item    ItemID `json:"item"`
	Off     int64  `json:"off"`
	Len     int64  `json:"len"`
	Relay   string `json:"relay"`    // relay peer id
	PushURL string `json:"push_url"` // ws:// or wss:// URL of the relay's /v1/push
	Token   string `json:"token"`
}

// Cancel (rendezvous -> client) withdraws an order that is no longer needed.
type Cancel struct {
	Order uint64 `json:"order"`
}

// OrderFailed (client -> rendezvous) reports an order the client could not
// carry out.
type OrderFailed struct {
	Order  uint64 `json:"order"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// ErrorMsg (either direction) reports a failed request; Ref names it.
type ErrorMsg struct {
	Ref    string `json:"ref,omitempty"`
	Status Status `json:"status"`
	Reason string `json:"reason"`
}

// Register (relay -> rendezvous) is the first message on a register stream.
//
// Record (optional, appended for the cluster) is the relay's directory
// record signed with its libp2p key, in the mesh record encoding
// (mesh.EncodeRecord; base64 in JSON). Its home is the rendezvous's peer
// id. A rendezvous in a cluster gossips it to the other members; one that
// is not ignores it.
type Register struct {
	Version int      `json:"version"`
	HTTPURL string   `json:"http_url"` // base URL of the relay's HTTP API
	Addrs   []string `json:"addrs"`    // libp2p multiaddrs
	Budget  int64    `json:"budget"`   // bytes of part memory
	Window  int      `json:"window"`   // bytes per stream
	// NAT is what the relay learnt of its NAT: one of the NAT* constants.
	NAT string `json:"nat,omitempty"`
	// Public says the relay's HTTPURL is reachable from the internet, so
	// consumers and publishers may use it directly instead of the
	// rendezvous tunnel.
	Public bool `json:"public,omitempty"`
	// Record is the relay's signed directory record (see above).
	Record []byte `json:"record,omitzero"` // omitzero: an empty record survives a round trip
	// Admission (optional) is an admission token the operator issued
	// (see admission.go). A relay that presents a valid one is of class
	// operator; without one it is a volunteer, or refused when the
	// rendezvous admits operator relays only.
	Admission string `json:"admission,omitempty"`
	// Time is the relay's clock when it sent the Register, in Unix
	// milliseconds. The rendezvous refuses a relay whose clock is off by
	// more than the token clock skew it allows: such a relay would refuse
	// or accept tokens at the wrong times. Zero: not checked.
	Time int64 `json:"time,omitempty"`
	// Tunnel says the relay serves the HTTP tunnel (/v1/relays/{id}/...)
	// into the relays behind NAT connected to it, when it is public
	// itself (issue 10): the rendezvous then hands out its tunnel rather
	// than its own for those relays.
	Tunnel bool `json:"tunnel,omitempty"`
	// Uploads are the upload protocols (the Upload* constants) the relay
	// serves; GET /v1/upload?protocol= on the rendezvous sends uploaders
	// only to relays that serve the protocol. Empty or absent: none.
	Uploads []string `json:"uploads,omitempty"`
}

// NAT types a relay reports, as learnt with STUN.
const (
	NATUnknown   = "unknown"
	NATPublic    = "public"    // no NAT: the relay's own address is public
	NATCone      = "cone"      // endpoint-independent mapping
	NATSymmetric = "symmetric" // the mapping depends on the destination
)

// Registered (rendezvous -> relay) accepts a Register.
type Registered struct {
	Relay       string `json:"relay"` // the relay's id as the rendezvous sees it
	HeartbeatMS int    `json:"heartbeat_ms"`
	// Observed is the relay's address as the rendezvous sees it on the
	// register connection (a multiaddr), for diagnosis.
	Observed string `json:"observed,omitempty"`
	// Origins lists the Origins besides its own that the rendezvous lets
	// pages open the control channel from (rendezvous --allow-origin), so
	// that the relay lets them push too: a page on another site that
	// embeds the browser library.
	Origins []string `json:"origins,omitempty"`
	// ReadChecks (appended, issue 11) says whether the rendezvous has an
	// auth webhook, so that the relay asks it (ReadCheck) before serving
	// a read of an item it holds on a URL of its own (the tus upload URL).
	// Nil (a rendezvous that does not say) means the relay cannot know:
	// it refuses such reads (fail closed).
	ReadChecks *bool `json:"read_checks,omitempty"`
}

// Heartbeat (relay -> rendezvous) keeps the registration alive and reports
// load and, when it changed, the relay's view of the mesh.
type Heartbeat struct {
	Streams  int   `json:"streams"`  // part streams open
	Reserved int64 `json:"reserved"` // bytes of the memory budget in use
	Served   int64 `json:"served"`   // bytes sent to consumers since start
	// Mesh, when set, replaces the relay's reported addresses, NAT type
	// and peer connections.
	Mesh *MeshStatus `json:"mesh,omitempty"`
	// Record (optional) is a freshly signed directory record, as in
	// Register, sent before the previous one expires.
	Record []byte `json:"record,omitzero"` // omitzero: an empty record survives a round trip
	// Draining (optional) says the relay is shutting down: it finishes
	// the work it has and takes no new, so the rendezvous chooses it
	// neither as exit nor as entry (issue 13).
	Draining bool `json:"draining,omitempty"`
	// CapReached says the relay reached its monthly volume cap (relay
	// --monthly-cap): it takes no new work, so it is chosen neither as
	// exit nor as entry until it says otherwise.
	CapReached bool `json:"cap_reached,omitempty"`
}

// MeshStatus is a relay's view of its place in the mesh. Relays serve it in
// their /v1/status and report it in heartbeats; the rendezvous lists it.
type MeshStatus struct {
	NAT       string         `json:"nat"` // one of the NAT* constants
	Addrs     MeshAddrs      `json:"addrs"`
	Peers     []MeshPeer     `json:"peers"`
	HolePunch HolePunchStats `json:"holepunch"`
}

// PeerKinds counts the peers by connection kind, every kind present.
func (ms MeshStatus) PeerKinds() map[string]int {
	kinds := map[string]int{PeerDirect: 0, PeerHolePunched: 0, PeerRelayed: 0}
	for _, p := range ms.Peers {
		if _, ok := kinds[p.Kind]; ok {
			kinds[p.Kind]++
		}
	}
	return kinds
}

// MeshAddrs are a relay's libp2p addresses.
type MeshAddrs struct {
	Observed   []string `json:"observed"`   // as seen by STUN and by peers
	Advertised []string `json:"advertised"` // what the relay tells peers to dial
}

// Kinds of connection to a mesh peer, best first.
const (
	PeerDirect      = "direct"
	PeerHolePunched = "hole-punched"
	PeerRelayed     = "relayed"
)

// MeshPeer is one connected mesh peer.
type MeshPeer struct {
	ID   string `json:"id"`
	Kind string `json:"kind"` // one of the Peer* constants
	// TimeToDirectMS is how long the relayed connection lasted before a
	// direct one replaced it, in milliseconds; 0 if there was none.
	TimeToDirectMS int64 `json:"time_to_direct_ms,omitempty"`
}

// HolePunchStats count DCUtR hole punches.
type HolePunchStats struct {
	Attempts  int64 `json:"attempts"`
	Successes int64 `json:"successes"`
	Failures  int64 `json:"failures"`
}

// Peers (rendezvous -> relay) is the directory of the other live relays.
// A relay connects only to the peers named here, never to an address a
// client supplied.
//
// Without Delta, Peers replaces the relay's directory. With Delta (the
// rendezvous sends only deltas since version 1 of the delta fields), Peers
// are entries added or changed (an entry replaces the one with its id)
// and Removed the ids of relays that left; a relay's directory starts
// empty on each register stream. A directory larger than one message
// travels as several deltas. The rendezvous keeps each message within
// MaxDirectoryMessage and each entry within the MaxPeer* bounds.
type Peers struct {
	Peers   []PeerInfo `json:"peers"`
	Delta   bool       `json:"delta,omitempty"`
	Removed []string   `json:"removed,omitempty"`
}

// Bounds of a directory (Peers) message. A relay reads its register
// stream with a limit of RelayReadLimit, which is derived from them.
const (
	// MaxPeerAddrs is the most addresses of one directory entry.
	MaxPeerAddrs = 16
	// MaxPeerAddrLen is the longest address of a directory entry, in bytes.
	MaxPeerAddrLen = 256
	// MaxPeerIDLen is the longest peer id, in bytes.
	MaxPeerIDLen = 128
	// MaxPeerEntry bounds the JSON encoding of one PeerInfo that follows
	// the bounds above, each byte escaped at worst as \u00XX (6 bytes),
	// plus punctuation.
	MaxPeerEntry = 6*(MaxPeerIDLen+16+MaxPeerAddrs*MaxPeerAddrLen) + 64 + 4*MaxPeerAddrs
	// MaxDirectoryMessage bounds one encoded Peers message: the rendezvous
	// packs entries into messages up to this size (one entry always fits).
	MaxDirectoryMessage = 2*MaxPeerEntry + 256
	// RelayReadLimit is the limit on one message a relay reads from the
	// rendezvous: the largest directory message, and at least
	// DefaultMaxMessage.
	RelayReadLimit = max(DefaultMaxMessage, MaxDirectoryMessage)
)

// PeerInfo is one relay in a Peers directory.
type PeerInfo struct {
	ID    string   `json:"id"`
	NAT   string   `json:"nat"`
	Addrs []string `json:"addrs"` // multiaddrs, circuit addresses included
}

// Need (relay -> rendezvous) asks for a part of an item to be pushed to the
// relay. The rendezvous answers with an Order to the publisher whose token
// carries Ref = Need, or with NeedFailed.
//
// Token is the read token of the consumer request that caused the need:
// the rendezvous orders only parts that a read token it issued covers, for
// the relay it names, so a relay cannot make a publisher push what no
// consumer asked for.
//
// Avoid lists entry relays (peer ids) the relay saw fail or stall while
// carrying these bytes: the rendezvous orders them through another entry
// when one is left (issue 10, failover). At most MaxAvoid ids; the
// rendezvous ignores the rest.
type Need struct {
	Need  uint64   `json:"need"`
	Item  ItemID   `json:"item"`
	Off   int64    `json:"off"`
	Len   int64    `json:"len"`
	Token string   `json:"token,omitempty"`
	Avoid []string `json:"avoid,omitempty"`
}

// MaxAvoid is the most entry relays a Need may ask to avoid.
const MaxAvoid = 8

// NeedDone (relay -> rendezvous) says every byte of a Need arrived and was
// delivered. It settles the order, and its figures measure the entry relay
// the part came through (issue 10: the scheduler weights entries by
// measured throughput). MS is the milliseconds the part spent filling:
// from its first byte to its last, less the time it waited, full, for the
// consumer to take bytes (a read-ahead part waits for its turn), rounded
// up; Bytes is the part's length. The rendezvous bounds what it believes by
// what it ordered: a relay cannot claim more bytes than the order's length.
type NeedDone struct {
	Need  uint64 `json:"need"`
	Bytes int64  `json:"bytes"`
	MS    int64  `json:"ms"`
}

// NeedFailed (rendezvous -> relay) says a Need cannot be met.
type NeedFailed struct {
	Need   uint64 `json:"need"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// NeedCancel (relay -> rendezvous) withdraws a Need.
type NeedCancel struct {
	Need uint64 `json:"need"`
}

// Held items (issue 11). An upload through one of the legacy protocols a
// relay accepts (STOR/DATA over WebSocket, socket.io chunks, resumable PUT,
// tus) becomes an item held by that relay: its bytes live in the relay's
// memory, and readers are sent to that relay (its holder) only. The relay
// and the rendezvous speak of it on the register stream:
//
//	relay                                rendezvous
//	hold {ref, protocol, name, size} -->  (auth webhook, operation upload)
//	                                 <--  held {ref, id, owner, urls, expires_ms}
//	                                      or error {ref, status, reason}
//	hold_done {id, size}             -->  every byte arrived (size final)
//	release {id, status, reason}     -->  the relay dropped the item
//
// and for clips (issue 12), which relays store on a store order:
//
//	hold {ref: clip, id, token}      -->  every byte of the clip is here
//	                                 <--  held {ref: clip, id, sealed}: its sealed metadata
//	hold {ref: clip, ..., sealed}    -->  kept (confirms; re-announced with it)
//	                                 <--  release {id, status, reason}: unpublished, drop it
//
// After the relay registers again (its link dropped, or the rendezvous
// restarted and forgot everything: soft state, issue 14), it re-announces
// each item it still holds with a hold carrying the id and owner secret
// from held; the rendezvous takes the item back without asking the webhook,
// and answers held again.

// Upload protocols a relay accepts, as named in Hold.Protocol and in
// GET /v1/upload?protocol= on the rendezvous.
const (
	UploadSTOR     = "stor"     // STOR/DATA over WebSocket, /v1/stor
	UploadSocketIO = "socketio" // acknowledged chunks over socket.io, /v1/socket.io/
	UploadPUT      = "put"      // resumable PUT with Content-Range, /v1/upload/{name}
	UploadTUS      = "tus"      // tus 1.0, /v1/files/
)

// UploadProtocols lists every upload protocol, in the order relays print
// and register them.
var UploadProtocols = []string{UploadSTOR, UploadSocketIO, UploadPUT, UploadTUS}

// Hold (relay -> rendezvous) asks for an item for an upload the relay
// receives and holds. Size is -1 while the uploader has not said it (tus
// Upload-Defer-Length). Auth holds the credentials the uploader presented
// (an Authorization header, the STOR AUTH login and password, tus
// metadata) and Meta the upload's own metadata, both only passed to the
// auth webhook. Client is the uploader's address as the relay saw it.
//
// A re-announce (see above) sets ID and Owner, Done when every byte is
// held, and ExpiresMS, the expiry it was told.
type Hold struct {
	Ref       string            `json:"ref"`
	ID        ItemID            `json:"id,omitzero"`
	Owner     string            `json:"owner,omitempty"`
	Protocol  string            `json:"protocol"` // one of the Upload* constants
	Name      string            `json:"name"`
	MIME      string            `json:"mime"`
	Size      int64             `json:"size"` // bytes, or -1 while unknown
	Auth      map[string]string `json:"auth,omitempty"`
	Meta      map[string]string `json:"meta,omitempty"`
	Client    string            `json:"client,omitempty"`
	Done      bool              `json:"done,omitempty"`
	ExpiresMS int64             `json:"expires_ms,omitempty"`
	// Check asks only whether the credentials in Auth may upload at all
	// (the STOR AUTH message, before the upload is described): the
	// rendezvous asks its auth webhook and answers Held with a zero ID,
	// or an ErrorMsg. No item is made.
	Check bool `json:"check,omitempty"`
	// Token (appended for clips, issue 12), with Protocol HoldClip, is the
	// store push token (Claims.Store) under which the relay received the
	// whole clip: the rendezvous checks it and marks the relay a holder of
	// the clip. A relay re-announces a clip it holds with it too.
	Token string `json:"token,omitempty"`
	// Sealed (appended, issue 12), with Protocol HoldClip, is the sealed
	// metadata (Publish.Meta, at most E2EMaxMeta bytes) of an encrypted
	// clip the relay holds, as the rendezvous handed it over (Held.Sealed):
	// a rendezvous that restarted and does not know the clip rebuilds it
	// from the token (id, size, encryption, name, type, expiry) and this.
	// The relay cannot read or forge it unnoticed: a reader opens it with
	// the key of the link and refuses metadata that does not authenticate.
	Sealed string `json:"sealed,omitempty"`
}

// HoldClip is the Hold.Protocol of a clip a relay stored whole after a
// push with a store token (issue 12).
const HoldClip = "clip"

// Held (rendezvous -> relay) gives the item of a Hold: its id, the owner
// secret that re-announces it, the URLs the uploader is told, and when it
// expires (Unix milliseconds): the relay drops it then. MaxSize, when not
// zero, is a lower size limit the auth webhook set; Meta is metadata the
// webhook attached.
type Held struct {
	Ref         string            `json:"ref"`
	ID          ItemID            `json:"id"`
	Owner       string            `json:"owner"`
	ShareURL    string            `json:"share_url"`
	DownloadURL string            `json:"download_url"`
	ExpiresMS   int64             `json:"expires_ms"`
	MaxSize     int64             `json:"max_size,omitempty"`
	Meta        map[string]string `json:"meta,omitempty"`
	// Sealed (appended, issue 12), in a Held with Ref HoldClip, hands the
	// holder of an encrypted clip its sealed metadata (Publish.Meta): sent
	// when the rendezvous marks the relay a holder and when the publisher
	// delivers or replaces it. The relay keeps it with the clip, in
	// memory, and re-announces it (Hold.Sealed).
	Sealed string `json:"sealed,omitempty"`
}

// HoldDone (relay -> rendezvous) says every byte of a held item arrived;
// Size is its final size.
type HoldDone struct {
	ID   ItemID `json:"id"`
	Size int64  `json:"size"`
}

// Release (relay -> rendezvous) says the relay dropped a held item: it
// expired, was evicted, was deleted by its uploader (tus termination), or
// its upload failed. Readers are told Reason.
//
// Release (rendezvous -> relay, appended for clips, issue 12) tells a
// holder of a clip to drop it at once: its owner unpublished it. The relay
// frees its memory (readers in progress finish) and answers later reads
// of it with 410 and Reason.
type Release struct {
	ID     ItemID `json:"id"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Read checks (issue 11). A relay serves a held upload on a URL of its
// own too, besides the item's download URL, which the rendezvous checks
// before it redirects: tus answers GET on the upload URL with the item
// (it cannot redirect: a Location does not pass the tunnel into relays
// behind NAT). When the rendezvous has an auth webhook
// (Registered.ReadChecks), the relay asks it first on the register stream:
//
//	relay                                       rendezvous
//	read_check {check, item, client, auth}  -->  (auth webhook, operation read)
//	                                        <--  read_verdict {check, status, reason}
//
// and serves the bytes only on StatusOK. StatusForbidden is the webhook's
// no; StatusUnavailable that it could not be asked (timeout, unreachable:
// fail closed). At most MaxReadChecks checks are pending on one register
// stream: a relay refuses the reads beyond them itself, and a rendezvous
// answers the checks beyond them StatusOverLimit. No verdict is cached.

// MaxReadChecks bounds the read checks pending on one register stream.
const MaxReadChecks = 256

// ReadCheck (relay -> rendezvous) asks whether a reader may read held item
// Item. Check is the relay's id of the request, echoed in the verdict.
// Client is the reader's address as the relay saw it; Auth the credentials
// it presented ("authorization": its Authorization header). The
// rendezvous answers only about items the relay holds.
type ReadCheck struct {
	Check  uint64            `json:"check"`
	Item   ItemID            `json:"item"`
	Client string            `json:"client,omitempty"`
	Auth   map[string]string `json:"auth,omitempty"`
}

// ReadVerdict (rendezvous -> relay) answers a ReadCheck: StatusOK allows,
// anything else denies with Reason, which the reader is told.
type ReadVerdict struct {
	Check  uint64 `json:"check"`
	Status Status `json:"status"`
	Reason string `json:"reason,omitempty"`
}

func (Hello) MessageType() string       { return "hello" }
func (Welcome) MessageType() string     { return "welcome" }
func (Publish) MessageType() string     { return "publish" }
func (Published) MessageType() string   { return "published" }
func (Unpublish) MessageType() string   { return "unpublish" }
func (Order) MessageType() string       { return "order" }
func (Cancel) MessageType() string      { return "cancel" }
func (OrderFailed) MessageType() string { return "order_failed" }
func (ErrorMsg) MessageType() string    { return "error" }
func (Register) MessageType() string    { return "register" }
func (Registered) MessageType() string  { return "registered" }
func (Heartbeat) MessageType() string   { return "heartbeat" }
func (Need) MessageType() string        { return "need" }
func (NeedFailed) MessageType() string  { return "need_failed" }
func (NeedCancel) MessageType() string  { return "need_cancel" }
func (NeedDone) MessageType() string    { return "need_done" }
func (Peers) MessageType() string       { return "peers" }
func (Hold) MessageType() string        { return "hold" }
func (Held) MessageType() string        { return "held" }
func (HoldDone) MessageType() string    { return "hold_done" }
func (Release) MessageType() string     { return "release" }
func (ReadCheck) MessageType() string   { return "read_check" }
func (ReadVerdict) MessageType() string { return "read_verdict" }

var messageTypes = map[string]func() Message{
	"hello":        func() Message { return new(Hello) },
	"welcome":      func() Message { return new(Welcome) },
	"publish":      func() Message { return new(Publish) },
	"published":    func() Message { return new(Published) },
	"unpublish":    func() Message { return new(Unpublish) },
	"order":        func() Message { return new(Order) },
	"cancel":       func() Message { return new(Cancel) },
	"order_failed": func() Message { return new(OrderFailed) },
	"error":        func() Message { return new(ErrorMsg) },
	"register":     func() Message { return new(Register) },
	"registered":   func() Message { return new(Registered) },
	"heartbeat":    func() Message { return new(Heartbeat) },
	"need":         func() Message { return new(Need) },
	"need_failed":  func() Message { return new(NeedFailed) },
	"need_cancel":  func() Message { return new(NeedCancel) },
	"need_done":    func() Message { return new(NeedDone) },
	"peers":        func() Message { return new(Peers) },
	"hold":         func() Message { return new(Hold) },
	"held":         func() Message { return new(Held) },
	"hold_done":    func() Message { return new(HoldDone) },
	"release":      func() Message { return new(Release) },
	"read_check":   func() Message { return new(ReadCheck) },
	"read_verdict": func() Message { return new(ReadVerdict) },
}

// EncodeMessage returns the JSON form of m, with its "type" field first.
func EncodeMessage(m Message) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %s message: %w", m.MessageType(), err)
	}
	typ, _ := json.Marshal(m.MessageType())
	out := make([]byte, 0, len(body)+len(typ)+10)
	out = append(out, `{"type":`...)
	out = append(out, typ...)
	if len(body) > 2 { // not "{}"
		out = append(out, ',')
	}
	return append(out, body[1:]...), nil
}

// DecodeMessage decodes one control message of at most max bytes. It
// returns a pointer to one of the message structs of this package. For a
// message of unknown type it returns a nil Message and an error wrapping
// ErrUnknownType that names the type.
func DecodeMessage(data []byte, max int) (Message, error) {
	if len(data) > max {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMessageTooLarge, len(data), max)
	}
	var env struct {
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(data, &env); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	if env.Type == nil {
		return nil, fmt.Errorf("%w: no type field", ErrBadMessage)
	}
	mk, ok := messageTypes[*env.Type]
	if !ok {
		return nil, fmt.Errorf("%w: %.40q", ErrUnknownType, *env.Type)
	}
	m := mk()
	if err := json.Unmarshal(data, m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadMessage, *env.Type, err)
	}
	return m, nil
}

// AppendMsgFrame appends m as a FrameMsg frame to b.
func AppendMsgFrame(b []byte, m Message) ([]byte, error) {
	body, err := EncodeMessage(m)
	if err != nil {
		return b, err
	}
	b = AppendHeader(b, FrameMsg, len(body))
	return append(b, body...), nil
}

// WriteMsg writes m to w as one FrameMsg frame.
func WriteMsg(w io.Writer, m Message) error {
	b, err := AppendMsgFrame(nil, m)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// ReadMsg reads frames from r until a FrameMsg of a known message type and
// returns its message. It skips frames of other types and messages of
// unknown types, so peers can evolve. max limits each frame.
func ReadMsg(r io.Reader, max int) (Message, error) {
	var buf []byte
	for {
		h, body, err := ReadFrame(r, buf, max)
		if err != nil {
			return nil, err
		}
		buf = body[:0]
		if h.Type != FrameMsg {
			continue
		}
		m, err := DecodeMessage(body, max)
		if errors.Is(err, ErrUnknownType) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return m, nil
	}
}
