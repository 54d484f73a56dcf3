package main

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/proto"
)

// pushTracker follows, per item, the bytes a sender pushed (acknowledged
// end to end by a relay) and which byte ranges were pushed at least once.
// The control channel names no consumer (an order says which part goes to
// which relay, not for whom), so a download is seen as complete when every
// byte of the item was pushed at least once; a later download that relays
// serve from memory pushes nothing more. Its methods are safe for
// concurrent use; add does not block.
type pushTracker struct {
	mu    sync.Mutex // guards the fields below
	items map[proto.ItemID]*pushedItem
	order []proto.ItemID
	sum   int64
}

type pushedItem struct {
	name     string
	size     int64       // bytes of a whole copy, as pushed
	acked    int64       // pushed in all
	last     int64       // acked at the last report
	covered  []byteRange // sorted, disjoint, merged
	complete bool        // every byte pushed at least once
	told     bool        // complete was reported
}

type byteRange struct{ off, end int64 }

func newPushTracker() *pushTracker {
	return &pushTracker{items: map[proto.ItemID]*pushedItem{}}
}

// watch starts reporting item id, of size bytes as pushed, under name.
func (t *pushTracker) watch(id proto.ItemID, name string, size int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	it := t.item(id)
	it.name, it.size = name, size
	t.order = append(t.order, id)
	it.check()
}

func (t *pushTracker) item(id proto.ItemID) *pushedItem {
	it := t.items[id]
	if it == nil {
		it = &pushedItem{size: -1}
		t.items[id] = it
	}
	return it
}

// add is client.Config.OnProgress.
func (t *pushTracker) add(p client.Progress) {
	t.mu.Lock()
	defer t.mu.Unlock()
	it := t.item(p.Item)
	it.acked = p.Acked
	t.sum += p.Len
	if p.Len > 0 {
		it.covered = addRange(it.covered, byteRange{p.Off, p.Off + p.Len})
	}
	it.check()
}

func (it *pushedItem) check() {
	if it.size >= 0 && !it.complete {
		it.complete = it.size == 0 && it.acked > 0 ||
			len(it.covered) == 1 && it.covered[0].off <= 0 && it.covered[0].end >= it.size && it.size > 0
	}
}

// addRange merges r into the sorted, disjoint ranges rs.
func addRange(rs []byteRange, r byteRange) []byteRange {
	i, _ := slices.BinarySearchFunc(rs, r.off, func(a byteRange, off int64) int {
		switch {
		case a.end < off:
			return -1
		case a.off > off:
			return 1
		}
		return 0
	})
	// rs[i:] are the ranges that end at or after r.off.
	j := i
	for j < len(rs) && rs[j].off <= r.end {
		r.off, r.end = min(r.off, rs[j].off), max(r.end, rs[j].end)
		j++
	}
	return slices.Replace(rs, i, j, r)
}

// report returns a status line of what changed since the last call
// (empty when nothing did) and the names of the items that became
// complete.
func (t *pushTracker) report() (line string, done []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	changed := false
	for _, id := range t.order {
		it := t.items[id]
		if it.complete && !it.told {
			it.told = true
			done = append(done, it.name)
		}
		rate := it.acked - it.last
		if rate != 0 {
			changed = true
		}
		it.last = it.acked
		parts = append(parts, fmt.Sprintf("%s: pushed %s (%s/s)", it.name, client.FormatBytes(it.acked), client.FormatBytes(rate)))
	}
	if !changed {
		return "", done
	}
	return strings.Join(parts, " | "), done
}

// total returns the bytes pushed for every item.
func (t *pushTracker) total() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sum
}
