package proto

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	// The examples of RFC 9110 section 14.1.2 use a 10000-byte representation.
	const size = 10000
	tests := []struct {
		name string
		h    string
		size int64
		want []ByteRange
	}{
		{"first 500", "bytes=0-499", size, []ByteRange{{0, 500}}},
		{"second 500", "bytes=500-999", size, []ByteRange{{500, 500}}},
		{"suffix 500", "bytes=-500", size, []ByteRange{{9500, 500}}},
		{"from 9500", "bytes=9500-", size, []ByteRange{{9500, 500}}},
		{"first and last byte", "bytes=0-0,-1", size, []ByteRange{{0, 1}, {9999, 1}}},
		{"two ranges", "bytes=500-600,602-999", size, []ByteRange{{500, 101}, {602, 398}}},
		{"adjacent merged", "bytes=500-600,601-999", size, []ByteRange{{500, 500}}},
		{"overlapping merged", "bytes=500-700,601-999", size, []ByteRange{{500, 500}}},
		{"contained merged", "bytes=0-999,10-20,500-501", size, []ByteRange{{0, 1000}}},
		{"sorted", "bytes=9000-9099,0-9", size, []ByteRange{{0, 10}, {9000, 100}}},
		{"unsorted overlapping merged", "bytes=20-29,0-9,5-24", size, []ByteRange{{0, 30}}},
		{"suffix merged with open range", "bytes=-100,9950-", size, []ByteRange{{9900, 100}}},
		{"many merging into one", "bytes=" + strings.Repeat("0-99,", 40) + "100-199", size, []ByteRange{{0, 200}}},
		{"many merging into two", "bytes=" + seq(0, 2, 2, 30) + "," + seq(5000, 1, 1, 30), size, []ByteRange{{0, 60}, {5000, 30}}},
		{"last byte", "bytes=9999-9999", size, []ByteRange{{9999, 1}}},
		{"end clamped", "bytes=9500-20000", size, []ByteRange{{9500, 500}}},
		{"suffix longer than item", "bytes=-20000", size, []ByteRange{{0, size}}},
		{"start past end dropped", "bytes=10000-,0-1", size, []ByteRange{{0, 2}}},
		{"suffix 0 dropped", "bytes=-0,5-5", size, []ByteRange{{5, 1}}},
		{"unit case-insensitive", "Bytes=0-1", size, []ByteRange{{0, 2}}},
		{"spaces around specs", "bytes= 1-2", size, []ByteRange{{1, 2}}},
		{"spaces around commas", "bytes=1-2 ,\t4-5 ", size, []ByteRange{{1, 2}, {4, 2}}},
		{"empty list elements ignored", "bytes=,0-1,,5-6,", size, []ByteRange{{0, 2}, {5, 2}}},
		{"leading zeros", "bytes=007-0010", size, []ByteRange{{7, 4}}},
		{"max int64 end", "bytes=0-9223372036854775807", size, []ByteRange{{0, size}}},
		{"max int64 suffix", "bytes=-9223372036854775807", size, []ByteRange{{0, size}}},
		{"one-byte item", "bytes=0-", 1, []ByteRange{{0, 1}}},
		{"huge item", "bytes=-1", math.MaxInt64, []ByteRange{{math.MaxInt64 - 1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRange(tt.h, tt.size, DefaultMaxRanges)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.h, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseRangeErrors(t *testing.T) {
	tests := []struct {
		name      string
		h         string
		size      int64
		maxRanges int
		wantErr   error
	}{
		{"start at end", "bytes=10000-", 10000, 16, ErrRangeUnsatisfiable},
		{"all past end", "bytes=10000-10001,20000-", 10000, 16, ErrRangeUnsatisfiable},
		{"suffix 0", "bytes=-0", 10000, 16, ErrRangeUnsatisfiable},
		{"max int64 start", "bytes=9223372036854775807-", 10000, 16, ErrRangeUnsatisfiable},
		{"empty item", "bytes=0-", 0, 16, ErrRangeUnsatisfiable},
		{"empty item suffix", "bytes=-5", 0, 16, ErrRangeUnsatisfiable},
		{"empty item first byte", "bytes=0-0", 0, 16, ErrRangeUnsatisfiable},

		{"empty", "", 10000, 16, ErrRangeMalformed},
		{"no equals", "bytes", 10000, 16, ErrRangeMalformed},
		{"no ranges", "bytes=", 10000, 16, ErrRangeMalformed},
		{"only commas", "bytes= , ,", 10000, 16, ErrRangeMalformed},
		{"letters", "bytes=abc", 10000, 16, ErrRangeMalformed},
		{"letters in range", "bytes=a-b", 10000, 16, ErrRangeMalformed},
		{"other unit", "items=0-1", 10000, 16, ErrRangeMalformed},
		{"no unit", "=0-1", 10000, 16, ErrRangeMalformed},
		{"ends before start", "bytes=5-1", 10000, 16, ErrRangeMalformed},
		{"ends before start past end", "bytes=20000-10000", 10000, 16, ErrRangeMalformed},
		{"plus sign", "bytes=+1-2", 10000, 16, ErrRangeMalformed},
		{"plus sign in end", "bytes=1-+2", 10000, 16, ErrRangeMalformed},
		{"negative start", "bytes=-1-2", 10000, 16, ErrRangeMalformed},
		{"two dashes", "bytes=1-2-3", 10000, 16, ErrRangeMalformed},
		{"double suffix", "bytes=--1", 10000, 16, ErrRangeMalformed},
		{"dash only", "bytes=-", 10000, 16, ErrRangeMalformed},
		{"no dash", "bytes=1", 10000, 16, ErrRangeMalformed},
		{"space inside", "bytes=1 -2", 10000, 16, ErrRangeMalformed},
		{"hex", "bytes=0x10-20", 10000, 16, ErrRangeMalformed},
		{"non-ASCII digit", "bytes=\u0661-2", 10000, 16, ErrRangeMalformed},
		{"one bad among good", "bytes=0-1,x-2", 10000, 16, ErrRangeMalformed},
		{"start over int64", "bytes=9223372036854775808-", 10000, 16, ErrRangeMalformed},
		{"end over int64", "bytes=0-9223372036854775808", 10000, 16, ErrRangeMalformed},
		{"20 digits", "bytes=0-99999999999999999999", 10000, 16, ErrRangeMalformed},
		{"suffix over int64", "bytes=-99999999999999999999", 10000, 16, ErrRangeMalformed},
		{"too many ranges", "bytes=0-1,3-4,6-7", 10000, 2, ErrRangeMalformed},
		{"too many after merging", "bytes=8-9,0-1,1-2,4-5", 10000, 2, ErrRangeMalformed},
		{"default limit", "bytes=" + seq(0, 100, 1, DefaultMaxRanges+1), 10000, DefaultMaxRanges, ErrRangeMalformed},
		{"too many specs", "bytes=" + strings.Repeat("0-0,", MaxRangeSpecs) + "0-0", 10000, DefaultMaxRanges, ErrRangeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRange(tt.h, tt.size, tt.maxRanges)
			if !errors.Is(err, tt.wantErr) || got != nil {
				t.Errorf("got %v, %v, want nil, %v", got, err, tt.wantErr)
			}
		})
	}
}

// seq returns n range specs of len bytes each, every step bytes from start,
// in descending order so that merging must sort them.
func seq(start, step, length int64, n int) string {
	specs := make([]string, n)
	for i := range n {
		off := start + int64(n-1-i)*step
		specs[i] = fmt.Sprintf("%d-%d", off, off+length-1)
	}
	return strings.Join(specs, ",")
}

func TestParseRangeAtLimit(t *testing.T) {
	tests := []struct {
		name string
		h    string
		want int
	}{
		{"two apart", "bytes=0-1,3-4", 2},
		{"empty elements do not count", "bytes=0-1,,,3-4,", 2},
		{"ten merging into two", "bytes=" + seq(0, 2, 2, 5) + "," + seq(100, 1, 1, 5), 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRange(tt.h, 1000, 2)
			if err != nil || len(got) != tt.want {
				t.Errorf("got %v, %v, want %d ranges", got, err, tt.want)
			}
		})
	}
}

func TestCoalesce(t *testing.T) {
	tests := []struct {
		name string
		in   []ByteRange
		want []ByteRange
	}{
		{"none", nil, nil},
		{"one", []ByteRange{{5, 1}}, []ByteRange{{5, 1}}},
		{"apart", []ByteRange{{10, 1}, {0, 1}}, []ByteRange{{0, 1}, {10, 1}}},
		{"touching", []ByteRange{{2, 2}, {0, 2}, {4, 2}}, []ByteRange{{0, 6}}},
		{"contained", []ByteRange{{0, 10}, {2, 2}}, []ByteRange{{0, 10}}},
		{"gap of one kept", []ByteRange{{0, 2}, {3, 2}}, []ByteRange{{0, 2}, {3, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Coalesce(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestByteRangeContentRange(t *testing.T) {
	tests := []struct {
		r    ByteRange
		size int64
		want string
	}{
		{ByteRange{0, 500}, 10000, "bytes 0-499/10000"},
		{ByteRange{9500, 500}, 10000, "bytes 9500-9999/10000"},
		{ByteRange{9999, 1}, 10000, "bytes 9999-9999/10000"},
		{ByteRange{0, 1}, 1, "bytes 0-0/1"},
	}
	for _, tt := range tests {
		if got := tt.r.ContentRange(tt.size); got != tt.want {
			t.Errorf("got %v, want %v", got, tt.want)
		}
		if got, want := tt.r.End(), tt.r.Start+tt.r.Length; got != want {
			t.Errorf("End of %v: got %v, want %v", tt.r, got, want)
		}
	}
}

// FuzzParseRange checks that every range returned lies within the item and
// that writing the result back as a Range header parses to the same ranges.
func FuzzParseRange(f *testing.F) {
	for _, h := range []string{
		"bytes=0-499", "bytes=500-999", "bytes=-500", "bytes=9500-", "bytes=0-0,-1",
		"bytes=500-600,601-999", "bytes=9500-20000", "bytes=10000-,0-1", "bytes= 1-2 ,,3-4",
		"bytes=5-1", "bytes=+1-2", "bytes=1-2-3", "bytes=0-9223372036854775807", "items=0-1",
	} {
		f.Add(h, int64(10000), uint8(DefaultMaxRanges))
	}
	f.Add("bytes=0-", int64(0), uint8(1))
	f.Add("bytes=-1", int64(math.MaxInt64), uint8(0))

	f.Fuzz(func(t *testing.T, h string, size int64, maxRanges uint8) {
		if size < 0 {
			size = -(size + 1) // sizes are never negative
		}
		got, err := ParseRange(h, size, int(maxRanges))
		if err != nil {
			if got != nil || !errors.Is(err, ErrRangeMalformed) && !errors.Is(err, ErrRangeUnsatisfiable) {
				t.Fatalf("got %v, %v, want nil and a range error", got, err)
			}
			return
		}
		if len(got) == 0 || len(got) > int(maxRanges) {
			t.Fatalf("got %d ranges, want 1 to %d", len(got), maxRanges)
		}
		var sb strings.Builder
		sb.WriteString("bytes=")
		for i, r := range got {
			if i > 0 && r.Start <= got[i-1].End() {
				t.Fatalf("got %v, want sorted ranges with gaps between them", got)
			}
			if r.Start < 0 || r.Length <= 0 || r.End() > size || r.End() < r.Start {
				t.Fatalf("got %+v for size %d, want a non-empty range within it", r, size)
			}
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "%d-%d", r.Start, r.End()-1)
		}
		again, err := ParseRange(sb.String(), size, int(maxRanges))
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("ParseRange(%q): got %v, %v, want %v", sb.String(), again, err, got)
		}
	})
}
