package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestSendClip: `meshup send --clip FILE` returns once the relays hold the
// clip, and the clip is then read intact with the sender gone.
func TestSendClip(t *testing.T) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rv := rendezvoustest.Start(t, rendezvous.Config{SigningKey: key, DeadAfter: time.Minute})
	for range 2 {
		relaytest.Start(t, rv.URL, relay.Config{Window: 256 << 10})
	}
	data := meshtest.RandomBytes(2<<20+9, 5)
	file := filepath.Join(t.TempDir(), "shot.png")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := runSend(ctx, []string{"--rendezvous", rv.URL, "--clip", file}, &stdout, &stderr); err != nil {
		t.Fatalf("send --clip: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "clip stored on 2 relay(s)") {
		t.Errorf("stderr: got %q, want it to say the clip is stored on 2 relays", stderr.String())
	}
	lines := strings.Fields(stdout.String())
	if len(lines) != 2 {
		t.Fatalf("stdout: got %q, want the share link and the download URL", stdout.String())
	}
	var got bytes.Buffer
	if _, err := client.DownloadTo(ctx, lines[0], &got, client.FileOptions{}); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("clip after send returned: got %d bytes, %v, want %d bytes intact", got.Len(), err, len(data))
	}
}
