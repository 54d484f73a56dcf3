package tlsserve_test

// TestACMEPebble obtains certificates end to end from a local ACME server,
// Let's Encrypt's pebble, with real challenges (no PEBBLE_VA_ALWAYS_VALID):
//
//	  test: DNS server (miekg/dns)  rv.meshup.test -> 127.0.0.1
//	        |                       relay.meshup.test -> 127.0.0.2
//	        v
//	  pebble --dnsserver ------ HTTP-01 --> 127.0.0.1:H  rendezvous --http-redirect
//	        |  (ACME, https)  \- TLS-ALPN-01 -> 127.0.0.2:T  relay --tls auto
//	        v
//	  rendezvous --tls auto (127.0.0.1:R) <-- registers -- relay --tls auto (127.0.0.2:T)
//
// The binaries resolve each other's names through a private /etc/hosts,
// bind-mounted in their own mount namespace (unshare -m): the machine's
// file is untouched. They trust pebble's issuing root through
// SSL_CERT_FILE, as a real deployment trusts the system's roots.
//
// pebble comes from MESHUP_PEBBLE or PATH (scripts/test installs it with
// go install); without it, or without root for the mount namespace, the
// test is skipped unless MESHUP_REQUIRE_PEBBLE=1.

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

const (
	rvName    = "rv.meshup.test"
	relayName = "relay.meshup.test"
)

var names = map[string]string{rvName + ".": "127.0.0.1", relayName + ".": "127.0.0.2"}

func TestACMEPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("runs pebble and two binaries; run without -short (scripts/test does)")
	}
	pebble := os.Getenv("MESHUP_PEBBLE")
	if pebble == "" {
		pebble, _ = exec.LookPath("pebble")
	}
	skip := func(why string) {
		if os.Getenv("MESHUP_REQUIRE_PEBBLE") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	if pebble == "" {
		skip("no pebble (set MESHUP_PEBBLE or put it on PATH; scripts/test installs it)")
	}
	if os.Geteuid() != 0 {
		skip("needs root for a private /etc/hosts (unshare -m)")
	}
	if _, err := exec.LookPath("unshare"); err != nil {
		skip("no unshare")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()

	dnsAddr := startDNS(t)
	tlsPort := freePort(t, "127.0.0.1", "127.0.0.2")
	httpPort := freePort(t, "127.0.0.1")
	acmePort, mgmtPort := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")

	// pebble's own certificate for its ACME directory, made here.
	acmeCert, acmeKey := selfSigned(t, dir, "pebble")
	cfg := map[string]any{"pebble": map[string]any{
		"listenAddress":           fmt.Sprintf("127.0.0.1:%d", acmePort),
		"managementListenAddress": fmt.Sprintf("127.0.0.1:%d", mgmtPort),
		"certificate":             acmeCert,
		"privateKey":              acmeKey,
		"httpPort":                httpPort,
		"tlsPort":                 tlsPort,
		"ocspResponderURL":        "",
		"retryAfter":              map[string]int{"authz": 1, "order": 1},
	}}
	cfgFile := filepath.Join(dir, "pebble.json")
	writeJSONFile(t, cfgFile, cfg)
	peb := startProc(t, ctx, "pebble", []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		pebble, "-config", cfgFile, "-dnsserver", dnsAddr)
	peb.waitFor(t, "ACME directory available at")

	// pebble's issuing root, from its management endpoint.
	acmeRoots := x509.NewCertPool()
	acmePEM, err := os.ReadFile(acmeCert)
	if err != nil {
		t.Fatal(err)
	}
	acmeRoots.AppendCertsFromPEM(acmePEM)
	mgmt := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: acmeRoots}}}
	// pebble prints its addresses just before it listens: wait for the
	// port to accept.
	awaitListening(t, ctx, fmt.Sprintf("127.0.0.1:%d", mgmtPort))
	awaitListening(t, ctx, fmt.Sprintf("127.0.0.1:%d", acmePort))
	resp, err := mgmt.Get(fmt.Sprintf("https://127.0.0.1:%d/roots/0", mgmtPort))
	if err != nil {
		t.Fatalf("pebble root: %v", err)
	}
	rootPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	roots := x509.NewCertPool()
	if resp.StatusCode != 200 || !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble root: %s %q", resp.Status, rootPEM)
	}
	rootFile := filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(rootFile, rootPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	hosts := filepath.Join(dir, "hosts")
	if err := os.WriteFile(hosts, []byte("127.0.0.1 localhost\n127.0.0.1 "+rvName+"\n127.0.0.2 "+relayName+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	bin := buildBinaries(t)
	env := []string{"SSL_CERT_FILE=" + rootFile}
	acme := []string{"--tls", "auto", "--acme-ca", fmt.Sprintf("https://127.0.0.1:%d/dir", acmePort), "--acme-ca-root", acmeCert, "--acme-email", "ops@meshup.test"}
	// The rendezvous's TLS port is not pebble's tlsPort: its TLS-ALPN-01
	// validation, if tried first, fails, and it passes HTTP-01.
	rvPort := freePort(t, "127.0.0.1")
	rvURL := fmt.Sprintf("https://%s:%d", rvName, rvPort)
	// Each binary runs in its own mount namespace with its own /etc/hosts
	// and / remounted noatime there: the first read of a file whose atime
	// is old (/etc/resolv.conf on a fresh machine, the roots just written)
	// dirties its inode, which /proc/PID/io counts as 4096 bytes written
	// by the reader, and would read as the binary writing to storage.
	private := `mount -o remount,bind,noatime / && mount --bind "$0" /etc/hosts && exec "$@"`
	rv := startProc(t, ctx, "rendezvous", env, "unshare", append([]string{"-m", "--", "sh", "-c", private, hosts,
		filepath.Join(bin, "rendezvous"),
		"--http", fmt.Sprintf("127.0.0.1:%d", rvPort), "--public-url", rvURL,
		"--http-redirect", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--stun", "off", "--debug-addr", "off", "--allow-private-addrs"}, acme...)...)
	relayURL := fmt.Sprintf("https://%s:%d", relayName, tlsPort)
	rl := startProc(t, ctx, "relay", env, "unshare", append([]string{"-m", "--", "sh", "-c", private, hosts,
		filepath.Join(bin, "relay"),
		"--rendezvous", rvURL, "--public", "127.0.0.2",
		"--http", fmt.Sprintf("127.0.0.2:%d", tlsPort), "--public-url", relayURL,
		"--p2p", "/ip4/127.0.0.1/tcp/0", "--debug-addr", "off", "--allow-private-addrs"}, acme...)...)

	// Storage writes are counted from the start of certificate management
	// (start-up, in the mount namespace's shell, is not under test).
	rv.waitFor(t, `msg="tls auto"`)
	rl.waitFor(t, `msg="tls auto"`)
	written := map[*proc]int64{rv: writeBytes(t, rv), rl: writeBytes(t, rl)}
	rv.waitFor(t, "tls certificate obtained")
	rl.waitFor(t, "tls certificate obtained")
	// The rendezvous passed HTTP-01 (its TLS port is not where pebble
	// validates TLS-ALPN-01); the relay, without --http-redirect, can only
	// have passed TLS-ALPN-01.
	peb.waitFor(t, "validate w/ HTTP: http://"+rvName)
	// The rendezvous admits the relay's https URL only after fetching a
	// challenge from it: the relay's certificate verified too.
	rv.waitFor(t, "relay registered")
	rv.waitFor(t, "relay url verified")

	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				host, port, _ := net.SplitHostPort(addr)
				if ip, ok := names[host+"."]; ok {
					addr = net.JoinHostPort(ip, port)
				}
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	for _, c := range []struct{ url, name string }{
		{rvURL + "/v1/info", rvName},
		{relayURL + "/v1/status", relayName},
	} {
		resp, err := client.Get(c.url)
		if err != nil {
			t.Fatalf("GET %s: %v", c.url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.TLS == nil || len(resp.TLS.VerifiedChains) == 0 {
			t.Fatalf("GET %s: no verified chain", c.url)
		}
		leaf := resp.TLS.PeerCertificates[0]
		if err := leaf.VerifyHostname(c.name); err != nil {
			t.Errorf("GET %s: %v", c.url, err)
		}
		if !strings.Contains(leaf.Issuer.CommonName, "Pebble") {
			t.Errorf("GET %s: issuer %q, want pebble's", c.url, leaf.Issuer.CommonName)
		}
		t.Logf("GET %s: %s, certificate for %v issued by %q", c.url, resp.Status, leaf.DNSNames, leaf.Issuer.CommonName)
	}

	// The rendezvous sends consumers to the relay's https URL.
	resp, err = client.Get(rvURL + "/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Relays []struct {
			Reach     string `json:"reach"`
			ReachKind string `json:"reach_kind"`
		} `json:"relays"`
	}
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if len(st.Relays) != 1 || st.Relays[0].Reach != relayURL || st.Relays[0].ReachKind != "direct" {
		t.Errorf("relays in /v1/status: got %+v, want one reached directly at %s", st.Relays, relayURL)
	}

	// The certificates and the ACME accounts stayed in memory: neither
	// binary wrote to storage.
	for p, before := range written {
		if n := writeBytes(t, p) - before; n != 0 {
			t.Errorf("%s wrote %d bytes to storage while managing its certificate, want 0 (kept in memory)", p.name, n)
		}
	}

	// The redirect listener sends plain HTTP to https.
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/v1/info?x=1", httpPort), nil)
	req.Host = rvName
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("Location"), rvURL+"/v1/info?x=1"; resp.StatusCode != http.StatusPermanentRedirect || got != want {
		t.Errorf("http redirect: got %d %q, want 308 %q", resp.StatusCode, got, want)
	}
}

// writeBytes returns the bytes p caused to be written to storage
// (/proc/PID/io write_bytes).
func writeBytes(t *testing.T, p *proc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", p.pid))
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "write_bytes: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("%s: write_bytes %q", p.name, v)
			}
			return n
		}
	}
	t.Fatalf("%s: no write_bytes in /proc/%d/io", p.name, p.pid)
	return 0
}

// awaitListening returns once addr accepts a TCP connection, retrying
// refused ones until ctx is done.
func awaitListening(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("%s never listened: %v", addr, err)
		}
	}
}

// startDNS answers A queries for names over TCP (pebble's resolver uses
// TCP) and returns its address.
func startDNS(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		m.Authoritative = true
		for _, qq := range q.Question {
			ip, ok := names[strings.ToLower(qq.Name)]
			if !ok {
				m.Rcode = dns.RcodeNameError
				continue
			}
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.ParseIP(ip)})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// freePort returns a TCP port free on each of ips.
func freePort(t *testing.T, ips ...string) int {
	for range 20 {
		ln, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		var others []net.Listener
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			others = append(others, l)
		}
		for _, l := range others {
			l.Close()
		}
		ln.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}

// selfSigned writes a certificate for 127.0.0.1 and localhost and its key
// to dir and returns their paths.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func writeJSONFile(t *testing.T, path string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// buildBinaries builds the rendezvous and the relay into a temporary
// directory.
func buildBinaries(t *testing.T) string {
	dir := t.TempDir()
	cmd := exec.Command("go", "build", "-o", dir+"/", "github.com/meshup/meshup/cmd/rendezvous", "github.com/meshup/meshup/cmd/relay")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	return dir
}

// proc is a running process whose output lines are kept and can be
// waited for.
type proc struct {
	name string
	ctx  context.Context
	pid  int // the binary's: unshare and sh exec it

	mu    sync.Mutex // guards the fields below
	lines []string
	grew  chan struct{} // closed and replaced when a line arrives or output ends
	ended bool
}

// startProc runs path with args and extra environment; it is killed when
// the test ends, and its output is logged if the test failed.
func startProc(t *testing.T, ctx context.Context, name string, env []string, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, ctx: ctx, grew: make(chan struct{})}
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		cmd.Wait()
		w.Close()
	}()
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.grew)
			p.grew = make(chan struct{})
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.ended = true
		close(p.grew)
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		p.mu.Lock()
		defer p.mu.Unlock()
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, strings.Join(p.lines, "\n"))
			return
		}
		// What an operator sees: the TLS lines.
		for _, l := range p.lines {
			if strings.Contains(l, `msg="tls`) || strings.Contains(l, "relay registered") || strings.Contains(l, "relay url verified") {
				t.Logf("%s: %s", name, l)
			}
		}
	})
	return p
}

// waitFor blocks until a line of p's output contains s, and returns it.
func (p *proc) waitFor(t *testing.T, s string) string {
	t.Helper()
	seen := 0
	for {
		p.mu.Lock()
		for ; seen < len(p.lines); seen++ {
			if strings.Contains(p.lines[seen], s) {
				l := p.lines[seen]
				p.mu.Unlock()
				return l
			}
		}
		grew, ended := p.grew, p.ended
		p.mu.Unlock()
		if ended {
			t.Fatalf("%s ended before printing %q", p.name, s)
		}
		select {
		case <-grew:
		case <-p.ctx.Done():
			t.Fatalf("%s: no %q before the test's deadline", p.name, s)
		}
	}
}
