package proto

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// HTTP Range requests (RFC 9110 section 14).

// DefaultMaxRanges is the default limit on the ranges served for one Range
// header, counted after overlapping and adjacent ranges are merged.
const DefaultMaxRanges = 16

// MaxRangeSpecs bounds the range specs of one Range header before merging,
// so that parsing stays cheap; a header with more is ignored (the whole
// item is served).
const MaxRangeSpecs = 1024

// Range errors.
var (
	// ErrRangeMalformed means the Range header does not parse; RFC 9110
	// says to ignore it and serve the whole representation.
	ErrRangeMalformed = errors.New("proto: malformed range")
	// ErrRangeUnsatisfiable means no range overlaps the item; answer 416
	// with Content-Range: bytes */size.
	ErrRangeUnsatisfiable = errors.New("proto: range not satisfiable")
)

// ByteRange is the byte span [Start, Start+Length).
type ByteRange struct {
	Start, Length int64
}

// End returns the offset just past r.
func (r ByteRange) End() int64 { return r.Start + r.Length }

// ContentRange formats r as a Content-Range value for an item of size bytes.
func (r ByteRange) ContentRange(size int64) string {
	return fmt.Sprintf("bytes %d-%d/%d", r.Start, r.Start+r.Length-1, size)
}

// ParseRange parses a Range header for an item of size bytes. It drops
// ranges that start past the end, clamps those that run past it, then sorts
// the rest and merges those that overlap or touch (RFC 9110 15.3.7.2 lets a
// server coalesce regardless of the order requested). It returns the merged
// ranges in ascending order. A header whose merged ranges number more than
// maxRanges (or with more than MaxRangeSpecs specs) is reported as
// malformed, so it is ignored and the whole item served rather than many
// tiny parts: only a request that would cost more than the whole item gets
// the whole item.
func ParseRange(h string, size int64, maxRanges int) ([]ByteRange, error) {
	unit, set, ok := strings.Cut(h, "=")
	if !ok || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return nil, fmt.Errorf("%w: unit", ErrRangeMalformed)
	}
	if n := strings.Count(set, ",") + 1; n > MaxRangeSpecs {
		return nil, fmt.Errorf("%w: %d range specs, limit %d", ErrRangeMalformed, n, MaxRangeSpecs)
	}
	specs := strings.Split(set, ",")
	var out []ByteRange
	nspecs := 0
	for _, spec := range specs {
		spec = strings.TrimSpace(spec)
		if spec == "" {
			// RFC 9110 section 5.6.1.2: recipients ignore empty list
			// elements. They still count towards maxRanges above.
			continue
		}
		nspecs++
		first, last, ok := strings.Cut(spec, "-")
		if !ok {
			return nil, fmt.Errorf("%w: %.32q", ErrRangeMalformed, spec)
		}
		if first == "" { // suffix: -N
			n, err := parseDigits(last)
			if err != nil {
				return nil, err
			}
			if n == 0 || size == 0 {
				continue
			}
			n = min(n, size)
			out = append(out, ByteRange{Start: size - n, Length: n})
			continue
		}
		start, err := parseDigits(first)
		if err != nil {
			return nil, err
		}
		end := size - 1
		if last != "" {
			e, err := parseDigits(last)
			if err != nil {
				return nil, err
			}
			if e < start {
				return nil, fmt.Errorf("%w: %.32q ends before it starts", ErrRangeMalformed, spec)
			}
			end = min(e, size-1)
		}
		if start >= size {
			continue
		}
		out = append(out, ByteRange{Start: start, Length: end - start + 1})
	}
	if nspecs == 0 {
		return nil, fmt.Errorf("%w: no range", ErrRangeMalformed)
	}
	if len(out) == 0 {
		return nil, ErrRangeUnsatisfiable
	}
	out = Coalesce(out)
	if len(out) > maxRanges {
		return nil, fmt.Errorf("%w: %d ranges after merging, limit %d", ErrRangeMalformed, len(out), maxRanges)
	}
	return out, nil
}

// Coalesce sorts rs by start and merges ranges that overlap or touch. It
// reorders rs in place and returns the merged prefix.
func Coalesce(rs []ByteRange) []ByteRange {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b ByteRange) int { return cmp.Compare(a.Start, b.Start) })
	out := rs[:1]
	for _, r := range rs[1:] {
		last := &out[len(out)-1]
		if r.Start <= last.End() {
			last.Length = max(last.End(), r.End()) - last.Start
			continue
		}
		out = append(out, r)
	}
	return out
}

// parseDigits parses a non-empty string of ASCII digits, no sign, no space.
func parseDigits(s string) (int64, error) {
	if s == "" || len(s) > 19 {
		return 0, fmt.Errorf("%w: bad number %.24q", ErrRangeMalformed, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: bad number %.24q", ErrRangeMalformed, s)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: bad number %.24q", ErrRangeMalformed, s)
	}
	return n, nil
}
