package rendezvous

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	neturl "net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/meshup/meshup/mesh"
	"github.com/meshup/meshup/proto"
)

// Relays are run by strangers (issue 8). What a relay says about itself is
// checked before it is used:
//
//   - admission (admitRelay): who may register, and the trust class;
//   - addresses (directoryAddrs): only the relay's own, public ones go into
//     the directory that other relays dial;
//   - its URL (verifyLoop): consumers are redirected to a volunteer's
//     http_url only after a signed challenge fetched through that URL
//     proved it reaches the relay;
//   - its load (relayLoadLocked): bounded below by the orders the
//     rendezvous itself has outstanding on it.

// Sentinel errors of relay admission.
var (
	// errOperatorOnly means the rendezvous admits operator relays only.
	errOperatorOnly = errors.New("this rendezvous admits operator relays only: start the relay with an admission token (relay --admission-token)")
	// errNoAdmissionKey means a relay presented an admission token but the
	// rendezvous has no key to verify it.
	errNoAdmissionKey = errors.New("admission token presented, but this rendezvous has no admission key")
	// errPrivateTarget means a challenge fetch would reach an address that
	// is not public.
	errPrivateTarget = errors.New("address is not public (rendezvous --allow-private-addrs allows it)")
)

// admitRelay decides the trust class of a registering relay, or why it is
// refused. It is the one place admission is decided; the caps on relay
// counts are checked under Server.mu (relayCapsLocked).
func (s *Server) admitRelay(peer string, reg *proto.Register) (class, label string, err error) {
	switch {
	case reg.Admission != "":
		if s.cfg.AdmissionKey == nil {
			return "", "", errNoAdmissionKey
		}
		c, err := proto.ParseAdmission(s.cfg.AdmissionKey, reg.Admission, peer, s.cfg.Now())
		if err != nil {
			return "", "", fmt.Errorf("admission token refused: %w", err)
		}
		return ClassOperator, c.Name, nil
	case s.cfg.TrustAllRelays, slices.Contains(s.cfg.OperatorRelays, peer):
		return ClassOperator, "", nil
	case s.cfg.Admission == AdmissionOperator:
		return "", "", errOperatorOnly
	}
	return ClassVolunteer, "", nil
}

// relayCapsLocked checks MaxRelays and MaxRelaysPerIP for a new
// registration of peer from ip; a relay replacing its own registration
// does not count twice. It returns the reject reason and the error.
func (s *Server) relayCapsLocked(peer, ip string) (string, error) {
	total, fromIP := 0, 0
	for id, r := range s.relays {
		if id == peer || r.isDone() {
			continue
		}
		total++
		if r.ip == ip {
			fromIP++
		}
	}
	if total >= s.cfg.MaxRelays {
		return RejectRelayCap, fmt.Errorf("%d relays registered, the limit", total)
	}
	if fromIP >= s.cfg.MaxRelaysPerIP {
		return RejectRelayIPCap, fmt.Errorf("%d relays registered from %s, the limit per address", fromIP, ip)
	}
	return "", nil
}

// refuseRelay tells a relay why its registration is refused and closes
// the stream.
func (s *Server) refuseRelay(st mesh.Stream, reason string, st2 proto.Status, err error) {
	s.stats.reject(reason)
	s.log.Warn("relay registration refused", "relay", st.RemotePeer(), "reason", reason, "err", err)
	st.SetWriteDeadline(time.Now().Add(registerTimeout))
	proto.WriteMsg(st, &proto.ErrorMsg{Status: st2, Reason: proto.TruncateReason(err.Error())})
	st.Close()
}

// directoryAddrs returns the addresses of addrs that may go into the
// directory for relay peer: its own (ending in /p2p/peer), public unless
// AllowPrivateAddrs, at most proto.MaxPeerAddrs of at most
// proto.MaxPeerAddrLen bytes. What it drops is counted by reason.
func (s *Server) directoryAddrs(peer string, addrs []string) []string {
	out := []string{}
	for _, a := range addrs {
		c, err := mesh.CheckPeerAddr(a, peer, s.cfg.AllowPrivateAddrs)
		switch {
		case errors.Is(err, mesh.ErrAddrPrivate):
			s.stats.reject(RejectAddrPrivate)
		case errors.Is(err, mesh.ErrAddrForeign):
			s.stats.reject(RejectAddrForeign)
		case err != nil, len(c) > proto.MaxPeerAddrLen, len(out) == proto.MaxPeerAddrs:
			s.stats.reject(RejectAddrBounds)
		case !slices.Contains(out, c):
			out = append(out, c)
		}
	}
	return out
}

// newVerifier returns the HTTP client of URL challenges: no redirects
// followed, no proxy, one timeout for the whole exchange, and (unless
// AllowPrivateAddrs) connections to public addresses only, checked on the
// address actually dialled, after DNS.
func (s *Server) newVerifier() *http.Client {
	d := &net.Dialer{
		Timeout: s.cfg.VerifyTimeout,
		Control: func(_, address string, _ syscall.RawConn) error {
			if s.cfg.AllowPrivateAddrs {
				return nil
			}
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !mesh.IsPublicIP(ap.Addr()) {
				return fmt.Errorf("challenge to %s: %w", address, errPrivateTarget)
			}
			return nil
		},
	}
	return &http.Client{
		Transport: &http.Transport{
			DialContext:            d.DialContext,
			Proxy:                  nil,
			DisableKeepAlives:      true,
			TLSHandshakeTimeout:    s.cfg.VerifyTimeout,
			ResponseHeaderTimeout:  s.cfg.VerifyTimeout,
			MaxResponseHeaderBytes: 16 << 10,
			TLSClientConfig:        &tls.Config{RootCAs: s.cfg.RootCAs}, // nil: the system's
		},
		Timeout:       s.cfg.VerifyTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// challenge proves that url reaches relay peer: it fetches
// url/v1/challenge with a fresh nonce and checks the answer's signature
// with the key of peer.
func (s *Server) challenge(ctx context.Context, peer, url string) error {
	var b [16]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+proto.ChallengePath+"?n="+nonce, nil)
	if err != nil {
		return err
	}
	resp, err := s.verifier.Do(req)
	if err != nil {
		if errors.Is(err, errPrivateTarget) {
			return fmt.Errorf("challenge not sent: %w", errPrivateTarget)
		}
		var ue *neturl.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL, nonce included, is known
		}
		return fmt.Errorf("challenge: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("challenge answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, proto.MaxChallengeResponse+1))
	if err != nil {
		return fmt.Errorf("read challenge answer: %w", err)
	}
	if len(body) > proto.MaxChallengeResponse {
		return fmt.Errorf("challenge answer over %d bytes", proto.MaxChallengeResponse)
	}
	var cr proto.ChallengeResponse
	if err := json.Unmarshal(body, &cr); err != nil {
		return fmt.Errorf("challenge answer: %w", err)
	}
	if cr.Peer != peer {
		return fmt.Errorf("challenge answered by relay %.80q, not %s", cr.Peer, peer)
	}
	if err := mesh.VerifyPeer(peer, proto.ChallengeMessage(nonce, peer, url), cr.Sig); err != nil {
		return fmt.Errorf("challenge answer: %w", err)
	}
	return nil
}

// verifyRetry is the wait before a failed challenge is tried again; it
// doubles with each failure in a row, up to VerifyInterval. A relay that
// registers before its URL answers (a certificate still being issued by
// ACME, a port forward not yet open) is verified seconds after it does,
// not a VerifyInterval later.
const verifyRetry = 2 * time.Second

// verifyLoop proves relay r's http_url now and then every VerifyInterval
// (sooner after a failure: verifyRetry, doubling) until r is dropped or
// the server closes. It runs for relays that claim to be public; the
// others are reached through the tunnel anyway.
func (s *Server) verifyLoop(r *relayConn) {
	defer s.wg.Done()
	failures := 0
	for {
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.VerifyTimeout)
		err := s.challenge(ctx, r.id, r.httpURL)
		cancel()
		s.mu.Lock()
		was, wasErr := r.verified, r.verifyErr
		r.verified, r.verifiedAt = err == nil, s.cfg.Now()
		r.verifyErr = ""
		if err != nil {
			r.verifyErr = proto.TruncateReason(err.Error())
		}
		s.mu.Unlock()
		next := s.cfg.VerifyInterval
		if err == nil {
			failures = 0
		}
		switch {
		case err != nil:
			failures++
			next = min(next, verifyRetry<<min(failures-1, 16))
			s.stats.reject(RejectChallenge)
			// The same failure again is news only to a debugging operator;
			// GET /v1/status shows it as verify_error.
			level := slog.LevelWarn
			if r.verifyErr == wasErr {
				level = slog.LevelDebug
			}
			r.log.Log(s.ctx, level, "relay url not verified; reached through the tunnel", "http_url", r.httpURL, "class", r.class, "err", err, "retry_in", next)
		case !was:
			s.stats.verified.Add(1)
			r.log.Info("relay url verified", "http_url", r.httpURL)
		}
		select {
		case <-r.done:
			return
		case <-s.ctx.Done():
			return
		case <-time.After(next):
		}
	}
}

// directLocked reports whether consumers and publishers may be sent to
// relay r's own http_url: it claims to be public and its URL passed the
// last challenge, whatever its class. Only TrustAllRelays (meshup dev,
// tests, a lab of the operator's own relays) believes the claim unproved.
// The caller holds s.mu.
func (s *Server) directLocked(r *relayConn) bool {
	return r.public && (r.verified || s.cfg.TrustAllRelays)
}

// relayLoadLocked is relay r's load for scheduling: the part streams it
// reported at its last heartbeat, but never fewer than the orders the
// rendezvous has outstanding that it carries (as entry, or as the exit of
// a part another entry forwards to it), plus the orders given since.
func relayLoadLocked(r *relayConn) int {
	return max(r.streams, r.entryOrders+r.exitForwards) + r.ordersSinceBeat
}

// statusAuthorized reports whether req carries the StatusToken.
func (s *Server) statusAuthorized(req *http.Request) bool {
	if s.cfg.StatusToken == "" {
		return false
	}
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.StatusToken)) == 1
}

// redactStatus removes from a public status what strangers must not learn
// of volunteers: their addresses (observed IP:ports, LAN addresses) and,
// unless verified, their own URLs. Operator relays are the operator's to
// show.
func redactStatus(rs []relayStatus) {
	for i := range rs {
		r := &rs[i]
		if r.Class == ClassOperator {
			continue
		}
		r.Addrs = proto.MeshAddrs{Observed: []string{}, Advertised: []string{}}
		if !r.Verified {
			r.HTTPURL = ""
		}
	}
}
