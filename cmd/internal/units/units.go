// Package units gives the commands the byte sizes, rates and formatter of
// internal/units, where they live so that the libraries (relay,
// rendezvous, client) share the one formatter too. It only forwards.
package units

import "github.com/meshup/meshup/internal/units"

// Byte multiples.
const (
	KiB = units.KiB
	MiB = units.MiB
	GiB = units.GiB
	TiB = units.TiB
	PiB = units.PiB
	EiB = units.EiB
)

// Size is units.Size: a byte count usable as a flag.Value.
type Size = units.Size

// Rate is units.Rate: bytes per second usable as a flag.Value.
type Rate = units.Rate

// Errors of the parsers.
var (
	ErrSyntax = units.ErrSyntax
	ErrRange  = units.ErrRange
)

// ParseSize is units.ParseSize.
func ParseSize(s string) (int64, error) { return units.ParseSize(s) }

// ParseRate is units.ParseRate.
func ParseRate(s string) (int64, error) { return units.ParseRate(s) }

// Format is units.Format: "1.5 GiB".
func Format(n int64) string { return units.Format(n) }

// FormatRate is units.FormatRate: "2.0 MiB/s", or "unlimited".
func FormatRate(n int64) string { return units.FormatRate(n) }
