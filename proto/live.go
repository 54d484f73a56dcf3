package proto

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf16"
)

// Live channels (issue 12): an item of unknown length that a publisher
// keeps writing, fanned out by relays to subscribers who join at the live
// edge. Nothing is stored beyond a small ring of recent chunks per relay.
//
// Protocol flow:
//
//	publisher                 entry (source) relay            second relay        subscriber
//	  | POST rdv /v1/live/ID     |                                |                   |
//	  |   -> {push_url}          |                                |                   |
//	  | PUT push_url (chunked)   |                                |                   |
//	  |   Authorization: Bearer SECRET                            |                   |
//	  |------------------------->| "live" {channel, source} -> rendezvous              |
//	  |                          |                                |   GET rdv /v1/live/ID
//	  |                          |                                |<-- 307 ?t=TOKEN (fwd = source)
//	  |                          |<== /meshup/live/1: LiveSub ====|                   |
//	  |                          |== LiveData ... LiveEnd =======>|== chunked body ==>|
//
// Channel ids and secrets. A channel is named by a secret string S that
// only those allowed to write into it know; its id, which readers use, is
//
//	id = SHA-256("meshup live channel" || S)[:16]
//
// (LiveID), so a relay checks a publisher's right to write with no state
// and no round trip: it recomputes the id. `meshup live` draws S as 32
// random bytes in base64url (NewLiveSecret); the id is then as
// unguessable as an item id. An EvSocket client only knows a URL, so in
// /v1/evsocket/{name} the name is S: the name is the capability to send
// and receive, like a room name in EvSocket, and must be at least
// MinLiveSecret characters (128 bits of base64url) from the URL-safe
// alphabet. The same channel is readable over HTTP at /v1/live/{id}.
//
// Live channels are plaintext at relays: like plaintext items they are
// carried by operator relays only, unless the publisher allows volunteers.
//
// On the mesh (ProtoLive) a relay that wants a channel opens a stream to
// the relay carrying it, writes one FrameLiveSub, and reads FrameLiveData,
// FrameLiveEvent and FrameLiveBinary frames until FrameLiveEnd or the
// stream ends. Frames use the 5-byte header of frame.go.

// ProtoLive is the libp2p protocol of live channel streams between relays.
const ProtoLive = "/meshup/live/1"

// Live frame types, appended to the catalogue of frame.go.
const (
	// FrameLiveSub (downstream -> upstream relay) subscribes to a channel.
	//
	//	channel  [16]byte  channel id
	//	tokenLen uint16
	//	token    [tokenLen]byte  read token of the consumer that asked (may be empty)
	FrameLiveSub FrameType = 0x20

	// FrameLiveData (upstream -> downstream) carries channel bytes, in
	// order.
	//
	//	data     [length]byte
	FrameLiveData FrameType = 0x21

	// FrameLiveEvent (upstream -> downstream) carries one EvSocket text
	// event, the JSON object {"event": NAME, "data": ...} as the sender
	// wrote it.
	//
	//	json     [length]byte
	FrameLiveEvent FrameType = 0x22

	// FrameLiveEnd (upstream -> downstream) ends the channel. StatusOK is
	// the publisher's clean end; any other status says why the channel,
	// or this subscription, was cut.
	//
	//	status   uint16  (Status)
	//	reason   [rest]byte  UTF-8, at most MaxReason bytes
	FrameLiveEnd FrameType = 0x23

	// FrameLiveBinary (upstream -> downstream) carries one EvSocket binary
	// message other than "streaming", as the sender wrote it (EvBinary
	// layout).
	//
	//	message  [length]byte
	FrameLiveBinary FrameType = 0x24

	// FrameLiveRecord (upstream -> downstream) carries one record of a
	// sealed channel (livee2e.go), whole, its len field included, so that
	// record boundaries and the head survive the hop. An empty one, sent
	// first, tells the downstream relay that it is subscribed and that the
	// channel is sealed (a plaintext channel's first frame is an empty
	// FrameLiveData).
	//
	//	record   [length]byte
	FrameLiveRecord FrameType = 0x25
)

// Limits of live channels on the wire.
const (
	// MinLiveSecret is the shortest channel secret (and EvSocket channel
	// name): 22 base64url characters carry 128 bits.
	MinLiveSecret = 22
	// MaxLiveSecret is the longest channel secret.
	MaxLiveSecret = 128
	// MaxLiveEvent bounds an EvSocket text event carried by a channel.
	MaxLiveEvent = 64 << 10
	// MaxLiveSubLen is the longest LiveSub body.
	MaxLiveSubLen = 16 + 2 + MaxToken
	// MaxLiveEndLen is the longest LiveEnd body.
	MaxLiveEndLen = 2 + MaxReason
)

// Errors of live channels.
var (
	// ErrBadLiveSecret means a channel secret (or EvSocket channel name)
	// is too short, too long or has characters outside base64url and
	// ".~".
	ErrBadLiveSecret = errors.New("proto: bad live channel secret")
	// ErrBadEvSocket means an EvSocket message does not have the layout
	// of the evsocket-client package.
	ErrBadEvSocket = errors.New("proto: malformed evsocket message")
)

const liveIDLabel = "meshup live channel"

// NewLiveSecret returns a fresh channel secret and its channel id.
func NewLiveSecret() (ItemID, string) {
	var b [32]byte
	rand.Read(b[:]) // never fails; see crypto/rand.Read
	s := base64.RawURLEncoding.EncodeToString(b[:])
	id, _ := LiveID(s)
	return id, s
}

// LiveID returns the channel id of secret, SHA-256("meshup live channel"
// || secret)[:16], or ErrBadLiveSecret.
func LiveID(secret string) (ItemID, error) {
	var id ItemID
	if len(secret) < MinLiveSecret || len(secret) > MaxLiveSecret {
		return id, ErrBadLiveSecret
	}
	for i := 0; i < len(secret); i++ {
		c := secret[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~') {
			return id, ErrBadLiveSecret
		}
	}
	h := sha256.New()
	h.Write([]byte(liveIDLabel))
	h.Write([]byte(secret))
	copy(id[:], h.Sum(nil))
	return id, nil
}

// LiveSub is the body of FrameLiveSub.
type LiveSub struct {
	Channel ItemID
	Token   string
}

// AppendFrame appends s as a whole frame to b.
func (s LiveSub) AppendFrame(b []byte) []byte {
	b = AppendHeader(b, FrameLiveSub, 16+2+len(s.Token))
	b = append(b, s.Channel[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.Token)))
	return append(b, s.Token...)
}

// DecodeLiveSub decodes a FrameLiveSub body.
func DecodeLiveSub(body []byte) (LiveSub, error) {
	var s LiveSub
	if len(body) < 18 || len(body) > MaxLiveSubLen {
		return s, fmt.Errorf("%w: LiveSub of %d bytes", ErrMalformed, len(body))
	}
	copy(s.Channel[:], body)
	n := int(binary.BigEndian.Uint16(body[16:]))
	if n != len(body)-18 {
		return s, fmt.Errorf("%w: LiveSub token length %d, %d bytes left", ErrMalformed, n, len(body)-18)
	}
	s.Token = string(body[18:])
	return s, nil
}

// LiveEnd is the body of FrameLiveEnd.
type LiveEnd struct {
	Status Status
	Reason string
}

// AppendFrame appends e as a whole frame to b. A reason over MaxReason
// bytes is cut at a rune boundary.
func (e LiveEnd) AppendFrame(b []byte) []byte {
	r := TruncateReason(e.Reason)
	b = AppendHeader(b, FrameLiveEnd, 2+len(r))
	b = binary.BigEndian.AppendUint16(b, uint16(e.Status))
	return append(b, r...)
}

// DecodeLiveEnd decodes a FrameLiveEnd body.
func DecodeLiveEnd(body []byte) (LiveEnd, error) {
	if len(body) < 2 || len(body) > MaxLiveEndLen {
		return LiveEnd{}, fmt.Errorf("%w: LiveEnd of %d bytes", ErrMalformed, len(body))
	}
	return LiveEnd{Status: Status(binary.BigEndian.Uint16(body)), Reason: string(body[2:])}, nil
}

// AppendLiveFrame appends a frame of type t (FrameLiveData, FrameLiveEvent
// or FrameLiveBinary) with body p to b.
func AppendLiveFrame(b []byte, t FrameType, p []byte) []byte {
	return append(AppendHeader(b, t, len(p)), p...)
}

// LiveAnnounce (relay -> rendezvous, on the register stream) says that the
// relay carries a channel: as its source (a publisher or EvSocket members
// write into it there) or as a downstream copy. End withdraws it. A relay
// announces every channel it carries again after each registration, so
// that a restarted rendezvous learns them back (soft state).
type LiveAnnounce struct {
	Channel ItemID `json:"channel"`
	Source  bool   `json:"source,omitempty"`
	// Upstream is the relay a downstream copy is fed from.
	Upstream string `json:"upstream,omitempty"`
	// Volunteers lets volunteer relays carry this plaintext channel.
	Volunteers bool `json:"volunteers,omitempty"`
	End        bool `json:"end,omitempty"`
	// Enc is LiveEncVersion for a sealed channel (livee2e.go), which
	// volunteer relays may carry.
	Enc string `json:"enc,omitempty"`
}

// MessageType implements Message.
func (LiveAnnounce) MessageType() string { return "live" }

func init() {
	messageTypes["live"] = func() Message { return new(LiveAnnounce) }
}

// LiveEntry is the body of the rendezvous's answer to POST /v1/live/{id}:
// where the publisher pushes the channel.
type LiveEntry struct {
	Channel ItemID `json:"channel"`
	Relay   string `json:"relay"`    // the source relay's peer id
	PushURL string `json:"push_url"` // http(s) URL to PUT the channel to, with the secret as bearer token
	URL     string `json:"url"`      // the channel's link for readers (GET, chunked)
	// Share is the page of a sealed channel, RDV/l/ID, to which the
	// publisher appends #k=KEY (livee2e.go). Empty for plaintext channels.
	Share string `json:"share,omitempty"`
}

// EvSocket (the npm package evsocket-client, used by binary-streaming)
// speaks over one WebSocket:
//
//   - text messages: the JSON object {"event": NAME, "data": DATA};
//   - binary messages: one byte n, then n UTF-16LE code units of the JSON
//     object {"event": NAME}, then the payload.
//
// The server greets each connection with the text event EvSync carrying
// {"id": ..., "hasAuth": false}; the client is open only once it has it.
// Events whose name begins with "__evsock__::" are the library's own and
// are not relayed.
const (
	EvSync      = "__evsock__::sync"
	EvPrefix    = "__evsock__::"
	EvStreaming = "streaming"
	EvStart     = "start"
	EvComplete  = "complete"
)

// EvMessage is an EvSocket text message.
type EvMessage struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data,omitempty"`
}

// EvSyncData is the data of the EvSync greeting.
type EvSyncData struct {
	ID      string `json:"id"`
	HasAuth bool   `json:"hasAuth"`
}

// DecodeEvText decodes an EvSocket text message of at most MaxLiveEvent
// bytes.
func DecodeEvText(b []byte) (EvMessage, error) {
	var m EvMessage
	if len(b) > MaxLiveEvent {
		return m, fmt.Errorf("%w: text message of %d bytes", ErrBadEvSocket, len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("%w: %v", ErrBadEvSocket, err)
	}
	return m, nil
}

// AppendEvBinary appends an EvSocket binary message for event to b: the
// metadata {"event":NAME} as JSON, its length in UTF-16 code units in one
// byte, the code units little endian, then payload. An event name whose
// metadata is over 255 code units cannot be sent and yields ErrBadEvSocket.
func AppendEvBinary(b []byte, event string, payload []byte) ([]byte, error) {
	meta, err := json.Marshal(struct {
		Event string `json:"event"`
	}{event})
	if err != nil {
		return b, err
	}
	units := utf16.Encode([]rune(string(meta)))
	if len(units) > 255 {
		return b, fmt.Errorf("%w: event name too long", ErrBadEvSocket)
	}
	b = append(b, byte(len(units)))
	for _, u := range units {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return append(b, payload...), nil
}

// DecodeEvBinary splits an EvSocket binary message into its event name and
// payload (a sub-slice of b).
func DecodeEvBinary(b []byte) (event string, payload []byte, err error) {
	if len(b) < 1 {
		return "", nil, fmt.Errorf("%w: empty binary message", ErrBadEvSocket)
	}
	n := int(b[0])
	if len(b) < 1+2*n {
		return "", nil, fmt.Errorf("%w: metadata of %d units in %d bytes", ErrBadEvSocket, n, len(b))
	}
	units := make([]uint16, n)
	for i := range units {
		units[i] = binary.LittleEndian.Uint16(b[1+2*i:])
	}
	var meta struct {
		Event string `json:"event"`
	}
	if err := json.Unmarshal([]byte(string(utf16.Decode(units))), &meta); err != nil {
		return "", nil, fmt.Errorf("%w: metadata: %v", ErrBadEvSocket, err)
	}
	return meta.Event, b[1+2*n:], nil
}
