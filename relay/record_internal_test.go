package relay

import (
	"log/slog"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh"
)

func TestSignRecordAndRefresh(t *testing.T) {
	node, err := mesh.New(mesh.Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, AllowPrivateAddrs: true})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	s, err := New(Config{Node: node, Rendezvous: "http://127.0.0.1:1", PublicURL: "http://127.0.0.1:2", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	b := s.signRecord("rendezvous-id")
	r, err := mesh.DecodeRecord(b)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if err := mesh.VerifyRecord(r); err != nil {
		t.Errorf("VerifyRecord: %v", err)
	}
	if r.Relay != node.ID() || r.Home != "rendezvous-id" || r.HTTPURL != "http://127.0.0.1:2" || len(r.Addrs) == 0 {
		t.Errorf("got %+v, want relay %s, home rendezvous-id, the public URL and addrs", r, node.ID())
	}
	if exp := time.Unix(r.Expires, 0); time.Until(exp) > recordTTL || time.Until(exp) < recordTTL-time.Minute {
		t.Errorf("expires in %v, want about %v", time.Until(exp), recordTTL)
	}

	now := time.Now()
	l := &link{home: "rendezvous-id", recordAt: now}
	if got := s.recordDue(l, now.Add(recordTTL/2-time.Second)); got != nil {
		t.Errorf("record before half its life: got %d bytes, want none", len(got))
	}
	later := now.Add(recordTTL / 2)
	fresh := s.recordDue(l, later)
	if fresh == nil {
		t.Fatal("no record at half its life")
	}
	r2, err := mesh.DecodeRecord(fresh)
	if err != nil || mesh.VerifyRecord(r2) != nil || r2.Seq <= r.Seq {
		t.Errorf("refreshed record %+v (%v): want a valid record with seq above %d", r2, err, r.Seq)
	}
	if !l.recordAt.Equal(later) {
		t.Errorf("recordAt: got %v, want %v", l.recordAt, later)
	}
}
