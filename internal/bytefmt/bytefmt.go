// Package bytefmt is the one human byte formatter of meshup, shared by
// the binaries (cmd/internal/units), the client library and the
// rendezvous's item page.
package bytefmt

import (
	"fmt"
	"math"
	"strconv"
)

// Format prints n bytes for people with a binary unit and one decimal:
// "512 B", "1.5 KiB", "3.0 GiB". The result parses back with
// cmd/internal/units.ParseSize to within 5% of n.
func Format(n int64) string {
	if n < 0 {
		if n == math.MinInt64 {
			return "-8.0 EiB"
		}
		return "-" + Format(-n)
	}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f, exp := float64(n)/1024, 0
	for f >= 1023.95 && exp < 5 { // would print as 1024.0: use the next unit
		f /= 1024
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTPE"[exp])
}
