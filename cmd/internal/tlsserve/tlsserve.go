// Package tlsserve puts TLS on the HTTP listener of the rendezvous and of
// public relays, set by flags shared by both binaries:
//
//	--tls off|auto|manual     (default: manual with --tls-cert, else off)
//	--tls-cert F --tls-key F  one's own certificate, reloaded on SIGHUP
//	                          and when the files change
//	--acme-ca URL             ACME directory (default Let's Encrypt)
//	--acme-email ADDR         contact for the ACME account
//	--acme-ca-root FILE       PEM roots to trust for the ACME directory
//	--http-redirect ADDR      plain HTTP listener (port 80): HTTP-01
//	                          challenges, and a redirect to https
//	--tls-dir DIR             keep certificates and the ACME account on
//	                          disk (default: in memory)
//
// With --tls auto, certmagic obtains and renews a certificate for the host
// of --public-url (https://HOST) with the TLS-ALPN-01 challenge on the TLS
// listener itself, and the HTTP-01 challenge when --http-redirect listens
// (on port 80, where the CA validates). certmagic was picked because it
// is what Caddy runs: renewal, OCSP stapling, retries with backoff and
// both challenges in one library.
//
// Nothing is written to disk by default: the ACME account key and the
// certificates live in memory, so a restart obtains a new certificate.
// The CA's rate limits bound that (Let's Encrypt: 5 duplicate
// certificates a week); --tls-dir keeps them across restarts and is then
// the only directory the binary writes.
//
// Behind a TLS-terminating proxy (Caddy, nginx), leave --tls off and set
// --public-url https://HOST: the servers then hand out https URLs only.
package tlsserve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/certmagic"
)

// Modes of --tls.
const (
	ModeOff    = "off"
	ModeAuto   = "auto"
	ModeManual = "manual"
)

// DefaultACMECA is the ACME directory used by --tls auto: Let's Encrypt's
// production endpoint.
const DefaultACMECA = certmagic.LetsEncryptProductionCA

// Flags are the TLS flags of a binary.
type Flags struct {
	// Mode is off, auto or manual; empty means manual when CertFile is
	// set, else off.
	Mode string
	// CertFile and KeyFile are the PEM certificate chain and key of
	// manual mode.
	CertFile, KeyFile string
	// ACMECA is the ACME directory URL. Defaults to DefaultACMECA.
	ACMECA string
	// ACMEEmail is the ACME account's contact; may be empty.
	ACMEEmail string
	// ACMECARoot is a PEM file of roots trusted for the ACME directory,
	// in addition to the system's (a test CA such as pebble).
	ACMECARoot string
	// HTTPRedirect is the address of a plain HTTP listener answering
	// HTTP-01 challenges and redirecting everything else to https.
	HTTPRedirect string
	// Dir keeps certmagic's storage on disk; empty keeps it in memory.
	Dir string
}

// Register adds the flags of f to fs.
func (f *Flags) Register(fs *flag.FlagSet) {
	fs.StringVar(&f.Mode, "tls", "", "TLS on the HTTP listener: off, auto (ACME certificate for the --public-url host, which must be https://) or manual (--tls-cert); default manual with --tls-cert, else off")
	fs.StringVar(&f.CertFile, "tls-cert", "", "PEM certificate chain `file` for --tls manual; reloaded on SIGHUP and when it changes")
	fs.StringVar(&f.KeyFile, "tls-key", "", "PEM private key `file` for --tls manual")
	fs.StringVar(&f.ACMECA, "acme-ca", DefaultACMECA, "ACME directory `URL` for --tls auto")
	fs.StringVar(&f.ACMEEmail, "acme-email", "", "contact `address` of the ACME account (expiry warnings)")
	fs.StringVar(&f.ACMECARoot, "acme-ca-root", "", "PEM `file` of extra roots to trust for the ACME directory (a test CA)")
	fs.StringVar(&f.HTTPRedirect, "http-redirect", "", "plain HTTP listen `address` (normally :80) answering ACME HTTP-01 challenges and redirecting to https (default: none; --tls auto then uses TLS-ALPN-01 on the TLS port, which must be 443 for a public CA)")
	fs.StringVar(&f.Dir, "tls-dir", "", "`directory` keeping the ACME account and certificates across restarts, the only other files the binary then writes (default: in memory, so a new certificate at each start; mind the CA's rate limits)")
}

// mode returns the effective mode.
func (f *Flags) mode() (string, error) {
	switch f.Mode {
	case "":
		if f.CertFile != "" {
			return ModeManual, nil
		}
		return ModeOff, nil
	case ModeOff, ModeAuto, ModeManual:
		return f.Mode, nil
	}
	return "", fmt.Errorf("--tls %q: want off, auto or manual", f.Mode)
}

// listener is the TLS listener returned by Wrap: closing it stops the
// certificate manager and the redirect listener.
type listener struct {
	net.Listener
	kp      *keypair // manual mode
	once    sync.Once
	closers []func()
}

func (l *listener) Close() error {
	err := l.Listener.Close()
	l.once.Do(func() {
		for _, c := range l.closers {
			c()
		}
	})
	return err
}

// Wrap returns ln with TLS as the flags ask (ln itself when off), for
// a server whose public base URL is publicURL. With --tls on, publicURL
// must be https. It starts the --http-redirect listener and, in auto mode,
// the certificate manager in the background: handshakes for the host
// succeed once the certificate is obtained (logged as "tls certificate
// obtained"). Closing the returned listener stops them; ctx bounds them too.
func (f *Flags) Wrap(ctx context.Context, ln net.Listener, publicURL string, log *slog.Logger) (net.Listener, error) {
	mode, err := f.mode()
	if err != nil {
		return nil, err
	}
	if mode == ModeOff {
		if f.HTTPRedirect != "" || f.CertFile != "" {
			return nil, errors.New("--http-redirect and --tls-cert need --tls auto or manual")
		}
		if u, err := url.Parse(publicURL); err == nil && u.Scheme == "https" {
			log.Info("tls off: https public URL, TLS terminated in front (behind a proxy)", "public_url", publicURL)
		} else {
			log.Info("tls off (--tls auto or --tls-cert to serve https)")
		}
		return ln, nil
	}
	u, err := url.Parse(publicURL)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return nil, fmt.Errorf("--tls %s needs --public-url https://HOST, got %q", mode, publicURL)
	}
	host := u.Hostname()
	l := &listener{}
	var tcfg *tls.Config
	switch mode {
	case ModeManual:
		kp, err := newKeypair(f.CertFile, f.KeyFile, log)
		if err != nil {
			return nil, err
		}
		kp.watch(ctx)
		l.kp = kp
		l.closers = append(l.closers, kp.stop)
		tcfg = &tls.Config{GetCertificate: kp.get}
		log.Info("tls manual", "cert", f.CertFile, "key", f.KeyFile, "host", host, "not_after", kp.notAfter())
	case ModeAuto:
		mgr, err := f.manage(ctx, ln, host, log)
		if err != nil {
			return nil, err
		}
		l.closers = append(l.closers, mgr.stop)
		tcfg = mgr.cfg.TLSConfig()
		if f.HTTPRedirect != "" {
			// HTTP-01: the redirect listener answers the challenges.
			mgr.redirect = mgr.issuer.HTTPChallengeHandler(redirectHandler(u))
		}
		storage := "memory"
		if f.Dir != "" {
			storage = f.Dir
		}
		log.Info("tls auto", "host", host, "acme_ca", f.acmeCA(), "acme_email", f.ACMEEmail, "http_01", f.HTTPRedirect != "", "tls_alpn_01", true, "storage", storage)
		if f.Dir == "" {
			log.Warn("tls auto keeps its certificate in memory: every restart obtains a new one, and the CA rate-limits (Let's Encrypt: 5 a week for the same name); --tls-dir keeps it")
		}
		if f.HTTPRedirect != "" {
			if err := serveRedirect(ctx, f.HTTPRedirect, mgr.redirect, l, log); err != nil {
				l.Close()
				return nil, err
			}
		}
	}
	// HTTP/1.1 only: WebSockets (the control channel, pushes) upgrade
	// over it. acme-tls/1 answers TLS-ALPN-01 challenges.
	tcfg.NextProtos = append([]string{"http/1.1"}, tcfg.NextProtos...)
	tcfg.MinVersion = tls.VersionTLS12
	if mode == ModeManual && f.HTTPRedirect != "" {
		if err := serveRedirect(ctx, f.HTTPRedirect, redirectHandler(u), l, log); err != nil {
			l.Close()
			return nil, err
		}
	}
	l.Listener = tls.NewListener(ln, tcfg)
	return l, nil
}

func (f *Flags) acmeCA() string {
	if f.ACMECA == "" {
		return DefaultACMECA
	}
	return f.ACMECA
}

// manager is certmagic's state for one host.
type manager struct {
	cfg      *certmagic.Config
	issuer   *certmagic.ACMEIssuer
	cache    *certmagic.Cache
	redirect http.Handler
	cancel   context.CancelFunc
}

func (m *manager) stop() {
	m.cancel()
	m.cache.Stop()
}

// manage starts certmagic for host, served on ln.
func (f *Flags) manage(ctx context.Context, ln net.Listener, host string, log *slog.Logger) (*manager, error) {
	var roots *x509.CertPool
	if f.ACMECARoot != "" {
		pem, err := os.ReadFile(f.ACMECARoot)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca-root: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--acme-ca-root %s: no PEM certificate", f.ACMECARoot)
		}
	}
	var storage certmagic.Storage = newMemStorage()
	if f.Dir != "" {
		storage = &certmagic.FileStorage{Path: f.Dir}
	}
	zl := zapToSlog(log)
	m := &manager{}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return m.cfg, nil },
		Logger:           zl,
	})
	m.cfg = certmagic.New(m.cache, certmagic.Config{
		Storage: storage,
		Logger:  zl,
		OnEvent: func(_ context.Context, event string, data map[string]any) error {
			switch event {
			case "cert_obtaining":
				log.Info("tls certificate obtaining", "host", host)
			case "cert_obtained":
				log.Info("tls certificate obtained", "host", host, "issuer", data["issuer"])
			case "cached_managed_cert":
				log.Info("tls certificate loaded", "host", host)
			case "cert_failed":
				log.Warn("tls certificate failed", "host", host, "err", data["error"], "renewal", data["renewal"])
			}
			return nil
		},
	})
	lhost, lport, _ := net.SplitHostPort(ln.Addr().String())
	tlsPort, _ := strconv.Atoi(lport)
	httpPort := 0
	if f.HTTPRedirect != "" {
		_, p, err := net.SplitHostPort(f.HTTPRedirect)
		if err != nil {
			return nil, fmt.Errorf("--http-redirect: %w", err)
		}
		if httpPort, err = net.LookupPort("tcp", p); err != nil {
			return nil, fmt.Errorf("--http-redirect: %w", err)
		}
	}
	if ip := net.ParseIP(lhost); ip != nil && ip.IsUnspecified() {
		lhost = ""
	}
	m.issuer = certmagic.NewACMEIssuer(m.cfg, certmagic.ACMEIssuer{
		CA:           f.acmeCA(),
		Email:        f.ACMEEmail,
		Agreed:       true,
		TrustedRoots: roots,
		Logger:       zl,
		// The solvers try to listen on these ports and, finding them
		// taken by our own listeners, leave the answers to them.
		ListenHost:           lhost,
		AltTLSALPNPort:       tlsPort,
		AltHTTPPort:          httpPort,
		DisableHTTPChallenge: f.HTTPRedirect == "",
	})
	m.cfg.Issuers = []certmagic.Issuer{m.issuer}
	mctx, cancel := context.WithCancel(ctx)
	m.cancel = cancel
	if err := m.cfg.ManageAsync(mctx, []string{host}); err != nil {
		m.stop()
		return nil, fmt.Errorf("tls auto for %s: %w", host, err)
	}
	return m, nil
}

// redirectHandler redirects every request to the same path on public
// URL u's origin.
func redirectHandler(u *url.URL) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, "https://"+u.Host+r.URL.RequestURI(), http.StatusPermanentRedirect)
	})
}

// serveRedirect serves h on a plain HTTP listener at addr until l closes.
func serveRedirect(ctx context.Context, addr string, h http.Handler, l *listener, log *slog.Logger) error {
	rln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--http-redirect: %w", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	go srv.Serve(rln)
	l.closers = append(l.closers, func() { srv.Close() })
	log.Info("http redirect listening", "addr", rln.Addr().String())
	return nil
}

// keypair is the certificate of manual mode, reloaded on SIGHUP and when
// its files change (checked at most every reloadCheck, at a handshake).
type keypair struct {
	certFile, keyFile string
	log               *slog.Logger
	stop              func()

	mu       sync.Mutex // guards the fields below
	cert     *tls.Certificate
	mtime    time.Time
	checked  time.Time
	reloaded chan struct{} // closed and replaced at each reload attempt
}

// reloadCheck bounds how often a handshake looks at the files' times.
const reloadCheck = 10 * time.Second

func newKeypair(certFile, keyFile string, log *slog.Logger) (*keypair, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("--tls manual needs --tls-cert and --tls-key")
	}
	k := &keypair{certFile: certFile, keyFile: keyFile, log: log, stop: func() {}, reloaded: make(chan struct{})}
	if err := k.load(); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *keypair) modTime() time.Time {
	var t time.Time
	for _, f := range []string{k.certFile, k.keyFile} {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t
}

func (k *keypair) load() error {
	mtime := k.modTime()
	c, err := tls.LoadX509KeyPair(k.certFile, k.keyFile)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	k.mu.Lock()
	k.cert, k.mtime, k.checked = &c, mtime, time.Now()
	k.mu.Unlock()
	return nil
}

func (k *keypair) notAfter() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.cert.Leaf == nil {
		return time.Time{}
	}
	return k.cert.Leaf.NotAfter
}

// reload loads the files again; a failure keeps the current certificate.
func (k *keypair) reload(why string) {
	defer func() {
		k.mu.Lock()
		close(k.reloaded)
		k.reloaded = make(chan struct{})
		k.mu.Unlock()
	}()
	if err := k.load(); err != nil {
		k.log.Warn("tls certificate reload failed, keeping the current one", "why", why, "err", err)
		return
	}
	k.log.Info("tls certificate reloaded", "why", why, "not_after", k.notAfter())
}

// watch reloads the files on SIGHUP until ctx is done or stop is called.
func (k *keypair) watch(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	k.stop = func() { cancel() }
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-hup:
				k.reload("SIGHUP")
			case <-ctx.Done():
				return
			}
		}
	}()
}

func (k *keypair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	due := time.Since(k.checked) > reloadCheck
	if due {
		k.checked = time.Now()
	}
	mtime := k.mtime
	k.mu.Unlock()
	if due && !k.modTime().Equal(mtime) {
		k.reload("files changed")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cert, nil
}
