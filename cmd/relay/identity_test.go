package main

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/keyfile"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestKeyFileRestart checks that a relay restarted with the same
// --key-file registers again under the same peer id, which the rendezvous
// takes as the same relay, and that a key file open to others stops the
// start.
func TestKeyFileRestart(t *testing.T) {
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute})
	path := filepath.Join(t.TempDir(), "relay.key")
	key, _, err := keyfile.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	p2p, err := keyfile.Derive(key, p2pIdentityLabel)
	if err != nil {
		t.Fatal(err)
	}
	want, err := mesh.PeerID(p2p)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--rendezvous", rv.URL, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0",
		"--allow-private-addrs", "--debug-addr", "off", "--log", "warn", "--key-file", path}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited 30s for %s", what)
			}
		}
	}
	for i, name := range []string{"first start", "restart"} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, args, io.Discard) }()
		waitUntil(name+": relay "+want+" registered", func() bool { return rv.Server.IsRelay(want) })
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: run: %v", name, err)
		}
		if i == 0 {
			waitUntil("relay dropped after it stopped", func() bool { return !rv.Server.IsRelay(want) })
		}
	}

	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), args, io.Discard); !errors.Is(err, keyfile.ErrPermissions) {
		t.Errorf("start with a 0644 key file: got %v, want %v", err, keyfile.ErrPermissions)
	}
}
