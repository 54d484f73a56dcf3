package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/relay"
)

// errNoPublicAddr is returned when STUN found no public address to
// advertise and none was given.
var errNoPublicAddr = errors.New("no public address to advertise: STUN found none; set --public-url (or --public IP), or --allow-private-addrs in a lab")

// advertisedURL returns the URL the relay registers when --public-url is
// not given: the --public IP, or a public IP the --http listener is bound
// to, or the public IP the rendezvous's STUN server sees, each with the
// --http port. It never advertises loopback or a private address, unless
// --allow-private-addrs (a LAN or a lab), where the bound host (127.0.0.1
// for an unspecified one) is kept.
func advertisedURL(ctx context.Context, o *options, bound *net.TCPAddr, log *slog.Logger) (string, error) {
	port := bound.Port
	if o.cfg.PublicIP != "" {
		return httpURL(o.cfg.PublicIP, port), nil
	}
	if ip, ok := netip.AddrFromSlice(bound.IP); ok && mesh.IsPublicIP(ip.Unmap()) {
		return httpURL(ip.Unmap().String(), port), nil
	}
	if o.allowPrivate {
		host := bound.IP.String()
		if bound.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
		return httpURL(host, port), nil
	}
	servers, err := stunServers(ctx, o.rendezvous, log)
	if err != nil {
		return "", err
	}
	if len(servers) == 0 {
		return "", fmt.Errorf("%w (the rendezvous offers no STUN)", errNoPublicAddr)
	}
	rep, err := mesh.ProbeNAT(ctx, servers, mesh.ProbeConfig{})
	if err != nil {
		return "", fmt.Errorf("%w: %w", errNoPublicAddr, err)
	}
	return urlFromReport(rep, port)
}

// urlFromReport builds the advertised URL from a STUN report: the public
// IP it mapped, with the HTTP port.
func urlFromReport(rep mesh.NATReport, port int) (string, error) {
	ip := rep.Mapped.Addr().Unmap()
	if !rep.Mapped.IsValid() || !mesh.IsPublicIP(ip) {
		return "", fmt.Errorf("%w (it saw %v)", errNoPublicAddr, rep.Mapped)
	}
	return httpURL(ip.String(), port), nil
}

// stunServers reads the rendezvous's STUN servers from its /v1/info,
// retrying while the rendezvous cannot be reached, but not when it
// answers as something else.
func stunServers(ctx context.Context, rendezvous string, log *slog.Logger) ([]string, error) {
	backoff := 250 * time.Millisecond
	for {
		info, _, err := relay.FetchInfo(ctx, rendezvous)
		switch {
		case err == nil:
			return info.STUN, nil
		case errors.Is(err, relay.ErrNotRendezvous):
			return nil, fmt.Errorf("--rendezvous %s: %w", rendezvous, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		log.Warn("rendezvous unreachable, needed to learn the public address; retrying", "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, 15*time.Second)
	}
}

func httpURL(host string, port int) string {
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port))
}
