package proto

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"strings"
)

// ItemID identifies an item. It is 128 bits that nobody can guess and
// doubles as the capability to read the item.
//
// Item ids and owner secrets (issue 14: soft state that comes back). The
// rendezvous keeps no disk state, so after it restarts a publisher must be
// able to take its item back under the same id (same share links) from a
// rendezvous that has never seen it. The id is therefore derived from the
// owner secret:
//
//	s     = 32 random bytes                       (the owner secret)
//	owner = base64url(s), no padding              (43 characters, Publish.Owner)
//	id    = SHA-256("meshup item id" || s)[:16]   (the item id)
//
// A claim (id, owner) is checked by recomputing the hash (OwnerOf), with no
// stored state; a reader, who knows only the id, cannot find s (a SHA-256
// preimage), so cannot claim the item. Ids are still 128 bits from a random
// source, so they stay unguessable. Ids minted before this scheme (random,
// with an unrelated owner secret) remain readable; they cannot be
// reclaimed from a restarted rendezvous.
type ItemID [16]byte

// ownerIDLabel separates the owner-secret hash from any other use of
// SHA-256 on the same bytes.
const ownerIDLabel = "meshup item id"

// OwnerSecretLen is the length in bytes of an owner secret.
const OwnerSecretLen = 32

// ErrBadOwner means a string is not an owner secret in its text form.
var ErrBadOwner = errors.New("proto: bad owner secret")

// NewOwnedItemID returns a fresh owner secret, in its text form, and the
// item id derived from it.
func NewOwnedItemID() (ItemID, string) {
	var s [OwnerSecretLen]byte
	rand.Read(s[:]) // never fails; see crypto/rand.Read
	return ownedID(s[:]), base64.RawURLEncoding.EncodeToString(s[:])
}

// OwnerOf reports, in constant time, whether owner is the owner secret of
// id, that is whether id = SHA-256("meshup item id" || s)[:16] with s the
// decoded owner. It fails with ErrBadOwner when owner is not the text form
// of a 32-byte secret.
func OwnerOf(id ItemID, owner string) (bool, error) {
	if len(owner) != base64.RawURLEncoding.EncodedLen(OwnerSecretLen) {
		return false, ErrBadOwner
	}
	s, err := base64.RawURLEncoding.Strict().DecodeString(owner)
	if err != nil || len(s) != OwnerSecretLen {
		return false, ErrBadOwner
	}
	want := ownedID(s)
	return subtle.ConstantTimeCompare(want[:], id[:]) == 1, nil
}

func ownedID(s []byte) ItemID {
	h := sha256.New()
	h.Write([]byte(ownerIDLabel))
	h.Write(s)
	var id ItemID
	copy(id[:], h.Sum(nil))
	return id
}

// ErrBadItemID means a string is not a valid item id.
var ErrBadItemID = errors.New("proto: bad item id")

// itemEncoding is lowercase base32 without padding: 26 characters, safe in
// URLs and file names, unambiguous when read aloud.
var itemEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewItemID returns a fresh random item id that no owner secret can
// reclaim; publishers get ids from NewOwnedItemID.
func NewItemID() ItemID {
	var id ItemID
	rand.Read(id[:]) // never fails; see crypto/rand.Read
	return id
}

// String returns the 26-character text form of id.
func (id ItemID) String() string { return itemEncoding.EncodeToString(id[:]) }

// IsZero reports whether id is the zero id, which names no item.
func (id ItemID) IsZero() bool { return id == ItemID{} }

// ParseItemID parses the text form of an item id.
func ParseItemID(s string) (ItemID, error) {
	var id ItemID
	if len(s) != 26 {
		return id, ErrBadItemID
	}
	s = strings.ToLower(s)
	b, err := itemEncoding.DecodeString(s)
	// The decoder ignores the 2 spare bits of the last character and skips
	// newlines; accept only the canonical form so that one id has one name.
	if err != nil || len(b) != len(id) || itemEncoding.EncodeToString(b) != s {
		return id, ErrBadItemID
	}
	copy(id[:], b)
	return id, nil
}

// MarshalText implements encoding.TextMarshaler.
func (id ItemID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ItemID) UnmarshalText(b []byte) error {
	v, err := ParseItemID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
