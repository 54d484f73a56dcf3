// Package proto holds meshup's wire formats and nothing else: the binary
// frames of the data push protocol and of mesh streams, the JSON messages of
// the control channels, access tokens and HTTP Range headers. It opens no
// sockets and starts no goroutines; every decoder checks declared lengths
// against a maximum before allocating and never panics on peer input (the
// fuzz targets in this package keep that true).
//
// # Protocol flow
//
// A relay joins the mesh:
//
//	relay  -> rendezvous  HTTP GET /v1/info             (peer id, addrs, token key)
//	relay  -> rendezvous  libp2p stream /meshup/register/1, FrameMsg frames:
//	           register   ->
//	                      <- registered
//	           heartbeat  ->                            (every HeartbeatInterval)
//
// A publisher publishes an item over the control WebSocket (/v1/control,
// subprotocol meshup.v1, one JSON text message per control message):
//
//	client -> rendezvous  publish   ->
//	                      <- published                  (id, share and download URLs)
//
// A consumer reads bytes:
//
//	consumer   -> rendezvous  GET /v1/items/{id}        <- 307 to exit relay, read token
//	consumer   -> relay       GET /v1/items/{id}?t=...  (Range)
//	relay      -> rendezvous  need {need, item, off, len}        (register stream)
//	rendezvous -> publisher   order {order, relay, push_url, push token}
//	publisher  -> relay       WebSocket /v1/push, subprotocol meshup.v1, binary frames:
//	           PartBegin{stream, item, off, len, token} ->
//	                                 <- Ack{stream, acked=0, limit=window}
//	           PartData{stream, bytes} ... (never past limit)
//	                                 <- Ack{stream, acked, limit}   (as the consumer reads)
//	                                 <- PartEnd{stream, StatusOK}   (every byte delivered)
//	relay      -> consumer    bytes as they arrive (cut-through)
//
// When the entry relay the publisher pushes to is not the exit relay the
// consumer reads from, the push token names the exit relay (Claims.Fwd) and
// the entry relay forwards the part over the mesh:
//
//	entry relay -> exit relay  libp2p stream /meshup/part/2:
//	           PartBegin{stream=0, item, off, len, push token} ->
//	                                 <- Ack{stream=0, acked=0, limit=window}
//	           raw part bytes (never past limit)            ->
//	                                 <- Ack{stream=0, acked, limit}   (as the consumer reads)
//	           half-close after the last byte               ->
//	                                 <- PartEnd{stream=0, status}
//
// The exit's credit keeps the part's bytes in its window, which its budget
// counts, rather than in the stream's receive buffer, which it does not.
//
// Relays behind NAT, which browsers and HTTP clients cannot reach, are
// reached through the rendezvous: it carries HTTP/1.1 (the relay's whole
// API, WebSocket upgrades included) over libp2p streams /meshup/http/1 on
// the relay's register connection.
//
// Either side may end a part early with PartEnd and a non-OK status; the
// other side forgets the stream. A connection-level error closes the
// WebSocket with close code CloseCodeBase+status and a short reason.
package proto

// Version is the protocol version spoken by this package, negotiated as the
// WebSocket subprotocol Subprotocol and in the libp2p protocol ids below.
//
// Changelog:
//
//	1: control messages, push frames PartBegin/PartData/PartEnd/Ack,
//	   register stream, Ed25519 tokens.
//	   Appended since: optional signed relay record in register and
//	   heartbeat (the cluster's relay directory); Publish enc, meta and
//	   volunteers, and the end-to-end encryption format e2e1 (e2e.go).
//	   /meshup/part/2 replaced /meshup/part/1: the exit grants the entry
//	   credit with Ack frames (part/1 relied on the stream's own window).
const Version = 1

// Protocol identifiers.
const (
	// Subprotocol is the WebSocket subprotocol of the control channel and of
	// the data push channel.
	Subprotocol = "meshup.v1"
	// ProtoRegister is the libp2p protocol a relay uses to register with the
	// rendezvous and keep its control link (FrameMsg frames).
	ProtoRegister = "/meshup/register/1"
	// ProtoPart is the libp2p protocol for relay-to-relay part streams.
	ProtoPart = "/meshup/part/2"
	// ProtoHTTP is the libp2p protocol over which the rendezvous tunnels
	// HTTP/1.1 to relays that are not directly reachable.
	ProtoHTTP = "/meshup/http/1"
)
