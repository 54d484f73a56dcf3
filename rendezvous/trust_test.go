package rendezvous_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshup/meshup/client"
	"github.com/meshup/meshup/mesh/meshtest"
	"github.com/meshup/meshup/proto"
	"github.com/meshup/meshup/relay"
	"github.com/meshup/meshup/relay/relaytest"
	"github.com/meshup/meshup/rendezvous"
	"github.com/meshup/meshup/rendezvous/rendezvoustest"
)

// Tests of issue 8: relays are run by strangers. Each hostile relay is a
// real relay (or a real register stream) that lies; each test checks the
// refusal and that an honest transfer beside it arrives intact.

const opToken = "operator-status-token"

// fullStatus is GET /v1/status as the operator sees it.
type fullStatus struct {
	Relays []struct {
		ID          string          `json:"id"`
		HTTPURL     string          `json:"http_url"`
		Reach       string          `json:"reach"`
		Class       string          `json:"class"`
		Verified    bool            `json:"verified"`
		VerifyError string          `json:"verify_error"`
		Addrs       proto.MeshAddrs `json:"addrs"`
	} `json:"relays"`
}

func statusOf(t *testing.T, rv *rendezvoustest.Server, token, id string) (http_url, reach, class string, verified bool, verr string, addrs proto.MeshAddrs, ok bool) {
	t.Helper()
	var st fullStatus
	rendezvoustest.GetJSONAuth(t, rv.URL+"/v1/status", token, &st)
	for _, r := range st.Relays {
		if r.ID == id {
			return r.HTTPURL, r.Reach, r.Class, r.Verified, r.VerifyError, r.Addrs, true
		}
	}
	return "", "", "", false, "", proto.MeshAddrs{}, false
}

// publishData publishes data in plaintext (the trust rules are about
// plaintext items) with a real client that serves its parts.
func publishData(t *testing.T, rv *rendezvoustest.Server, data []byte, volunteers bool) *client.Item {
	t.Helper()
	c, err := client.New(client.Config{Rendezvous: rv.URL, Logger: rendezvoustest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	it, err := c.Publish(ctx, client.Source{Name: "data.bin", MIME: "application/octet-stream", Size: int64(len(data)), Reader: bytes.NewReader(data), Plain: true, Volunteers: volunteers})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return it
}

// fetch reads an item at the rendezvous, following redirects, and checks
// that the bytes are data.
func fetchIntact(t *testing.T, rawURL string, data []byte) {
	t.Helper()
	c := &http.Client{Transport: rendezvoustest.HTTP.Transport, Timeout: 4 * wait}
	resp, err := c.Get(rawURL)
	if err != nil {
		t.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(body, data) {
		t.Fatalf("honest transfer: status %d, %d bytes (err %v), want 200 and the %d bytes intact", resp.StatusCode, len(body), err, len(data))
	}
}

func itemURL(rv *rendezvoustest.Server, id proto.ItemID, via string) string {
	u := rv.URL + "/v1/items/" + id.String()
	if via != "" {
		u += "?via=" + url.QueryEscape(via)
	}
	return u
}

// TestForeignURLNotRedirected: a real relay registers as public with the
// URL of another HTTP server, one that even forwards the challenge to an
// honest relay. The rendezvous never redirects to that URL, gives it to
// no publisher and keeps it out of the CSP; the relay stays reachable
// through the tunnel, and its status says unverified. The honest relay's
// URL is verified and used.
func TestForeignURLNotRedirected(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AllowPrivateAddrs: true, StatusToken: opToken}, rendezvoustest.Strict())
	honest := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20})
	target, _ := url.Parse(honest.URL)
	var foreignHits atomic.Int64
	proxy := httputil.NewSingleHostReverseProxy(target)
	foreign := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		foreignHits.Add(1)
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(foreign.Close)
	liar := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20, PublicURL: foreign.URL})

	eventually(t, "both URLs challenged", func() bool {
		_, _, _, hv, _, _, _ := statusOf(t, rv, opToken, honest.ID())
		_, _, _, lv, lerr, _, _ := statusOf(t, rv, opToken, liar.ID())
		return hv && !lv && lerr != ""
	})
	_, reach, class, _, verr, _, _ := statusOf(t, rv, opToken, liar.ID())
	if class != rendezvous.ClassVolunteer || !strings.HasPrefix(reach, rv.URL+"/v1/relays/") || !strings.Contains(verr, "challenge") {
		t.Errorf("liar's status: class %q reach %q verify_error %q, want volunteer, the tunnel, a challenge error", class, reach, verr)
	}
	if foreignHits.Load() == 0 {
		t.Error("the foreign URL was never challenged")
	}

	data := meshtest.RandomBytes(3<<20+17, 1)
	it := publishData(t, rv, data, true)
	resp, _ := do(t, http.MethodGet, itemURL(rv, it.ID, liar.ID()))
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, rv.URL+"/v1/relays/"+liar.ID()+"/") {
		t.Errorf("GET via the liar: %d to %q, want 307 into the tunnel", resp.StatusCode, loc)
	}
	resp, _ = do(t, http.MethodGet, itemURL(rv, it.ID, honest.ID()))
	if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, honest.URL+"/") {
		t.Errorf("GET via the honest relay: redirect to %q, want its verified URL %s", loc, honest.URL)
	}
	resp, _ = do(t, http.MethodGet, rv.URL+"/")
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, strings.TrimPrefix(foreign.URL, "http://")) {
		t.Errorf("CSP names the foreign URL: %s", csp)
	}
	c := rendezvoustest.DialControl(t, rv)
	for _, r := range c.Welcome.Relays {
		if r.ID == liar.ID() && !strings.HasPrefix(r.PushURL, "ws"+strings.TrimPrefix(rv.URL, "http")+"/v1/relays/") {
			t.Errorf("welcome gives the liar push_url %q, want the tunnel", r.PushURL)
		}
	}
	hits := foreignHits.Load()
	fetchIntact(t, itemURL(rv, it.ID, honest.ID()), data)
	fetchIntact(t, itemURL(rv, it.ID, liar.ID()), data) // the liar itself, through the tunnel
	if got := foreignHits.Load(); got != hits {
		t.Errorf("consumers reached the foreign URL %d times, want never", got-hits)
	}
	if got := rv.Server.Stats().Rejected[rendezvous.RejectChallenge]; got == 0 {
		t.Error("no failed challenge counted")
	}
}

// TestPrivateAndForeignAddrs: without AllowPrivateAddrs a relay's
// private, foreign and malformed addresses stay out of the directory (its
// own public one goes in), and a private http_url is never fetched.
func TestPrivateAndForeignAddrs(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, StatusToken: opToken}, rendezvoustest.Strict())
	var hits atomic.Int64
	private := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(private.Close)

	observer := rendezvoustest.Register(t, rv, "http://observer.test")
	liar, err := rendezvoustest.Dial(t, rv, rendezvoustest.NewNode(t))
	if err != nil {
		t.Fatal(err)
	}
	other := rendezvoustest.NewNode(t).ID()
	own := "/ip4/11.0.0.6/tcp/4001/p2p/" + liar.ID
	addrs := append(liar.Node.Addrs(), // loopback
		"/ip4/192.168.1.1/tcp/22/p2p/"+liar.ID,
		"/ip4/100.64.0.1/tcp/4001/p2p/"+liar.ID,
		"/ip6/fd00::1/tcp/4001/p2p/"+liar.ID,
		"/ip4/11.0.0.5/tcp/4001/p2p/"+other,
		"/ip4/11.0.0.7/tcp/4001",
		"not a multiaddr",
		own)
	if err := liar.Send(&proto.Register{Version: proto.Version, HTTPURL: private.URL, Addrs: addrs, NAT: proto.NATPublic, Public: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := liar.Recv(wait); err != nil {
		t.Fatal(err)
	}
	rv.Server.FlushDirectories()
	eventually(t, "the observer to learn the liar", func() bool {
		observer.Recv(50 * time.Millisecond)
		d := observer.Directory()
		return d != nil && len(d.Peers) == 1
	})
	if got := observer.Directory().Peers[0].Addrs; len(got) != 1 || got[0] != own {
		t.Errorf("liar's directory entry: got %v, want only %s", got, own)
	}
	eventually(t, "the liar's URL to be refused", func() bool {
		_, _, _, v, verr, _, _ := statusOf(t, rv, opToken, liar.ID)
		return !v && strings.Contains(verr, "not public")
	})
	if hits.Load() != 0 {
		t.Errorf("the private http_url was fetched %d times, want never", hits.Load())
	}
	rej := rv.Server.Stats().Rejected
	if rej[rendezvous.RejectAddrPrivate] < 4 || rej[rendezvous.RejectAddrForeign] < 2 || rej[rendezvous.RejectAddrBounds] < 1 {
		t.Errorf("refused addresses: %v, want >= 4 private, 2 foreign, 1 malformed", rej)
	}
}

// longAddr returns a valid multiaddr of at most n bytes (and more than
// n-22) before its final /p2p/id.
func longAddr(i, n int, id string) string {
	var b strings.Builder
	for b.Len()+22 <= n {
		fmt.Fprintf(&b, "/ip4/11.0.%d.%d/tcp/%d", i%250, b.Len()%250, 4000+i)
	}
	return b.String() + "/p2p/" + id
}

// TestOversizedDirectory: two registrations of 64 addresses of about 1 KB
// each (over 64 KiB of directory before issue 8) do not knock honest
// relays off: directory messages stay within a relay's read limit, entries
// within the bounds, and an honest transfer goes through.
func TestOversizedDirectory(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute})
	honest := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20})
	observer := rendezvoustest.Register(t, rv, "http://observer.test") // reads with DefaultMaxMessage
	total := 0
	for i := range 2 {
		h, err := rendezvoustest.Dial(t, rv, rendezvoustest.NewNode(t))
		if err != nil {
			t.Fatal(err)
		}
		var addrs []string
		for j := range 64 {
			if j%2 == 0 {
				addrs = append(addrs, longAddr(j, 960, h.ID)) // under the 1024-byte register limit
			} else {
				addrs = append(addrs, fmt.Sprintf("/ip4/11.%d.0.%d/tcp/4001/p2p/%s", i, j, h.ID))
			}
		}
		for _, a := range addrs {
			total += len(a)
		}
		if err := h.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://hostile.test", Addrs: addrs}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.Recv(wait); err != nil {
			t.Fatal(err)
		}
	}
	if total <= proto.DefaultMaxMessage {
		t.Fatalf("hostile addresses: %d bytes, want more than a relay's old read limit %d", total, proto.DefaultMaxMessage)
	}
	t.Logf("hostile registrations: %d bytes of addresses", total)
	registered := rv.Server.Stats().RelaysRegistered
	rv.Server.FlushDirectories()
	eventually(t, "the observer to learn every relay", func() bool {
		if _, err := observer.Recv(50 * time.Millisecond); err != nil && !strings.Contains(err.Error(), "deadline") && !strings.Contains(err.Error(), "timeout") {
			t.Fatalf("observer's stream: %v", err)
		}
		d := observer.Directory()
		return d != nil && len(d.Peers) == 3
	})
	t.Logf("directory messages to the observer: %d", observer.DirectoryMessages())
	for _, p := range observer.Directory().Peers {
		if len(p.Addrs) > proto.MaxPeerAddrs {
			t.Errorf("entry %s: %d addrs, want at most %d", p.ID, len(p.Addrs), proto.MaxPeerAddrs)
		}
		for _, a := range p.Addrs {
			if len(a) > proto.MaxPeerAddrLen {
				t.Errorf("entry %s: addr of %d bytes, want at most %d", p.ID, len(a), proto.MaxPeerAddrLen)
			}
		}
	}
	data := meshtest.RandomBytes(2<<20+5, 2)
	it := publishData(t, rv, data, false)
	fetchIntact(t, itemURL(rv, it.ID, honest.ID()), data)
	if !honest.Server.Status().Registered || rv.Server.Stats().RelaysRegistered != registered {
		t.Errorf("the honest relay re-registered (registrations %d, want %d)", rv.Server.Stats().RelaysRegistered, registered)
	}
}

// TestFlappingDirectory: a relay that changes its addresses in every
// heartbeat costs the others one directory delta per interval, not one
// per heartbeat.
func TestFlappingDirectory(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, DirectoryInterval: time.Hour, StatusToken: opToken})
	observer := rendezvoustest.Register(t, rv, "http://observer.test")
	honest := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20})
	flapper := rendezvoustest.Register(t, rv, "http://flapper.test")
	rv.Server.FlushDirectories()
	eventually(t, "the observer to learn both", func() bool {
		observer.Recv(50 * time.Millisecond)
		d := observer.Directory()
		return d != nil && len(d.Peers) == 2
	})
	before := observer.DirectoryMessages()

	const flaps = 200
	var last string
	for i := range flaps {
		last = fmt.Sprintf("/ip4/11.0.%d.%d/tcp/4001/p2p/%s", i/250, i%250, flapper.ID)
		if err := flapper.Send(&proto.Heartbeat{Mesh: &proto.MeshStatus{NAT: proto.NATPublic, Addrs: proto.MeshAddrs{Advertised: []string{last}}}}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "the rendezvous to take the last heartbeat", func() bool {
		_, _, _, _, _, a, _ := statusOf(t, rv, opToken, flapper.ID)
		return len(a.Advertised) == 1 && a.Advertised[0] == last
	})
	observer.Recv(100 * time.Millisecond)
	if got := observer.DirectoryMessages(); got != before {
		t.Errorf("directory messages during the flapping: got %d, want none before the interval ends", got-before)
	}
	rv.Server.FlushDirectories()
	eventually(t, "one coalesced delta", func() bool {
		observer.Recv(50 * time.Millisecond)
		return observer.DirectoryMessages() > before
	})
	observer.Recv(100 * time.Millisecond)
	if got := observer.DirectoryMessages() - before; got != 1 {
		t.Errorf("deltas after %d flaps: got %d, want 1", flaps, got)
	}
	for _, p := range observer.Directory().Peers {
		if p.ID == flapper.ID && (len(p.Addrs) != 1 || p.Addrs[0] != last) {
			t.Errorf("flapper's entry: got %v, want [%s]", p.Addrs, last)
		}
	}
	data := meshtest.RandomBytes(1<<20+3, 3)
	it := publishData(t, rv, data, false)
	fetchIntact(t, itemURL(rv, it.ID, honest.ID()), data)
	if st := rv.Server.Stats(); st.Relays != 3 {
		t.Errorf("live relays: got %d, want 3", st.Relays)
	}
}

// TestForgedNeeds: needs without a read token, with one for another relay
// or another item, or signed by another key are refused with a status and
// counted; an honest transfer beside them goes through.
func TestForgedNeeds(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute})
	honest := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20})
	liar := rendezvoustest.Register(t, rv, "http://liar.test")
	data := meshtest.RandomBytes(2<<20+9, 4)
	it := publishData(t, rv, data, false)
	other := publishData(t, rv, []byte("other item"), false)
	_, foreignKey, _ := ed25519.GenerateKey(rand.Reader)
	forged := proto.SignToken(foreignKey, proto.Claims{Dir: proto.DirRead, Relay: liar.ID, Item: it.ID, Len: int64(len(data)), Exp: time.Now().Add(time.Hour).Unix()})

	tests := []struct {
		name  string
		token string
		want  proto.Status
	}{
		{"no token", "", proto.StatusUnauthorized},
		{"another relay's token", rv.ReadToken(t, it.ID, honest.ID()), proto.StatusWrongRelay},
		{"another item's token", rv.ReadToken(t, other.ID, liar.ID), proto.StatusForbidden},
		{"forged token", forged, proto.StatusUnauthorized},
		{"garbage", "a.b", proto.StatusUnauthorized},
	}
	for i, tt := range tests {
		if err := liar.Send(&proto.Need{Need: uint64(i + 1), Item: it.ID, Off: 0, Len: 1 << 20, Token: tt.token}); err != nil {
			t.Fatal(err)
		}
		nf := recvAs[proto.NeedFailed](t, liar.Recv)
		if nf.Need != uint64(i+1) || nf.Status != tt.want || !strings.Contains(nf.Reason, "token") {
			t.Errorf("%s: got need %d status %v %q, want status %v naming the token", tt.name, nf.Need, nf.Status, nf.Reason, tt.want)
		}
	}
	if got := rv.Server.Stats().Rejected[rendezvous.RejectNeedToken]; got != uint64(len(tests)) {
		t.Errorf("needs refused for their token: got %d, want %d", got, len(tests))
	}
	fetchIntact(t, itemURL(rv, it.ID, honest.ID()), data)
}

// TestNeedRate: a relay over its need rate is refused with over_limit,
// counted; another relay is not affected.
func TestNeedRate(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, NeedRate: 1e-6, NeedBurst: 2})
	flooder := rendezvoustest.Register(t, rv, "http://flooder.test")
	calm := rendezvoustest.Register(t, rv, "http://calm.test")
	for i, want := range []proto.Status{proto.StatusNotFound, proto.StatusNotFound, proto.StatusOverLimit, proto.StatusOverLimit} {
		if err := flooder.Send(&proto.Need{Need: uint64(i + 1), Item: proto.NewItemID(), Len: 1}); err != nil {
			t.Fatal(err)
		}
		if nf := recvAs[proto.NeedFailed](t, flooder.Recv); nf.Status != want {
			t.Errorf("need %d: got %v %q, want %v", i+1, nf.Status, nf.Reason, want)
		}
	}
	if err := calm.Send(&proto.Need{Need: 1, Item: proto.NewItemID(), Len: 1}); err != nil {
		t.Fatal(err)
	}
	if nf := recvAs[proto.NeedFailed](t, calm.Recv); nf.Status != proto.StatusNotFound {
		t.Errorf("the other relay: got %v, want not found (not rate limited)", nf.Status)
	}
	if got := rv.Server.Stats().Rejected[rendezvous.RejectNeedRate]; got != 2 {
		t.Errorf("needs refused for rate: got %d, want 2", got)
	}
}

// TestVolunteerNoPlaintext: with open admission a relay without a
// credential is a volunteer, one with the operator's admission token an
// operator relay. Plaintext items go through the operator relay only:
// asked for the volunteer, the rendezvous answers 503 with a reason; the
// volunteer never moves a byte. Without any operator relay the reader gets
// "no operator relay for a plaintext item".
func TestVolunteerNoPlaintext(t *testing.T) {
	t.Parallel()
	_, adm, _ := ed25519.GenerateKey(rand.Reader)
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AllowPrivateAddrs: true, AdmissionKey: adm.Public().(ed25519.PublicKey), StatusToken: opToken}, rendezvoustest.Strict())
	volunteer := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20})
	data := meshtest.RandomBytes(2<<20+1, 5)
	it := publishData(t, rv, data, false)

	resp, body := do(t, http.MethodGet, itemURL(rv, it.ID, ""))
	if st, msg := apiError(t, body); resp.StatusCode != http.StatusServiceUnavailable || st != proto.StatusUnavailable || msg != "no operator relay for a plaintext item" {
		t.Errorf("plaintext with volunteers only: %d %v %q, want 503 no operator relay for a plaintext item", resp.StatusCode, st, msg)
	}

	opNode := rendezvoustest.NewNode(t)
	operator := relaytest.Start(t, rv.URL, relay.Config{PartSize: 1 << 20, Node: opNode,
		AdmissionToken: proto.SignAdmission(adm, proto.AdmissionClaims{Relay: opNode.ID(), Name: "op1"})})
	if _, _, class, _, _, _, _ := statusOf(t, rv, opToken, operator.ID()); class != rendezvous.ClassOperator {
		t.Fatalf("relay with a token: class %q, want operator", class)
	}
	if _, _, class, _, _, _, _ := statusOf(t, rv, opToken, volunteer.ID()); class != rendezvous.ClassVolunteer {
		t.Fatalf("relay without a token: class %q, want volunteer", class)
	}
	for range 4 {
		resp, _ := do(t, http.MethodGet, itemURL(rv, it.ID, ""))
		if loc := resp.Header.Get("Location"); !strings.Contains(loc, operator.URL) && !strings.Contains(loc, operator.ID()) {
			t.Errorf("plaintext redirected to %q, want the operator relay", loc)
		}
	}
	resp, body = do(t, http.MethodGet, itemURL(rv, it.ID, volunteer.ID()))
	if st, msg := apiError(t, body); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(msg, "volunteer") {
		t.Errorf("plaintext via the volunteer: %d %v %q, want 503 naming the volunteer", resp.StatusCode, st, msg)
	}
	fetchIntact(t, itemURL(rv, it.ID, ""), data)

	// An item whose publisher allows volunteers goes through either.
	open := publishData(t, rv, data[:1<<20], true)
	fetchIntact(t, itemURL(rv, open.ID, volunteer.ID()), data[:1<<20])
	// The relay counts bytes out after writing them: the reader may have
	// them all first.
	eventually(t, "the volunteer's counters to settle", func() bool {
		st := volunteer.Server.Status().Stats
		return st.BytesOut == st.BytesIn
	})
	plainBefore := volunteer.Server.Status().Stats
	fetchIntact(t, itemURL(rv, it.ID, operator.ID()), data)
	if after := volunteer.Server.Status().Stats; after.BytesIn != plainBefore.BytesIn || after.BytesOut != plainBefore.BytesOut {
		t.Errorf("the volunteer moved plaintext bytes: in %d->%d out %d->%d", plainBefore.BytesIn, after.BytesIn, plainBefore.BytesOut, after.BytesOut)
	}
}

// TestAdmission: in operator mode a relay without a token, with a token
// of another key, or with a token for another relay is refused with a
// reason; MaxRelaysPerIP refuses the next relay from the same address.
func TestAdmission(t *testing.T) {
	t.Parallel()
	_, adm, _ := ed25519.GenerateKey(rand.Reader)
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AllowPrivateAddrs: true, Admission: rendezvous.AdmissionOperator,
		AdmissionKey: adm.Public().(ed25519.PublicKey), MaxRelaysPerIP: 2}, rendezvoustest.Strict())
	register := func(token func(id string) string) (*proto.ErrorMsg, error) {
		r, err := rendezvoustest.Dial(t, rv, rendezvoustest.NewNode(t))
		if err != nil {
			return nil, err
		}
		if err := r.Send(&proto.Register{Version: proto.Version, HTTPURL: "http://r.test", Admission: token(r.ID)}); err != nil {
			return nil, err
		}
		m, err := r.Recv(wait)
		if err != nil {
			return nil, err
		}
		e, _ := m.(*proto.ErrorMsg)
		return e, nil
	}
	refusals := []struct {
		name  string
		token func(string) string
		want  string
	}{
		{"no token", func(string) string { return "" }, "operator relays only"},
		{"other key", func(id string) string { return proto.SignAdmission(otherKey, proto.AdmissionClaims{Relay: id}) }, "signature"},
		{"other relay", func(string) string { return proto.SignAdmission(adm, proto.AdmissionClaims{Relay: "12D3KooWother"}) }, "another relay"},
	}
	for _, tt := range refusals {
		e, err := register(tt.token)
		if err != nil || e == nil || e.Status != proto.StatusForbidden || !strings.Contains(e.Reason, tt.want) {
			t.Errorf("%s: got %+v, %v; want forbidden naming %q", tt.name, e, err, tt.want)
		}
	}
	good := func(id string) string { return proto.SignAdmission(adm, proto.AdmissionClaims{Relay: id}) }
	for i := range 2 {
		if e, err := register(good); err != nil || e != nil {
			t.Fatalf("operator relay %d: got %+v, %v; want registered", i, e, err)
		}
	}
	if e, err := register(good); err != nil || e == nil || e.Status != proto.StatusOverLimit {
		t.Errorf("third relay from one address: got %+v, %v; want over limit", e, err)
	}
	rej := rv.Server.Stats().Rejected
	if rej[rendezvous.RejectAdmission] != 3 || rej[rendezvous.RejectRelayIPCap] != 1 {
		t.Errorf("refusals: %v, want 3 admission, 1 relay_ip_cap", rej)
	}
}

// TestStatusHidesVolunteers: the public status shows no volunteer
// addresses; the operator's token shows them; a wrong token is refused.
func TestStatusHidesVolunteers(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AllowPrivateAddrs: true, StatusToken: opToken}, rendezvoustest.Strict())
	v := relaytest.Start(t, rv.URL, relay.Config{})
	resp, body := do(t, http.MethodGet, rv.URL+"/v1/status")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), v.ID()) {
		t.Fatalf("public status: %d %s, want 200 listing the relay", resp.StatusCode, body)
	}
	// No multiaddr at all: neither observed IP:ports nor LAN addresses.
	if strings.Contains(string(body), "/ip4/") || strings.Contains(string(body), "/ip6/") {
		t.Errorf("public status shows addresses: %s", body)
	}
	_, _, _, _, _, addrs, _ := statusOf(t, rv, opToken, v.ID())
	if len(addrs.Advertised) == 0 || len(addrs.Observed) == 0 {
		t.Errorf("operator's status: addrs %+v, want the relay's addresses", addrs)
	}
	req, _ := http.NewRequest(http.MethodGet, rv.URL+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := rendezvoustest.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("status with a wrong token: %d, want 401", resp.StatusCode)
	}
}

// TestChallengeFetchSafety: the challenge fetch follows no redirect (a
// URL that redirects to an honest relay stays unverified) and reads no
// more than proto.MaxChallengeResponse bytes.
func TestChallengeFetchSafety(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AllowPrivateAddrs: true, StatusToken: opToken}, rendezvoustest.Strict())
	honest := relaytest.Start(t, rv.URL, relay.Config{})
	redirect := httptest.NewServer(http.RedirectHandler(honest.URL+proto.ChallengePath, http.StatusFound))
	t.Cleanup(redirect.Close)
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte(" "), 1<<20))
	}))
	t.Cleanup(huge.Close)
	redirected := relaytest.Start(t, rv.URL, relay.Config{PublicURL: redirect.URL})
	flooder := relaytest.Start(t, rv.URL, relay.Config{PublicURL: huge.URL})
	for _, c := range []struct {
		r    *relaytest.Server
		want string
	}{{redirected, "302"}, {flooder, "over 4096 bytes"}} {
		eventually(t, "challenge of "+c.want, func() bool {
			_, _, _, v, verr, _, _ := statusOf(t, rv, opToken, c.r.ID())
			return !v && strings.Contains(verr, c.want)
		})
	}
	eventually(t, "the honest relay verified", func() bool {
		_, _, _, v, _, _, _ := statusOf(t, rv, opToken, honest.ID())
		return v
	})
}

// TestVerifyRetriesSoon: a relay registers before its URL answers (as
// one whose ACME certificate is still being issued does). The failed
// challenge is tried again within seconds, not a VerifyInterval (an hour
// here) later, and the relay is verified once its URL answers.
func TestVerifyRetriesSoon(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, rendezvous.Config{DeadAfter: time.Minute, AllowPrivateAddrs: true, StatusToken: opToken, VerifyInterval: time.Hour}, rendezvoustest.Strict())
	var target atomic.Pointer[httputil.ReverseProxy]
	var hits atomic.Int64
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if p := target.Load(); p != nil {
			p.ServeHTTP(w, r)
			return
		}
		http.Error(w, "certificate not ready", http.StatusServiceUnavailable)
	}))
	t.Cleanup(front.Close)
	r := relaytest.Start(t, rv.URL, relay.Config{PublicURL: front.URL})
	eventually(t, "the first challenge failed", func() bool {
		_, _, _, v, verr, _, _ := statusOf(t, rv, opToken, r.ID())
		return !v && strings.Contains(verr, "503")
	})
	u, _ := url.Parse(r.URL)
	target.Store(httputil.NewSingleHostReverseProxy(u))
	eventually(t, "the relay verified after its URL answered", func() bool {
		_, _, _, v, _, _, _ := statusOf(t, rv, opToken, r.ID())
		return v
	})
	if n := hits.Load(); n < 2 {
		t.Errorf("front reached %d times, want a failed challenge and a later one", n)
	}
}

// TestLoadBoundedByOrders: a relay that reports no load while the
// rendezvous has orders outstanding on it is not believed: consumers go
// to the relay that is really idle.
func TestLoadBoundedByOrders(t *testing.T) {
	t.Parallel()
	rv := rendezvoustest.Start(t, testConfig())
	liar := rendezvoustest.Register(t, rv, "http://liar.test")
	rendezvoustest.Register(t, rv, "http://idle.test")
	c := rendezvoustest.DialControl(t, rv)
	pub := publishFile(t, c, 1<<20)
	tok := rv.ReadToken(t, pub.ID, liar.ID)
	for i := range 5 {
		if err := liar.Send(&proto.Need{Need: uint64(i + 1), Item: pub.ID, Off: int64(i) * 1000, Len: 1000, Token: tok}); err != nil {
			t.Fatal(err)
		}
		recvAs[proto.Order](t, c.Recv) // the publisher never pushes
	}
	// The liar reports an idle relay; the need after it shows the
	// heartbeat was taken (one reader, in order).
	if err := liar.Send(&proto.Heartbeat{Streams: 0}); err != nil {
		t.Fatal(err)
	}
	if err := liar.Send(&proto.Need{Need: 99, Item: pub.ID, Len: 1}); err != nil {
		t.Fatal(err)
	}
	if nf := recvAs[proto.NeedFailed](t, liar.Recv); nf.Need != 99 {
		t.Fatalf("got need_failed for %d, want 99", nf.Need)
	}
	for range 4 {
		resp, _ := do(t, http.MethodGet, itemURL(rv, pub.ID, ""))
		if loc := resp.Header.Get("Location"); !strings.HasPrefix(loc, "http://idle.test/") {
			t.Errorf("consumer sent to %q, want the idle relay", loc)
		}
	}
}
