package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meshup/meshup/cmd/internal/cliconf/cliconftest"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

func TestMain(m *testing.M) { cliconftest.Main(m, main) }

// TestHelpAndVersion checks the exit status and output of -h and
// --version in a real process.
func TestHelpAndVersion(t *testing.T) {
	cliconftest.Check(t, []cliconftest.Case{
		{Arg: "-h", WantErr: "-budget"},
		{Arg: "--help", WantErr: "-drain-timeout"},
		{Arg: "--version", WantOut: "relay "},
		{Arg: "--no-such-flag", WantErr: "flag provided but not defined", WantCode: 1},
	})
}

// TestConfigPrecedence checks flags over MESHUP_* environment variables
// over the config file, and sizes in human units from each source.
func TestConfigPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "relay.conf")
	conf := "# a relay\nbudget 1GiB\npart-size 2MiB\nwindow 512KiB\nlog-format json\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MESHUP_PART_SIZE", "3MiB")
	t.Setenv("MESHUP_WINDOW", "256KiB")
	o, err := parseFlags([]string{"--rendezvous", "http://x", "--config", file, "--window", "128KiB", "--memory-limit", "none", "--circuit-data", "1.5MB"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"budget (file)", o.cfg.Budget, 1 << 30},
		{"part-size (env over file)", o.cfg.PartSize, 3 << 20},
		{"window (flag over env)", int64(o.cfg.Window), 128 << 10},
		{"memory-limit none", o.memLimit, -1},
		{"circuit-data SI", o.node.Circuits.CircuitData, 1_500_000},
		{"max-stream-window default", int64(o.node.Window), mesh.DefaultMaxStreamWindow},
		{"mesh-memory default (go-libp2p's)", o.node.Memory, 0},
	} {
		if c.got != c.want {
			t.Errorf("%s: got %d, want %d", c.name, c.got, c.want)
		}
	}
	if o.log.Format != "json" {
		t.Errorf("log-format from file: got %q, want json", o.log.Format)
	}

	for _, bad := range [][]string{
		{"--rendezvous", "http://x", "--budget", "256 parsecs"},
		{"--rendezvous", "http://x", "--config", filepath.Join(t.TempDir(), "missing.conf")},
		{"--rendezvous", "http://x", "--log-format", "xml"},
	} {
		o, err := parseFlags(bad, io.Discard)
		if err == nil {
			_, err = o.log.Logger(io.Discard)
		}
		if err == nil {
			t.Errorf("%q: got no error, want one", bad)
		}
	}
	if _, err := parseFlags([]string{"-h"}, io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}

// TestUploadsFlag checks --uploads: all four protocols by default, a
// list, none.
func TestUploadsFlag(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{nil, []string{"stor", "socketio", "put", "tus"}},
		{[]string{"--uploads", "put, tus"}, []string{"put", "tus"}},
		{[]string{"--uploads", "none"}, []string{}},
	} {
		o, err := parseFlags(append([]string{"--rendezvous", "http://x"}, c.args...), io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(o.cfg.Uploads, c.want) || o.cfg.Uploads == nil {
			t.Errorf("%q: uploads %#v, want %q", c.args, o.cfg.Uploads, c.want)
		}
	}
}

// TestIdentityAlias checks that --key-file still sets --identity.
func TestIdentityAlias(t *testing.T) {
	for _, name := range []string{"--identity", "--key-file"} {
		o, err := parseFlags([]string{"--rendezvous", "http://x", name, "/k"}, io.Discard)
		if err != nil || o.identity != "/k" {
			t.Errorf("%s: got %v, %v; want identity /k", name, o, err)
		}
	}
}

// TestNotRendezvous checks that a relay pointed at a server that is not a
// meshup rendezvous stops at once with a clear error, with and without
// --allow-private-addrs (two different paths: the STUN look-up of the
// public URL, and the registration).
func TestNotRendezvous(t *testing.T) {
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<html><body>Welcome to nginx!</body></html>")
	}))
	defer html.Close()
	notFound := httptest.NewServer(http.NotFoundHandler())
	defer notFound.Close()
	for _, url := range []string{html.URL, notFound.URL} {
		for _, private := range []bool{false, true} {
			args := []string{"--rendezvous", url, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--debug-addr", "off", "--log-level", "error"}
			if private {
				args = append(args, "--allow-private-addrs")
			}
			err := run(t.Context(), args, io.Discard)
			if !errors.Is(err, relay.ErrNotRendezvous) {
				t.Errorf("%s, private %v: got %v, want %v", url, private, err, relay.ErrNotRendezvous)
			} else if strings.Contains(err.Error(), "Welcome") {
				t.Errorf("the error quotes the page: %v", err)
			}
		}
	}
}

// TestNoLoopbackAdvertised checks that a relay without --public-url and
// without --allow-private-addrs, whose STUN probe finds only loopback,
// refuses to start rather than register http://127.0.0.1:PORT.
func TestNoLoopbackAdvertised(t *testing.T) {
	rv := rendezvoustest.Start(t, rendezvous.Config{})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	err := run(ctx, []string{"--rendezvous", rv.URL, "--http", "127.0.0.1:0", "--p2p", "/ip4/127.0.0.1/tcp/0", "--debug-addr", "off", "--log-level", "error"}, io.Discard)
	if !errors.Is(err, errNoPublicAddr) {
		t.Errorf("got %v, want %v", err, errNoPublicAddr)
	}
}

func TestURLFromReport(t *testing.T) {
	for _, tc := range []struct {
		mapped string
		want   string // "" for an error
	}{
		{"198.51.100.7:41000", ""}, // documentation range: not public
		{"127.0.0.1:41000", ""},
		{"192.168.1.2:41000", ""},
		{"1.2.3.4:41000", "http://1.2.3.4:8081"},
		{"[2001:4860::1]:41000", "http://[2001:4860::1]:8081"},
		{"[::ffff:1.2.3.4]:41000", "http://1.2.3.4:8081"},
	} {
		rep := mesh.NATReport{Mapped: netip.MustParseAddrPort(tc.mapped)}
		got, err := urlFromReport(rep, 8081)
		if tc.want == "" && !errors.Is(err, errNoPublicAddr) || tc.want != "" && (err != nil || got != tc.want) {
			t.Errorf("%s: got %q, %v; want %q", tc.mapped, got, err, tc.want)
		}
	}
	if _, err := urlFromReport(mesh.NATReport{}, 8081); !errors.Is(err, errNoPublicAddr) {
		t.Errorf("no mapping: got %v, want %v", err, errNoPublicAddr)
	}
}
