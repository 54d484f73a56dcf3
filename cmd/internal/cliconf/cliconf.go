// Package cliconf parses the configuration of the meshup server binaries
// (relay, rendezvous) from three sources, with github.com/peterbourgon/ff:
//
//  1. flags on the command line, which win;
//  2. environment variables MESHUP_<FLAG>, the flag's name upper-cased
//     with - as _ (MESHUP_BUDGET for --budget);
//  3. a config file named by --config (or MESHUP_CONFIG): one flag per
//     line, "name value", # comments; an absent named file is an error.
//
// It also serves --version.
package cliconf

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/peterbourgon/ff/v3"

	"github.com/meshup/meshup/cmd/internal/buildinfo"
)

// EnvPrefix prefixes the environment variable of every flag.
const EnvPrefix = "MESHUP"

// ErrVersion is returned by Parse after it printed the version: the
// caller exits with status 0.
var ErrVersion = errors.New("version printed")

// Parse registers --config and --version on fs, then sets fs's flags from
// args, the environment and the
// config file. With --version it prints the version to w and returns
// ErrVersion; with -h it returns flag.ErrHelp.
func Parse(fs *flag.FlagSet, args []string, w io.Writer) error {
	fs.String("config", "", "config `file`: one flag per line, \"name value\"; flags win over "+EnvPrefix+"_* environment variables, which win over the file")
	// --version is read from the command line only: a MESHUP_VERSION
	// variable (a deployment's own, say) must not stop the server.
	fs.Var(commandLineOnly{}, "version", "print the version and exit")
	if wantVersion(args) {
		fmt.Fprintln(w, buildinfo.String(fs.Name()))
		return ErrVersion
	}
	return ff.Parse(fs, args,
		ff.WithEnvVarPrefix(EnvPrefix),
		ff.WithConfigFileFlag("config"),
		ff.WithConfigFileParser(ff.PlainParser),
	)
}

// wantVersion tells whether args ask for the version, before any "--".
func wantVersion(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-version", "--version", "-version=true", "--version=true":
			return true
		}
	}
	return false
}

// commandLineOnly is a boolean flag that Parse reads from the command
// line itself; setting it from the environment or a file does nothing.
type commandLineOnly struct{}

func (commandLineOnly) String() string   { return "false" }
func (commandLineOnly) Set(string) error { return nil }
func (commandLineOnly) IsBoolFlag() bool { return true }

// Exit ends a main whose run returned err: status 0 for help and version,
// 1 with the error on stderr otherwise.
func Exit(program string, err error) {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp), errors.Is(err, ErrVersion):
		os.Exit(0)
	default:
		fmt.Fprintf(os.Stderr, "%s: %v\n", program, err)
		os.Exit(1)
	}
}

// SplitList splits a comma-separated flag value, dropping blanks.
func SplitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
