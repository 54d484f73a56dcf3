// Package debugsrv serves a binary's Prometheus metrics and pprof on their
// own listener (--debug-addr), loopback by default, so that neither is on
// the public port.
package debugsrv

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddr is the default --debug-addr: loopback, a port chosen by the
// kernel and printed at start-up.
const DefaultAddr = "127.0.0.1:0"

// Off is the --debug-addr value that serves nothing.
const Off = "off"

// Start listens on addr and serves GET /metrics from reg and
// /debug/pprof/ until ctx is done. It returns the bound address, or ""
// when addr is Off.
func Start(ctx context.Context, addr string, reg *prometheus.Registry, log *slog.Logger) (string, error) {
	if addr == Off || addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("debug server stopped", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { hs.Close() })
	return ln.Addr().String(), nil
}
