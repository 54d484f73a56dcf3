package client

import (
	"context"
	"errors"
	"time"

	"github.com/meshup/meshup/proto"
)

// Clips (issue 12). A clip is published like a file with Source.Kind
// proto.KindClip (PublishClip is a shorthand): the rendezvous refuses it
// at once when it is over its --max-clip-size or no relay has the room,
// and right after Published orders the whole item onto up to two relays
// (store orders, Claims.Store), which this client pushes like any part.
// From then on the clip is readable from those relays, after this client
// has gone too, until Item.Expires. While the client stays online it
// answers the rendezvous's orders to copy the clip onto another relay
// when a holder leaves.

// PublishClip publishes src as a clip: pushed whole into relay memory now,
// readable until the returned Item's Expires whether or not this client
// stays. It is Publish with src.Kind set to proto.KindClip.
func (c *Client) PublishClip(ctx context.Context, src Source) (*Item, error) {
	src.Kind = proto.KindClip
	return c.Publish(ctx, src)
}

// expiresAt is the expiry a Published announces, zero if none.
func expiresAt(pub *proto.Published) time.Time {
	if pub.ExpiresMS <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(pub.ExpiresMS)
}

// announce notes that item id was published and is about to be
// registered, so that an order for it arriving first waits (awaitItem).
func (c *Client) announce(id proto.ItemID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.items[id] != nil {
		return
	}
	if c.announced == nil {
		c.announced = make(map[proto.ItemID]chan struct{})
	}
	if c.announced[id] == nil {
		c.announced[id] = make(chan struct{})
	}
}

// registerItem adds it to the client's items and wakes orders waiting
// for it.
func (c *Client) registerItem(it *Item) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.items[it.ID] = it
	if ch := c.announced[it.ID]; ch != nil {
		close(ch)
		delete(c.announced, it.ID)
	}
}

// awaitItem starts order o once its item, announced by a Published but
// not registered yet, is. It reports whether it took the order; an item
// never announced is not waited for.
func (c *Client) awaitItem(o *proto.Order) bool {
	c.mu.Lock()
	ch := c.announced[o.Item]
	c.mu.Unlock()
	if ch == nil {
		return false
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		t := time.NewTimer(c.cfg.DialTimeout) // a safety net: registration follows Published at once
		defer t.Stop()
		select {
		case <-ch:
			c.startOrder(o)
		case <-c.ctx.Done():
		case <-t.C:
			c.mu.Lock()
			if c.announced[o.Item] == ch {
				delete(c.announced, o.Item)
			}
			c.mu.Unlock()
			c.startOrder(o) // fails it: the item never came
		}
	}()
	return true
}

// sealedWait is how long WaitClipStored waits, once a clip is held, for a
// holder to confirm it keeps the clip's sealed metadata.
const sealedWait = 5 * time.Second

// ClipState is what the rendezvous says of a clip's copies.
type ClipState struct {
	Holders int       // live relays holding every byte
	Storing int       // copies being pushed now
	Expires time.Time // when it stops being readable
	// Sealed is, for an encrypted clip, how many holders keep its sealed
	// metadata too, so that it survives a restart of the rendezvous; -1
	// when the rendezvous does not say (a plaintext clip, or a
	// rendezvous that predates it).
	Sealed int
}

// ClipState asks the rendezvous where clip it lives.
func (c *Client) ClipState(ctx context.Context, it *Item) (ClipState, error) {
	var m struct {
		Holders int    `json:"holders"`
		Storing int    `json:"storing"`
		Expires string `json:"expires"`
		Sealed  *int   `json:"sealed_holders"`
	}
	if err := getJSON(ctx, defaultHTTP, c.base.String()+"/v1/items/"+it.ID.String()+"/meta", &m); err != nil {
		return ClipState{}, err
	}
	st := ClipState{Holders: m.Holders, Storing: m.Storing, Sealed: -1}
	if m.Sealed != nil {
		st.Sealed = *m.Sealed
	}
	st.Expires, _ = time.Parse(time.RFC3339, m.Expires)
	return st, nil
}

// WaitClipStored waits until clip it is held by at least one relay and no
// copy of it is being pushed any more, and, for an encrypted clip, one
// holder keeps its sealed metadata too (so that a restart of the
// rendezvous does not lose it), and returns that state: from then on the
// publisher may leave. It asks the rendezvous every poll interval.
// It fails when no relay holds the clip and none is receiving it (every
// push failed).
func (c *Client) WaitClipStored(ctx context.Context, it *Item, poll time.Duration) (ClipState, error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	var storedAt time.Time // when it was first held and no copy pushed
	for {
		st, err := c.ClipState(ctx, it)
		if err != nil {
			return st, err
		}
		if st.Holders > 0 && st.Storing == 0 {
			if st.Sealed != 0 {
				return st, nil
			}
			// Holders that predate sealed metadata never confirm it: the
			// clip is stored, only not safe from a restart of the
			// rendezvous (Sealed 0 says so).
			if storedAt.IsZero() {
				storedAt = time.Now()
			} else if time.Since(storedAt) >= sealedWait {
				return st, nil
			}
		}
		if st.Holders == 0 && st.Storing == 0 {
			return st, errors.New("client: no relay holds the clip and none is receiving it: its pushes failed")
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-c.ctx.Done():
			return st, ErrClosed
		case <-t.C:
		}
	}
}
