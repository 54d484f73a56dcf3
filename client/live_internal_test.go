package client

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshup/meshup/proto"
)

// recordLog keeps the records a LiveWriter writes, with the (synctest)
// time each was written.
type recordLog struct {
	mu    sync.Mutex
	recs  [][]byte
	times []time.Time
}

func (l *recordLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.recs = append(l.recs, bytes.Clone(p))
	l.times = append(l.times, time.Now())
	return len(p), nil
}

func (l *recordLog) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.recs)
}

// TestLiveTicker: the publisher's ticker goroutine sends a tick (an empty
// data record) after each TickInterval of quiet, not while the publisher
// writes, and stops when told; what it wrote reads back cleanly.
func TestLiveTicker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k := proto.NewE2EKey()
		id, _ := proto.NewLiveSecret()
		log := &recordLog{}
		lw := proto.NewLiveWriter(log, k, id)
		lw.Head(proto.LiveMeta{Type: "text/plain"}, nil)
		start := time.Now()
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			tickLive(lw, stop)
			close(done)
		}()
		time.Sleep(12 * time.Second)
		synctest.Wait()
		if n := log.len(); n != 3 {
			t.Fatalf("after 12 s of quiet: %d records, want the head and 2 ticks", n)
		}
		lw.Write([]byte("x")) // at 12 s: the next tick is due at 17 s
		time.Sleep(4*time.Second + 999*time.Millisecond)
		synctest.Wait()
		if n := log.len(); n != 4 {
			t.Fatalf("4.999 s after a write: %d records, want 4", n)
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		if n := log.len(); n != 5 {
			t.Fatalf("5 s after a write: %d records, want 5", n)
		}
		close(stop)
		<-done
		lw.Close()
		want := []time.Duration{0, 5 * time.Second, 10 * time.Second, 12 * time.Second, 17 * time.Second, 17 * time.Second}
		for i, at := range log.times {
			if got := at.Sub(start); got != want[i] {
				t.Errorf("record %d written at %v, want %v", i, got, want[i])
			}
		}
		out, err := io.ReadAll(proto.NewLiveReader(bytes.NewReader(bytes.Join(log.recs, nil)), k, id))
		if err != nil || string(out) != "x" {
			t.Errorf("read back %q, %v", out, err)
		}
	})
}

// TestLiveTickerEndsWithWriter: a ticker whose writer is closed ends by
// itself (synctest fails the test if its goroutine is left blocked).
func TestLiveTickerEndsWithWriter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		id, _ := proto.NewLiveSecret()
		lw := proto.NewLiveWriter(&recordLog{}, proto.NewE2EKey(), id)
		lw.Head(proto.LiveMeta{Type: "text/plain"}, nil)
		done := make(chan struct{})
		go func() {
			tickLive(lw, make(chan struct{}))
			close(done)
		}()
		time.Sleep(time.Second)
		lw.Close()
		<-done
	})
}
