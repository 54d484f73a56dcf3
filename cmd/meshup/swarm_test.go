package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
)

// TestSendSwarmRefuses: `meshup send --swarm` refuses, before it talks to
// the rendezvous and without touching the state file, what cannot be one
// member of the item the state file records.
func TestSendSwarmRefuses(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a.bin")
	if err := os.WriteFile(file, make([]byte, 10), 0o644); err != nil {
		t.Fatal(err)
	}
	const rdv = "http://127.0.0.1:1" // never dialled successfully
	id, owner := proto.NewOwnedItemID()
	state := func(st sendState) string {
		p := filepath.Join(t.TempDir(), "state.json")
		if err := st.save(p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := proto.NewE2EKey().String()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no state", []string{"--swarm"}, "--swarm needs --state"},
		{"other size", []string{"--swarm", "--state", state(sendState{Rendezvous: rdv, ID: id, Owner: owner, Key: key, Size: 11})}, "must hold the same bytes"},
		{"other rendezvous", []string{"--swarm", "--state", state(sendState{Rendezvous: "http://x", ID: id, Owner: owner, Key: key, Size: 10})}, "not " + rdv},
		{"plaintext item", []string{"--swarm", "--state", state(sendState{Rendezvous: rdv, ID: id, Owner: owner, Size: 10})}, "add --plain"},
		{"encrypted item", []string{"--swarm", "--plain", "--state", state(sendState{Rendezvous: rdv, ID: id, Owner: owner, Key: key, Size: 10})}, "drop --plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before []byte
			if i := len(tc.args) - 1; i > 0 && tc.args[i-1] == "--state" {
				before, _ = os.ReadFile(tc.args[i])
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var stderr bytes.Buffer
			err := runSend(ctx, append(append([]string{"--rendezvous", rdv}, tc.args...), file), io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if before != nil {
				if after, _ := os.ReadFile(tc.args[len(tc.args)-1]); !bytes.Equal(after, before) {
					t.Errorf("state file changed:\n%s\nwant\n%s", after, before)
				}
			}
		})
	}
}
