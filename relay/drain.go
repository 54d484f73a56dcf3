package relay

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/meshup/meshup/proto"
)

// Draining (issue 13). On Drain the relay stops taking new work: new
// consumer requests get 503 with Retry-After, so that clients go back to
// the rendezvous and on to another relay, and the rendezvous is told
// (proto.Heartbeat.Draining) so that it chooses the relay neither as exit
// nor as entry any more. Consumer requests already running go on, with
// the parts they need, until they end or the caller's deadline passes;
// then the caller closes the relay. Push connections are still accepted:
// publishers open them only on the rendezvous's orders, which now name
// the relay only for the parts of its own requests in flight (a new
// connection may be needed for them, as for small parts).

// DrainRetryAfter is the Retry-After of the requests a draining relay
// refuses: soon, since another relay can serve them at once.
const DrainRetryAfter = time.Second

var (
	// ErrDraining is the reason Ready gives while the relay drains.
	ErrDraining = errors.New("relay: draining")
	// ErrNotRegistered is the reason Ready gives until the relay is
	// registered with the rendezvous.
	ErrNotRegistered = errors.New("relay: not registered with the rendezvous")
)

// Ready returns nil when the relay is registered with the rendezvous and
// not draining (GET /readyz), else why not.
func (s *Server) Ready() error {
	if s.isDraining() {
		return ErrDraining
	}
	if s.link.Load() == nil {
		return ErrNotRegistered
	}
	return nil
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Drain stops the relay taking new work, tells the rendezvous, and blocks
// until the consumer requests and part streams in flight have ended, or
// ctx is done (its error is returned). It does not close the relay; call
// Close after it. Drain may be called more than once.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	first := !s.draining
	s.draining = true
	s.mu.Unlock()
	if first {
		st := s.Stats()
		s.log.Info("draining: refusing new work", "requests", s.inFlight(), "open_parts", st.OpenParts)
		if l := s.link.Load(); l != nil {
			l.send(s.heartbeatMsg(st))
		}
	}
	// Part streams end without an event to wait on; a short poll costs
	// nothing next to the transfers it waits for.
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for s.inFlight() > 0 || s.stats.openParts.Load() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

func (s *Server) inFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.working
}

// heartbeatMsg returns a heartbeat with the load in st, without the mesh
// view.
func (s *Server) heartbeatMsg(st Stats) proto.Heartbeat {
	return proto.Heartbeat{
		Streams: int(st.OpenParts) + st.Waiting, Reserved: st.Reserved, Served: st.BytesOut,
		Draining: s.isDraining(), CapReached: s.capReached(),
	}
}

// work wraps a consumer request handler: refused while draining, counted
// while it runs so that Drain waits for it.
func (s *Server) work(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.draining || s.closed {
			s.mu.Unlock()
			s.refuseDrain(w)
			return
		}
		s.working++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.working--
			s.mu.Unlock()
		}()
		h(w, r)
	}
}

func (s *Server) refuseDrain(w http.ResponseWriter) {
	s.stats.refused("draining")
	w.Header().Set("Retry-After", strconv.Itoa(int(DrainRetryAfter/time.Second)))
	writeError(w, proto.Errorf(proto.StatusUnavailable, "relay is draining: ask the rendezvous for another relay"))
}
