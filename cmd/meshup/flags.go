package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// errUsage means the command line was wrong; the usage was printed. The
// command exits with status 2.
var errUsage = errors.New("usage")

// parseArgs parses args with fs and returns the positional arguments.
// Flags may come before, between or after them ("meshup send FILE
// --rendezvous URL"); "--" ends the flags. -h, -help and --help print the
// usage on stdout and return flag.ErrHelp (exit status 0); a wrong flag
// prints it on stderr and returns errUsage.
func parseArgs(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			out := fs.Output()
			fs.SetOutput(stdout)
			fs.Usage()
			fs.SetOutput(out)
			return nil, flag.ErrHelp
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %w", errUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil // everything after "--" is positional
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError prints fs's usage on its output and returns errUsage with
// msg.
func usageError(fs *flag.FlagSet, format string, a ...any) error {
	msg := fmt.Sprintf(format, a...)
	fmt.Fprintf(fs.Output(), "meshup %s: %s\n", fs.Name(), msg)
	fs.Usage()
	return fmt.Errorf("%w: %s", errUsage, msg)
}
