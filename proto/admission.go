package proto

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
)

// An admission token is the operator's credential for a relay: a relay that
// presents one in Register.Admission is of class operator (trusted with
// plaintext items). The operator mints it with the admission secret
// (`rendezvous --issue-relay-token`); the rendezvous verifies it with the
// matching public key:
//
//	token   = base64url(claims JSON) "." base64url(signature)
//	signed  = AdmissionDomain || base64url(claims JSON)
//
// The domain string keeps an admission signature from ever being valid as
// an access token (proto/token.go) or anything else the key might sign.

// AdmissionDomain prefixes the bytes an admission signature covers.
const AdmissionDomain = "meshup relay admission v1\n"

// MaxAdmissionLen bounds the text form of an admission token.
const MaxAdmissionLen = 2048

// AdmissionClaims is what an admission token states.
type AdmissionClaims struct {
	// Relay, when set, is the only relay peer id the token admits; empty
	// admits whoever holds it.
	Relay string `json:"relay,omitempty"`
	// Name labels the relay in logs and status (the operator's choice).
	Name string `json:"name,omitempty"`
	// Exp is the expiry, Unix seconds; 0 never expires.
	Exp int64 `json:"exp,omitempty"`
}

// Admission token errors.
var (
	ErrAdmissionMalformed = errors.New("proto: admission token malformed")
	ErrAdmissionSignature = errors.New("proto: admission token signature invalid")
	ErrAdmissionExpired   = errors.New("proto: admission token expired")
	ErrAdmissionRelay     = errors.New("proto: admission token names another relay")
)

// SignAdmission returns the signed text form of c.
func SignAdmission(key ed25519.PrivateKey, c AdmissionClaims) string {
	body, _ := json.Marshal(c) // no unmarshalable fields
	b64 := base64.RawURLEncoding.EncodeToString(body)
	sig := ed25519.Sign(key, []byte(AdmissionDomain+b64))
	return b64 + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// ParseAdmission checks that tok is signed by key, unexpired at now and
// admits relay, and returns its claims.
func ParseAdmission(key ed25519.PublicKey, tok, relay string, now time.Time) (AdmissionClaims, error) {
	var c AdmissionClaims
	if len(tok) > MaxAdmissionLen || len(key) != ed25519.PublicKeySize {
		return c, ErrAdmissionMalformed
	}
	b64, sigText, ok := strings.Cut(tok, ".")
	if !ok {
		return c, ErrAdmissionMalformed
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigText)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, ErrAdmissionMalformed
	}
	if !ed25519.Verify(key, []byte(AdmissionDomain+b64), sig) {
		return c, ErrAdmissionSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil || json.Unmarshal(body, &c) != nil {
		return c, ErrAdmissionMalformed
	}
	if c.Exp != 0 && now.Unix() >= c.Exp {
		return c, ErrAdmissionExpired
	}
	if c.Relay != "" && c.Relay != relay {
		return c, ErrAdmissionRelay
	}
	return c, nil
}
