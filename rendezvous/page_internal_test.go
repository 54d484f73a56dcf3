package rendezvous

import "testing"

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
