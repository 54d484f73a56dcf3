package srclimit_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshup/meshup/mesh/srclimit"
)

// pipeListener hands out one end of a net.Pipe, then blocks until closed.
type pipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return &net.TCPAddr{} }

// TestDeadlineBody checks, in fake time, that a body read ends with
// ErrSlowBody at timeout plus a second per minRate bytes read, that onSlow
// is called once, and that a body that arrives in time reads to its end.
func TestDeadlineBody(t *testing.T) {
	for _, tc := range []struct {
		name    string
		sent    int  // bytes of the body sent at once
		all     bool // the whole body, else the client stalls
		slow    bool
		elapsed time.Duration
		pause   time.Duration // the handler stops reading this long after its first read
	}{
		{"stalled", 3, false, true, 10*time.Second + 3*time.Millisecond, 0},
		{"stalled after a second of bytes", 1000, false, true, 11 * time.Second, 0},
		{"in time", 100, true, false, 0, 0},
		// A handler held back by its own limits (an upload waiting for
		// readers) is not a slow client.
		{"server paused longer than the timeout", 20000, true, false, time.Minute, time.Minute},
		{"stalled after a server pause", 1000, false, true, time.Minute + 11*time.Second, time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				type result struct {
					n       int
					err     error
					elapsed time.Duration
				}
				results := make(chan result, 1)
				slow := 0
				h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					start := time.Now()
					body := srclimit.NewDeadlineBody(w, r.Body, 10*time.Second, 1000, func() { slow++ })
					var b []byte
					if tc.pause > 0 {
						first := make([]byte, 10)
						k, _ := io.ReadFull(body, first)
						b = first[:k]
						time.Sleep(tc.pause)
					}
					rest, err := io.ReadAll(body)
					b = append(b, rest...)
					if err != nil {
						body.Read(make([]byte, 1)) // a second read after the deadline: onSlow not again
					}
					results <- result{len(b), err, time.Since(start)}
				})
				srv, cli := net.Pipe()
				ln := &pipeListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
				ln.conns <- srv
				hs := &http.Server{Handler: h}
				go hs.Serve(ln)
				defer cli.Close()
				defer hs.Close()

				size := tc.sent
				if !tc.all {
					size = 100000
				}
				go func() {
					fmt.Fprintf(cli, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
					cli.Write(make([]byte, tc.sent))
					io.Copy(io.Discard, cli)
				}()
				res := <-results
				if got := errors.Is(res.err, srclimit.ErrSlowBody); got != tc.slow {
					t.Errorf("read: got %v, want ErrSlowBody %v", res.err, tc.slow)
				}
				if res.n != tc.sent {
					t.Errorf("bytes read: got %d, want %d", res.n, tc.sent)
				}
				if res.elapsed != tc.elapsed {
					t.Errorf("read ended after %v, want %v", res.elapsed, tc.elapsed)
				}
				if want := map[bool]int{false: 0, true: 1}[tc.slow]; slow != want {
					t.Errorf("onSlow: called %d times, want %d", slow, want)
				}
			})
		})
	}
}
