package relay_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
)

// meshEnv starts a rendezvous and n relays with read-ahead prefetch, and
// waits until the rendezvous knows that every relay is connected to every
// other over the mesh (from their heartbeats), so that the scheduler may
// order parts through any of them.
func meshEnv(t *testing.T, n, prefetch int) *env {
	t.Helper()
	cfgs := make([]relay.Config, n)
	for i := range cfgs {
		cfgs[i] = testRelayConfig()
		cfgs[i].Prefetch = prefetch
	}
	e := newEnv(t, cfgs...)
	waitMeshEnv(t, e)
	return e
}

// waitMeshEnv waits until the rendezvous sees every relay of e connected to
// every other (from their heartbeats).
func waitMeshEnv(t *testing.T, e *env) {
	t.Helper()
	n := len(e.relays)
	eventually(t, "every relay connected to every other, as the rendezvous sees it", func() bool {
		var st struct {
			Relays []struct {
				ID    string           `json:"id"`
				Peers []proto.MeshPeer `json:"peers"`
			} `json:"relays"`
		}
		resp, body := do(t, http.MethodGet, e.rv.URL+"/v1/status")
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil || len(st.Relays) != n {
			return false
		}
		for _, r := range st.Relays {
			if len(r.Peers) < n-1 {
				return false
			}
		}
		return true
	})
}

// TestSplitAcrossEntries reads one item through one exit while the
// scheduler spreads its parts over three entry relays: the bytes arrive in
// order and intact, and the exit's counters show parts from at least two
// entries, agreeing with the rendezvous's.
func TestSplitAcrossEntries(t *testing.T) {
	t.Parallel()
	e := meshEnv(t, 3, 3)
	data := meshtest.RandomBytes(12*partSize+5, 21)
	_, it := e.publish(t, data, client.Config{})
	exit := e.relays[0]
	resp, body := do(t, http.MethodGet, e.itemURL(it.ID, exit))
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("GET: status %d, %d bytes, first difference at %d; want 200 and the %d bytes", resp.StatusCode, len(body), meshtest.FirstDiff(body, data), len(data))
	}
	if got := resp.Header.Get("Meshup-Relay"); got != exit.ID() {
		t.Errorf("Meshup-Relay: got %q, want the exit %s", got, exit.ID())
	}
	st := exit.Server.Stats()
	t.Logf("exit: entries %v", st.Entries)
	var parts, bytesIn int64
	for _, es := range st.Entries {
		parts += es.Parts
		bytesIn += es.Bytes
	}
	if len(st.Entries) < 2 || parts != 13 || bytesIn != int64(len(data)) {
		t.Errorf("exit's parts by entry: got %v (%d parts, %d bytes), want 13 parts and %d bytes from at least 2 entries", st.Entries, parts, bytesIn, len(data))
	}
	var forwarded int64
	for _, r := range e.relays[1:] {
		forwarded += r.Server.Stats().ForwardsOut
	}
	if forwarded == 0 || st.ForwardsIn != forwarded {
		t.Errorf("forwards: other relays sent %d, the exit received %d; want the same, more than 0", forwarded, st.ForwardsIn)
	}

	var rv struct {
		Relays []struct {
			ID    string `json:"id"`
			Entry struct {
				Parts int64 `json:"parts"`
				Bytes int64 `json:"bytes"`
			} `json:"entry"`
		} `json:"relays"`
		Transfers []struct {
			Item    string           `json:"item"`
			Parts   int64            `json:"parts"`
			Bytes   int64            `json:"bytes"`
			Entries map[string]int64 `json:"entries"`
		} `json:"transfers"`
	}
	eventually(t, "the rendezvous settled every part", func() bool {
		_, body := do(t, http.MethodGet, e.rv.URL+"/v1/status")
		return json.Unmarshal(body, &rv) == nil && len(rv.Transfers) == 1 && rv.Transfers[0].Parts == 13
	})
	tr := rv.Transfers[0]
	if tr.Item != it.ID.String()[:6] || tr.Bytes != int64(len(data)) || len(tr.Entries) < 2 {
		t.Errorf("rendezvous transfer: got %+v, want item %s…, %d bytes, at least 2 entries", tr, it.ID.String()[:6], len(data))
	}
	for _, r := range rv.Relays {
		if want := tr.Entries[r.ID]; r.Entry.Parts != want || (want == 0) != (st.Entries[r.ID].Parts == 0) {
			t.Errorf("relay %s: rendezvous counts %d parts as entry, the transfer %d, the exit %d", r.ID, r.Entry.Parts, want, st.Entries[r.ID].Parts)
		}
	}
}

// TestEntryDiesMidPart kills entry relays while a consumer holds a
// response open: the parts they carried are asked again through the
// entries left, from the first byte the consumer has not received, and
// the consumer gets every byte, in order, with no error.
func TestEntryDiesMidPart(t *testing.T) {
	t.Parallel()
	e := meshEnv(t, 3, 3)
	data := meshtest.RandomBytes(16*partSize+77, 22)
	_, it := e.publish(t, data, client.Config{})
	exit := e.relays[0]

	// The consumer stops reading after 1.5 parts: the read-ahead parts
	// are open through the other relays, filled up to their window.
	d := startDownload(t, e.itemURL(it.ID, exit), 3*partSize/2)
	d.waitPaused(t)
	// The entry to kill has a part open that has not yet reached the exit
	// whole. (The part the consumer was reading when it paused may have
	// reached it whole through the socket buffers between exit and
	// consumer, its entry still counting it open until acknowledged:
	// killing that one cuts nothing.)
	var killed *relaytest.Server
	eventually(t, "a part open through another entry, not yet at the exit whole", func() bool {
		carried := exit.Server.Stats().Entries
		for _, r := range e.relays[1:] {
			st := r.Server.Stats()
			if st.OpenParts > 0 && st.ForwardsOut > carried[r.Server.ID()].Parts {
				killed = r
				return true
			}
		}
		return false
	})
	killed.Close()
	forwarded := killed.Server.Stats().ForwardsOut
	d.resume()
	code, got, err := d.wait(t)
	if code != http.StatusOK || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: status %d, error %v, %d bytes, first difference at %d; want 200, no error, the %d bytes", code, err, len(got), meshtest.FirstDiff(got, data), len(data))
	}
	st := exit.Server.Stats()
	t.Logf("exit: entries %v, part retries %d, entry failovers %d", st.Entries, st.PartRetries, st.EntryFailovers)
	if st.CutShort != 0 {
		t.Errorf("cut short: got %d, want 0", st.CutShort)
	}
	// The killed entry's part is asked again: through another entry when
	// its stream had reached the exit (an entry failover), or before its
	// first byte did when the entry died first (on a loaded machine the
	// entry counts the part open before its stream gets to the exit). Only
	// a part that had, between the choice above and the kill, reached the
	// exit whole is not: then every part the entry forwarded arrived.
	if cut := forwarded - st.Entries[killed.Server.ID()].Parts; cut > 0 && st.PartRetries == 0 {
		t.Errorf("%d parts cut by the kill; entry failovers %d, part retries %d: want the killed entry's part asked again through another", cut, st.EntryFailovers, st.PartRetries)
	}
}

// freezeProxy is a TCP proxy in front of a relay's HTTP listener, standing
// for a relay whose uplink from the publisher stops mid-part: once frozen,
// it stops passing bytes towards the relay (the other way still flows), so
// the relay has begun parts that never receive another byte.
type freezeProxy struct {
	ln     net.Listener
	target atomic.Value                  // string: host:port of the relay
	frozen atomic.Pointer[chan struct{}] // set while frozen; closed to thaw
}

// freeze stops the bytes towards the relay until thaw.
func (p *freezeProxy) freeze() {
	ch := make(chan struct{})
	p.frozen.Store(&ch)
}

// thaw lets the bytes flow again.
func (p *freezeProxy) thaw() {
	if ch := p.frozen.Swap(nil); ch != nil {
		close(*ch)
	}
}

func newFreezeProxy(t *testing.T) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(t, c)
		}
	}()
	return p
}

func (p *freezeProxy) serve(t *testing.T, c net.Conn) {
	defer c.Close()
	target, _ := p.target.Load().(string)
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	go io.Copy(c, u)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if ch := p.frozen.Load(); ch != nil {
			select {
			case <-*ch:
			case <-t.Context().Done():
				return
			}
		}
		if n > 0 {
			if _, werr := u.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// TestEntryStalls: an entry relay stops receiving the publisher's bytes
// mid-part (its uplink freezes). After StallTimeout the exit asks for the
// rest of the part through another entry, avoids the stalled one for the
// parts after it, and the consumer gets every byte in order.
func TestEntryStalls(t *testing.T) {
	t.Parallel()
	proxy := newFreezeProxy(t)
	cfg := func(public string) relay.Config {
		c := testRelayConfig()
		c.Prefetch, c.StallTimeout, c.PublicURL = 3, 500*time.Millisecond, public
		return c
	}
	e := newEnv(t, cfg(""), cfg("http://"+proxy.ln.Addr().String()), cfg(""))
	// relaytest fills in no PublicURL here: the stalling relay is reached
	// through the proxy from its start.
	stalling := e.relays[1]
	proxy.target.Store(strings.TrimPrefix(stalling.URL, "http://"))
	waitMeshEnv(t, e)

	data := meshtest.RandomBytes(16*partSize+3, 23)
	_, it := e.publish(t, data, client.Config{})
	exit := e.relays[0]
	d := startDownload(t, e.itemURL(it.ID, exit), partSize/2)
	d.waitPaused(t)
	eventually(t, "a part begun through the stalling relay", func() bool {
		return stalling.Server.Stats().OpenParts > 0 && exit.Server.Stats().ForwardsIn > 0
	})
	proxy.freeze()
	d.resume()
	code, got, err := d.wait(t)
	proxy.thaw()
	if code != http.StatusOK || err != nil || !bytes.Equal(got, data) {
		t.Fatalf("download: status %d, error %v, %d bytes, first difference at %d; want 200, no error, the %d bytes", code, err, len(got), meshtest.FirstDiff(got, data), len(data))
	}
	st := exit.Server.Stats()
	t.Logf("exit: entries %v, entry failovers %d, part retries %d", st.Entries, st.EntryFailovers, st.PartRetries)
	if st.EntryFailovers == 0 || st.CutShort != 0 {
		t.Errorf("entry failovers %d, cut short %d: want the stalled part asked again elsewhere, nothing cut", st.EntryFailovers, st.CutShort)
	}
}
