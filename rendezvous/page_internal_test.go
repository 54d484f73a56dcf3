package rendezvous

import "testing"

func TestHumanSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{3 << 20, "3.0 MiB"},
		{1<<30 - 1, "1.0 GiB"},
		{1<<30 - 1<<20, "1023.0 MiB"},
		{5 << 40, "5.0 TiB"},
		{1<<63 - 1, "8.0 EiB"},
	}
	for _, tt := range tests {
		if got := humanSize(tt.n); got != tt.want {
			t.Errorf("humanSize(%d): got %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestPushURL(t *testing.T) {
	tests := []struct{ base, want string }{
		{"http://relay.test", "ws://relay.test/v1/push"},
		{"https://relay.test:8443", "wss://relay.test:8443/v1/push"},
		{"http://127.0.0.1:9000/mesh", "ws://127.0.0.1:9000/mesh/v1/push"},
	}
	for _, tt := range tests {
		if got := pushURL(tt.base); got != tt.want {
			t.Errorf("pushURL(%q): got %q, want %q", tt.base, got, tt.want)
		}
	}
}
