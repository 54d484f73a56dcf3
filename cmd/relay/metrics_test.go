package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/cmd/internal/devmesh"
)

// TestMeshMemoryMetrics: a real relay of a dev mesh exports what its
// libp2p node holds and may hold (--mesh-memory), as /v1/status does.
func TestMeshMemoryMetrics(t *testing.T) {
	m := startDevMesh(t, 2)
	got := gather(t, newStatusCollector(m.Relays[0]))
	st := m.Relays[0].Status()
	used, limit := got["meshup_relay_mesh_memory_bytes"], got["meshup_relay_mesh_memory_limit_bytes"]
	if limit != float64(st.MeshMemoryLimit) || limit < 16<<20 {
		t.Errorf("mesh_memory_limit_bytes %v, want the status's %d, at least 16 MiB", limit, st.MeshMemoryLimit)
	}
	if used <= 0 || used > limit {
		t.Errorf("mesh_memory_bytes %v, want what the connections to the rendezvous and the other relay hold, within %v", used, limit)
	}
}

// startDevMesh starts a dev mesh of n relays, closed at the test's end.
func startDevMesh(t *testing.T, n int) *devmesh.Mesh {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	m, err := devmesh.Start(ctx, devmesh.Config{Relays: n, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// gather collects c's metrics: by name, the sum of their gauges and
// counters over all labels.
func gather(t *testing.T, c prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, mm := range mf.GetMetric() {
			got[mf.GetName()] += mm.GetGauge().GetValue() + mm.GetCounter().GetValue()
		}
	}
	return got
}
