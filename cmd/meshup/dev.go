package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/cmd/internal/logflag"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", "127.0.0.1:8080", "rendezvous HTTP listen address")
	relays := fs.Int("relays", 2, "number of relays")
	var logFlags logflag.Flags
	logFlags.Register(fs, slog.LevelInfo)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meshup dev [flags]\n\nRuns a rendezvous and relays in this process, on loopback, until interrupted.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		return err
	}
	m, err := devmesh.Start(ctx, devmesh.Config{HTTPAddr: *addr, Relays: *relays, Logger: log})
	if err != nil {
		return err
	}
	defer m.Close()
	log.LogAttrs(ctx, slog.LevelInfo, "rendezvous limits", m.Rendezvous.Limits()...)
	if len(m.Relays) > 0 {
		cfg := m.Relays[0].Config()
		log.Info("relay limits", cfg.LogAttrs()...)
	}
	fmt.Fprintf(stdout, "meshup dev: rendezvous and web app at %s\n", m.URL)
	fmt.Fprintf(stdout, "relays: %s\n", strings.Join(m.RelayURLs, " "))
	fmt.Fprintf(stdout, "try:    go run ./cmd/meshup send --rendezvous %s FILE\n", m.URL)
	<-ctx.Done()
	fmt.Fprintln(stderr, "meshup dev: shutting down")
	return nil
}
