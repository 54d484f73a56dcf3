// Command relay runs a meshup relay (upload server): it joins a rendezvous,
// accepts parts pushed by publishers and streams them to consumers. It
// keeps part data in bounded memory and never writes it to disk; the only
// file it may write is the identity key file named by --identity, which
// keeps its peer id across restarts.
//
//	relay --rendezvous http://HOST:8080 --http :8081 --public-url http://MYHOST:8081
//
// Every flag may also be set as MESHUP_<FLAG> in the environment or in a
// --config file; the command line wins over the environment, which wins
// over the file. SIGTERM or SIGINT drains the relay: it refuses new work,
// tells the rendezvous, lets running transfers finish for up to
// --drain-timeout and exits; a second signal stops it at once.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshup/meshup/cmd/internal/buildinfo"
	"github.com/meshup/meshup/cmd/internal/cliconf"
	"github.com/meshup/meshup/cmd/internal/debugsrv"
	"github.com/meshup/meshup/cmd/internal/httpserve"
	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/relay"
)

// shutdownTimeout bounds closing the HTTP server after the drain.
const shutdownTimeout = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, the next one kills the process at once.
	context.AfterFunc(ctx, stop)
	cliconf.Exit("relay", run(ctx, os.Args[1:], os.Stdout))
}

// run runs a relay configured by args until ctx is done, then drains it.
func run(ctx context.Context, args []string, stdout io.Writer) error {
	o, err := parseFlags(args, stdout)
	if err != nil {
		return err
	}
	log, err := o.log.Logger(os.Stderr)
	if err != nil {
		return err
	}
	p2pKey, err := identity(o.identity, log)
	if err != nil {
		return fmt.Errorf("--identity: %w", err)
	}
	ln, err := net.Listen("tcp", o.http)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.http, err)
	}
	defer ln.Close()
	if o.publicURL == "" {
		if o.publicURL, err = advertisedURL(ctx, o, ln.Addr().(*net.TCPAddr), log); err != nil {
			return err
		}
	}
	if ln, err = o.tls.Wrap(ctx, ln, o.publicURL, log); err != nil {
		return err
	}

	// The circuit relay service admits the directory's relays, and only
	// while this relay is public (relay.CircuitGate); the gate is bound
	// to the relay once it exists.
	var gate relay.CircuitGate
	var service *mesh.RelayService
	if o.circuitRelay {
		o.node.Circuits.Allow = gate.Allow
		service = &o.node.Circuits
	}
	node, err := mesh.New(mesh.Config{
		ListenAddrs:  o.node.ListenAddrs(),
		Identity:     p2pKey,
		Logger:       log,
		HolePunching: true,
		NATPortMap:   o.node.Portmap,
		RelayService: service,
		// No dial to an address a stranger supplied, unless allowed.
		AllowPrivateAddrs: o.allowPrivate,
		MaxStreamsPerPeer: o.node.Streams,
		MaxStreamWindow:   o.node.Window,
		MaxMemory:         o.node.Memory,
	})
	if err != nil {
		return err
	}
	defer node.Close()

	// A public relay run by the operator joins the cluster for failure
	// detection of itself and the rendezvous; it uses no directory.
	ccfg, clusterOn, err := o.cluster.Config(node, os.Getenv)
	if err != nil {
		return err
	}
	if clusterOn {
		ccfg.Logger = log
		cluster, err := mesh.NewCluster(ccfg)
		if err != nil {
			return err
		}
		defer cluster.Close()
		log.LogAttrs(ctx, slog.LevelInfo, "cluster", cluster.Limits()...)
	}

	cfg := o.cfg
	cfg.Node, cfg.PublicURL, cfg.Logger = node, o.publicURL, log
	srv, err := relay.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	gate.Bind(srv)
	limit := setMemoryLimit(o.memLimit, srv.Config().Budget)
	logStart(ctx, log, o, srv, node, ln, limit, service != nil)

	hs := httpserve.New(o.httpCfg, httpserve.Health(srv.Ready, srv.Handler()), log)
	if err := startDebug(ctx, o, srv, hs, log); err != nil {
		return err
	}
	return serve(ctx, o, srv, hs, ln, log)
}

// logStart prints what the relay is and every limit it applies.
func logStart(ctx context.Context, log *slog.Logger, o *options, srv *relay.Server, node *mesh.Node, ln net.Listener, memLimit int64, circuits bool) {
	log.Info("relay starting", "version", buildinfo.Version(), "id", srv.ID(), "http", ln.Addr().String(), "public_url", o.publicURL, "p2p", node.Addrs(), "rendezvous", o.rendezvous)
	eff := srv.Config()
	log.Info("relay limits", append(eff.LogAttrs(), "allow_private_addrs", o.allowPrivate, "memory_limit", memLimit, "drain_timeout", o.drainTimeout)...)
	log.Info("http server limits", o.httpCfg.LogAttrs()...)
	log.Info("volunteer limits (what the relay sends)", "max_rate", o.maxRate, "max_rate_per_consumer", o.maxRatePerConsumer, "monthly_cap", o.monthlyCap, "monthly_cap_counted", "in memory, from start")
	if circuits {
		log.LogAttrs(ctx, slog.LevelInfo, "circuit relay limits (serves the directory's relays while public)", o.node.Circuits.LogAttrs()...)
	} else {
		log.Info("circuit relay service off (--circuit-relay=false)")
	}
}

// startDebug serves metrics and pprof on the debug listener (loopback by
// default), never on the public port.
func startDebug(ctx context.Context, o *options, srv *relay.Server, hs *httpserve.Server, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStatusCollector(srv), newLiveCollector(srv), buildinfo.Collector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "meshup_relay_tcp_refused_total", Help: "TCP connections closed at once for --max-tcp-conns-per-ip."},
			func() float64 { return float64(hs.Refused()) }))
	addr, err := debugsrv.Start(ctx, o.debugAddr, reg, log)
	if err != nil {
		return fmt.Errorf("--debug-addr: %w", err)
	}
	log.Info("debug listener (metrics, pprof)", "addr", addr)
	return nil
}

// serve runs the relay until ctx is done or it fails, then drains it:
// new work is refused and the rendezvous told, the transfers in flight
// get up to --drain-timeout, and then everything closes.
func serve(ctx context.Context, o *options, srv *relay.Server, hs *httpserve.Server, ln net.Listener, log *slog.Logger) error {
	// The link to the rendezvous outlives ctx: during the drain the
	// transfers in flight still need parts ordered through it.
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	errc := make(chan error, 2)
	go func() { errc <- hs.Serve(ln) }()
	go func() { errc <- srv.Run(runCtx) }()
	var err error
	select {
	case <-ctx.Done():
		log.Info("stopping: draining", "drain_timeout", o.drainTimeout)
		dctx, cancel := context.WithTimeout(context.Background(), o.drainTimeout)
		if derr := srv.Drain(dctx); derr != nil {
			log.Warn("drain timed out: cutting the transfers still running", "drain_timeout", o.drainTimeout)
		} else {
			log.Info("drained")
		}
		cancel()
	case err = <-errc:
	}
	stopRun()
	srv.Close()
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	hs.Shutdown(sctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// setMemoryLimit sets the Go runtime's soft memory limit and returns it
// (math.MaxInt64 for none). The budget counts the memory that part data
// pins; the heap holds that, the per-connection state and the garbage not
// yet collected, and with the default GOGC it may grow to twice what is
// live before a collection: a relay working at its budget would peak near
// twice it. Under the limit the collector works harder instead, so the
// relay stays near what its operator allowed (issue 14). GOMEMLIMIT, when
// set, wins: the runtime has read it already.
//
// The default leaves room above the budget for the rest of the heap:
// max(64 MiB, budget/4). Part buffers hold no pointers, so the collections
// this makes more frequent when the budget is full cost little marking. In
// the soak (issue 14: 200 readers, 256 MiB budget) a relay peaked at 337
// MiB with it, against 366-489 MiB with 1.5 x budget + 64 MiB.
func setMemoryLimit(limit, budget int64) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return debug.SetMemoryLimit(-1) // reads the current limit
	}
	switch {
	case limit == 0:
		limit = defaultMemoryLimit(budget)
	case limit < 0:
		limit = math.MaxInt64
	}
	debug.SetMemoryLimit(limit)
	return limit
}

// defaultMemoryLimit is the soft memory limit of a relay with budget bytes
// of part memory, when --memory-limit is 0: see setMemoryLimit.
func defaultMemoryLimit(budget int64) int64 {
	return budget + max(64<<20, budget/4)
}
