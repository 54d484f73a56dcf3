package main

import (
	"math"
	"runtime/debug"
	"testing"
)

// TestSetMemoryLimit: the relay's soft memory limit follows its budget by
// default, can be set or turned off, and GOMEMLIMIT wins.
func TestSetMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(old) })
	const budget = 256 << 20
	for _, tc := range []struct {
		name       string
		flag, want int64
	}{
		{"default from the budget", 0, budget + budget/4},
		{"set", 1 << 30, 1 << 30},
		{"off", -1, math.MaxInt64},
	} {
		if got := setMemoryLimit(tc.flag, budget); got != tc.want || debug.SetMemoryLimit(-1) != tc.want {
			t.Errorf("%s: got %d (runtime %d), want %d", tc.name, got, debug.SetMemoryLimit(-1), tc.want)
		}
	}
	if got := defaultMemoryLimit(32 << 20); got != 96<<20 {
		t.Errorf("default for a 32 MiB budget: got %d, want %d (64 MiB above it)", got, 96<<20)
	}
	debug.SetMemoryLimit(123 << 20) // as GOMEMLIMIT=123MiB would have
	t.Setenv("GOMEMLIMIT", "123MiB")
	if got := setMemoryLimit(0, budget); got != 123<<20 {
		t.Errorf("with GOMEMLIMIT: got %d, want the runtime's %d", got, 123<<20)
	}
}
