package mesh

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrBadPeerSignature means a signature does not verify with the key a
// peer id embeds.
var ErrBadPeerSignature = errors.New("mesh: peer signature invalid")

// Sign signs data with the node's libp2p identity key. Callers put a
// domain string of their own at the start of data, so that a signature
// made for one purpose never verifies for another.
func (n *Node) Sign(data []byte) ([]byte, error) {
	key := n.host.Peerstore().PrivKey(n.host.ID())
	if key == nil {
		return nil, errors.New("mesh: sign: node has no private key")
	}
	sig, err := key.Sign(data)
	if err != nil {
		return nil, fmt.Errorf("mesh: sign: %w", err)
	}
	return sig, nil
}

// VerifyPeer checks that sig is peerID's signature of data, with the
// public key the peer id embeds (Ed25519 ids do).
func VerifyPeer(peerID string, data, sig []byte) error {
	id, err := peer.Decode(peerID)
	if err != nil {
		return fmt.Errorf("%w: peer id: %v", ErrBadPeerSignature, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		return fmt.Errorf("%w: peer id embeds no public key", ErrBadPeerSignature)
	}
	ok, err := pub.Verify(data, sig)
	if err != nil || !ok {
		return ErrBadPeerSignature
	}
	return nil
}
