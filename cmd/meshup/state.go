package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/meshup/meshup/proto"
)

// sendState is what `meshup send --state FILE` keeps on the sender's
// machine so that a restarted sender takes its item back under the same id
// (same share link), even from a rendezvous that restarted meanwhile.
// The file is JSON, written with mode 0600 because it holds the owner
// secret; fields may be added (readers ignore unknown ones):
//
//	{
//	  "version": 1,
//	  "rendezvous": "http://127.0.0.1:8080",
//	  "id": "c4qyaex3an27tmxufbc4tyusde",
//	  "owner": "…43 characters…",
//	  "key": "…43 characters…",          (encrypted items: the link's #k=)
//	  "file": "/abs/path/video.mp4",
//	  "size": 1048576,
//	  "modified": "2026-12-02T04:24:47Z"
//	}
//
// The item is reused only while file, size and modification time are
// unchanged, the rendezvous is the same and the item is encrypted (or not)
// as asked; otherwise a new item is published and the file rewritten.
type sendState struct {
	Version    int          `json:"version"`
	Rendezvous string       `json:"rendezvous"`
	ID         proto.ItemID `json:"id"`
	Owner      string       `json:"owner"`
	Key        string       `json:"key,omitempty"` // item key (proto.E2EKey, base64url) of an encrypted item
	File       string       `json:"file"`
	Size       int64        `json:"size"`
	Modified   time.Time    `json:"modified"`
}

const sendStateVersion = 1

// loadSendState reads path. A missing file is no state (nil, nil).
func loadSendState(path string) (*sendState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	var st sendState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Version != sendStateVersion {
		return nil, fmt.Errorf("state file %s: version %d, want %d", path, st.Version, sendStateVersion)
	}
	return &st, nil
}

// matches reports whether st describes the same file on the same
// rendezvous.
func (st *sendState) matches(rdv, file string, size int64, modified time.Time) bool {
	return st != nil && !st.ID.IsZero() && st.Owner != "" && st.Rendezvous == rdv &&
		st.File == file && st.Size == size && st.Modified.Equal(modified)
}

// save writes st to path atomically (a temporary file renamed over it),
// readable by its owner only.
func (st *sendState) save(path string) error {
	st.Version = sendStateVersion
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("state file: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("state file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	return nil
}
