package browser

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/cmd/internal/tlsserve"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// TestBrowserHTTPS runs the web app over https off localhost (issue 13):
// the rendezvous is behind a TLS-terminating front (tlsserve's manual
// mode, the behind-a-proxy set-up of the README) on
// https://test.meshup.test:PORT, and its two relays have http URLs only.
// Chromium trusts exactly the front's key. Page A publishes, page B
// downloads through the Service Worker (which needs the secure origin);
// neither may use http: or ws: (https.mjs checks), so the pushes and the
// download cross the rendezvous's tunnel, which the test checks too.
func TestBrowserHTTPS(t *testing.T) {
	testDir, node := needBrowser(t)
	const host = "test.meshup.test"
	const size = 6<<20 + 123
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	certFile, keyFile, spki := leafCert(t, host)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	public := fmt.Sprintf("https://%s:%d", host, ln.Addr().(*net.TCPAddr).Port)
	tl, err := (&tlsserve.Flags{CertFile: certFile, KeyFile: keyFile}).Wrap(ctx, ln, public, relaytest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, PublicURL: public})
	backend, _ := url.Parse(rv.URL)
	front := &http.Server{Handler: &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(backend)
		r.SetXForwarded()
		r.Out.Host = r.In.Host
	}}}
	go front.Serve(tl)
	t.Cleanup(func() { front.Close() })
	for range 2 {
		r := relaytest.Start(t, rv.URL, relay.Config{})
		if !strings.HasPrefix(r.URL, "http://") {
			t.Fatalf("relay URL %s, want http", r.URL)
		}
	}

	cmd := exec.CommandContext(ctx, node, "https.mjs", public, spki, fmt.Sprint(size))
	cmd.Dir = testDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		t.Log(l)
	}
	if err != nil {
		t.Fatalf("https.mjs: %v", err)
	}
	if !strings.Contains(string(out), "https: ok") {
		t.Fatal("https.mjs did not report success")
	}
	dp := rv.Server.DataPath()
	t.Logf("figure: https: the rendezvous's tunnel carried %d bytes in %d requests", dp.Tunnel.BytesIn+dp.Tunnel.BytesOut, dp.Tunnel.Requests)
	if dp.Tunnel.BytesIn < size || dp.Tunnel.BytesOut < size {
		t.Errorf("tunnel bytes in %d, out %d; want the item's %d both ways (pushed in, downloaded out)", dp.Tunnel.BytesIn, dp.Tunnel.BytesOut, size)
	}
}

// leafCert writes a self-signed certificate for host and its key, and
// returns their paths and the base64 SHA-256 of its public key, as
// Chromium's --ignore-certificate-errors-spki-list takes it.
func leafCert(t *testing.T, host string) (certFile, keyFile, spki string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{host},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(pub)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, base64.StdEncoding.EncodeToString(sum[:])
}
