package keyfile

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func TestLoadCreatesThenReloads(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "id.pem")
	key, created, err := Load(path)
	if err != nil || !created {
		t.Fatalf("first Load: created %v err %v, want a new key", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("mode: got %04o, want 0600", fi.Mode().Perm())
	}
	// Nothing but the key file is left in the directory.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1 (the key file)", len(ents))
	}
	again, created, err := Load(path)
	if err != nil || created {
		t.Fatalf("second Load: created %v err %v, want the stored key", created, err)
	}
	if !again.Equal(key) {
		t.Errorf("second Load: got another key, want the stored one")
	}
}

// TestLoadOpenSSL reads a key in the format `openssl genpkey -algorithm
// ed25519` writes (RFC 8410 section 10.3's example).
func TestLoadOpenSSL(t *testing.T) {
	t.Parallel()
	const pemKey = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC\n-----END PRIVATE KEY-----\n"
	path := filepath.Join(t.TempDir(), "id.pem")
	if err := os.WriteFile(path, []byte(pemKey), 0o600); err != nil {
		t.Fatal(err)
	}
	key, created, err := Load(path)
	if err != nil || created {
		t.Fatalf("Load: created %v err %v", created, err)
	}
	const wantSeed = "d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842"
	if got := hex.EncodeToString(key.Seed()); got != wantSeed {
		t.Errorf("seed: got %s, want %s", got, wantSeed)
	}
}

func TestLoadRefuses(t *testing.T) {
	t.Parallel()
	good, err := Encode(mustKey(t))
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	tests := []struct {
		name    string
		content []byte
		mode    os.FileMode
		want    error
	}{
		{"mode 0644", good, 0o644, ErrPermissions},
		{"mode 0640", good, 0o640, ErrPermissions},
		{"mode 0604", good, 0o604, ErrPermissions},
		{"garbage", []byte("not a key\n"), 0o600, ErrMalformed},
		{"empty", nil, 0o600, ErrMalformed},
		{"wrong PEM type", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2}}), 0o600, ErrMalformed},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: []byte{1, 2, 3}}), 0o600, ErrMalformed},
		{"not Ed25519", pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: ecDER}), 0o600, ErrMalformed},
		{"trailing data", append(append([]byte{}, good...), "junk"...), 0o600, ErrMalformed},
		{"too large", make([]byte, 5<<10), 0o600, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if runtime.GOOS == "windows" && tc.want == ErrPermissions {
				t.Skip("no Unix modes")
			}
			path := filepath.Join(t.TempDir(), "id.pem")
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, _, err := Load(path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Load: got %v, want %v", err, tc.want)
			}
			// The refused file is left as it was.
			if b, _ := os.ReadFile(path); string(b) != string(tc.content) {
				t.Errorf("file changed after a refusal")
			}
		})
	}
}

func TestLoadRefusesDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if _, _, err := Load(dir); !errors.Is(err, ErrPermissions) {
		t.Fatalf("Load of a directory: got %v, want %v", err, ErrPermissions)
	}
}

func TestLoadMissingDirectory(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "no", "such", "id.pem")
	if _, _, err := Load(path); err == nil {
		t.Fatal("Load into a missing directory: got no error")
	}
}

func TestDerive(t *testing.T) {
	t.Parallel()
	key := mustKey(t)
	a, err := Derive(key, "libp2p")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Derive(key, "libp2p")
	c, _ := Derive(key, "other")
	if !a.Equal(b) {
		t.Error("Derive: two calls with one label gave different keys")
	}
	if a.Equal(c) || a.Equal(key) {
		t.Error("Derive: the derived key equals the key or another label's key")
	}
}

func mustKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	k, _, err := Load(filepath.Join(t.TempDir(), "k.pem"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
