package srclimit

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrSlowBody is the error of a request body read after its deadline.
var ErrSlowBody = errors.New("request body too slow")

// deadlineBody bounds the time a request body may take: timeout, plus a
// second per minRate bytes read so far, plus the time the server spent
// between reads (a handler paced by its own limits, such as an upload
// waiting for its readers, issue 11: that wait is not the client's
// slowness). The deadline is on the connection, so a stalled read ends;
// it is cleared at the end of the body, so that it never cuts a long
// response that follows.
type deadlineBody struct {
	rc      *http.ResponseController
	body    io.ReadCloser
	start   time.Time
	timeout time.Duration
	minRate int
	n       int64
	onSlow  func()
	done    bool
	idle    time.Duration // time between a read's return and the next read
	last    time.Time     // when the last read returned; zero before it
}

// NewDeadlineBody returns body, the request body of w's request, bounded
// to timeout plus one second per minRate bytes read: a read after that
// deadline fails with ErrSlowBody, and onSlow is called once. Closing it
// closes body.
func NewDeadlineBody(w http.ResponseWriter, body io.ReadCloser, timeout time.Duration, minRate int, onSlow func()) io.ReadCloser {
	d := &deadlineBody{rc: http.NewResponseController(w), body: body, start: time.Now(), timeout: timeout, minRate: minRate, onSlow: onSlow}
	d.rc.SetReadDeadline(d.deadline())
	return d
}

func (d *deadlineBody) deadline() time.Time {
	return d.start.Add(d.idle + d.timeout + time.Duration(float64(d.n)/float64(d.minRate)*float64(time.Second)))
}

func (d *deadlineBody) Read(p []byte) (int, error) {
	if !d.last.IsZero() && !d.done {
		// The server did not read for a while: the client is not
		// to blame, move the deadline on before it fires.
		if gap := time.Since(d.last); gap > 0 {
			d.idle += gap
			d.rc.SetReadDeadline(d.deadline())
		}
	}
	n, err := d.body.Read(p)
	d.last = time.Now()
	d.n += int64(n)
	switch {
	case err == nil:
		d.rc.SetReadDeadline(d.deadline())
	case errors.Is(err, io.EOF):
		d.finish()
	case isTimeout(err):
		if !d.done {
			d.onSlow()
		}
		d.done = true
		return n, fmt.Errorf("%w: %d bytes in %v", ErrSlowBody, d.n, time.Since(d.start).Round(time.Millisecond))
	}
	return n, err
}

func (d *deadlineBody) finish() {
	if !d.done {
		d.done = true
		d.rc.SetReadDeadline(time.Time{})
	}
}

func (d *deadlineBody) Close() error { return d.body.Close() }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
