package relay_test

import (
	"bytes"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
)

// TestClipStore pushes parts with store tokens (Claims.Store, issue 12)
// straight to a relay: a whole clip is kept under its own id, acknowledged
// as stored, and served with Range and an Expires header; a token that
// does not cover the whole clip, or a clip larger than the relay's
// budget, is refused; a repeated push of a clip already held is not
// wanted.
func TestClipStore(t *testing.T) {
	t.Parallel()
	cfg := testRelayConfig()
	cfg.Budget = 4 << 20
	cfg.Prefetch = 2
	e := newEnv(t, cfg)
	r := e.relays[0]
	exp := time.Now().Add(time.Hour)
	store := func(item proto.ItemID, off, n, size int64) string {
		return proto.SignToken(e.key, proto.Claims{Dir: proto.DirPush, Relay: r.ID(), Item: item, Off: off, Len: n, Size: size, Exp: exp.Unix(), Name: "c.bin", MIME: "application/x-clip", Store: true})
	}
	p := dialPush(t, r.PushURL(), nil)

	for i, tc := range []struct {
		name        string
		off, n, siz int64
		want        proto.Status
	}{
		{"part of a clip", 0, 100, 200, proto.StatusMalformed},
		{"not from 0", 100, 100, 100, proto.StatusMalformed},
		{"over the budget", 0, 5 << 20, 5 << 20, proto.StatusTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			item := proto.NewItemID()
			stream := uint32(i + 1)
			p.send(t, proto.PartBegin{Stream: stream, Item: item, Off: uint64(tc.off), Len: uint64(tc.n), Token: store(item, tc.off, tc.n, tc.siz)}.AppendFrame(nil))
			if end := p.expectEnd(t, stream); end.Status != tc.want {
				t.Errorf("PartEnd: got %v %q, want %v", end.Status, end.Reason, tc.want)
			}
		})
	}

	data := meshtest.RandomBytes(1<<20+33, 12)
	item := proto.NewItemID()
	o := &proto.Order{Item: item, Off: 0, Len: int64(len(data)), Token: store(item, 0, int64(len(data)), int64(len(data)))}
	if end := p.pushPart(t, 10, o, data); end.Status != proto.StatusOK {
		t.Fatalf("store push: got %v %q, want ok", end.Status, end.Reason)
	}
	eventually(t, "the clip complete in the store", func() bool { st := r.Server.Stats().Uploads; return st.Held == 1 && st.Done == 1 })
	if end := p.pushPart(t, 11, o, data); end.Status != proto.StatusNotWanted {
		t.Errorf("repeated store push: got %v %q, want not wanted", end.Status, end.Reason)
	}

	read := proto.SignToken(e.key, proto.Claims{Dir: proto.DirRead, Relay: r.ID(), Item: item, Len: int64(len(data)), Size: int64(len(data)), Exp: time.Now().Add(time.Minute).Unix()})
	u := r.URL + "/v1/items/" + item.String() + "?t=" + url.QueryEscape(read)
	resp, body := do(t, http.MethodGet, u, "Range", "bytes=70000-")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[70000:]) {
		t.Fatalf("GET Range: got %d, %d bytes, want 206 with bytes 70000-", resp.StatusCode, len(body))
	}
	if got, want := resp.Header.Get("Expires"), exp.UTC().Format(http.TimeFormat); got != want {
		t.Errorf("Expires: got %q, want %q", got, want)
	}
	if st := r.Server.Stats(); st.Needs != 0 {
		t.Errorf("needs: got %d, want 0 (the clip is read from memory)", st.Needs)
	}
}
