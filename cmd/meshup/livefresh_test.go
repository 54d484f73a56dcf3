package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/cmd/internal/devmesh"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
)

// TestLiveGetMaxLag: `meshup get` of a sealed channel whose records are
// 10 minutes older than the reader's clock (here the publisher's clock is
// off; a replaying relay looks the same) fails with the stale error and
// names the flags; with --live-max-lag 11m the same channel reads whole.
func TestLiveGetMaxLag(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1})
	p, err := client.PublishLive(ctx, client.LiveOptions{
		Rendezvous: m.URL,
		Meta:       proto.LiveMeta{Type: "text/plain"},
		Now:        func() time.Time { return time.Now().Add(-10 * time.Minute) },
	})
	if err != nil {
		t.Fatal(err)
	}
	rel := m.Relays[0]
	meshtest.Eventually(t, 10*time.Second, "the channel's head on the relay", func() bool { return rel.LiveStats().BytesIn > 0 })
	type result struct {
		out string
		err error
	}
	get := func(args ...string) chan result {
		c := make(chan result, 1)
		go func() {
			var out bytes.Buffer
			err := runGet(ctx, append(args, "-o", "-"), &out, io.Discard)
			c <- result{out.String(), err}
		}()
		return c
	}
	strict := get(p.Link)
	lenient := get(p.Link, "--live-max-lag", "11m", "--live-catch-up", "1m")
	meshtest.Eventually(t, 10*time.Second, "two readers", func() bool { return rel.LiveStats().Subscribers == 2 })
	p.Write([]byte("a;"))
	p.Write([]byte("b;"))
	if _, err := p.Close(); err != nil {
		t.Fatal(err)
	}
	s := <-strict
	if !errors.Is(s.err, proto.ErrLiveStale) || !strings.Contains(s.err.Error(), "the channel is 10m") || !strings.Contains(s.err.Error(), "--live-max-lag") {
		t.Errorf("get with the default max lag: %q, %v; want a stale error naming --live-max-lag", s.out, s.err)
	}
	if l := <-lenient; l.err != nil || l.out != "a;b;" {
		t.Errorf("get --live-max-lag 11m: %q, %v", l.out, l.err)
	}
}

// TestLiveTicksThroughRelay: a sealed channel whose publisher has nothing
// to say still sends ticks (client.PublishLive's ticker) that the relay
// carries; its reader reads the data around them and ends cleanly.
func TestLiveTicksThroughRelay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := startMeshWith(t, devmesh.Config{Relays: 1, Volunteers: 1})
	p, err := client.PublishLive(ctx, client.LiveOptions{Rendezvous: m.URL, Meta: proto.LiveMeta{Type: "text/plain"}, TickInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rel := m.Relays[0]
	meshtest.Eventually(t, 10*time.Second, "the channel's head on the relay", func() bool { return rel.LiveStats().BytesIn > 0 })
	ls, err := client.ReadLive(ctx, p.Link, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if _, err := ls.Reader.Head(); err != nil {
		t.Fatal(err)
	}
	// Quiet: only ticks (empty records, proto.LiveMinRecord bytes each) go.
	in := rel.LiveStats().BytesIn
	meshtest.Eventually(t, 10*time.Second, "3 ticks on the relay", func() bool { return rel.LiveStats().BytesIn >= in+3*proto.LiveMinRecord })
	p.Write([]byte("a;"))
	in = rel.LiveStats().BytesIn
	meshtest.Eventually(t, 10*time.Second, "3 more ticks on the relay", func() bool { return rel.LiveStats().BytesIn >= in+3*proto.LiveMinRecord })
	p.Write([]byte("b;"))
	if _, err := p.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(ls)
	if err != nil || string(got) != "a;b;" {
		t.Errorf("reader: %q, %v", got, err)
	}
}
