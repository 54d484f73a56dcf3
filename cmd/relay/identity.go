package main

import (
	"crypto/ed25519"
	"log/slog"

	"github.com/meshup/meshup/cmd/internal/keyfile"
	"github.com/meshup/meshup/mesh"
)

// p2pIdentityLabel names the libp2p identity derived from the key file.
const p2pIdentityLabel = "relay libp2p identity"

// identity loads or creates the key file at path and returns the libp2p
// identity it gives, and logs which. An empty path returns nil: a new
// identity in memory, and a new peer id, at every start.
func identity(path string, log *slog.Logger) (ed25519.PrivateKey, error) {
	if path == "" {
		log.Info("identity is ephemeral (no --identity): the peer id changes at every start")
		return nil, nil
	}
	key, created, err := keyfile.Load(path)
	if err != nil {
		return nil, err
	}
	p2p, err := keyfile.Derive(key, p2pIdentityLabel)
	if err != nil {
		return nil, err
	}
	id, err := mesh.PeerID(p2p)
	if err != nil {
		return nil, err
	}
	from := "loaded"
	if created {
		from = "created"
	}
	log.Info("identity from key file", "key_file", path, "key_file_is", from, "peer_id", id)
	return p2p, nil
}
