package proto

import (
	"errors"
	"strings"
	"testing"
)

func TestItemIDString(t *testing.T) {
	tests := []struct {
		id   ItemID
		want string
	}{
		{ItemID{}, "aaaaaaaaaaaaaaaaaaaaaaaaaa"},
		{ItemID{0: 0x08}, "baaaaaaaaaaaaaaaaaaaaaaaaa"},
		{ItemID{15: 0x01}, "aaaaaaaaaaaaaaaaaaaaaaaaae"},
		{ItemID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, "77777777777777777777777774"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := tt.id.String(); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			got, err := ParseItemID(tt.want)
			if err != nil || got != tt.id {
				t.Errorf("got %v, %v, want %v, nil", got, err, tt.id)
			}
			upper, err := ParseItemID(strings.ToUpper(tt.want))
			if err != nil || upper != tt.id {
				t.Errorf("uppercase: got %v, %v, want %v, nil", upper, err, tt.id)
			}
		})
	}
}

func TestParseItemIDMixedCase(t *testing.T) {
	got, err := ParseItemID("BaAaAaAaAaAaAaAaAaAaAaAaAE")
	if want := (ItemID{0: 0x08, 15: 0x01}); err != nil || got != want {
		t.Errorf("got %v, %v, want %v, nil", got, err, want)
	}
}

func TestParseItemIDErrors(t *testing.T) {
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"short", strings.Repeat("a", 25)},
		{"long", strings.Repeat("a", 27)},
		{"padded", strings.Repeat("a", 26) + "======"},
		{"digit 0", strings.Repeat("a", 25) + "0"},
		{"digit 1", "1" + strings.Repeat("a", 25)},
		{"digit 8", strings.Repeat("a", 12) + "8" + strings.Repeat("a", 13)},
		{"dash", strings.Repeat("a", 25) + "-"},
		{"padding char", strings.Repeat("a", 25) + "="},
		{"space", strings.Repeat("a", 25) + " "},
		{"newline inside", strings.Repeat("a", 13) + "\n" + strings.Repeat("a", 12)},
		{"non-ASCII", strings.Repeat("a", 24) + "\u00e9"},
		{"Kelvin sign", strings.Repeat("a", 23) + "\u212a"},
		// The last character carries 3 bits; the other 2 must be zero, or
		// four strings would name one item.
		{"spare bits set", strings.Repeat("a", 25) + "b"},
		{"spare bits set, all ones", strings.Repeat("7", 25) + "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseItemID(tt.in)
			if !errors.Is(err, ErrBadItemID) || got != (ItemID{}) {
				t.Errorf("got %v, %v, want zero, %v", got, err, ErrBadItemID)
			}
		})
	}
}

func TestNewItemID(t *testing.T) {
	seen := make(map[ItemID]bool)
	for range 100 {
		id := NewItemID()
		if id.IsZero() || seen[id] {
			t.Fatalf("got %v, want a fresh non-zero id", id)
		}
		seen[id] = true
		got, err := ParseItemID(id.String())
		if err != nil || got != id {
			t.Fatalf("got %v, %v, want %v, nil", got, err, id)
		}
	}
}

func TestItemIDIsZero(t *testing.T) {
	if !(ItemID{}).IsZero() {
		t.Errorf("got false for the zero id, want true")
	}
	if (ItemID{15: 1}).IsZero() {
		t.Errorf("got true for a non-zero id, want false")
	}
}

func TestItemIDUnmarshalTextKeepsValueOnError(t *testing.T) {
	id := ItemID{0: 1}
	if err := id.UnmarshalText([]byte("bad")); !errors.Is(err, ErrBadItemID) {
		t.Errorf("got %v, want %v", err, ErrBadItemID)
	}
	if id != (ItemID{0: 1}) {
		t.Errorf("got %v, want the old value", id)
	}
}

// FuzzParseItemID checks that an accepted id is in canonical form (its
// lowercase text is exactly what String returns), and that any 16 bytes
// survive String and ParseItemID.
func FuzzParseItemID(f *testing.F) {
	f.Add("baaaaaaaaaaaaaaaaaaaaaaaaa")
	f.Add("77777777777777777777777774")
	f.Add("BaAaAaAaAaAaAaAaAaAaAaAaAE")
	f.Add("aaaaaaaaaaaaaaaaaaaaaaaaab")
	f.Add("aaaaaaaaaaaaa\naaaaaaaaaaaa")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseItemID(s)
		if err != nil {
			if err != ErrBadItemID || id != (ItemID{}) {
				t.Fatalf("got %v, %v, want zero, %v", id, err, ErrBadItemID)
			}
		} else if got := id.String(); got != strings.ToLower(s) {
			t.Fatalf("ParseItemID(%q) = %v, want the canonical form of the input", s, got)
		}
		if len(s) >= len(id) {
			var raw ItemID
			copy(raw[:], s)
			got, err := ParseItemID(raw.String())
			if err != nil || got != raw {
				t.Fatalf("got %v, %v, want %v, nil", got, err, raw)
			}
		}
	})
}

// TestOwnerOf checks the owner-secret scheme against vectors computed
// independently (Python hashlib) and its refusals.
func TestOwnerOf(t *testing.T) {
	id0, id1 := "c4qyaex3an27tmxufbc4tyusde", "ivwialskustrb3gul3ppbrraam"
	owner0 := strings.Repeat("A", 43)                       // 32 zero bytes
	owner1 := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8" // bytes 0..31
	tests := []struct {
		name    string
		id      string
		owner   string
		want    bool
		wantErr error
	}{
		{"zero secret", id0, owner0, true, nil},
		{"counting secret", id1, owner1, true, nil},
		{"other item's secret", id0, owner1, false, nil},
		{"id as secret", id0, id0, false, ErrBadOwner},
		{"empty", id0, "", false, ErrBadOwner},
		{"padded", id0, owner0 + "=", false, ErrBadOwner},
		{"standard alphabet", id1, strings.ReplaceAll(owner1, "_", "/") + "+", false, ErrBadOwner},
		{"non-canonical last character", id0, owner0[:42] + "B", false, ErrBadOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := ParseItemID(tt.id)
			if err != nil {
				t.Fatal(err)
			}
			got, err := OwnerOf(id, tt.owner)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, %v, want %v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestNewOwnedItemID(t *testing.T) {
	id, owner := NewOwnedItemID()
	id2, owner2 := NewOwnedItemID()
	if id == id2 || owner == owner2 {
		t.Fatalf("two calls gave the same id or owner: %v %v", id, owner)
	}
	if ok, err := OwnerOf(id, owner); !ok || err != nil {
		t.Errorf("OwnerOf(new id, its owner): got %v, %v, want true, nil", ok, err)
	}
	if ok, _ := OwnerOf(id2, owner); ok {
		t.Errorf("OwnerOf(other id, owner): got true, want false")
	}
}
