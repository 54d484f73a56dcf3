package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/keyfile"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// startRun runs the rendezvous command with args on a free port until the
// returned stop is called, and returns its /v1/info.
func startRun(t *testing.T, args ...string) (rendezvous.Info, func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--http", addr, "--p2p", "/ip4/127.0.0.1/tcp/0",
			"--stun", "off", "--debug-addr", "off", "--log-level", "warn"}, args...), io.Discard)
	}()
	stop := func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}
	for {
		var info rendezvous.Info
		resp, err := rendezvoustest.HTTP.Get("http://" + addr + "/v1/info")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&info)
			resp.Body.Close()
			if err == nil {
				return info, stop
			}
		}
		select {
		case err := <-done:
			cancel()
			t.Fatalf("run ended before serving: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestKeyFileRestart checks that a rendezvous restarted with the same
// --key-file keeps its token key and peer id (so tokens of reads in flight
// stay valid), that one without it gets new ones, and that a key file open
// to others stops the start.
func TestKeyFileRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rendezvous.key")
	first, stop := startRun(t, "--key-file", path)
	stop()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file after the first start: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode: got %04o, want 0600", fi.Mode().Perm())
	}
	second, stop := startRun(t, "--key-file", path)
	stop()
	if second.TokenKey != first.TokenKey || second.PeerID != first.PeerID {
		t.Errorf("after a restart: token key %s peer id %s, want %s %s", second.TokenKey, second.PeerID, first.TokenKey, first.PeerID)
	}
	if second.TokenKey == "" || second.PeerID == "" {
		t.Fatalf("info without token key or peer id: %+v", second)
	}
	ephemeral, stop := startRun(t)
	stop()
	if ephemeral.TokenKey == first.TokenKey || ephemeral.PeerID == first.PeerID {
		t.Errorf("without --key-file: token key %s peer id %s, want new ones", ephemeral.TokenKey, ephemeral.PeerID)
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"--http", "127.0.0.1:0", "--stun", "off", "--debug-addr", "off", "--key-file", path}, io.Discard)
	if !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("start with a 0644 key file: got %v, want %v", err, keyfile.ErrPermissions)
	}
}
