// Command meshup is meshup's command-line client and development launcher:
//
//	meshup dev                 run a rendezvous and two relays on loopback
//	meshup send FILE...        publish files and serve them until interrupted
//	meshup get URL [-o FILE]   download an item to FILE.part, resuming it, then rename it
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshup/meshup/cmd/internal/buildinfo"
)

const usage = `usage: meshup <command> [flags] [args]

commands:
  dev           run a rendezvous and relays on loopback, with the web app
  send FILE...  publish each FILE; print its share link and download URL; serve them until interrupted
  get URL       download an item (share link or download URL)
  live          stream stdin into a live channel; print its link
  version       print the version

Flags may come before or after the arguments.
Run 'meshup <command> -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(exitCode(run(ctx, os.Args[1:], os.Stdout, os.Stderr), os.Stderr))
}

// exitCode returns the process's exit status for run's error, printing
// the error when it was not printed already: 0 for none or a help
// request, 2 for a wrong command line, 1 otherwise.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintln(stderr, "meshup:", err)
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:], stdout, stderr)
	case "send":
		return runSend(ctx, args[1:], stdout, stderr)
	case "get":
		return runGet(ctx, args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, buildinfo.String("meshup"))
		return nil
	case "live":
		return runLive(ctx, args[1:], stdout, stderr) // live.go
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "meshup: unknown command %q\n%s", args[0], usage)
	return errUsage
}

// defaultRendezvous is where the client commands look for a rendezvous
// unless told otherwise.
func defaultRendezvous() string {
	if u := os.Getenv("MESHUP_RENDEZVOUS"); u != "" {
		return u
	}
	return "http://127.0.0.1:8080"
}
