package devmesh

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/tlsserve"
	"github.com/meshup/meshup/mesh/meshtest"
)

// TestStartRefuses: a taken address and a negative relay count are
// errors, and a Start that fails closes what it started (it used to
// panic on a nil Mesh).
func TestStartRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	m, err := Start(ctx, Config{HTTPAddr: ln.Addr().String(), Logger: log})
	if !errors.Is(err, syscall.EADDRINUSE) || m != nil {
		t.Fatalf("taken address: got %v, %v, want nil, EADDRINUSE", m, err)
	}
	if m, err := Start(ctx, Config{Relays: -1, Logger: log}); err == nil || m != nil {
		t.Fatalf("-1 relays: got %v, %v, want an error", m, err)
	}
}

// TestTLS: with a DevCA, the rendezvous and relays serve https; a client
// trusting the CA reads /v1/info, the relays registered (they trusted the
// rendezvous's certificate) and the rendezvous verified their https URLs
// (it trusted theirs); a client without the CA is refused.
func TestTLS(t *testing.T) {
	ca, err := tlsserve.NewDevCA()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := Start(ctx, Config{Relays: 2, Logger: slog.New(slog.DiscardHandler), TLS: ca.ServerConfig(), RootCAs: ca.Pool})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if !strings.HasPrefix(m.URL, "https://") || len(m.RelayURLs) != 2 || !strings.HasPrefix(m.RelayURLs[0], "https://") {
		t.Fatalf("URLs %s %v, want https", m.URL, m.RelayURLs)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool}}, Timeout: 10 * time.Second}
	if _, err := http.Get(m.URL + "/v1/info"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without the CA: %v, want a certificate error", err)
	}
	meshtest.Eventually(t, 30*time.Second, "the rendezvous verified both https relay URLs", func() bool {
		resp, err := hc.Get(m.URL + "/v1/status")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Relays []struct {
				HTTPURL  string `json:"http_url"`
				Verified bool   `json:"verified"`
			} `json:"relays"`
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st.Relays) != 2 {
			return false
		}
		for _, r := range st.Relays {
			if !r.Verified || !strings.HasPrefix(r.HTTPURL, "https://") {
				return false
			}
		}
		return true
	})
}
