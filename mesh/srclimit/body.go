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
// second per minRate bytes read so far. The deadline is on the connection,
// so a stalled read ends; it is cleared at the end of the body, so that
// it never cuts a long response that follows.
type deadlineBody struct {
	rc      *http.ResponseController
	body    io.ReadCloser
	start   time.Time
	timeout time.Duration
	minRate int
	n       int64
	onSlow  func()
	done    bool
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
	return d.start.Add(d.timeout + time.Duration(float64(d.n)/float64(d.minRate)*float64(time.Second)))
}

func (d *deadlineBody) Read(p []byte) (int, error) {
	n, err := d.body.Read(p)
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
