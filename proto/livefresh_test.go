package proto

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// recordSink keeps the records a LiveWriter writes.
type recordSink struct {
	mu   sync.Mutex
	recs [][]byte
}

func (s *recordSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, bytes.Clone(p))
	return len(p), nil
}

func (s *recordSink) stream(from int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Join(s.recs[from:], nil)
}

// TestLiveReaderFreshness: the reader rules about time, with injected
// clocks: a channel replayed long after it was live fails with the stale
// error once CatchUp has passed on the reader's clock (or at its last
// record); an honest join (an old ring, then the live edge) passes; after
// catching up, later lag is not an error; times that go back fail.
func TestLiveReaderFreshness(t *testing.T) {
	k, id := NewE2EKey(), mustLiveID(t)
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	pub := &fakeClock{t: t0}
	sink := &recordSink{}
	w := NewLiveWriter(sink, k, id)
	w.Now = pub.Now
	w.Head(LiveMeta{Type: "text/plain"}, nil)
	for i := range 5 {
		w.Sync([]byte{'a' + byte(i)})
		pub.Add(time.Second)
	}
	// records: head a b c d e, stamped t0 .. t0+4s

	// read reads recs with the reader's clock at clock, moved on by
	// steps[i] (the last step repeats) as record i starts to arrive.
	read := func(recs [][]byte, clock *fakeClock, maxLag time.Duration, steps ...time.Duration) (string, error) {
		r := NewLiveReader(&stepSource{recs: recs, clock: clock, steps: steps}, k, id)
		r.Now = clock.Now
		r.MaxLag = maxLag
		out, err := io.ReadAll(r)
		return string(out), err
	}

	t.Run("replayed later, at real-time pace", func(t *testing.T) {
		// The reader's clock is 10 minutes after the channel; each record
		// comes 10 s after the previous one: the fourth arrives more than
		// CatchUp (30 s) after the first.
		clock := &fakeClock{t: t0.Add(10 * time.Minute)}
		out, err := read(sink.recs, clock, 0, 10*time.Second)
		var se *LiveStaleError
		if !errors.Is(err, ErrLiveStale) || !errors.As(err, &se) {
			t.Fatalf("got %q, %v; want a stale error", out, err)
		}
		// head at +10s (the first record), a at +20s, ... c at +40s, d
		// at +50s: 40 s after the first, d fails.
		if out != "abc" {
			t.Errorf("handed out %q, want abc", out)
		}
		want := "the channel is 10m47s behind its publisher: a relay is replaying or delaying it (or the publisher's clock is off; max lag 1m0s)"
		if err.Error() != want {
			t.Errorf("error %q, want %q", err, want)
		}
	})

	t.Run("whole channel replayed at once", func(t *testing.T) {
		w2sink := &recordSink{}
		w2 := NewLiveWriter(w2sink, k, id)
		w2.Now = func() time.Time { return t0 }
		w2.Head(LiveMeta{Type: "text/plain"}, nil)
		w2.Write([]byte("x"))
		w2.Close()
		clock := &fakeClock{t: t0.Add(time.Hour)}
		out, err := read(w2sink.recs, clock, 0, 0)
		if !errors.Is(err, ErrLiveStale) || out != "x" {
			t.Fatalf("got %q, %v; want x and a stale error at the last record", out, err)
		}
		// With the rule off, the same stream reads cleanly.
		out, err = read(w2sink.recs, &fakeClock{t: t0.Add(time.Hour)}, -1, 0)
		if err != nil || out != "x" {
			t.Errorf("MaxLag -1: got %q, %v", out, err)
		}
	})

	t.Run("honest join: an old ring then the live edge", func(t *testing.T) {
		// The head and the ring are old (the head and "old;" 2 minutes,
		// "20s;" 20 s); the live edge is fresh. After that the reader
		// lags (a slow consumer): no error.
		clock := &fakeClock{t: t0}
		s := &recordSink{}
		wr := NewLiveWriter(s, k, id)
		pc := &fakeClock{t: t0.Add(-2 * time.Minute)}
		wr.Now = pc.Now
		wr.Head(LiveMeta{Type: "text/plain"}, nil)
		wr.Sync([]byte("old;"))
		pc.Add(100 * time.Second)
		wr.Write([]byte("20s;"))
		pc.Add(20 * time.Second)
		wr.Write([]byte("live;"))
		wr.Write([]byte("late;"))
		wr.Close()
		// 5 s of the reader's clock per record up to the live edge
		// (caught up 10 s after the first record), then 5 minutes per
		// record: the last ones arrive long after CatchUp, 5 and 10
		// minutes behind.
		out, err := read(s.recs, clock, 0, 5*time.Second, 5*time.Second, 5*time.Second, 5*time.Second, 5*time.Minute)
		if err != nil || out != "old;20s;live;late;" {
			t.Errorf("got %q, %v", out, err)
		}
	})

	t.Run("a changed time does not open", func(t *testing.T) {
		recs := append([][]byte(nil), sink.recs...)
		recs[2] = bytes.Clone(recs[2])
		recs[2][20] ^= 1
		out, err := read(recs, &fakeClock{t: t0}, 0, 0)
		var re *LiveRecordError
		if !errors.Is(err, ErrLiveIntegrity) || !errors.As(err, &re) || re.Seq != 1 || out != "a" {
			t.Errorf("got %q, %v; want a, then an integrity error at record 1", out, err)
		}
	})

	t.Run("time goes back", func(t *testing.T) {
		ls := NewLiveSealer(k, id)
		recs := append([][]byte(nil), sink.recs[:3]...) // head a b
		recs = append(recs, ls.SealRecord(nil, LiveData, 2, 0, t0, []byte("c")))
		out, err := read(recs, &fakeClock{t: t0}, 0, 0)
		if !errors.Is(err, ErrLiveTimeBack) || out != "ab" || err.Error() != "data record 2 goes back in time: its publisher time is before the previous record's: a relay replayed or spliced it" {
			t.Errorf("got %q, %v", out, err)
		}
	})
}

// TestLiveReaderStalledReplay: a relay that replays old records and then
// sends nothing at all. The reader's Read is blocked on its source; the
// CatchUp timer closes the source and the reader fails with the stale
// error, CatchUp after its first record (synctest's clock).
func TestLiveReaderStalledReplay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, id := NewE2EKey(), mustLiveID(t)
		pr, pw := io.Pipe()
		w := NewLiveWriter(pw, k, id)
		w.Now = func() time.Time { return time.Now().Add(-5 * time.Minute) } // recorded 5 minutes ago
		go func() {
			w.Head(LiveMeta{Type: "text/plain"}, nil)
			w.Write([]byte("old;"))
			// then nothing: the pipe stays open
		}()
		r := NewLiveReader(pr, k, id)
		start := time.Now()
		out, err := io.ReadAll(r)
		if !errors.Is(err, ErrLiveStale) || string(out) != "old;" {
			t.Fatalf("got %q, %v; want old; then a stale error", out, err)
		}
		if d := time.Since(start); d != LiveDefaultCatchUp {
			t.Errorf("failed after %v, want CatchUp %v", d, LiveDefaultCatchUp)
		}
		if !strings.HasPrefix(err.Error(), "the channel is 5m30s behind its publisher") {
			t.Errorf("error %q", err)
		}
		pw.Close()
	})
}

// TestLiveReaderCaughtUpThenQuiet: once caught up, a channel that stays
// quiet longer than CatchUp is not an error (the timer stopped), and a
// reader of the live edge ends cleanly.
func TestLiveReaderCaughtUpThenQuiet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, id := NewE2EKey(), mustLiveID(t)
		pr, pw := io.Pipe()
		w := NewLiveWriter(pw, k, id)
		go func() {
			w.Head(LiveMeta{Type: "text/plain"}, nil)
			w.Write([]byte("now;"))
			time.Sleep(5 * time.Minute)
			w.Write([]byte("later;"))
			w.Close()
			pw.Close()
		}()
		out, err := io.ReadAll(NewLiveReader(pr, k, id))
		if err != nil || string(out) != "now;later;" {
			t.Errorf("got %q, %v", out, err)
		}
	})
}

// TestLiveWriterTick: Tick sends an empty data record only after
// TickInterval without a record, never before the head nor after Close,
// and says when it is next due.
func TestLiveWriterTick(t *testing.T) {
	k, id := NewE2EKey(), mustLiveID(t)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	sink := &recordSink{}
	w := NewLiveWriter(sink, k, id)
	w.Now = clock.Now
	count := func() int { sink.mu.Lock(); defer sink.mu.Unlock(); return len(sink.recs) }
	if d, err := w.Tick(); err != nil || d != LiveTickInterval || count() != 0 {
		t.Fatalf("before the head: %v, %v, %d records", d, err, count())
	}
	w.Head(LiveMeta{Type: "text/plain"}, nil)
	clock.Add(2 * time.Second)
	if d, err := w.Tick(); err != nil || d != 3*time.Second || count() != 1 {
		t.Fatalf("2 s after the head: %v, %v, %d records", d, err, count())
	}
	clock.Add(3 * time.Second)
	if d, err := w.Tick(); err != nil || d != LiveTickInterval || count() != 2 {
		t.Fatalf("5 s after the head: %v, %v, %d records", d, err, count())
	}
	clock.Add(4 * time.Second)
	w.Write([]byte("x"))
	clock.Add(4 * time.Second)
	if d, err := w.Tick(); err != nil || d != time.Second || count() != 3 {
		t.Fatalf("4 s after a write: %v, %v, %d records", d, err, count())
	}
	w.Close()
	if _, err := w.Tick(); err == nil {
		t.Error("Tick after Close did not fail")
	}
	// The ticks are empty data records in sequence; times never go back.
	r := NewLiveReader(bytes.NewReader(sink.stream(0)), k, id)
	r.Now = clock.Now
	out, err := io.ReadAll(r)
	if err != nil || string(out) != "x" {
		t.Errorf("read back %q, %v", out, err)
	}
	_, kind, seq, _ := ReadLiveRecord(bytes.NewReader(sink.recs[1]), nil)
	if kind != LiveData || seq != 0 {
		t.Errorf("tick is %v %d, want data 0", kind, seq)
	}
}

// TestLiveWriterTimesNeverGoBack: a publisher whose clock steps back
// stamps its records with the previous time.
func TestLiveWriterTimesNeverGoBack(t *testing.T) {
	k, id := NewE2EKey(), mustLiveID(t)
	clock := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	sink := &recordSink{}
	w := NewLiveWriter(sink, k, id)
	w.Now = clock.Now
	w.Head(LiveMeta{Type: "text/plain"}, nil)
	clock.Add(-time.Minute)
	w.Write([]byte("a"))
	w.Close()
	s := NewLiveSealer(k, id)
	var times []time.Time
	for _, rec := range sink.recs {
		h, _, err := s.OpenRecord(nil, rec, 0)
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, h.Time)
	}
	want := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, tm := range times {
		if !tm.Equal(want) {
			t.Errorf("record %d stamped %v, want %v", i, tm, want)
		}
	}
}

// stepSource serves records one after the other, moving clock on by
// steps[i] (the last step repeats; none: 0) when record i starts to be
// read: time passes between records in the reader's goroutine, so the
// reader's view of it is deterministic.
type stepSource struct {
	recs  [][]byte
	clock *fakeClock
	steps []time.Duration
	i     int
	off   int
}

func (s *stepSource) Read(p []byte) (int, error) {
	if s.i == len(s.recs) {
		return 0, io.EOF
	}
	if s.off == 0 && len(s.steps) > 0 {
		s.clock.Add(s.steps[min(s.i, len(s.steps)-1)])
	}
	n := copy(p, s.recs[s.i][s.off:])
	s.off += n
	if s.off == len(s.recs[s.i]) {
		s.i, s.off = s.i+1, 0
	}
	return n, nil
}
