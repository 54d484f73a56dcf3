package proto

// Info is the JSON document served by the rendezvous at GET /v1/info. A
// relay needs nothing else to join: it connects to one of Addrs, checks
// that the peer is PeerID, and verifies tokens with TokenKey. It asks the
// STUN ports for its server-reflexive address and NAT type.
//
// Fields are only ever appended.
type Info struct {
	Version   int      `json:"version"`
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`     // libp2p multiaddrs ending in /p2p/PeerID
	TokenKey  string   `json:"token_key"` // Ed25519 public key, base64url without padding
	PublicURL string   `json:"public_url"`
	// STUN lists the rendezvous's STUN servers as "host:port": the primary
	// port first, then the alternate one, if any. Empty when STUN is off.
	// The host is the address a relay should use; when it cannot be
	// resolved, a relay may use the host of the URL it fetched Info from
	// with the same port.
	STUN []string `json:"stun"`
}
