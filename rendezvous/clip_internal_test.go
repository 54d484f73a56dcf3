package rendezvous

import (
	"testing"
	"time"

	"github.com/meshup/meshup/proto"
)

// TestUnpublishedBound: the rendezvous remembers at most
// MaxUnpublishedClips unpublished clip ids; past the bound the expired
// ones are forgotten first, then the soonest to expire.
func TestUnpublishedBound(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	s := &Server{cfg: Config{MaxUnpublishedClips: 3, Now: func() time.Time { return now }}}
	id := func(n int) proto.ItemID { return proto.ItemID{byte(n)} }
	s.noteUnpublishedLocked(id(0), now.Add(-time.Minute)) // already expired
	s.noteUnpublishedLocked(id(1), now.Add(3*time.Hour))
	s.noteUnpublishedLocked(id(2), now.Add(time.Hour))
	s.noteUnpublishedLocked(id(3), now.Add(2*time.Hour)) // the expired one makes room
	if _, ok := s.clips.unpublished[id(0)]; ok || len(s.clips.unpublished) != 3 {
		t.Fatalf("after 4 notes with one expired: %v, want b, c, d", s.clips.unpublished)
	}
	s.noteUnpublishedLocked(id(4), now.Add(4*time.Hour)) // c, the soonest to expire, goes
	want := []proto.ItemID{id(1), id(3), id(4)}
	for _, k := range want {
		if _, ok := s.clips.unpublished[k]; !ok {
			t.Errorf("%x forgotten; remembered: %v", k, s.clips.unpublished)
		}
	}
	if len(s.clips.unpublished) != len(want) {
		t.Errorf("remembered %v, want %v", s.clips.unpublished, want)
	}
	s.noteUnpublishedLocked(id(5), time.Time{}) // no expiry: nothing to remember
	if _, ok := s.clips.unpublished[id(5)]; ok {
		t.Errorf("a clip with no expiry was remembered")
	}
}
