package relay

import "testing"

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		in   string
		want contentRange
		ok   bool
	}{
		{"bytes */*", contentRange{query: true, total: -1}, true},
		{"bytes */1000", contentRange{query: true, total: 1000}, true},
		{"bytes 0-99/1000", contentRange{first: 0, last: 99, total: 1000}, true},
		{"bytes 400-999/1000", contentRange{first: 400, last: 999, total: 1000}, true},
		{"bytes 0-99/*", contentRange{first: 0, last: 99, total: -1}, true},
		{"bytes 0-1000/1000", contentRange{}, false}, // last past the total
		{"bytes 5-4/10", contentRange{}, false},
		{"bytes -1-4/10", contentRange{}, false},
		{"items 0-1/2", contentRange{}, false},
		{"bytes 0-1", contentRange{}, false},
		{"bytes */-5", contentRange{}, false},
	}
	for _, tt := range tests {
		got, err := parseContentRange(tt.in)
		if (err == nil) != tt.ok || tt.ok && got != tt.want {
			t.Errorf("%q: got %+v, %v; want %+v ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzParseContentRange checks that an accepted Content-Range is a query
// or a range within its total.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes */*", "bytes */1000", "bytes 400-999/1000", "bytes 0-99/*", "bytes 9223372036854775806-9223372036854775807/*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cr, err := parseContentRange(s)
		if err != nil {
			return
		}
		if cr.total < -1 {
			t.Fatalf("%q: total %d", s, cr.total)
		}
		if !cr.query && (cr.first < 0 || cr.last < cr.first || cr.total >= 0 && cr.last >= cr.total) {
			t.Fatalf("%q: accepted %+v", s, cr)
		}
	})
}
