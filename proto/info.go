package proto

// Info is the JSON document served by the rendezvous at GET /v1/info. A
// relay needs nothing else to join: it connects to one of Addrs, checks
// that the peer is PeerID, and verifies tokens with TokenKey.
type Info struct {
	Version   int      `json:"version"`
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`     // libp2p multiaddrs ending in /p2p/PeerID
	TokenKey  string   `json:"token_key"` // Ed25519 public key, base64url without padding
	PublicURL string   `json:"public_url"`
}
