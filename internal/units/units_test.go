package units

import (
	"errors"
	"flag"
	"math"
	"testing"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  error
	}{
		{"4096", 4096, nil},
		{"0", 0, nil},
		{"256MiB", 256 * MiB, nil},
		{"256mib", 256 * MiB, nil},
		{"256Mi", 256 * MiB, nil},
		{"256 MiB", 256 * MiB, nil},
		{" 1.5GiB ", 3 * GiB / 2, nil},
		{"10MB", 10_000_000, nil},
		{"10mb", 10_000_000, nil},
		{"10M", 10_000_000, nil},
		{"1TB", 1_000_000_000_000, nil},
		{"1TiB", TiB, nil},
		{"2k", 2000, nil},
		{"2KiB", 2048, nil},
		{"12B", 12, nil},
		{"0.5", 1, nil}, // rounds half up
		{"1.0004kB", 1000, nil},
		{"8EiB", 0, ErrRange},
		{"7.99EiB", 9211842821808707338, nil},
		{"9223372036854775807", math.MaxInt64, nil},
		{"9223372036854775808", 0, ErrRange},
		{"", 0, ErrSyntax},
		{"MiB", 0, ErrSyntax},
		{"-1", 0, ErrSyntax},
		{"1-", 0, ErrSyntax},
		{"1.2.3", 0, ErrSyntax},
		{"1e3", 0, ErrSyntax},
		{"inf", 0, ErrSyntax},
		{"NaN", 0, ErrSyntax},
		{"0x10", 0, ErrSyntax},
		{"10 furlongs", 0, ErrSyntax},
		{"10Mbit", 0, ErrSyntax}, // bits are for rates only
		{"10MB/s", 0, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseSize(%q) = %d, %v; want error %v", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  error
	}{
		{"", 0, nil},
		{"0", 0, nil},
		{"unlimited", 0, nil},
		{"10MB/s", 10_000_000, nil},
		{"1MiB/s", MiB, nil},
		{"1MiB", MiB, nil},
		{"80Mbit/s", 10_000_000, nil},
		{"80mbit/s", 10_000_000, nil},
		{"80Mbits/s", 10_000_000, nil},
		{"80Mbps", 10_000_000, nil},
		{"10MBps", 10_000_000, nil},
		{"1kbit/s", 125, nil},
		{"2MiB/s", 2 * MiB, nil},
		{"4096/s", 4096, nil},
		{"-1MB/s", 0, ErrSyntax},
		{"fast", 0, ErrSyntax},
		{"10MB/h", 0, ErrSyntax},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("ParseRate(%q) = %d, %v; want error %v", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{4097, "4097"},
		{4096, "4KiB"},
		{256 * MiB, "256MiB"},
		{3 * GiB / 2, "1.5GiB"},
		{10_000_000, "10MB"},
		{1_000_000_000_000, "1TB"},
		{1536, "1536"},
		{1536 * KiB, "1.5MiB"},
		{math.MaxInt64, "9223372036854775807"},
	}
	for _, tt := range tests {
		if got := Size(tt.in).String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRateString(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "unlimited"},
		{2 * MiB, "2MiB/s"},
		{10_000_000, "10MB/s"},
		{125, "125/s"},
	}
	for _, tt := range tests {
		if got := Rate(tt.in).String(); got != tt.want {
			t.Errorf("Rate(%d).String() = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{MiB - 1, "1.0 MiB"}, // not "1024.0 KiB"
		{3 * GiB, "3.0 GiB"},
		{-1536, "-1.5 KiB"},
		{math.MaxInt64, "8.0 EiB"},
		{math.MinInt64, "-8.0 EiB"},
	}
	for _, tt := range tests {
		if got := Format(tt.in); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got, want := FormatRate(0), "unlimited"; got != want {
		t.Errorf("FormatRate(0) = %q, want %q", got, want)
	}
	if got, want := FormatRate(2*MiB), "2.0 MiB/s"; got != want {
		t.Errorf("FormatRate(2MiB) = %q, want %q", got, want)
	}
}

// TestFlags checks Size and Rate work as flag values, including the error
// a bad value gives and the default printed by PrintDefaults.
func TestFlags(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(new(discard))
	budget := Size(64 * MiB)
	rate := Rate(0)
	fs.Var(&budget, "budget", "memory `size`")
	fs.Var(&rate, "max-rate", "`rate`")
	if err := fs.Parse([]string{"--budget", "256MiB", "--max-rate", "80Mbit/s"}); err != nil {
		t.Fatal(err)
	}
	if budget != Size(256*MiB) || rate != Rate(10_000_000) {
		t.Fatalf("got budget %d rate %d, want %d and %d", budget, rate, 256*MiB, 10_000_000)
	}
	if err := fs.Parse([]string{"--budget", "lots"}); err == nil {
		t.Fatal("--budget lots: got no error, want one")
	}
	var s Size
	if err := s.UnmarshalText([]byte("1.5GiB")); err != nil || s != Size(3*GiB/2) {
		t.Fatalf("UnmarshalText: got %d, %v; want %d", s, err, 3*GiB/2)
	}
}

type discard struct{}

func (discard) Write(b []byte) (int, error) { return len(b), nil }

func FuzzParse(f *testing.F) {
	for _, s := range []string{"4096", "256MiB", "1.5GiB", "10MB", "1TB", "80Mbit/s", "10MBps", "0", "", "unlimited", "9223372036854775807", "7.99EiB", "1..2", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := ParseSize(s); err == nil {
			if n < 0 {
				t.Fatalf("ParseSize(%q) = %d, negative", s, n)
			}
			checkRoundTrip(t, n)
		}
		if n, err := ParseRate(s); err == nil {
			if n < 0 {
				t.Fatalf("ParseRate(%q) = %d, negative", s, n)
			}
			back, err := ParseRate(Rate(n).String())
			if err != nil || back != n {
				t.Fatalf("ParseRate(%q) = %d; String %q parses to %d, %v", s, n, Rate(n).String(), back, err)
			}
		}
	})
}

func FuzzFormat(f *testing.F) {
	for _, n := range []int64{0, 1, 1023, 1024, MiB - 1, 3 * GiB / 2, 10_000_000, math.MaxInt64} {
		f.Add(n)
	}
	f.Fuzz(func(t *testing.T, n int64) {
		if n < 0 {
			n = -(n + 1)
		}
		checkRoundTrip(t, n)
	})
}

// checkRoundTrip checks Size.String parses back exactly and Format parses
// back to within 5%.
func checkRoundTrip(t *testing.T, n int64) {
	t.Helper()
	s := Size(n).String()
	back, err := ParseSize(s)
	if err != nil || back != n {
		t.Fatalf("Size(%d).String() = %q parses to %d, %v", n, s, back, err)
	}
	h := Format(n)
	approx, err := ParseSize(h)
	if err != nil {
		if n >= 7*EiB+EiB/20*19 && errors.Is(err, ErrRange) { // "8.0 EiB" is just past MaxInt64
			return
		}
		t.Fatalf("Format(%d) = %q: %v", n, h, err)
	}
	if d := math.Abs(float64(approx) - float64(n)); d > 0.05*float64(n) {
		t.Fatalf("Format(%d) = %q parses to %d, off by %.0f", n, h, approx, d)
	}
}
