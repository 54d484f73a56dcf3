package relay

import (
	"net/http"
	"sync"
	"time"

	"github.com/meshup/meshup/mesh/srclimit"
	"github.com/meshup/meshup/proto"
)

// Read checks (issue 11, proto.ReadCheck). The rendezvous asks its auth
// webhook before it redirects a reader to an item's download URL, but a
// held upload is also read on the relay's own URL (the tus upload URL:
// GET /v1/files/KEY), which the rendezvous never sees. When the
// rendezvous has a webhook (Registered.ReadChecks), such a read waits for
// its verdict, asked on the register stream: 403 when the application
// says no, 503 when it could not be asked (timeout, unreachable), when
// the link to the rendezvous is down, or when the rendezvous did not say
// whether it checks reads: fail closed. Without a webhook no question is
// asked. Nothing is cached: every read is asked about. At most
// proto.MaxReadChecks reads wait on one link; more are answered 503.

// pendingChecks are the read checks of one link waiting for a verdict.
type pendingChecks struct {
	mu      sync.Mutex // guards the fields below
	next    uint64
	waiting map[uint64]chan *proto.ReadVerdict
}

// add registers a new check and returns its id and the channel its
// verdict arrives on; false when proto.MaxReadChecks are waiting.
func (pc *pendingChecks) add() (uint64, chan *proto.ReadVerdict, bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if len(pc.waiting) >= proto.MaxReadChecks {
		return 0, nil, false
	}
	if pc.waiting == nil {
		pc.waiting = make(map[uint64]chan *proto.ReadVerdict)
	}
	pc.next++
	ch := make(chan *proto.ReadVerdict, 1)
	pc.waiting[pc.next] = ch
	return pc.next, ch, true
}

func (pc *pendingChecks) remove(id uint64) {
	pc.mu.Lock()
	delete(pc.waiting, id)
	pc.mu.Unlock()
}

// answer delivers verdict m to the check waiting for it, if any.
func (pc *pendingChecks) answer(m *proto.ReadVerdict) {
	pc.mu.Lock()
	ch := pc.waiting[m.Check]
	delete(pc.waiting, m.Check)
	pc.mu.Unlock()
	if ch != nil {
		ch <- m // buffered, one verdict per check
	}
}

// checkHeldRead asks the rendezvous whether request r may read held
// upload u on a URL of this relay (see above). It returns nil to serve
// the read, else the error to answer; StatusCancelled when the reader
// went away while waiting (nothing to answer).
func (s *Server) checkHeldRead(r *http.Request, u *upload) *proto.Error {
	l := s.link.Load()
	switch {
	case l == nil:
		s.stats.refused("read_check_unregistered")
		return proto.Errorf(proto.StatusUnavailable, "the relay is not registered with its rendezvous, whose application decides who may read; try again later")
	case l.readChecks == nil:
		s.stats.refused("read_check_unknown")
		return proto.Errorf(proto.StatusUnavailable, "the rendezvous does not say whether its application checks reads: refused")
	case !*l.readChecks:
		return nil // no auth webhook: no question
	}
	id, ch, ok := l.checks.add()
	if !ok {
		s.stats.refused("read_check_limit")
		return proto.Errorf(proto.StatusUnavailable, "%d reads are waiting for the application's verdict, the limit; try again later", proto.MaxReadChecks)
	}
	defer l.checks.remove(id)
	m := &proto.ReadCheck{Check: id, Item: u.id, Client: readerAddr(r)}
	if a := r.Header.Get("Authorization"); a != "" {
		m.Auth = map[string]string{"authorization": a}
	}
	if err := l.send(m); err != nil {
		s.stats.refused("read_check_unregistered")
		return proto.Errorf(proto.StatusUnavailable, "the relay cannot ask its rendezvous whether the read is allowed (%v); try again later", err)
	}
	t := time.NewTimer(s.cfg.NeedTimeout)
	defer t.Stop()
	select {
	case v := <-ch:
		if v.Status == proto.StatusOK {
			return nil
		}
		s.stats.refused("read_denied")
		return &proto.Error{Status: v.Status, Msg: v.Reason}
	case <-l.done:
		s.stats.refused("read_check_unregistered")
		return proto.Errorf(proto.StatusUnavailable, "the link to the rendezvous dropped while asking whether the read is allowed; try again")
	case <-t.C:
		s.stats.refused("read_check_timeout")
		return proto.Errorf(proto.StatusUnavailable, "the rendezvous did not say within %v whether the read is allowed", s.cfg.NeedTimeout)
	case <-s.ctx.Done():
		return errShutdown
	case <-r.Context().Done():
		return proto.Errorf(proto.StatusCancelled, "the reader went away")
	}
}

// readerAddr returns the reader's address for the auth webhook: the
// request's source, or for a request through a tunnel the IP its proxy
// set in X-Forwarded-For (clientIP).
func readerAddr(r *http.Request) string {
	if _, ok := srclimit.SourceIP(r.RemoteAddr); ok {
		return r.RemoteAddr
	}
	return clientIP(r)
}
