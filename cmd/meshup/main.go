// Command meshup is meshup's command-line client and development launcher:
//
//	meshup dev                 run a rendezvous and two relays on loopback
//	meshup send FILE           publish FILE and serve it until interrupted
//	meshup get URL [-o FILE]   download an item, resuming a partial file
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage: meshup <command> [flags] [args]

commands:
  dev        run a rendezvous and relays on loopback, with the web app
  send FILE  publish FILE; print its share link and download URL; serve it until interrupted
  get URL    download an item (share link or download URL)
  live       stream stdin into a live channel; print its link

Run 'meshup <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "meshup:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "send":
		return runSend(ctx, args[1:], stdout, stderr)
	case "get":
		return runGet(ctx, args[1:], stdout, stderr)
	case "live":
		return runLive(ctx, args[1:], stdout, stderr) // live.go
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

// newLogger returns a text logger on w at the level named by level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

// defaultRendezvous is where the client commands look for a rendezvous
// unless told otherwise.
func defaultRendezvous() string {
	if u := os.Getenv("MESHUP_RENDEZVOUS"); u != "" {
		return u
	}
	return "http://127.0.0.1:8080"
}
