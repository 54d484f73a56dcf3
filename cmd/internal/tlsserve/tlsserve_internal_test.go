package tlsserve

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestMode(t *testing.T) {
	tests := []struct {
		f       Flags
		want    string
		wantErr bool
	}{
		{Flags{}, ModeOff, false},
		{Flags{CertFile: "c"}, ModeManual, false},
		{Flags{Mode: "auto"}, ModeAuto, false},
		{Flags{Mode: "off"}, ModeOff, false},
		{Flags{Mode: "on"}, "", true},
	}
	for _, tt := range tests {
		got, err := tt.f.mode()
		if got != tt.want || (err != nil) != tt.wantErr {
			t.Errorf("%+v: got %q, %v; want %q, error %v", tt.f, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestWrapRefuses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name string
		f    Flags
		url  string
		want string
	}{
		{"auto on http", Flags{Mode: ModeAuto}, "http://example.org", "needs --public-url https://"},
		{"manual without files", Flags{Mode: ModeManual}, "https://example.org", "needs --tls-cert and --tls-key"},
		{"redirect without tls", Flags{HTTPRedirect: ":0"}, "https://example.org", "need --tls"},
		{"bad mode", Flags{Mode: "yes"}, "https://example.org", "want off, auto or manual"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.f.Wrap(context.Background(), ln, tt.url, log)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if got, err := (&Flags{}).Wrap(context.Background(), ln, "https://example.org", log); err != nil || got != ln {
		t.Errorf("off: got %v, %v; want the listener itself", got, err)
	}
}

// writeCert writes a self-signed certificate for name to dir.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestManualServesAndReloads serves a certificate over a real TLS
// handshake, then replaces its files: the next handshake after the check
// interval gets the new one.
func TestManualServesAndReloads(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "one.meshup.test")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tl, err := (&Flags{CertFile: certFile, KeyFile: keyFile}).Wrap(ctx, ln, "https://one.meshup.test", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	served := func() (string, string) {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		st := c.ConnectionState()
		return st.PeerCertificates[0].Subject.CommonName, st.NegotiatedProtocol
	}
	if cn, proto := served(); cn != "one.meshup.test" || proto != "http/1.1" {
		t.Fatalf("got %q over %q, want one.meshup.test over http/1.1", cn, proto)
	}
	writeCert(t, dir, "two.meshup.test")
	later := time.Now().Add(time.Minute)
	os.Chtimes(certFile, later, later)
	kp := tl.(*listener).kp
	kp.mu.Lock()
	kp.checked = time.Time{} // the check interval is over
	kp.mu.Unlock()
	if cn, _ := served(); cn != "two.meshup.test" {
		t.Errorf("after the files changed: got %q, want two.meshup.test", cn)
	}
	// SIGHUP reloads at once.
	writeCert(t, dir, "three.meshup.test")
	kp.mu.Lock()
	reloaded := kp.reloaded
	kp.mu.Unlock()
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	<-reloaded
	if cn, _ := served(); cn != "three.meshup.test" {
		t.Errorf("after SIGHUP: got %q, want three.meshup.test", cn)
	}
	// A broken file keeps the current certificate.
	os.WriteFile(certFile, []byte("garbage"), 0o644)
	kp.reload("test")
	if cn, _ := served(); cn != "three.meshup.test" {
		t.Errorf("after a broken file: got %q, want three.meshup.test kept", cn)
	}
}

func TestMemStorage(t *testing.T) {
	ctx := context.Background()
	m := newMemStorage()
	m.Store(ctx, "certificates/ca/a.test/a.test.crt", []byte("crt"))
	m.Store(ctx, "certificates/ca/a.test/a.test.key", []byte("key"))
	m.Store(ctx, "acme/ca/users/x/x.json", []byte("{}"))
	if b, err := m.Load(ctx, "certificates/ca/a.test/a.test.crt"); string(b) != "crt" || err != nil {
		t.Errorf("load: got %q, %v", b, err)
	}
	if _, err := m.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("load missing: got %v, want fs.ErrNotExist", err)
	}
	if !m.Exists(ctx, "certificates/ca") || m.Exists(ctx, "certificates/c") {
		t.Error("exists: a directory must exist, a prefix of a name must not")
	}
	got, _ := m.List(ctx, "certificates/ca", false)
	if !slices.Equal(got, []string{"certificates/ca/a.test"}) {
		t.Errorf("list: got %q", got)
	}
	got, _ = m.List(ctx, "certificates", true)
	slices.Sort(got)
	if want := []string{"certificates/ca", "certificates/ca/a.test", "certificates/ca/a.test/a.test.crt", "certificates/ca/a.test/a.test.key"}; !slices.Equal(got, want) {
		t.Errorf("list recursive: got %q, want %q", got, want)
	}
	if ki, err := m.Stat(ctx, "certificates/ca/a.test"); err != nil || ki.IsTerminal {
		t.Errorf("stat directory: got %+v, %v", ki, err)
	}
	if ki, err := m.Stat(ctx, "certificates/ca/a.test/a.test.key"); err != nil || !ki.IsTerminal || ki.Size != 3 {
		t.Errorf("stat file: got %+v, %v", ki, err)
	}
	m.Delete(ctx, "certificates")
	if m.Exists(ctx, "certificates/ca/a.test/a.test.crt") || !m.Exists(ctx, "acme") {
		t.Error("delete: want the directory gone and the rest kept")
	}

	// Lock waits for Unlock, and gives up with its context.
	if err := m.Lock(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.Lock(cctx, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("lock held: got %v, want context.Canceled", err)
	}
	got2 := make(chan error)
	go func() { got2 <- m.Lock(ctx, "x") }()
	m.Unlock(ctx, "x")
	if err := <-got2; err != nil {
		t.Errorf("lock after unlock: %v", err)
	}
}
