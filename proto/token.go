package proto

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// A token is an Ed25519-signed statement by the rendezvous that lets the
// holder move bytes of one item through one relay:
//
//	token = base64url(claims JSON) "." base64url(signature of the first part)
//
// Relays verify tokens offline with the rendezvous public key from
// GET /v1/info. Relays hold no key that can mint tokens.

// Direction says which way a token lets bytes move.
type Direction string

const (
	// DirPush lets a publisher push a part into a relay.
	DirPush Direction = "push"
	// DirRead lets a consumer read an item from a relay.
	DirRead Direction = "read"
)

// MaxTokenLen bounds the text form of a token accepted by ParseToken.
const MaxTokenLen = MaxToken

// Claims is what a token states.
type Claims struct {
	Dir   Direction `json:"dir"`
	Relay string    `json:"aud"` // relay peer id, the audience
	Item  ItemID    `json:"item"`
	Off   int64     `json:"off"` // first byte covered
	Len   int64     `json:"len"` // bytes covered from Off
	Exp   int64     `json:"exp"` // expiry, Unix seconds
	// Iat is when the token was issued, Unix seconds by the rendezvous's
	// clock; a token is not valid before it (minus the clock skew). Zero
	// in tokens of rendezvous that predate it: then only Exp is checked.
	Iat int64  `json:"iat,omitempty"`
	Ref uint64 `json:"ref,omitempty"`
	// Fwd, in a push token, names the exit relay that needed the part when
	// it is not the audience: the audience forwards the part to Fwd over
	// the mesh, and Fwd accepts it from the audience only.
	Fwd string `json:"fwd,omitempty"`

	// Item metadata, set in read tokens so that the relay can answer
	// Range and conditional requests without asking the rendezvous.
	Size     int64  `json:"size,omitempty"`
	Name     string `json:"name,omitempty"`
	MIME     string `json:"mime,omitempty"`
	Modified int64  `json:"mod,omitempty"` // Unix seconds the item was published

	// Store, in a push token (appended for clips, issue 12), tells the
	// relay to keep the whole item [0, Size) in its memory, under the
	// item's own id, until Exp (the clip's expiry), rather than forward
	// it to a need. Name and MIME are the item's.
	Store bool `json:"store,omitempty"`
	// Enc, in a store token (appended, issue 12), is the clip's
	// end-to-end encryption (Publish.Enc), so that a rendezvous that
	// restarted rebuilds the clip from a holder's announcement as it was
	// published.
	Enc string `json:"enc,omitempty"`
}

// Token errors. Each wraps into an *Error with the status a peer sees.
var (
	ErrTokenMissing   = &Error{Status: StatusUnauthorized, Msg: "token missing"}
	ErrTokenMalformed = &Error{Status: StatusUnauthorized, Msg: "token malformed"}
	ErrTokenSignature = &Error{Status: StatusUnauthorized, Msg: "token signature invalid"}
	ErrTokenExpired   = &Error{Status: StatusExpired, Msg: "token expired"}
	ErrTokenAudience  = &Error{Status: StatusWrongRelay, Msg: "token names another relay"}
	ErrTokenScope     = &Error{Status: StatusForbidden, Msg: "token does not cover the request"}
)

// SignToken returns the signed text form of c.
func SignToken(key ed25519.PrivateKey, c Claims) string {
	body, _ := json.Marshal(c) // Claims has no unmarshalable fields
	b64 := base64.RawURLEncoding.EncodeToString(body)
	sig := ed25519.Sign(key, []byte(b64))
	return b64 + "." + base64.RawURLEncoding.EncodeToString(sig)
}

// DefaultClockSkew is the clock difference between a relay and the
// rendezvous that ParseTokenSkew tolerates by default: a token is valid
// from Iat-skew to Exp+skew by the relay's clock.
const DefaultClockSkew = 30 * time.Second

// ParseToken checks the signature and expiry of tok exactly, with no clock
// skew, and returns its claims. Callers then check the audience and scope
// with Claims.Check.
func ParseToken(key ed25519.PublicKey, tok string, now time.Time) (Claims, error) {
	return ParseTokenSkew(key, tok, now, 0)
}

// ParseTokenSkew is ParseToken tolerating a clock difference of up to skew
// between the verifier (now) and the rendezvous that signed tok. A token
// outside its validity gets an error with StatusExpired whose message says
// by how much, and that the clock may be wrong: "token expired: 12s past
// expiry: relay clock ahead by ~42s? check the clock ..." or "token
// expired: not yet valid: issued 40s in the future; relay clock behind by
// ~40s? check the clock ...".
func ParseTokenSkew(key ed25519.PublicKey, tok string, now time.Time, skew time.Duration) (Claims, error) {
	var c Claims
	if tok == "" {
		return c, ErrTokenMissing
	}
	if len(tok) > MaxTokenLen {
		return c, ErrTokenMalformed
	}
	b64, sig64, ok := strings.Cut(tok, ".")
	if !ok || strings.ContainsAny(tok, "\r\n") {
		return c, ErrTokenMalformed
	}
	// Strict decoding gives every token exactly one text form.
	sig, err := base64.RawURLEncoding.Strict().DecodeString(sig64)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return c, ErrTokenMalformed
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, []byte(b64), sig) {
		return c, ErrTokenSignature
	}
	body, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return c, ErrTokenMalformed
	}
	if err := json.Unmarshal(body, &c); err != nil {
		return c, ErrTokenMalformed
	}
	if c.Off < 0 || c.Len < 0 || c.Off+c.Len < c.Off {
		return c, ErrTokenMalformed
	}
	return c, c.checkTime(now, skew)
}

// checkTime checks that now is within the token's validity, give or take
// skew, and names the clock when it is not.
func (c Claims) checkTime(now time.Time, skew time.Duration) error {
	sec := int64(skew / time.Second)
	t := now.Unix()
	if c.Iat != 0 && t < c.Iat-sec {
		return &Error{Status: StatusExpired, Msg: fmt.Sprintf(
			"not yet valid: issued %ds in the future; relay clock behind by ~%ds? check the clock (skew allowed %v)",
			c.Iat-t, c.Iat-t, skew)}
	}
	if t < c.Exp+sec {
		return nil
	}
	if skew == 0 && c.Iat == 0 {
		return ErrTokenExpired
	}
	msg := fmt.Sprintf("%ds past expiry", t-c.Exp)
	if c.Iat != 0 {
		// A token is used soon after it is issued: its age by our clock
		// is the best guess of how far ahead the clock is.
		msg += fmt.Sprintf(": relay clock ahead by ~%ds? check the clock (token lifetime %ds, skew allowed %v)", t-c.Iat, c.Exp-c.Iat, skew)
	}
	return &Error{Status: StatusExpired, Msg: msg}
}

// Check reports whether c lets relay move bytes [off, off+n) of item in
// direction dir.
func (c Claims) Check(relay string, dir Direction, item ItemID, off, n int64) error {
	if c.Relay != relay {
		return ErrTokenAudience
	}
	if c.Dir != dir || c.Item != item {
		return ErrTokenScope
	}
	if off < c.Off || n < 0 || off+n > c.Off+c.Len || off+n < off {
		return fmt.Errorf("%w: bytes %d+%d outside %d+%d", ErrTokenScope, off, n, c.Off, c.Len)
	}
	return nil
}

// TokenStatus returns the Status to report for a token error.
func TokenStatus(err error) Status {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return StatusUnauthorized
}
