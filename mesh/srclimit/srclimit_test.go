package srclimit_test

import (
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/meshup/meshup/mesh/srclimit"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestSourceIP(t *testing.T) {
	for _, tc := range []struct {
		remote string
		want   string // "" for none
	}{
		{"192.0.2.1:443", "192.0.2.1"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"[::ffff:192.0.2.1]:80", "192.0.2.1"}, // unmapped
		{"12D3KooWPeer", ""},                   // through the rendezvous tunnel
		{"192.0.2.1", ""},                      // no port
		{"", ""},
	} {
		t.Run(tc.remote, func(t *testing.T) {
			ip, ok := srclimit.SourceIP(tc.remote)
			got := ""
			if ok {
				got = ip.String()
			}
			if got != tc.want {
				t.Errorf("SourceIP(%q): got %q, want %q", tc.remote, got, tc.want)
			}
		})
	}
}

// TestConnsPerIP checks that an IP has at most maxConns requests in
// flight, that another IP is not affected and that release is idempotent.
func TestConnsPerIP(t *testing.T) {
	l := srclimit.New(2, 1000, 1000, 10)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	r1, why, _ := l.Acquire(a, t0)
	if why != "" {
		t.Fatalf("first: refused %q", why)
	}
	if _, why, _ := l.Acquire(a, t0); why != "" {
		t.Fatalf("second: refused %q", why)
	}
	if _, why, retry := l.Acquire(a, t0); why != srclimit.ReasonConnsPerIP || retry != 1 {
		t.Errorf("third: got %q retry %d, want %q retry 1", why, retry, srclimit.ReasonConnsPerIP)
	}
	if _, why, _ := l.Acquire(b, t0); why != "" {
		t.Errorf("other IP: refused %q", why)
	}
	r1()
	r1() // a second release must not free another place
	if n := l.InFlight(a); n != 1 {
		t.Errorf("in flight after release: got %d, want 1", n)
	}
	if _, why, _ := l.Acquire(a, t0); why != "" {
		t.Errorf("after release: refused %q", why)
	}
	if _, why, _ := l.Acquire(a, t0); why != srclimit.ReasonConnsPerIP {
		t.Errorf("after release, over: got %q, want %q", why, srclimit.ReasonConnsPerIP)
	}
}

// TestRatePerIP checks the token bucket: a burst, then a refusal with the
// seconds of one token, then a token after that time.
func TestRatePerIP(t *testing.T) {
	l := srclimit.New(100, 0.5, 3, 10) // a token every 2s
	a := netip.MustParseAddr("2001:db8::1")
	for i := range 3 {
		release, why, _ := l.Acquire(a, t0)
		if why != "" {
			t.Fatalf("request %d of the burst: refused %q", i, why)
		}
		release()
	}
	if _, why, retry := l.Acquire(a, t0); why != srclimit.ReasonRatePerIP || retry != 2 {
		t.Errorf("over the burst: got %q retry %d, want %q retry 2", why, retry, srclimit.ReasonRatePerIP)
	}
	if _, why, _ := l.Acquire(a, t0.Add(2*time.Second)); why != "" {
		t.Errorf("after a token: refused %q", why)
	}
	if n := l.InFlight(a); n != 1 {
		t.Errorf("in flight: got %d, want 1", n)
	}
}

// TestTrackedIPs checks the bounded LRU: a new IP evicts the least
// recently seen IP with nothing in flight, and is refused when every
// tracked IP has requests in flight.
func TestTrackedIPs(t *testing.T) {
	l := srclimit.New(10, 1, 1, 2)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	ra, _, _ := l.Acquire(a, t0) // a spends its only token
	ra()
	rb, _, _ := l.Acquire(b, t0)
	rc, why, _ := l.Acquire(c, t0) // evicts a, idle and least recently seen
	if why != "" {
		t.Fatalf("c: refused %q", why)
	}
	if _, why, retry := l.Acquire(a, t0); why != srclimit.ReasonTrackedIPs || retry != 1 {
		t.Errorf("a with b and c in flight: got %q retry %d, want %q retry 1", why, retry, srclimit.ReasonTrackedIPs)
	}
	rb()
	// a was forgotten, so it has a fresh bucket; b is evicted.
	if _, why, _ := l.Acquire(a, t0); why != "" {
		t.Errorf("a after b released: refused %q", why)
	}
	if n := l.InFlight(b); n != 0 {
		t.Errorf("b in flight: got %d, want 0", n)
	}
	rc()
}

// TestLease checks that the release of WithLease's request is called at
// its end unless a handler took the lease, and that a request without a
// lease has a no-op one.
func TestLease(t *testing.T) {
	for _, take := range []bool{false, true} {
		released := 0
		r, done := srclimit.WithLease(httptest.NewRequest("GET", "/", nil), func() { released++ })
		var taken func()
		if take {
			taken = srclimit.TakeLease(r)
		}
		done()
		if want := map[bool]int{false: 1, true: 0}[take]; released != want {
			t.Errorf("take %v: released %d times at the end, want %d", take, released, want)
		}
		if take {
			taken()
			if released != 1 {
				t.Errorf("taken lease: released %d times, want 1", released)
			}
		}
	}
	srclimit.TakeLease(httptest.NewRequest("GET", "/", nil))() // must not panic
}
