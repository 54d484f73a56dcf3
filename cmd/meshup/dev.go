package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/cmd/internal/logflag"
	"github.com/meshup/meshup/cmd/internal/tlsserve"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8080", "rendezvous HTTP listen address")
	relays := fs.Int("relays", 2, "number of relays (at least 1)")
	useTLS := fs.Bool("tls", false, "serve the rendezvous and relays over https/wss with a local CA made in memory at start (valid 7 days, new at every start); its certificate is printed, or written with --tls-dir")
	tlsDir := fs.String("tls-dir", "", "write the local CA's certificate (never a key) to `DIR`/ca.pem, for curl --cacert or SSL_CERT_FILE; implies --tls")
	var logFlags logflag.Flags
	logFlags.Register(fs, slog.LevelInfo)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: meshup dev [flags]\n\nRuns a rendezvous and relays in this process, on loopback, until interrupted.\n\nFlags:")
		fs.PrintDefaults()
	}
	pos, err := parseArgs(fs, args, stdout)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError(fs, "no arguments expected, got %q", pos)
	}
	if *relays < 1 {
		return usageError(fs, "--relays %d: a dev mesh needs at least 1 relay to carry bytes", *relays)
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		return err
	}
	dcfg := devmesh.Config{HTTPAddr: *addr, Relays: *relays, Logger: log}
	var ca *tlsserve.DevCA
	caFile := ""
	if *useTLS || *tlsDir != "" {
		if ca, err = tlsserve.NewDevCA(); err != nil {
			return fmt.Errorf("dev: %w", err)
		}
		dcfg.TLS, dcfg.RootCAs = ca.ServerConfig(), ca.Pool
		if *tlsDir != "" {
			if err := os.MkdirAll(*tlsDir, 0o755); err != nil {
				return fmt.Errorf("dev: --tls-dir: %w", err)
			}
			caFile = filepath.Join(*tlsDir, "ca.pem")
			if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
				return fmt.Errorf("dev: --tls-dir: %w", err)
			}
		}
	}
	m, err := devmesh.Start(ctx, dcfg)
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("dev: %s is taken (another meshup dev?); choose another with --http: %w", *addr, err)
	}
	if err != nil {
		return fmt.Errorf("dev: %w", err)
	}
	defer m.Close()
	log.LogAttrs(ctx, slog.LevelInfo, "rendezvous limits", m.Rendezvous.Limits()...)
	if len(m.Relays) > 0 {
		cfg := m.Relays[0].Config()
		log.Info("relay limits", cfg.LogAttrs()...)
	}
	fmt.Fprintf(stdout, "meshup dev: rendezvous and web app at %s\n", m.URL)
	fmt.Fprintf(stdout, "relays: %s\n", strings.Join(m.RelayURLs, " "))
	switch {
	case caFile != "":
		fmt.Fprintf(stdout, "tls:    certificates of a local CA made at start; its certificate: %s\n", caFile)
		fmt.Fprintf(stdout, "        trust it: curl --cacert %s ..., SSL_CERT_FILE=%s meshup ...\n", caFile, caFile)
		fmt.Fprintf(stdout, "try:    SSL_CERT_FILE=%s go run ./cmd/meshup send FILE --rendezvous %s\n", caFile, m.URL)
	case ca != nil:
		fmt.Fprintf(stdout, "tls:    certificates of a local CA made at start; save its certificate below to a file (or use --tls-dir DIR)\n")
		fmt.Fprintf(stdout, "        and trust it: curl --cacert FILE ..., SSL_CERT_FILE=FILE meshup ...\n%s", ca.CertPEM)
		fmt.Fprintf(stdout, "try:    SSL_CERT_FILE=FILE go run ./cmd/meshup send FILE --rendezvous %s\n", m.URL)
	default:
		fmt.Fprintf(stdout, "try:    go run ./cmd/meshup send FILE --rendezvous %s\n", m.URL)
	}
	<-ctx.Done()
	fmt.Fprintln(stderr, "meshup dev: shutting down")
	return nil
}
