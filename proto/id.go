package proto

import (
	"crypto/rand"
	"encoding/base32"
	"errors"
	"strings"
)

// ItemID identifies an item. It is 128 random bits and doubles as the
// capability to read the item, so it is never derived from anything guessable.
type ItemID [16]byte

// ErrBadItemID means a string is not a valid item id.
var ErrBadItemID = errors.New("proto: bad item id")

// itemEncoding is lowercase base32 without padding: 26 characters, safe in
// URLs and file names, unambiguous when read aloud.
var itemEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NewItemID returns a fresh random item id.
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
