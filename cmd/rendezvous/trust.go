package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/meshup/meshup/cmd/internal/cliconf"
	"github.com/meshup/meshup/cmd/internal/debugsrv"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/rendezvous"
)

// Environment variables of the trust settings. Secrets come from the
// environment rather than flags, which other local users can read in ps.
const (
	// envAdmissionSecret holds the admission secret (base64url Ed25519
	// seed, from --gen-admission-secret): with it the rendezvous verifies
	// admission tokens and --issue-relay-token mints them.
	envAdmissionSecret = "MESHUP_ADMISSION_SECRET"
	// envStatusToken is the bearer token of the full GET /v1/status.
	envStatusToken = "MESHUP_STATUS_TOKEN"
)

// trustOptions are the flags of relay admission, the operator's tools
// and the debug listener.
type trustOptions struct {
	admissionKey  string // base64url public key
	operators     string
	debugAddr     string
	genSecret     bool
	issueToken    bool
	tokenRelay    string
	tokenName     string
	tokenTTL      time.Duration
	statusTokenFl string
}

func (t *trustOptions) register(fs *flag.FlagSet, c *rendezvous.Config) {
	fs.StringVar(&c.Admission, "admission", rendezvous.AdmissionOpen, "relay admission: open (anyone, as class volunteer; an admission token or --operator-relays make class operator) or operator (operator relays only)")
	fs.StringVar(&t.admissionKey, "admission-key", "", "admission public `key` (base64url) that verifies relays' admission tokens; default: derived from $"+envAdmissionSecret)
	fs.StringVar(&t.operators, "operator-relays", "", "comma-separated relay peer `ids` admitted as class operator without a token")
	fs.BoolVar(&c.TrustAllRelays, "trust-all-relays", false, "count every admitted relay as class operator and believe its URL unchallenged (a lab or a LAN of the operator's own relays)")
	fs.DurationVar(&c.ClockSkew, "clock-skew", proto.DefaultClockSkew, "refuse relays whose clock is further than this from the rendezvous's")
	fs.IntVar(&c.MaxRelays, "max-relays", rendezvous.DefaultMaxRelays, "limit on registered relays")
	fs.IntVar(&c.MaxRelaysPerIP, "max-relays-per-ip", rendezvous.DefaultMaxRelaysPerIP, "limit on registered relays per source IP address")
	fs.BoolVar(&c.AllowPrivateAddrs, "allow-private-addrs", false, "accept and dial private, loopback, link-local, CGNAT and ULA addresses (a LAN or a lab)")
	fs.DurationVar(&c.VerifyInterval, "verify-interval", rendezvous.DefaultVerifyInterval, "re-check a public relay's URL with a signed challenge this often")
	fs.DurationVar(&c.VerifyTimeout, "verify-timeout", rendezvous.DefaultVerifyTimeout, "bound on one URL challenge fetch")
	fs.StringVar(&t.statusTokenFl, "status-token", "", "bearer `token` that shows the full /v1/status (volunteers' addresses); default $"+envStatusToken)
	fs.Float64Var(&c.NeedRate, "need-rate", rendezvous.DefaultNeedRate, "needs per second one relay may send")
	fs.IntVar(&c.NeedBurst, "need-burst", rendezvous.DefaultNeedBurst, "burst of needs one relay may send")
	fs.Float64Var(&c.ItemNeedRate, "item-need-rate", rendezvous.DefaultItemNeedRate, "needs per second for one item, all relays")
	fs.IntVar(&c.ItemNeedBurst, "item-need-burst", rendezvous.DefaultItemNeedBurst, "burst of needs for one item")
	fs.DurationVar(&c.NeedTokenGrace, "need-token-grace", rendezvous.DefaultNeedTokenGrace, "accept needs this long after the consumer's read token expired")
	fs.DurationVar(&c.DirectoryInterval, "directory-interval", rendezvous.DefaultDirectoryInterval, "least time between two directory updates to a relay (changes are coalesced)")
	fs.StringVar(&t.debugAddr, "debug-addr", debugsrv.DefaultAddr, "listen `address` of /metrics and /debug/pprof; off disables")
	fs.BoolVar(&t.genSecret, "gen-admission-secret", false, "print a new admission secret (for $"+envAdmissionSecret+") and its public key, and exit")
	fs.BoolVar(&t.issueToken, "issue-relay-token", false, "print an admission token signed with $"+envAdmissionSecret+" and exit; see --token-*")
	fs.StringVar(&t.tokenRelay, "token-relay", "", "with --issue-relay-token: the relay peer `id` the token admits (default: whoever holds it)")
	fs.StringVar(&t.tokenName, "token-name", "", "with --issue-relay-token: a `name` for the relay in logs and status")
	fs.DurationVar(&t.tokenTTL, "token-ttl", 365*24*time.Hour, "with --issue-relay-token: lifetime of the token; 0 never expires")
}

// admissionSecret decodes the admission secret in getenv, if set.
func admissionSecret(getenv func(string) string) (ed25519.PrivateKey, error) {
	s := strings.TrimSpace(getenv(envAdmissionSecret))
	if s == "" {
		return nil, nil
	}
	seed, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("$%s is not a base64url Ed25519 seed of %d bytes", envAdmissionSecret, ed25519.SeedSize)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// apply completes c from the trust flags and the environment.
func (t *trustOptions) apply(c *rendezvous.Config, getenv func(string) string) error {
	c.OperatorRelays = cliconf.SplitList(t.operators)
	c.StatusToken = t.statusTokenFl
	if c.StatusToken == "" {
		c.StatusToken = getenv(envStatusToken)
	}
	if t.admissionKey != "" {
		k, err := base64.RawURLEncoding.DecodeString(t.admissionKey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return errors.New("--admission-key is not a base64url Ed25519 public key")
		}
		c.AdmissionKey = k
		return nil
	}
	key, err := admissionSecret(getenv)
	if err != nil {
		return err
	}
	if key != nil {
		c.AdmissionKey = key.Public().(ed25519.PublicKey)
	}
	return nil
}

// tool runs --gen-admission-secret or --issue-relay-token, writing to w.
// It reports whether one ran.
func (t *trustOptions) tool(w io.Writer, getenv func(string) string, now time.Time) (bool, error) {
	switch {
	case t.genSecret:
		seed := make([]byte, ed25519.SeedSize)
		rand.Read(seed)
		pub := ed25519.NewKeyFromSeed(seed).Public().(ed25519.PublicKey)
		fmt.Fprintf(w, "%s=%s\n", envAdmissionSecret, base64.RawURLEncoding.EncodeToString(seed))
		fmt.Fprintf(w, "# public key (rendezvous --admission-key): %s\n", base64.RawURLEncoding.EncodeToString(pub))
		return true, nil
	case t.issueToken:
		key, err := admissionSecret(getenv)
		if err != nil {
			return true, err
		}
		if key == nil {
			return true, fmt.Errorf("--issue-relay-token needs $%s (see --gen-admission-secret)", envAdmissionSecret)
		}
		c := proto.AdmissionClaims{Relay: t.tokenRelay, Name: t.tokenName}
		if t.tokenTTL > 0 {
			c.Exp = now.Add(t.tokenTTL).Unix()
		}
		fmt.Fprintln(w, proto.SignAdmission(key, c))
		return true, nil
	}
	return false, nil
}
