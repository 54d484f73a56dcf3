// Package clusterflag holds the cluster (memberlist) flags that
// cmd/rendezvous and cmd/relay share: --gossip, --gossip-advertise,
// --join and --cluster-key, with the key also read from the environment
// so that it does not show in ps.
package clusterflag

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/meshup/meshup/mesh"
)

// EnvKey is the environment variable holding the cluster key, base64.
const EnvKey = "MESHUP_CLUSTER_KEY"

// Flags are the cluster flags.
type Flags struct {
	Gossip    string // memberlist bind ip:port; empty: cluster off
	Advertise string // ip:port others reach this member at
	Join      string // comma-separated ip:port of members
	Key       string // base64; overrides EnvKey
}

// Register defines the flags on fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Gossip, "gossip", "", "cluster gossip (memberlist) bind `ip:port`, UDP and TCP, e.g. 0.0.0.0:7946; empty leaves the cluster off")
	fs.StringVar(&f.Advertise, "gossip-advertise", "", "`ip:port` other members reach this one at (default: the bound address, or a private address of the host when bound to 0.0.0.0)")
	fs.StringVar(&f.Join, "join", "", "comma-separated gossip `addresses` (ip:port) of cluster members to join; retried while alone")
	fs.StringVar(&f.Key, "cluster-key", "", "base64 cluster `key` of 16, 24 or 32 bytes that encrypts all gossip; prefer the environment variable "+EnvKey+", which ps does not show")
}

// Config returns the cluster config the flags describe, named after node
// (its peer id), and on = false when --gossip is empty. getenv reads the
// environment (os.Getenv). The caller sets the Logger.
func (f *Flags) Config(node *mesh.Node, getenv func(string) string) (cfg mesh.ClusterConfig, on bool, err error) {
	if f.Gossip == "" {
		if f.Join != "" || f.Advertise != "" || f.Key != "" {
			return cfg, false, errors.New("--join, --gossip-advertise and --cluster-key need --gossip")
		}
		return cfg, false, nil
	}
	src, enc := "--cluster-key", f.Key
	if enc == "" {
		src, enc = EnvKey, getenv(EnvKey)
	}
	if enc == "" {
		return cfg, false, fmt.Errorf("--gossip needs a cluster key: set %s (or --cluster-key) to base64 of 32 random bytes, e.g. from `head -c 32 /dev/urandom | base64`", EnvKey)
	}
	key, err := DecodeKey(enc)
	if err != nil {
		return cfg, false, fmt.Errorf("%s: %w", src, err)
	}
	cfg = mesh.ClusterConfig{
		Node:          node,
		BindAddr:      f.Gossip,
		AdvertiseAddr: f.Advertise,
		Key:           key,
	}
	for _, j := range strings.Split(f.Join, ",") {
		if j = strings.TrimSpace(j); j != "" {
			cfg.Join = append(cfg.Join, j)
		}
	}
	check := cfg
	if check.Node == nil {
		check.Name = "check"
	}
	if err := check.Validate(); err != nil {
		return cfg, false, err
	}
	return cfg, true, nil
}

// DecodeKey decodes a base64 key, standard or URL alphabet, padded or not,
// and checks its length.
func DecodeKey(s string) ([]byte, error) {
	s = strings.TrimSpace(s)
	var key []byte
	var err error
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err = enc.DecodeString(s); err == nil {
			break
		}
	}
	if err != nil {
		return nil, errors.New("cluster key is not base64")
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("cluster key has %d bytes, want 16, 24 or 32", len(key))
}
