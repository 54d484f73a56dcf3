package proto

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestAdmissionToken(t *testing.T) {
	seed := make([]byte, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed)
	pub := key.Public().(ed25519.PublicKey)
	other := ed25519.NewKeyFromSeed(append(seed[:31:31], 1))
	now := time.Unix(1_700_000_000, 0)

	golden := SignAdmission(key, AdmissionClaims{Relay: "12D3KooWA", Name: "r1", Exp: now.Unix() + 60})
	if want := "eyJyZWxheSI6IjEyRDNLb29XQSIsIm5hbWUiOiJyMSIsImV4cCI6MTcwMDAwMDA2MH0."; !strings.HasPrefix(golden, want) {
		t.Errorf("golden: got %s, want prefix %s", golden, want)
	}
	// An access token's signature over the same claims must not pass.
	b64, _, _ := strings.Cut(golden, ".")
	crossDomain := b64 + "." + strings.SplitN(SignToken(key, Claims{}), ".", 2)[1]

	tests := []struct {
		name  string
		tok   string
		relay string
		now   time.Time
		want  error
	}{
		{"valid", golden, "12D3KooWA", now, nil},
		{"any relay", SignAdmission(key, AdmissionClaims{}), "12D3KooWB", now, nil},
		{"other relay", golden, "12D3KooWB", now, ErrAdmissionRelay},
		{"expired", golden, "12D3KooWA", now.Add(time.Minute), ErrAdmissionExpired},
		{"other key", SignAdmission(other, AdmissionClaims{}), "12D3KooWA", now, ErrAdmissionSignature},
		{"cross domain", crossDomain, "12D3KooWA", now, ErrAdmissionSignature},
		{"no dot", "abc", "x", now, ErrAdmissionMalformed},
		{"empty", "", "x", now, ErrAdmissionMalformed},
		{"too long", strings.Repeat("a", MaxAdmissionLen+1), "x", now, ErrAdmissionMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAdmission(pub, tt.tok, tt.relay, tt.now)
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

// TestDirectoryBounds: one directory entry at every bound, each byte
// escaped, encodes within MaxPeerEntry, two fit in MaxDirectoryMessage,
// and a relay's read limit takes the largest directory message.
func TestDirectoryBounds(t *testing.T) {
	worst := strings.Repeat("\x01", MaxPeerAddrLen)
	p := PeerInfo{ID: strings.Repeat("\x01", MaxPeerIDLen), NAT: strings.Repeat("\x01", 16)}
	for range MaxPeerAddrs {
		p.Addrs = append(p.Addrs, worst)
	}
	one, err := EncodeMessage(Peers{Peers: []PeerInfo{p}})
	if err != nil {
		t.Fatal(err)
	}
	if len(one) > MaxPeerEntry+64 {
		t.Errorf("worst entry: got %d bytes, want <= %d", len(one), MaxPeerEntry+64)
	}
	two, _ := EncodeMessage(Peers{Peers: []PeerInfo{p, p}, Delta: true, Removed: []string{}})
	if len(two) > MaxDirectoryMessage+64 {
		t.Errorf("two worst entries: got %d bytes, want <= %d", len(two), MaxDirectoryMessage+64)
	}
	if RelayReadLimit < MaxDirectoryMessage+64 || RelayReadLimit < DefaultMaxMessage {
		t.Errorf("RelayReadLimit %d is below a directory message", RelayReadLimit)
	}
}
