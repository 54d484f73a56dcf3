// Package units parses and prints byte sizes and byte rates for people:
// flag values such as --budget 256MiB or --max-rate 80Mbit/s, and the one
// human byte formatter the binaries share.
//
// Sizes take a decimal number (a fraction is allowed: "1.5GiB") and an
// optional unit. IEC units are powers of 1024 (KiB, MiB, GiB, TiB, PiB, EiB,
// also written Ki, Mi, ...); SI units are powers of 1000 (kB, MB, GB, TB, PB,
// EB, also written k, M, ...). Units are case-insensitive and the trailing B
// is optional, so "256mib", "256Mi" and "256MiB" are the same size. A bare
// number is bytes.
//
// Rates are a size per second: "10MB/s", "1MiB/s" or, in bits, "80Mbit/s"
// or "80Mbps" (a lowercase "bps" is bits, as network operators write it;
// "Bps" is bytes). The "/s" is optional. "0", "" and "unlimited" mean no
// limit.
package units

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// maxInput bounds what Parse looks at, so hostile input costs nothing.
const maxInput = 64

// Byte multiples.
const (
	KiB int64 = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
	PiB
	EiB
)

var (
	// ErrSyntax reports a size or rate that is not a number with a known unit.
	ErrSyntax = errors.New("units: invalid syntax")
	// ErrRange reports a size or rate that is negative or does not fit in
	// an int64.
	ErrRange = errors.New("units: value out of range")
)

// prefixes maps a lowercase unit prefix to its multiplier.
var prefixes = map[string]int64{
	"":  1,
	"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18,
	"ki": KiB, "mi": MiB, "gi": GiB, "ti": TiB, "pi": PiB, "ei": EiB,
}

// iec lists the binary units from the largest, for printing.
var iec = []struct {
	name string
	mult int64
}{{"EiB", EiB}, {"PiB", PiB}, {"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}}

// si lists the decimal units from the largest, for printing.
var si = []struct {
	name string
	mult int64
}{{"EB", 1e18}, {"PB", 1e15}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"kB", 1e3}}

// ParseSize parses a byte size such as "256MiB", "1.5GiB", "10MB", "4096"
// or "1TB". A fraction of a byte is rounded to the nearest byte.
func ParseSize(s string) (int64, error) {
	n, err := parse(s, false)
	if err != nil {
		return 0, fmt.Errorf("parse size %q: %w", truncate(s), err)
	}
	return n, nil
}

// ParseRate parses a rate in bytes per second such as "10MB/s", "1MiB/s"
// or "80Mbit/s". "0", "" and "unlimited" parse as 0, no limit.
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	switch strings.ToLower(t) {
	case "", "unlimited", "none", "off":
		return 0, nil
	}
	t = strings.TrimSpace(strings.TrimSuffix(strings.TrimSuffix(t, "/s"), "/S"))
	n, err := parse(t, true)
	if err != nil {
		return 0, fmt.Errorf("parse rate %q: %w", truncate(s), err)
	}
	return n, nil
}

func truncate(s string) string {
	if len(s) > maxInput {
		return s[:maxInput] + "..."
	}
	return s
}

// parse reads a decimal number and a unit. bits allows the units of bits
// ("bit", "bits", "bps"), which divide by 8.
func parse(s string, bits bool) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxInput {
		return 0, ErrSyntax
	}
	i := 0
	digits, dots := 0, 0
	for ; i < len(s); i++ {
		c := s[i]
		if c >= '0' && c <= '9' {
			digits++
			continue
		}
		if c == '.' {
			dots++
			continue
		}
		break
	}
	if digits == 0 || dots > 1 {
		return 0, ErrSyntax
	}
	num, unit := s[:i], strings.TrimSpace(s[i:])
	if strings.HasPrefix(unit, "-") || strings.HasPrefix(unit, "+") {
		return 0, ErrSyntax
	}

	divisor := int64(1)
	lower := strings.ToLower(unit)
	switch {
	case bits && strings.HasSuffix(unit, "bps"): // lowercase b: bits
		lower, divisor = lower[:len(lower)-3], 8
	case bits && strings.HasSuffix(lower, "bits"):
		lower, divisor = lower[:len(lower)-4], 8
	case bits && strings.HasSuffix(lower, "bit"):
		lower, divisor = lower[:len(lower)-3], 8
	case bits && strings.HasSuffix(unit, "Bps"):
		lower = lower[:len(lower)-3]
	case strings.HasSuffix(lower, "b"):
		lower = lower[:len(lower)-1]
	}
	mult, ok := prefixes[lower]
	if !ok {
		return 0, ErrSyntax
	}

	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, ErrSyntax
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	r.Quo(r, new(big.Rat).SetInt64(divisor))
	// Round half up: floor(r + 1/2).
	r.Add(r, big.NewRat(1, 2))
	q := new(big.Int).Quo(r.Num(), r.Denom())
	if !q.IsInt64() {
		return 0, ErrRange
	}
	return q.Int64(), nil
}

// exact prints n in the unit mult when n/mult is a decimal with at most
// three fractional digits, and reports whether it could.
func exact(n, mult int64, name string) (string, bool) {
	if n < mult {
		return "", false
	}
	whole, rem := n/mult, n%mult
	if rem == 0 {
		return strconv.FormatInt(whole, 10) + name, true
	}
	// rem/mult < 1; three digits are exact when rem*1000 is a multiple of
	// mult. rem < mult <= 2^60, so use big arithmetic to avoid overflow.
	f := new(big.Int).Mul(big.NewInt(rem), big.NewInt(1000))
	frac, m := new(big.Int).QuoRem(f, big.NewInt(mult), new(big.Int))
	if m.Sign() != 0 {
		return "", false
	}
	ds := strings.TrimRight(fmt.Sprintf("%03d", frac.Int64()), "0")
	return strconv.FormatInt(whole, 10) + "." + ds + name, true
}

// formatExact prints n bytes in a short form that parses back to n
// exactly: the shortest exact unit form ("256MiB", "1.5GiB", "10MB",
// "4KiB") unless the bare number is shorter ("4097", "1536").
func formatExact(n int64) string {
	bare := strconv.FormatInt(n, 10)
	if n <= 0 {
		return bare
	}
	best := ""
	for _, list := range [][]struct {
		name string
		mult int64
	}{iec, si} {
		for _, u := range list {
			if s, ok := exact(n, u.mult, u.name); ok {
				if best == "" || len(s) < len(best) {
					best = s
				}
				break
			}
		}
	}
	if best == "" || len(best) > len(bare) {
		return bare
	}
	return best
}

// Format prints n bytes for people with a binary unit and one decimal:
// "512 B", "1.5 KiB", "3.0 GiB". The result parses back with ParseSize to
// within 5% of n.
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

// FormatRate prints a rate in bytes per second for people: "2.0 MiB/s", or
// "unlimited" for 0.
func FormatRate(n int64) string {
	if n <= 0 {
		return "unlimited"
	}
	return Format(n) + "/s"
}

// Size is a byte count usable as a flag.Value: --budget 256MiB.
type Size int64

// String prints the size in the shortest form that parses back exactly.
func (s Size) String() string { return formatExact(int64(s)) }

// Set parses a size, for flag.Value.
func (s *Size) Set(v string) error {
	n, err := ParseSize(v)
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// Get returns the size as an int64, for flag.Getter.
func (s Size) Get() any { return int64(s) }

// Bytes returns the size in bytes.
func (s Size) Bytes() int64 { return int64(s) }

// MarshalText prints the size like String, for configuration files.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size like Set, for configuration files.
func (s *Size) UnmarshalText(b []byte) error { return s.Set(string(b)) }

// Rate is a rate in bytes per second usable as a flag.Value: --max-rate
// 10MB/s. Zero means unlimited.
type Rate int64

// String prints the rate in a form that parses back exactly: "2MiB/s",
// "10MB/s", or "unlimited".
func (r Rate) String() string {
	if r <= 0 {
		return "unlimited"
	}
	return formatExact(int64(r)) + "/s"
}

// Set parses a rate, for flag.Value.
func (r *Rate) Set(v string) error {
	n, err := ParseRate(v)
	if err != nil {
		return err
	}
	*r = Rate(n)
	return nil
}

// Get returns the rate in bytes per second as an int64, for flag.Getter.
func (r Rate) Get() any { return int64(r) }

// BytesPerSecond returns the rate in bytes per second; 0 is unlimited.
func (r Rate) BytesPerSecond() int64 { return int64(r) }

// MarshalText prints the rate like String, for configuration files.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a rate like Set, for configuration files.
func (r *Rate) UnmarshalText(b []byte) error { return r.Set(string(b)) }
