package relay

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/meshup/meshup/proto"
)

// Errors that end a part stream early. The consumer's response then ends
// short: it is never padded.
var (
	// errSenderGone means the publisher's push connection closed mid-part.
	errSenderGone = &proto.Error{Status: proto.StatusOffline, Msg: "publisher disconnected mid-part"}
	// errNeedTimeout means no publisher began a needed part in time.
	errNeedTimeout = &proto.Error{Status: proto.StatusUnavailable, Msg: "publisher did not begin the part in time"}
	// errStalled means a begun part received no byte for StallTimeout
	// while its consumer waited. The part is asked again through another
	// entry relay (issue 10, failover).
	errStalled = &proto.Error{Status: proto.StatusUnavailable, Msg: "part stalled"}
	// errNoRendezvous means the relay is not registered with a rendezvous.
	errNoRendezvous = &proto.Error{Status: proto.StatusUnavailable, Msg: "relay is not registered with the rendezvous"}
	// errShutdown means the relay is closing.
	errShutdown = &proto.Error{Status: proto.StatusUnavailable, Msg: "relay shutting down"}
)

// partStream carries one part from a publisher's push connection to one
// consumer, cut-through. Bytes wait in pooled chunks; the publisher may never
// have more than window bytes beyond what the consumer has taken, so memory
// per stream is bounded by the window, not by the part's length.
//
// The push connection's reader calls put; the consumer's handler goroutine
// calls writeTo; fail may be called from anywhere.
type partStream struct {
	s      *Server
	need   uint64
	item   proto.ItemID
	off    int64
	n      int64
	window int64

	wake chan struct{} // cap 1; signalled on attach, data and failure

	mu        sync.Mutex // guards the fields below
	src       source     // nil until a publisher begins the part
	stream    uint32     // the part's stream id on a push connection
	chunks    [][]byte   // received, undelivered bytes in order; pooled
	received  int64
	delivered int64
	acked     int64 // delivered as last told to the publisher
	err       error
	finished  bool // every byte delivered or err set

	// The entry's rate is measured over the time the part was filling:
	// from one arrival to the next while the part had room, leaving out
	// the waits for the consumer to take bytes (a read-ahead part sits
	// full until its turn), which say nothing of the way it came.
	lastPut time.Time     // when the last bytes arrived; zero before the first
	full    bool          // the last bytes filled the credit
	fill    time.Duration // time spent filling, as above
}

func (ps *partStream) signal() {
	select {
	case ps.wake <- struct{}{}:
	default:
	}
}

// source is where a part's bytes come from: a publisher's push connection,
// or a mesh stream from the entry relay the publisher pushed to.
type source interface {
	// credit tells the source that the consumer took bytes, so that it
	// may send more. It must not block.
	credit(ps *partStream)
	// end tells the source that the part ended with status.
	end(ps *partStream, status proto.Status, reason string)
	// entry returns the peer id of the relay the publisher pushed the
	// part to: this relay for a push connection, the sending relay for a
	// mesh stream.
	entry() string
}

// entry implements source.
func (pc *pushConn) entry() string { return pc.s.id }

// entry implements source.
func (m *meshSource) entry() string { return m.st.RemotePeer() }

// entryID returns the entry relay of the part, or "" before it began.
func (ps *partStream) entryID() string {
	ps.mu.Lock()
	src := ps.src
	ps.mu.Unlock()
	if src == nil {
		return ""
	}
	return src.entry()
}

// attach binds the stream to its source; stream is the part's id on a push
// connection.
func (ps *partStream) attach(src source, stream uint32) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.finished {
		return false
	}
	ps.src, ps.stream = src, stream
	ps.signal()
	return true
}

// admit checks, before a buffer is taken for them, that n more bytes are
// within the publisher's credit.
func (ps *partStream) admit(n int) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.creditLocked(n)
}

func (ps *partStream) creditLocked(n int) error {
	if end := ps.received + int64(n); end > ps.acked+ps.window || end > ps.n {
		return proto.Errorf(proto.StatusFlowViolation, "stream %d: %d bytes beyond credit", ps.stream, end-min(ps.acked+ps.window, ps.n))
	}
	return nil
}

// put queues buf, received from the publisher. It takes ownership of buf.
//
// Memory is what the buffers pin, not the bytes they hold: a 1-byte frame
// arrives in a 4 KiB pooled buffer. So bytes go first into the spare room
// of the last queued chunk, and a buffer is queued only for what does not
// fit. Every queued chunk but the last is then full, and a stream pins at
// most its window plus one buffer, however small the publisher's frames.
func (ps *partStream) put(buf []byte) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.finished {
		ps.s.pool.put(buf)
		return nil // ended on our side; frames in flight are dropped
	}
	if err := ps.creditLocked(len(buf)); err != nil {
		ps.s.pool.put(buf)
		return err
	}
	now := time.Now()
	if !ps.lastPut.IsZero() && !ps.full {
		ps.fill += now.Sub(ps.lastPut)
	}
	ps.lastPut = now
	ps.received += int64(len(buf))
	ps.full = ps.received >= min(ps.acked+ps.window, ps.n)
	rest := buf
	if k := len(ps.chunks); k > 0 {
		tail := ps.chunks[k-1]
		n := copy(tail[len(tail):cap(tail)], rest)
		ps.chunks[k-1] = tail[:len(tail)+n]
		rest = rest[n:]
	}
	switch {
	case len(rest) == 0:
		ps.s.pool.put(buf)
	case len(rest) == len(buf):
		ps.chunks = append(ps.chunks, buf) // as received: no copy
	default:
		nb := ps.s.pool.get(len(rest))
		copy(nb, rest)
		ps.s.pool.put(buf)
		ps.chunks = append(ps.chunks, nb)
	}
	ps.signal()
	return nil
}

// fail ends the stream with err unless it has already ended. It reports
// whether it ended the stream, and returns the source the stream was bound
// to.
func (ps *partStream) fail(err error) (ended bool, src source) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.finished {
		return false, nil
	}
	ps.finished, ps.err = true, err
	for _, c := range ps.chunks {
		ps.s.pool.put(c)
	}
	ps.chunks = nil
	ps.signal()
	return true, ps.src
}

// rest returns the bytes of the part not yet delivered, and whether any
// were delivered.
func (ps *partStream) rest() (off, n int64, progressed bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.off + ps.delivered, ps.n - ps.delivered, ps.delivered > 0
}

// ackState returns the acknowledgement to send now and records it as sent.
func (ps *partStream) ackState() (proto.Ack, bool) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.finished && ps.delivered < ps.n {
		return proto.Ack{}, false
	}
	ps.acked = ps.delivered
	return proto.Ack{Stream: ps.stream, Acked: uint64(ps.delivered), Limit: uint64(min(ps.delivered+ps.window, ps.n))}, true
}

// writeTo copies the part to w as its bytes arrive. It returns nil once
// every byte is written, or the error that ended the part.
func (ps *partStream) writeTo(ctx context.Context, w io.Writer) error {
	timer := time.NewTimer(ps.s.cfg.NeedTimeout)
	defer timer.Stop()
	for {
		ps.mu.Lock()
		if len(ps.chunks) > 0 {
			c := ps.chunks[0]
			ps.chunks[0] = nil
			ps.chunks = ps.chunks[1:]
			ps.mu.Unlock()

			_, werr := w.Write(c)
			ps.s.pool.put(c)
			if werr != nil {
				ps.cancel(proto.StatusCancelled, "consumer write failed")
				return werr
			}
			ps.s.stats.bytesOut.Add(int64(len(c)))

			ps.mu.Lock()
			ps.delivered += int64(len(c))
			done := ps.delivered == ps.n
			ackDue := ps.delivered-ps.acked >= ps.window/4 || ps.delivered == ps.received
			if done {
				ps.finished = true
			}
			src, fill := ps.src, ps.fill
			ps.mu.Unlock()
			if done {
				src.end(ps, proto.StatusOK, "")
				ps.s.needDone(ps, fill)
				return nil
			}
			if ackDue {
				src.credit(ps)
			}
			continue
		}
		if ps.err != nil {
			err := ps.err
			ps.mu.Unlock()
			return err
		}
		if ps.n == 0 {
			ps.finished = true
			ps.mu.Unlock()
			return nil
		}
		attached := ps.src != nil
		ps.mu.Unlock()

		// Nothing more to forward now: push out what the response
		// buffers hold (headers, a small last chunk), so that bytes
		// reach the consumer as they arrive, not when 4 KiB have piled
		// up behind an acknowledgement that said they were delivered.
		if f, ok := w.(interface{ Flush() error }); ok {
			if err := f.Flush(); err != nil {
				ps.cancel(proto.StatusCancelled, "consumer write failed")
				return err
			}
		}

		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if attached {
			timer.Reset(ps.s.cfg.StallTimeout)
		} else {
			timer.Reset(ps.s.cfg.NeedTimeout)
		}
		select {
		case <-ps.wake:
		case <-ctx.Done():
			ps.cancel(proto.StatusCancelled, "consumer went away")
			return ctx.Err()
		case <-timer.C:
			if attached {
				ps.cancel(proto.StatusCancelled, errStalled.Msg)
				return errStalled
			}
			ps.cancel(proto.StatusCancelled, errNeedTimeout.Msg)
			return errNeedTimeout
		}
	}
}

// cancel ends the stream from the consumer's side: the publisher is told
// to stop, or the rendezvous that the need is withdrawn.
func (ps *partStream) cancel(status proto.Status, reason string) {
	ended, src := ps.fail(proto.Errorf(status, "%s", reason))
	if !ended {
		return
	}
	if src != nil {
		src.end(ps, status, reason)
		return
	}
	ps.s.forgetNeed(ps.need, true)
}

// isCancelled reports whether err means the consumer gave up.
func isCancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// waitBegun waits until a publisher begins the part or the part fails.
func (ps *partStream) waitBegun(ctx context.Context) error {
	timer := time.NewTimer(ps.s.cfg.NeedTimeout)
	defer timer.Stop()
	for {
		ps.mu.Lock()
		begun, err := ps.src != nil || ps.n == 0, ps.err
		ps.mu.Unlock()
		if err != nil {
			return err
		}
		if begun {
			// writeTo may miss the wake-up consumed here; re-arm it.
			ps.signal()
			return nil
		}
		select {
		case <-ps.wake:
		case <-ctx.Done():
			ps.cancel(proto.StatusCancelled, "consumer went away")
			return ctx.Err()
		case <-timer.C:
			ps.cancel(proto.StatusCancelled, errNeedTimeout.Msg)
			return errNeedTimeout
		}
	}
}
