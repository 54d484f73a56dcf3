package proto

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

// Fixed keys and clock, so that tests and fuzz seeds are reproducible.
var (
	testKey  = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, ed25519.SeedSize))
	otherKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, ed25519.SeedSize))
	testPub  = testKey.Public().(ed25519.PublicKey)
	testNow  = time.Unix(1_700_000_000, 0)
)

func testClaims() Claims {
	return Claims{
		Dir:      DirRead,
		Relay:    "relay-a",
		Item:     testItem,
		Off:      100,
		Len:      50,
		Exp:      testNow.Unix() + 60,
		Ref:      7,
		Size:     150,
		Name:     "f.txt",
		MIME:     "text/plain",
		Modified: testNow.Unix() - 3600,
	}
}

// signRaw signs arbitrary claims text, so that tests can reach the checks
// made after the signature.
func signRaw(key ed25519.PrivateKey, claims string) string {
	sig := ed25519.Sign(key, []byte(claims))
	return claims + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// sameSentinel reports whether target itself is in err's chain. The token
// sentinels are *Error values whose Is compares by status, so errors.Is
// cannot tell ErrTokenMissing, ErrTokenMalformed and ErrTokenSignature
// apart; these tests check which one was returned.
func sameSentinel(err, target error) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		if err == target {
			return true
		}
	}
	return false
}

func TestTokenRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		c    Claims
	}{
		{"read", testClaims()},
		{"push", Claims{Dir: DirPush, Relay: "relay-b", Item: ItemID{0: 1}, Off: 0, Len: 1 << 20, Exp: testNow.Unix() + 1, Ref: 1<<64 - 1}},
		{"store", Claims{Dir: DirPush, Relay: "relay-b", Item: ItemID{0: 2}, Off: 0, Len: 5 << 20, Exp: testNow.Unix() + 86400, Size: 5 << 20, Name: "clip.png", MIME: "image/png", Store: true}},
		{"whole int64", Claims{Dir: DirRead, Relay: "r", Len: math.MaxInt64, Exp: math.MaxInt64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := SignToken(testKey, tt.c)
			got, err := ParseToken(testPub, tok, testNow)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if got != tt.c {
				t.Errorf("got %+v, want %+v", got, tt.c)
			}
			if err := got.Check(tt.c.Relay, tt.c.Dir, tt.c.Item, tt.c.Off, tt.c.Len); err != nil {
				t.Errorf("Check of its own scope: got %v, want nil", err)
			}
		})
	}
}

func TestTokenURLSafe(t *testing.T) {
	tok := SignToken(testKey, testClaims())
	if i := strings.IndexFunc(tok, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}); i >= 0 {
		t.Errorf("got %q at %d in %s, want only URL-safe characters", tok[i], i, tok)
	}
}

func TestParseTokenErrors(t *testing.T) {
	good := SignToken(testKey, testClaims())
	claims64, sig64, _ := strings.Cut(good, ".")

	tampered := testClaims()
	tampered.Len = 1 << 40
	sig, _ := base64.RawURLEncoding.DecodeString(sig64)
	sig[10] ^= 1
	badSig := claims64 + "." + base64.RawURLEncoding.EncodeToString(sig)

	expired := testClaims()
	expired.Exp = testNow.Unix()
	long := testClaims()
	long.Name = strings.Repeat("n", MaxTokenLen)
	negOff, negLen, wraps := testClaims(), testClaims(), testClaims()
	negOff.Off = -1
	negLen.Len = -1
	wraps.Off, wraps.Len = 2, math.MaxInt64-1

	tests := []struct {
		name    string
		key     ed25519.PublicKey
		tok     string
		wantErr error
	}{
		{"missing", testPub, "", ErrTokenMissing},
		{"tampered claims", testPub, b64(mustJSON(tampered)) + "." + sig64, ErrTokenSignature},
		{"tampered signature", testPub, badSig, ErrTokenSignature},
		{"claims swapped for another token's", testPub, b64(`{}`) + "." + sig64, ErrTokenSignature},
		{"wrong key", otherKey.Public().(ed25519.PublicKey), good, ErrTokenSignature},
		{"signed by another key", testPub, SignToken(otherKey, testClaims()), ErrTokenSignature},
		{"no key", nil, good, ErrTokenSignature},
		{"expired now", testPub, SignToken(testKey, expired), ErrTokenExpired},
		{"expired long ago", testPub, SignToken(testKey, Claims{Dir: DirRead, Relay: "r", Exp: 1}), ErrTokenExpired},
		{"no expiry", testPub, SignToken(testKey, Claims{Dir: DirRead, Relay: "r"}), ErrTokenExpired},
		{"no dot", testPub, claims64 + sig64, ErrTokenMalformed},
		{"empty signature", testPub, claims64 + ".", ErrTokenMalformed},
		{"signature not base64", testPub, claims64 + ".!!!!", ErrTokenMalformed},
		{"signature padded base64", testPub, claims64 + "." + sig64 + "==", ErrTokenMalformed},
		{"signature too short", testPub, claims64 + "." + sig64[:len(sig64)-4], ErrTokenMalformed},
		{"over MaxTokenLen", testPub, SignToken(testKey, long), ErrTokenMalformed},
		{"claims not base64", testPub, signRaw(testKey, "e30*"), ErrTokenMalformed},
		{"claims not json", testPub, signRaw(testKey, b64("not json")), ErrTokenMalformed},
		{"claims field wrong type", testPub, signRaw(testKey, b64(`{"off":"1","exp":9999999999}`)), ErrTokenMalformed},
		{"claims bad item", testPub, signRaw(testKey, b64(`{"item":"x","exp":9999999999}`)), ErrTokenMalformed},
		{"negative off", testPub, SignToken(testKey, negOff), ErrTokenMalformed},
		{"negative len", testPub, SignToken(testKey, negLen), ErrTokenMalformed},
		{"off+len overflows", testPub, SignToken(testKey, wraps), ErrTokenMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.key, tt.tok, testNow)
			if !sameSentinel(err, tt.wantErr) || !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestParseTokenExpiryEdge(t *testing.T) {
	c := testClaims()
	c.Exp = testNow.Unix() + 1
	tok := SignToken(testKey, c)
	if _, err := ParseToken(testPub, tok, testNow); err != nil {
		t.Errorf("one second before expiry: got %v, want nil", err)
	}
	if _, err := ParseToken(testPub, tok, testNow.Add(time.Second)); !sameSentinel(err, ErrTokenExpired) {
		t.Errorf("at expiry: got %v, want %v", err, ErrTokenExpired)
	}
}

func mustJSON(c Claims) string {
	tok := SignToken(testKey, c)
	body, err := base64.RawURLEncoding.DecodeString(tok[:strings.IndexByte(tok, '.')])
	if err != nil {
		panic(err)
	}
	return string(body)
}

func TestClaimsCheck(t *testing.T) {
	c := testClaims() // read, relay-a, testItem, bytes [100, 150)
	tests := []struct {
		name    string
		relay   string
		dir     Direction
		item    ItemID
		off, n  int64
		wantErr error
	}{
		{"whole scope", "relay-a", DirRead, testItem, 100, 50, nil},
		{"inside", "relay-a", DirRead, testItem, 110, 10, nil},
		{"tail", "relay-a", DirRead, testItem, 149, 1, nil},
		{"empty at start", "relay-a", DirRead, testItem, 100, 0, nil},
		{"empty at end", "relay-a", DirRead, testItem, 150, 0, nil},
		{"wrong relay", "relay-b", DirRead, testItem, 100, 50, ErrTokenAudience},
		{"wrong relay before wrong dir", "relay-b", DirPush, testItem, 100, 50, ErrTokenAudience},
		{"empty relay", "", DirRead, testItem, 100, 50, ErrTokenAudience},
		{"wrong dir", "relay-a", DirPush, testItem, 100, 50, ErrTokenScope},
		{"wrong item", "relay-a", DirRead, ItemID{}, 100, 50, ErrTokenScope},
		{"starts before", "relay-a", DirRead, testItem, 99, 10, ErrTokenScope},
		{"ends after", "relay-a", DirRead, testItem, 100, 51, ErrTokenScope},
		{"past end", "relay-a", DirRead, testItem, 150, 1, ErrTokenScope},
		{"negative length", "relay-a", DirRead, testItem, 120, -1, ErrTokenScope},
		{"negative offset", "relay-a", DirRead, testItem, -1, 2, ErrTokenScope},
		{"off+n overflows", "relay-a", DirRead, testItem, 120, math.MaxInt64, ErrTokenScope},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Check(tt.relay, tt.dir, tt.item, tt.off, tt.n)
			if tt.wantErr == nil {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if !sameSentinel(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}

func TestClaimsCheckOverflowAtTop(t *testing.T) {
	c := Claims{Dir: DirPush, Relay: "r", Off: 0, Len: math.MaxInt64}
	if err := c.Check("r", DirPush, ItemID{}, math.MaxInt64, 1); !sameSentinel(err, ErrTokenScope) {
		t.Errorf("got %v, want %v", err, ErrTokenScope)
	}
	if err := c.Check("r", DirPush, ItemID{}, math.MaxInt64-1, 1); err != nil {
		t.Errorf("got %v, want nil", err)
	}
}

func TestTokenStatus(t *testing.T) {
	tests := []struct {
		err  error
		want Status
	}{
		{ErrTokenMissing, StatusUnauthorized},
		{ErrTokenMalformed, StatusUnauthorized},
		{ErrTokenSignature, StatusUnauthorized},
		{ErrTokenExpired, StatusExpired},
		{ErrTokenAudience, StatusWrongRelay},
		{ErrTokenScope, StatusForbidden},
		{fmt.Errorf("check push token: %w", ErrTokenScope), StatusForbidden},
		{fmt.Errorf("parse: %w", ErrTokenExpired), StatusExpired},
		{Errorf(StatusOverLimit, "too many"), StatusOverLimit},
		{errors.New("something else"), StatusUnauthorized},
	}
	for _, tt := range tests {
		if got := TokenStatus(tt.err); got != tt.want {
			t.Errorf("TokenStatus(%v): got %v, want %v", tt.err, got, tt.want)
		}
	}
	// The HTTP status a consumer sees for each token error.
	httpTests := []struct {
		err  error
		want int
	}{
		{ErrTokenSignature, 401},
		{ErrTokenExpired, 401},
		{ErrTokenAudience, 403},
		{ErrTokenScope, 403},
	}
	for _, tt := range httpTests {
		if got := TokenStatus(tt.err).HTTPStatus(); got != tt.want {
			t.Errorf("HTTP status for %v: got %v, want %v", tt.err, got, tt.want)
		}
	}
}

// FuzzParseToken parses tok as is (the fuzzer cannot forge a signature, so
// this exercises the framing) and again after signing its claims part with
// the test key (which exercises the claims decoding). Whatever parses must
// satisfy the documented invariants and cover its own scope.
func FuzzParseToken(f *testing.F) {
	good := SignToken(testKey, testClaims())
	f.Add(good, int64(100), int64(50))
	f.Add(SignToken(testKey, Claims{Dir: DirPush, Relay: "r", Len: math.MaxInt64, Exp: math.MaxInt64}), int64(math.MaxInt64), int64(1))
	f.Add(SignToken(otherKey, testClaims()), int64(0), int64(0))
	f.Add(signRaw(testKey, b64(`{"off":-1,"len":2,"exp":9999999999}`)), int64(-1), int64(2))
	f.Add(signRaw(testKey, b64(`{"off":9223372036854775807,"len":1,"exp":9999999999}`)), int64(0), int64(-1))
	f.Add(good[:len(good)-1], int64(0), int64(0))
	f.Add("", int64(0), int64(0))
	f.Add(".", int64(0), int64(0))

	f.Fuzz(func(t *testing.T, tok string, off, n int64) {
		c, err := ParseToken(testPub, tok, testNow)
		checkParsed(t, c, err, off, n)

		claims, _, _ := strings.Cut(tok, ".")
		resigned := signRaw(testKey, claims)
		c, err = ParseToken(testPub, resigned, testNow)
		if len(resigned) <= MaxTokenLen && sameSentinel(err, ErrTokenSignature) {
			t.Fatalf("got %v for a token signed with the right key", err)
		}
		checkParsed(t, c, err, off, n)
	})
}

func checkParsed(t *testing.T, c Claims, err error, off, n int64) {
	t.Helper()
	if err != nil {
		if !sameSentinel(err, ErrTokenMissing) && !sameSentinel(err, ErrTokenMalformed) &&
			!sameSentinel(err, ErrTokenSignature) && !sameSentinel(err, ErrTokenExpired) {
			t.Fatalf("ParseToken: unexpected error %v", err)
		}
		return
	}
	if c.Off < 0 || c.Len < 0 || c.Off+c.Len < c.Off || c.Exp <= testNow.Unix() {
		t.Fatalf("parsed %+v: want off, len >= 0 without overflow and exp after %d", c, testNow.Unix())
	}
	if err := c.Check(c.Relay, c.Dir, c.Item, c.Off, c.Len); err != nil {
		t.Fatalf("Check of its own scope %+v: got %v, want nil", c, err)
	}
	err = c.Check(c.Relay, c.Dir, c.Item, off, n)
	inside := off >= c.Off && n >= 0 && n <= c.Off+c.Len-off
	if (err == nil) != inside {
		t.Fatalf("Check(%d, %d) of %d+%d: got %v, want inside=%v", off, n, c.Off, c.Len, err, inside)
	}
	if err != nil && !sameSentinel(err, ErrTokenScope) {
		t.Fatalf("got %v, want %v", err, ErrTokenScope)
	}
	// What parsed can be signed again and parses equal.
	c2, err := ParseToken(testPub, SignToken(testKey, c), testNow)
	if err != nil && !sameSentinel(err, ErrTokenMalformed) { // re-signing may exceed MaxTokenLen
		t.Fatalf("re-signed %+v: %v", c, err)
	}
	if err == nil && c2 != c {
		t.Fatalf("got %+v after re-signing, want %+v", c2, c)
	}
}
