package bytefmt

import (
	"math"
	"testing"
)

func TestFormat(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1<<20 - 1, "1.0 MiB"}, // not "1024.0 KiB"
		{256 << 20, "256.0 MiB"},
		{3 << 30, "3.0 GiB"},
		{1<<30 - 1, "1.0 GiB"},
		{1<<30 - 1<<20, "1023.0 MiB"},
		{5 << 40, "5.0 TiB"},
		{-2048, "-2.0 KiB"},
		{math.MaxInt64, "8.0 EiB"},
		{math.MinInt64, "-8.0 EiB"},
	} {
		if got := Format(tt.n); got != tt.want {
			t.Errorf("Format(%d): got %q, want %q", tt.n, got, tt.want)
		}
	}
}
