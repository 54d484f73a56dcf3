package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"log/slog"

	"github.com/meshup/meshup/cmd/internal/keyfile"
	"github.com/meshup/meshup/mesh"
)

// p2pIdentityLabel names the libp2p identity derived from the key file,
// whose own key signs tokens.
const p2pIdentityLabel = "rendezvous libp2p identity"

// identity loads or creates the key file at path and returns the token
// signing key and the libp2p identity it gives, and logs which. An empty
// path returns nil keys: both are generated in memory and change at every
// start.
func identity(path string, log *slog.Logger) (signing, p2p ed25519.PrivateKey, err error) {
	if path == "" {
		log.Info("identity is ephemeral (no --identity): a restart changes the token key and peer id, and ends reads in flight early")
		return nil, nil, nil
	}
	signing, created, err := keyfile.Load(path)
	if err != nil {
		return nil, nil, err
	}
	if p2p, err = keyfile.Derive(signing, p2pIdentityLabel); err != nil {
		return nil, nil, err
	}
	id, err := mesh.PeerID(p2p)
	if err != nil {
		return nil, nil, err
	}
	from := "loaded"
	if created {
		from = "created"
	}
	log.Info("identity from key file", "key_file", path, "key_file_is", from,
		"token_key", base64.RawURLEncoding.EncodeToString(signing.Public().(ed25519.PublicKey)), "peer_id", id)
	return signing, p2p, nil
}
