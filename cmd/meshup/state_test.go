package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
)

func TestSendState(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	if st, err := loadSendState(path); st != nil || err != nil {
		t.Fatalf("missing file: got %v, %v, want nil, nil", st, err)
	}
	id, owner := proto.NewOwnedItemID()
	mod := time.Date(2026, 12, 2, 4, 24, 47, 123456789, time.FixedZone("x", 3600))
	want := &sendState{Rendezvous: "http://r:8080", ID: id, Owner: owner, File: "/a/b.mp4", Size: 42, Modified: mod}
	if err := want.save(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode: got %v, want 0600 (the file holds the owner secret)", fi.Mode().Perm())
	}
	got, err := loadSendState(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id || got.Owner != owner || !got.matches("http://r:8080", "/a/b.mp4", 42, mod) {
		t.Fatalf("round trip: got %+v, want %+v", got, want)
	}
	tests := []struct {
		name      string
		rdv, file string
		size      int64
		mod       time.Time
	}{
		{"other rendezvous", "http://s:8080", "/a/b.mp4", 42, mod},
		{"other file", "http://r:8080", "/a/c.mp4", 42, mod},
		{"other size", "http://r:8080", "/a/b.mp4", 43, mod},
		{"modified", "http://r:8080", "/a/b.mp4", 42, mod.Add(time.Nanosecond)},
	}
	for _, tt := range tests {
		if got.matches(tt.rdv, tt.file, tt.size, tt.mod) {
			t.Errorf("%s: matches, want a new item", tt.name)
		}
	}
	if err := os.WriteFile(path, []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSendState(path); err == nil {
		t.Errorf("version 99: got no error")
	}
	if err := os.WriteFile(path, []byte(`{"version": 1, "id": "not an id"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadSendState(path); err == nil {
		t.Errorf("bad id: got no error")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d files, want only the state file (no temporary left)", len(entries))
	}
}
