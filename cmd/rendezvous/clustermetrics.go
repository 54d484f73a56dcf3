package main

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshup/meshup/mesh"
)

// clusterCollector exports mesh.Cluster.Stats to Prometheus, reading a
// fresh snapshot on every scrape.
type clusterCollector struct {
	cluster *mesh.Cluster
	metrics []clusterMetric
	dropped *prometheus.Desc
}

type clusterMetric struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(mesh.ClusterStats) float64
}

func newClusterCollector(c *mesh.Cluster) *clusterCollector {
	const ns = "meshup_cluster_"
	counter := func(name, help string, f func(mesh.ClusterStats) uint64) clusterMetric {
		return clusterMetric{
			desc:  prometheus.NewDesc(ns+name, help, nil, nil),
			typ:   prometheus.CounterValue,
			value: func(s mesh.ClusterStats) float64 { return float64(f(s)) },
		}
	}
	gauge := func(name, help string, f func(mesh.ClusterStats) int) clusterMetric {
		return clusterMetric{
			desc:  prometheus.NewDesc(ns+name, help, nil, nil),
			typ:   prometheus.GaugeValue,
			value: func(s mesh.ClusterStats) float64 { return float64(f(s)) },
		}
	}
	return &clusterCollector{
		cluster: c,
		metrics: []clusterMetric{
			gauge("members", "Live cluster members, this one included.", func(s mesh.ClusterStats) int { return s.Members }),
			gauge("records", "Relay records in the directory.", func(s mesh.ClusterStats) int { return s.Records }),
			gauge("local_records", "Relay records homed here.", func(s mesh.ClusterStats) int { return s.LocalRecords }),
			counter("published_total", "Relay records published here.", func(s mesh.ClusterStats) uint64 { return s.Published }),
			counter("learned_total", "New or newer relay records learned from gossip.", func(s mesh.ClusterStats) uint64 { return s.Learned }),
			counter("withdrawn_total", "Relay records withdrawn.", func(s mesh.ClusterStats) uint64 { return s.Withdrawn }),
			counter("expired_total", "Relay records expired.", func(s mesh.ClusterStats) uint64 { return s.Expired }),
			counter("home_gone_total", "Relay records dropped because their home left or failed.", func(s mesh.ClusterStats) uint64 { return s.HomeGone }),
			counter("member_joins_total", "Members seen joining.", func(s mesh.ClusterStats) uint64 { return s.MemberJoins }),
			counter("member_leaves_total", "Members that left gracefully.", func(s mesh.ClusterStats) uint64 { return s.MemberLeaves }),
			counter("member_failures_total", "Members declared dead.", func(s mesh.ClusterStats) uint64 { return s.MemberFailures }),
			counter("callbacks_lost_total", "Cluster callbacks dropped on a full queue.", func(s mesh.ClusterStats) uint64 { return s.CallbacksLost }),
		},
		dropped: prometheus.NewDesc(ns+"dropped_total", "Gossiped records and messages refused, by reason.", []string{"reason"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.metrics {
		ch <- m.desc
	}
	ch <- c.dropped
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.cluster.Stats()
	for _, m := range c.metrics {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(st))
	}
	for reason, n := range st.Dropped {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(n), reason)
	}
}
