package tlsserve

import (
	"context"
	"io/fs"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
)

// memStorage is a certmagic.Storage in memory: certificates, their keys
// and the ACME account key live as long as the process. The relay and the
// rendezvous write nothing to disk unless the operator asks (--tls-dir);
// the cost is a new certificate at every start, which the ACME CA's rate
// limits bound (Let's Encrypt: 5 duplicate certificates a week).
type memStorage struct {
	mu    sync.Mutex // guards the fields below
	files map[string]memFile
	locks map[string]chan struct{} // closed on unlock
}

type memFile struct {
	value    []byte
	modified time.Time
}

var _ certmagic.Storage = (*memStorage)(nil)

func newMemStorage() *memStorage {
	return &memStorage{files: map[string]memFile{}, locks: map[string]chan struct{}{}}
}

// Lock takes the lock name, waiting for its holder in this process.
func (m *memStorage) Lock(ctx context.Context, name string) error {
	for {
		m.mu.Lock()
		held, ok := m.locks[name]
		if !ok {
			m.locks[name] = make(chan struct{})
			m.mu.Unlock()
			return nil
		}
		m.mu.Unlock()
		select {
		case <-held:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Unlock releases the lock name.
func (m *memStorage) Unlock(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if held, ok := m.locks[name]; ok {
		close(held)
		delete(m.locks, name)
	}
	return nil
}

func (m *memStorage) Store(_ context.Context, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[clean(key)] = memFile{append([]byte(nil), value...), time.Now()}
	return nil
}

func (m *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[clean(key)]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return append([]byte(nil), f.value...), nil
}

// Delete deletes key and, when key is a directory, everything under it.
func (m *memStorage) Delete(_ context.Context, key string) error {
	key = clean(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.files {
		if k == key || strings.HasPrefix(k, key+"/") {
			delete(m.files, k)
		}
	}
	return nil
}

func (m *memStorage) Exists(_ context.Context, key string) bool {
	key = clean(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	for k := range m.files {
		if k == key || strings.HasPrefix(k, key+"/") {
			return true
		}
	}
	return false
}

// List lists the keys under dir: all of them when recursive, else its
// direct children (files and directories).
func (m *memStorage) List(_ context.Context, dir string, recursive bool) ([]string, error) {
	dir = clean(dir)
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for k := range m.files {
		rest, ok := strings.CutPrefix(k, dir+"/")
		if dir == "" {
			rest, ok = k, true
		}
		if !ok {
			continue
		}
		parts := strings.Split(rest, "/")
		if !recursive {
			add(path.Join(dir, parts[0]))
			continue
		}
		for i := range parts {
			add(path.Join(dir, path.Join(parts[:i+1]...)))
		}
	}
	if len(out) == 0 {
		return nil, fs.ErrNotExist
	}
	return out, nil
}

func (m *memStorage) Stat(_ context.Context, key string) (certmagic.KeyInfo, error) {
	key = clean(key)
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.files[key]; ok {
		return certmagic.KeyInfo{Key: key, Modified: f.modified, Size: int64(len(f.value)), IsTerminal: true}, nil
	}
	for k := range m.files {
		if strings.HasPrefix(k, key+"/") {
			return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
		}
	}
	return certmagic.KeyInfo{}, fs.ErrNotExist
}

func clean(key string) string {
	return strings.Trim(path.Clean("/"+key), "/")
}
