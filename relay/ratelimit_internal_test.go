package relay

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// writeAll writes n bytes to w in chunks of 64 KiB, as part streams do.
func writeAll(t *testing.T, w io.Writer, n int) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for n > 0 {
		k := min(n, len(buf))
		if _, err := w.Write(buf[:k]); err != nil {
			t.Errorf("write: %v", err)
			return
		}
		n -= k
	}
}

// within checks d is want to a millisecond: the limiter's arithmetic is in
// floating point, and synctest's clock moves exactly to each timer.
func within(t *testing.T, what string, d, want time.Duration) {
	t.Helper()
	if diff := d - want; diff < -time.Millisecond || diff > time.Millisecond {
		t.Errorf("%s: took %v of the bubble's clock, want %v", what, d, want)
	}
}

// TestShaperGlobalRate checks that a relay limited to 2 MiB/s sends a
// 6 MiB item in 3 s less the burst it starts with, measured on
// synctest's clock, and counts the waits.
func TestShaperGlobalRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sh := newShaper(2<<20, 0, 0, time.Now)
		w := sh.writer(t.Context(), io.Discard, nil)
		if got, want := w.chunk, 256<<10; got != want {
			t.Fatalf("chunk: got %d, want %d", got, want)
		}
		start := time.Now()
		writeAll(t, w, 6<<20)
		within(t, "6 MiB at 2 MiB/s", time.Since(start), time.Duration(float64(6<<20-256<<10)/float64(2<<20)*float64(time.Second)))
		if got := sh.sent.Load(); got != 6<<20 {
			t.Errorf("sent: got %d, want %d", got, 6<<20)
		}
		if sh.waits.Load() == 0 || sh.delayedBytes.Load() == 0 {
			t.Errorf("waits %d, delayed bytes %d: want both above 0", sh.waits.Load(), sh.delayedBytes.Load())
		}
		if got, want := time.Duration(sh.waited.Load()), 2875*time.Millisecond; got < want-time.Millisecond || got > want+time.Millisecond {
			t.Errorf("delay counted: got %v, want %v", got, want)
		}
	})
}

// TestShaperUnlimited checks that without limits nothing waits and bytes
// are still counted.
func TestShaperUnlimited(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sh := newShaper(0, 0, 0, time.Now)
		start := time.Now()
		writeAll(t, sh.writer(t.Context(), io.Discard, nil), 8<<20)
		if d := time.Since(start); d != 0 {
			t.Errorf("unlimited: took %v of the bubble's clock, want 0", d)
		}
		if sh.waits.Load() != 0 || sh.sent.Load() != 8<<20 {
			t.Errorf("waits %d sent %d, want 0 and %d", sh.waits.Load(), sh.sent.Load(), 8<<20)
		}
	})
}

// TestShaperPerConsumer checks that the limit per consumer applies to
// each IP on its own, and that the requests of one IP share one limit.
func TestShaperPerConsumer(t *testing.T) {
	req := func(addr string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r.RemoteAddr = addr
		return r
	}
	const perRate = 1 << 20 // burst 128 KiB
	burst := 128 << 10
	second := func(n int) time.Duration {
		return time.Duration(float64(n-burst) / perRate * float64(time.Second))
	}
	tests := []struct {
		name  string
		addrs []string // one concurrent response of 2 MiB each
		want  time.Duration
	}{
		{"two IPs in parallel", []string{"192.0.2.1:1000", "192.0.2.2:1000"}, second(2 << 20)},
		{"one IP shares its limit", []string{"192.0.2.1:1000", "192.0.2.1:1001"}, second(4 << 20)},
		{"loopback: a limit per request", []string{"127.0.0.1:1000", "127.0.0.1:1001"}, second(2 << 20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				sh := newShaper(0, perRate, 0, time.Now)
				start := time.Now()
				var wg sync.WaitGroup
				for _, a := range tt.addrs {
					lim, done := sh.consumer(req(a), false)
					wg.Go(func() {
						defer done()
						writeAll(t, sh.writer(t.Context(), io.Discard, lim), 2<<20)
					})
				}
				wg.Wait()
				within(t, tt.name, time.Since(start), tt.want)
				sh.mu.Lock()
				left := len(sh.consumers)
				sh.mu.Unlock()
				if left != 0 {
					t.Errorf("consumers remembered after the responses ended: %d, want 0", left)
				}
			})
		})
	}
}

// TestShaperCancel checks that a writer waiting for the limiter returns
// when its context ends, without writing.
func TestShaperCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sh := newShaper(64<<10, 0, 0, time.Now) // burst 16 KiB
		ctx, cancel := context.WithCancel(t.Context())
		w := sh.writer(ctx, io.Discard, nil)
		errc := make(chan error, 1)
		go func() {
			_, err := w.Write(make([]byte, 1<<20))
			errc <- err
		}()
		synctest.Wait() // the writer is waiting for tokens
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("write: got %v, want context.Canceled", err)
		}
		if got := sh.sent.Load(); got != 16<<10 {
			t.Errorf("sent: got %d, want the first burst, %d", got, 16<<10)
		}
	})
}

// TestVolume checks the monthly count: the cap is reached at the limit and
// a new calendar month (UTC) starts from zero.
func TestVolume(t *testing.T) {
	now := time.Date(2026, time.January, 31, 23, 59, 0, 0, time.UTC)
	v := volume{limit: 1000, now: func() time.Time { return now }}
	v.add(999)
	if used, reached, resets := v.state(); used != 999 || reached || !resets.Equal(time.Date(2026, time.February, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("after 999: got used %d reached %v resets %v", used, reached, resets)
	}
	v.add(1)
	if _, reached, _ := v.state(); !reached {
		t.Fatal("after 1000: cap not reached")
	}
	now = now.Add(time.Minute) // February
	if used, reached, _ := v.state(); used != 0 || reached {
		t.Fatalf("new month: got used %d reached %v, want 0 and false", used, reached)
	}
	now = time.Date(2026, time.December, 5, 0, 0, 0, 0, time.UTC)
	if _, _, resets := v.state(); !resets.Equal(time.Date(2027, time.January, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("December: resets %v, want 2027-01-01", resets)
	}
	unlimited := volume{now: func() time.Time { return now }}
	unlimited.add(1 << 40)
	if _, reached, _ := unlimited.state(); reached {
		t.Fatal("no cap: reached")
	}
}
