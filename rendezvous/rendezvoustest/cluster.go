package rendezvoustest

import (
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
)

// ClusterConfig returns the config of a cluster member for node: loopback,
// a free port, named after the node's peer id (as a rendezvous must be),
// joining join, with timings short enough for tests.
func ClusterConfig(tb testing.TB, node *mesh.Node, key []byte, join ...string) mesh.ClusterConfig {
	return mesh.ClusterConfig{
		Node:             node,
		BindAddr:         "127.0.0.1:0",
		Key:              key,
		Join:             join,
		Logger:           Logger(tb).With("member", node.ID()),
		ProbeInterval:    200 * time.Millisecond,
		ProbeTimeout:     100 * time.Millisecond,
		GossipInterval:   20 * time.Millisecond,
		PushPullInterval: 2 * time.Second,
		SuspicionMult:    2,
		RejoinInterval:   500 * time.Millisecond,
		LeaveTimeout:     time.Second,
	}
}

// StartCluster starts a cluster member with ClusterConfig. It is closed at
// tb's cleanup: start it before the rendezvous that uses it, so that it
// is closed after.
func StartCluster(tb testing.TB, node *mesh.Node, key []byte, join ...string) *mesh.Cluster {
	tb.Helper()
	c, err := mesh.NewCluster(ClusterConfig(tb, node, key, join...))
	if err != nil {
		tb.Fatalf("rendezvoustest: start cluster: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}
