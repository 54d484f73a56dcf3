package relay_test

import (
	"crypto/ed25519"
	"net/http"
	"strings"
	"testing"

	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	node := rendezvoustest.NewNode(t)
	ok := func() relay.Config { return relay.Config{Node: node, PublicURL: "http://127.0.0.1:8081"} }
	tests := []struct {
		name    string
		mod     func(*relay.Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(*relay.Config) {}, ""},
		{"https public URL", func(c *relay.Config) { c.PublicURL = "https://relay.example.com" }, ""},
		{"window times prefetch equals budget", func(c *relay.Config) { c.Window, c.Prefetch, c.Budget = 1<<20, 4, 4<<20 }, ""},
		{"no node", func(c *relay.Config) { c.Node = nil }, "Node"},
		{"no public URL", func(c *relay.Config) { c.PublicURL = "" }, "PublicURL"},
		{"public URL not http", func(c *relay.Config) { c.PublicURL = "ftp://h" }, "PublicURL"},
		{"public URL without host", func(c *relay.Config) { c.PublicURL = "http://" }, "PublicURL"},
		{"negative budget", func(c *relay.Config) { c.Budget = -1 }, "negative"},
		{"negative window", func(c *relay.Config) { c.Window = -1 }, "negative"},
		{"window times prefetch over budget", func(c *relay.Config) { c.Window, c.Prefetch, c.Budget = 1<<20, 4, 4<<20-1 }, "exceeds Budget"},
		{"tiny max frame", func(c *relay.Config) { c.MaxFrame = 100 }, "MaxFrame"},
		{"short token key", func(c *relay.Config) { c.TokenKey = ed25519.PublicKey{1, 2, 3} }, "TokenKey"},
		{"no upload protocol", func(c *relay.Config) { c.Uploads = []string{} }, ""},
		{"unknown upload protocol", func(c *relay.Config) { c.Uploads = []string{"put", "ftp"} }, `"ftp" is not one of stor, socketio, put, tus`},
		{"upload protocol twice", func(c *relay.Config) { c.Uploads = []string{"tus", "tus"} }, `"tus" named twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok()
			tt.mod(&cfg)
			s, err := relay.New(cfg)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("New: got %v, want no error", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("New: got no error, want one naming %s", tt.wantErr)
			}
			if !strings.HasPrefix(err.Error(), "relay: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New: got %q, want an error starting with \"relay: \" naming %s", err, tt.wantErr)
			}
		})
	}

	t.Run("effective defaults", func(t *testing.T) {
		s, err := relay.New(ok())
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		c := s.Config()
		if c.Budget != relay.DefaultBudget || c.Window != relay.DefaultWindow || c.PartSize != relay.DefaultPartSize || c.Prefetch != relay.DefaultPrefetch {
			t.Errorf("budget, window, part size, prefetch: got %d, %d, %d, %d, want the defaults", c.Budget, c.Window, c.PartSize, c.Prefetch)
		}
		if s.ID() != node.ID() {
			t.Errorf("ID: got %s, want the node's %s", s.ID(), node.ID())
		}
	})
}

// TestStatus reads GET /v1/status of a registered relay.
func TestStatus(t *testing.T) {
	t.Parallel()
	e := newEnv(t, testRelayConfig())
	r := e.relays[0]
	var st relay.Status
	rendezvoustest.GetJSON(t, r.URL+"/v1/status", &st)
	eff := r.Server.Config()
	if !st.Registered || st.ID != r.ID() || st.HTTPURL != r.URL || st.Rendezvous != e.rv.URL || st.Budget != eff.Budget || st.Window != eff.Window {
		t.Errorf("status: got %+v, want registered relay %s at %s with budget %d and window %d", st, r.ID(), r.URL, eff.Budget, eff.Window)
	}
	if len(st.Addrs.Advertised) == 0 || !strings.Contains(st.Addrs.Advertised[0], "/p2p/"+r.ID()) {
		t.Errorf("advertised addrs: got %v, want the node's multiaddrs", st.Addrs.Advertised)
	}
	if len(st.Addrs.Observed) == 0 {
		t.Errorf("observed addrs: got none, want the address the rendezvous sees")
	}
	resp, _ := do(t, http.MethodGet, r.URL+"/v1/status")
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control: got %q, want no-store", cc)
	}
}
