package relay

import (
	"encoding/base64"
	"maps"
	"strings"
	"testing"
)

func TestParseTusMetadata(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		in   string
		want map[string]string
		ok   bool
	}{
		{"", map[string]string{}, true},
		{"filename " + b64("a b.txt"), map[string]string{"filename": "a b.txt"}, true},
		{"filename " + b64("x") + ",is_confidential", map[string]string{"filename": "x", "is_confidential": ""}, true},
		{" filetype " + b64("video/mp4") + " , name " + b64("n"), map[string]string{"filetype": "video/mp4", "name": "n"}, true},
		{"filename !!!", nil, false},
		{"a " + b64("1") + ",a " + b64("2"), nil, false},
		{",", nil, false},
		{"filename " + strings.Repeat("A", maxTusMetadata), nil, false},
	} {
		got, err := parseTusMetadata(tc.in)
		if (err == nil) != tc.ok || (tc.ok && !maps.Equal(got, tc.want)) {
			t.Errorf("parseTusMetadata(%q): got %v, %v; want %v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// FuzzTusMetadata: parseTusMetadata never panics, and what it accepts
// round-trips through the encoding tus clients use.
func FuzzTusMetadata(f *testing.F) {
	f.Add("filename ZGF0YS5iaW4=,filetype YXBwbGljYXRpb24veC10ZXN0,flag")
	f.Add("")
	f.Add("a ,b")
	f.Fuzz(func(t *testing.T, in string) {
		m, err := parseTusMetadata(in)
		if err != nil {
			return
		}
		var parts []string
		for k, v := range m {
			parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(v)))
		}
		back, err := parseTusMetadata(strings.Join(parts, ","))
		if err != nil || !maps.Equal(back, m) {
			t.Fatalf("round trip of %v: got %v, %v", m, back, err)
		}
	})
}
