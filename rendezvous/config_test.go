package rendezvous_test

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	node := rendezvoustest.NewNode(t)
	valid := func() rendezvous.Config {
		return rendezvous.Config{PublicURL: "https://share.example.org", Node: node}
	}
	tests := []struct {
		name    string
		edit    func(*rendezvous.Config)
		wantErr string // "" means valid
	}{
		{"defaults", func(*rendezvous.Config) {}, ""},
		{"trailing slash", func(c *rendezvous.Config) { c.PublicURL = "http://127.0.0.1:8080/" }, ""},
		{"origins", func(c *rendezvous.Config) { c.AllowedOrigins = []string{"https://a.example", "*"} }, ""},
		{"key", func(c *rendezvous.Config) { c.SigningKey = ed25519.NewKeyFromSeed(make([]byte, 32)) }, ""},
		{"no public url", func(c *rendezvous.Config) { c.PublicURL = "" }, "PublicURL is required"},
		{"relative public url", func(c *rendezvous.Config) { c.PublicURL = "/share" }, "PublicURL"},
		{"ws public url", func(c *rendezvous.Config) { c.PublicURL = "ws://x" }, "PublicURL"},
		{"no node", func(c *rendezvous.Config) { c.Node = nil }, "Node is required"},
		{"short key", func(c *rendezvous.Config) { c.SigningKey = make([]byte, 10) }, "SigningKey"},
		{"bad origin", func(c *rendezvous.Config) { c.AllowedOrigins = []string{"a.example"} }, "allowed origin"},
		{"negative sessions", func(c *rendezvous.Config) { c.MaxSessions = -1 }, "MaxSessions is negative"},
		{"negative ttl", func(c *rendezvous.Config) { c.ItemTTL = -time.Second }, "ItemTTL is negative"},
		{"tiny max message", func(c *rendezvous.Config) { c.MaxMessage = 100 }, "MaxMessage"},
		{"text over message", func(c *rendezvous.Config) { c.MaxMessage = 4096; c.MaxTextMessage = 4096 }, "MaxTextMessage"},
		{"dead before heartbeat", func(c *rendezvous.Config) { c.DeadAfter = 500 * time.Millisecond }, "DeadAfter"},
		{"stun off", func(c *rendezvous.Config) { c.STUNAddr = "off" }, ""},
		{"stun ephemeral", func(c *rendezvous.Config) { c.STUNAddr = "127.0.0.1:0" }, ""},
		{"stun alt off", func(c *rendezvous.Config) { c.STUNAddr = "127.0.0.1:0"; c.STUNAltAddr = "off" }, ""},
		{"stun alt explicit", func(c *rendezvous.Config) { c.STUNAddr = "127.0.0.1:0"; c.STUNAltAddr = "127.0.0.1:0" }, ""},
		{"stun no port", func(c *rendezvous.Config) { c.STUNAddr = "3478" }, "STUNAddr"},
		{"stun port range", func(c *rendezvous.Config) { c.STUNAddr = ":65536" }, "STUNAddr"},
		{"stun named port", func(c *rendezvous.Config) { c.STUNAddr = ":stun" }, "STUNAddr"},
		{"stun no next port", func(c *rendezvous.Config) { c.STUNAddr = "127.0.0.1:65535" }, "STUNAltAddr"},
		{"stun alt bad", func(c *rendezvous.Config) { c.STUNAddr = "127.0.0.1:0"; c.STUNAltAddr = "x" }, "STUNAltAddr"},
		{"stun alt without stun", func(c *rendezvous.Config) { c.STUNAltAddr = ":3479" }, "STUN is off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid()
			tt.edit(&cfg)
			err := cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("got %v, want nil", err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("got nil, want an error about %s", tt.wantErr)
			case err != nil && (!strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "rendezvous: ")):
				t.Errorf("got %q, want a rendezvous error about %s", err, tt.wantErr)
			}
			if tt.wantErr != "" {
				if s, err := rendezvous.New(cfg); err == nil {
					s.Close()
					t.Error("New accepted an invalid config")
				}
			}
		})
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{MaxSessions: 7})
	got := map[string]string{}
	for _, a := range rv.Server.Limits() {
		got[a.Key] = a.Value.String()
	}
	for key, want := range map[string]string{
		"max_sessions":          "7",
		"max_message":           "65536",
		"max_items_per_session": "1000",
		"max_text_message":      "16384",
		"heartbeat_interval":    "1s",
		"dead_after":            "3s",
		"read_token_ttl":        "10m0s",
		"push_token_ttl":        "2m0s",
		"item_ttl":              "1h0m0s",
		"ping_interval":         "15s",
		"stun":                  "127.0.0.1:0",
		"stun_alt":              "127.0.0.1:0",
		"stun_max_packet":       "1500",
	} {
		if got[key] != want {
			t.Errorf("limit %s: got %q, want %q", key, got[key], want)
		}
	}
}

func TestSigningKey(t *testing.T) {
	t.Parallel()
	key := ed25519.NewKeyFromSeed([]byte("0123456789abcdef0123456789abcdef"))
	rv := rendezvoustest.Start(t, rendezvous.Config{SigningKey: key})
	if got := tokenKey(t, rv); !got.Equal(key.Public()) {
		t.Errorf("token_key: got %x, want the configured key's %x", got, key.Public())
	}
}
