package cliconf

import (
	"flag"
	"math"
	"strconv"
	"strings"

	"github.com/meshup/meshup/cmd/internal/units"
)

// SizeVar defines a byte-size flag in human units (units.Size: "256MiB",
// "1.5GB", "4096") stored in *p, an int64 field of a Config.
func SizeVar(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	fs.Var((*units.Size)(p), name, usage)
}

// IntSizeVar is SizeVar for an int field.
func IntSizeVar(fs *flag.FlagSet, p *int, name string, def int, usage string) {
	*p = def
	fs.Var((*intSize)(p), name, usage)
}

// LimitSizeVar is SizeVar for a limit that may be switched off: "none",
// "off" or a negative number store -1.
func LimitSizeVar(fs *flag.FlagSet, p *int64, name string, def int64, usage string) {
	*p = def
	fs.Var((*limitSize)(p), name, usage)
}

type intSize int

func (s *intSize) String() string { return units.Size(*s).String() }

func (s *intSize) Set(v string) error {
	n, err := units.ParseSize(v)
	if err != nil {
		return err
	}
	if n > math.MaxInt32 {
		return strconv.ErrRange
	}
	*s = intSize(n)
	return nil
}

type limitSize int64

func (s *limitSize) String() string {
	if *s < 0 {
		return "none"
	}
	return units.Size(*s).String()
}

func (s *limitSize) Set(v string) error {
	switch v = strings.TrimSpace(v); {
	case v == "none", v == "off", strings.HasPrefix(v, "-"):
		*s = -1
		return nil
	}
	return (*units.Size)(s).Set(v)
}
