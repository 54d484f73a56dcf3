// Package keyfile holds the identity key file of a rendezvous or a relay
// (--key-file): the one file either may write, and only when the operator
// asks for it (issue 13). It keeps a rendezvous's token signing key and
// peer id, and a relay's peer id, the same across restarts.
//
// The file is one Ed25519 private key as PEM, type "PRIVATE KEY", holding
// PKCS#8 DER (RFC 8410), the format of `openssl genpkey -algorithm
// ed25519`:
//
//	-----BEGIN PRIVATE KEY-----
//	MC4CAQAwBQYDK2VwBCIEI...
//	-----END PRIVATE KEY-----
//
// Load creates it with mode 0600 when it is missing and refuses one that
// others can read or write, or that holds anything else.
package keyfile

import (
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

var (
	// ErrPermissions means the key file is open to users other than its
	// owner (a mode wider than 0600) or is not a regular file.
	ErrPermissions = errors.New("keyfile: permissions wider than 0600")
	// ErrMalformed means the key file is not one PEM "PRIVATE KEY" block
	// holding a PKCS#8 Ed25519 key.
	ErrMalformed = errors.New("keyfile: not a PEM PKCS#8 Ed25519 private key")
)

// pemType is the PEM block type of the file (RFC 7468 section 10).
const pemType = "PRIVATE KEY"

// Load returns the key in the file at path. When no file is there it
// generates a key and writes it atomically (a temporary file in the same
// directory, synced, then renamed) with mode 0600; created says so. A file
// whose mode lets group or others in fails with ErrPermissions, content
// that is not a key with ErrMalformed; neither is changed.
func Load(path string) (key ed25519.PrivateKey, created bool, err error) {
	b, err := read(path)
	if err == nil {
		key, err = parse(b)
		if err != nil {
			return nil, false, fmt.Errorf("key file %s: %w", path, err)
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("key file %s: %w", path, err)
	}
	if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
		return nil, false, fmt.Errorf("key file %s: generate key: %w", path, err)
	}
	if err := write(path, key); err != nil {
		return nil, false, fmt.Errorf("key file %s: %w", path, err)
	}
	return key, true, nil
}

// read returns the file's content after checking that it is a regular
// file open to its owner only.
func read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file (%s)", ErrPermissions, fi.Mode())
	}
	// Windows has no Unix modes; its ACLs are the operator's to set.
	if runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: mode %04o (chmod 600 it)", ErrPermissions, fi.Mode().Perm())
	}
	const maxFile = 4 << 10 // a PEM Ed25519 key is 119 bytes
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	if len(b) > maxFile {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrMalformed, maxFile)
	}
	return b, nil
}

// parse decodes the file's content: one PEM block, nothing but white space
// around it.
func parse(b []byte) (ed25519.PrivateKey, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%w: no PEM block", ErrMalformed)
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("%w: PEM type %q, want %q", ErrMalformed, block.Type, pemType)
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("%w: data after the PEM block", ErrMalformed)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	key, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: a %T, want Ed25519", ErrMalformed, k)
	}
	return key, nil
}

// Encode returns key in the file's format.
func Encode(key ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keyfile: encode: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), nil
}

// write stores key at path atomically: a reader sees no file or the whole
// key, never part of one.
func write(path string, key ed25519.PrivateKey) error {
	b, err := Encode(key)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*") // mode 0600
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if err := tmp.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		tmp.Close()
		return fmt.Errorf("chmod: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename: %w", err)
	}
	// Make the rename itself durable; a directory that cannot be synced
	// (some file systems) still holds the key.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Derive returns a second Ed25519 key derived from key for the use named
// by label (HKDF-SHA256 over the key's seed, RFC 5869), so that one file
// serves two uses without one key signing for both: the rendezvous signs
// tokens with the file's key and uses a derived key as its libp2p
// identity.
func Derive(key ed25519.PrivateKey, label string) (ed25519.PrivateKey, error) {
	seed, err := hkdf.Key(sha256.New, key.Seed(), nil, "meshup keyfile v1: "+label, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("keyfile: derive %s: %w", label, err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}
