package devmesh

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"syscall"
	"testing"
	"time"
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
