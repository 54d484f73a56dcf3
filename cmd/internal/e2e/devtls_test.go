package e2e

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDevTLS: `meshup dev --tls --tls-dir DIR` serves the rendezvous and
// its relays over https with a local CA whose certificate (only) it
// writes to DIR/ca.pem. With SSL_CERT_FILE naming it, `meshup send` of a
// file (pushed over wss on order) and of a clip, and `meshup get` of both,
// work over https, intact; a Range read trusting that CA gets its 206 from
// an https relay; a client that does not trust the CA is refused.
func TestDevTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the real binaries; run without -short")
	}
	dir, err := binaries()
	if err != nil {
		t.Fatal(err)
	}
	meshup := filepath.Join(dir, "meshup")
	caDir := filepath.Join(t.TempDir(), "tls")
	caFile := filepath.Join(caDir, "ca.pem")
	pr, pw := io.Pipe()
	dev := start(t, "meshup", pw, "dev", "--tls-dir", caDir, "--http", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--relays", "2")
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var rdv string
	for rdv == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("meshup dev exited:\n%s", dev.log.String())
			}
			if f := strings.Fields(l); strings.HasPrefix(l, "meshup dev: rendezvous") {
				rdv = f[len(f)-1]
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("meshup dev printed no URL:\n%s", dev.log.String())
		}
	}
	if !strings.HasPrefix(rdv, "https://") {
		t.Fatalf("rendezvous URL %q, want https", rdv)
	}
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatalf("the CA certificate: %v", err)
	}
	if bytes.Contains(pemBytes, []byte("PRIVATE KEY")) {
		t.Fatalf("%s holds a private key, want the CA certificate only", caFile)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s: no certificate", caFile)
	}
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	if _, err := http.Get(rdv + "/v1/info"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("GET without the CA: %v, want a certificate error", err)
	}
	env := append(os.Environ(), "SSL_CERT_FILE="+caFile)
	// Without the CA, send and get fail at once and say how to trust it.
	for _, args := range [][]string{{"send", "--rendezvous", rdv, caFile}, {"get", rdv + "/i/aaaaaaaaaaaaaaaaaaaaaaaaaa"}} {
		b, err := exec.Command(meshup, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(b), "TLS certificate is not trusted") || !strings.Contains(string(b), "SSL_CERT_FILE") {
			t.Errorf("meshup %s without the CA: %v\n%s\nwant a failure naming the untrusted certificate and SSL_CERT_FILE", args[0], err, b)
		}
	}

	file, sum := randomFile(t, 2<<20+5)
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// A file, pushed on order while `meshup send` runs.
	send := exec.Command(meshup, "send", "--rendezvous", rdv, "--plain", file)
	send.Env = env
	out, err := send.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var sendLog lockedBuffer
	send.Stderr = &sendLog
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { send.Process.Kill(); send.Wait() })
	sc := bufio.NewScanner(out)
	var urls []string
	for len(urls) < 2 && sc.Scan() {
		urls = append(urls, sc.Text())
	}
	if len(urls) < 2 {
		t.Fatalf("meshup send printed %q:\n%s", urls, sendLog.String())
	}
	get := func(link string) {
		t.Helper()
		o := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(meshup, "get", "-o", o, link)
		cmd.Env = env
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("meshup get %s over https: %v\n%s", link, err, b)
		}
		checkFile(t, o, sum)
	}
	get(urls[0])
	req, _ := http.NewRequest(http.MethodGet, urls[1], nil)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, err := trusting.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:2000]) || resp.Request.URL.Scheme != "https" || resp.Request.URL.Host == req.URL.Host {
		t.Errorf("Range read: %s from %s, %d bytes; want 206 from an https relay, bytes 1000-1999", resp.Status, resp.Request.URL.Host, len(body))
	}

	// A clip (encrypted), stored on the relays over wss; the sender exits.
	clip := exec.Command(meshup, "send", "--rendezvous", rdv, "--clip", file)
	clip.Env = env
	var cout, cerr bytes.Buffer
	clip.Stdout, clip.Stderr = &cout, &cerr
	if err := clip.Run(); err != nil || !strings.Contains(cerr.String(), "clip stored on 2 relay(s)") {
		t.Fatalf("meshup send --clip over https: %v\n%s", err, cerr.String())
	}
	get(strings.Fields(cout.String())[0])
}
