package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestRunStops checks that Run leaves the rendezvous and returns as soon
// as its context is done or the relay is closed, without waiting for the
// rendezvous to time the relay out.
func TestRunStops(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		stop func(cancel context.CancelFunc, s *relay.Server)
	}{
		{"context cancelled", func(cancel context.CancelFunc, _ *relay.Server) { cancel() }},
		{"server closed", func(_ context.CancelFunc, s *relay.Server) { s.Close() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t) // DeadAfter is a minute: longer than the wait below
			node := rendezvoustest.NewNode(t)
			s, err := relay.New(relay.Config{Node: node, Rendezvous: e.rv.URL, PublicURL: "http://127.0.0.1:1", Logger: relaytest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx) }()
			eventually(t, "the relay registered", func() bool {
				return s.Status().Registered && e.rv.Server.Stats().Relays == 1
			})

			tt.stop(cancel, s)
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: got %v, want nil", err)
				}
			case <-time.After(wait):
				t.Fatalf("Run did not return within %v of being stopped", wait)
			}
			if s.Status().Registered {
				t.Error("relay still registered after Run returned")
			}
			eventually(t, "the rendezvous to drop the relay", func() bool { return e.rv.Server.Stats().Relays == 0 })
		})
	}
}
