package buildinfo

import (
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "meshup_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("got %v, want one meshup_build_info sample", mfs)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetGauge().GetValue() != 1 || labels["version"] != Version() || labels["go_version"] != runtime.Version() {
		t.Errorf("got %v = %v, want version %q, go_version %q = 1", labels, m.GetGauge().GetValue(), Version(), runtime.Version())
	}
}

// TestLdflagsVersion builds the relay with the version set by -ldflags -X
// and checks that --version prints it.
func TestLdflagsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	out, err := exec.Command("go", "run", "-ldflags", "-X github.com/meshup/meshup/cmd/internal/buildinfo.version=v9.8.7-test",
		"github.com/meshup/meshup/cmd/relay", "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "relay v9.8.7-test " + runtime.Version(); strings.TrimSpace(string(out)) != want {
		t.Errorf("got %q, want %q", out, want)
	}
}
