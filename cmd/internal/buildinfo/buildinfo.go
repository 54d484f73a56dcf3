// Package buildinfo says which build of meshup is running: --version on
// every binary and the meshup_build_info metric of the servers.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// version overrides the version read from the build information, for
// release builds:
//
//	go build -ldflags "-X github.com/meshup/meshup/cmd/internal/buildinfo.version=v1.2.3" ./cmd/relay
var version string

// Version returns the version of the running binary: the one set with
// -ldflags -X, else the module version the go command recorded (go
// install ...@v1.2.3), else the VCS revision (with +dirty for a modified
// tree), else "devel".
func Version() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+dirty"
			}
		}
	}
	if rev == "" {
		return "devel"
	}
	return "devel-" + rev[:min(len(rev), 12)] + dirty
}

// String returns the line --version prints: the program, its version
// and the Go version it was built with.
func String(program string) string {
	return program + " " + Version() + " " + runtime.Version()
}

// Collector returns the meshup_build_info gauge: always 1, with the
// version and Go version as labels (the Prometheus build_info idiom).
func Collector() prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "meshup_build_info",
		Help:        "Build of the running binary: always 1, with its version and Go version as labels.",
		ConstLabels: prometheus.Labels{"version": Version(), "go_version": runtime.Version()},
	})
	g.Set(1)
	return g
}
