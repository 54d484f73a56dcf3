package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"syscall"

	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/cmd/internal/logflag"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8080", "rendezvous HTTP listen address")
	relays := fs.Int("relays", 2, "number of relays (at least 1)")
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
	m, err := devmesh.Start(ctx, devmesh.Config{HTTPAddr: *addr, Relays: *relays, Logger: log})
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
	fmt.Fprintf(stdout, "try:    go run ./cmd/meshup send FILE --rendezvous %s\n", m.URL)
	<-ctx.Done()
	fmt.Fprintln(stderr, "meshup dev: shutting down")
	return nil
}
