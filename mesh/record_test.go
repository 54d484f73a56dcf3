package mesh

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// testKey returns a deterministic Ed25519 libp2p key and its peer id.
func testKey(tb testing.TB, seed byte) (crypto.PrivKey, string) {
	tb.Helper()
	s := bytes.Repeat([]byte{seed}, ed25519.SeedSize)
	key, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(s))
	if err != nil {
		tb.Fatalf("unmarshal key: %v", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		tb.Fatalf("peer id: %v", err)
	}
	return key, id.String()
}

// signedRecord returns a record of the relay with key seed, homed at home,
// valid for an hour.
func signedRecord(tb testing.TB, seed byte, home string) RelayRecord {
	tb.Helper()
	key, id := testKey(tb, seed)
	r := RelayRecord{
		Relay:   id,
		Addrs:   []string{"/ip4/127.0.0.1/tcp/4001/p2p/" + id, "/ip4/127.0.0.1/udp/4001/quic-v1/p2p/" + id},
		HTTPURL: "http://127.0.0.1:8081",
		NAT:     "full-cone",
		Home:    home,
		Seq:     uint64(time.Now().UnixNano()),
		Expires: time.Now().Add(time.Hour).Unix(),
	}
	if err := signRecord(key, &r); err != nil {
		tb.Fatalf("sign record: %v", err)
	}
	return r
}

func TestRecordEncodingGolden(t *testing.T) {
	r := RelayRecord{
		Relay:   "R",
		Addrs:   []string{"A", "BC"},
		HTTPURL: "H",
		NAT:     "N",
		Home:    "M",
		Seq:     0x0102030405060708,
		Expires: 0x1112131415161718,
		Sig:     []byte{0xaa, 0xbb},
	}
	const body = "0001" + "52" + // relay
		"0002" + "0001" + "41" + "0002" + "4243" + // addrs
		"0001" + "48" + "0001" + "4e" + "0001" + "4d" + // http_url, nat, home
		"0102030405060708" + "1112131415161718" // seq, expires
	got, err := EncodeRecord(&r)
	if err != nil {
		t.Fatalf("EncodeRecord: %v", err)
	}
	if want := body + "0002aabb"; hex.EncodeToString(got) != want {
		t.Errorf("encoding: got %x, want %s", got, want)
	}
	payload, err := r.SignedPayload()
	if err != nil {
		t.Fatalf("SignedPayload: %v", err)
	}
	if want := hex.EncodeToString([]byte("meshup relay record v1")) + body; hex.EncodeToString(payload) != want {
		t.Errorf("signed payload: got %x, want %s", payload, want)
	}
	back, err := DecodeRecord(got)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if !reflect.DeepEqual(back, r) {
		t.Errorf("decoded: got %+v, want %+v", back, r)
	}
}

// The signature of a fixed record by a fixed key: Ed25519 is
// deterministic, so this pins the payload and the key handling together.
func TestRecordSignatureGolden(t *testing.T) {
	key, id := testKey(t, 7)
	r := RelayRecord{Relay: id, Addrs: []string{"/ip4/1.2.3.4/tcp/1"}, HTTPURL: "http://r", Home: "h", Seq: 1, Expires: 2}
	if err := signRecord(key, &r); err != nil {
		t.Fatalf("signRecord: %v", err)
	}
	const want = "88d4132c457425ab5530669c74ecccbfb45cefa0b1e36d16489d04be183df9b83b0d7c1bfe20f3c446bec9f822a181f46cacc2bc626587ddfd5e17528602f50a"
	if len(r.Sig) != ed25519.SignatureSize {
		t.Fatalf("signature of %d bytes, want %d", len(r.Sig), ed25519.SignatureSize)
	}
	payload, _ := r.SignedPayload()
	pub := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	if !ed25519.Verify(pub, payload, r.Sig) {
		t.Errorf("signature %x does not verify with the raw Ed25519 key", r.Sig)
	}
	if got := hex.EncodeToString(r.Sig); got != want {
		t.Errorf("signature: got %s, want %s", got, want)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := signedRecord(t, 1, "home-1")
	b, err := EncodeRecord(&r)
	if err != nil {
		t.Fatalf("EncodeRecord: %v", err)
	}
	got, err := DecodeRecord(b)
	if err != nil {
		t.Fatalf("DecodeRecord: %v", err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("got %+v, want %+v", got, r)
	}
	if err := VerifyRecord(got); err != nil {
		t.Errorf("VerifyRecord: %v", err)
	}
}

func TestVerifyRecordTampered(t *testing.T) {
	_, other := testKey(t, 2)
	tests := []struct {
		field  string
		change func(r *RelayRecord)
	}{
		{"Relay", func(r *RelayRecord) { r.Relay = other }},
		{"Addrs", func(r *RelayRecord) { r.Addrs[0] = "/ip4/6.6.6.6/tcp/1" }},
		{"Addrs", func(r *RelayRecord) { r.Addrs = append(r.Addrs, "/ip4/6.6.6.6/tcp/1") }},
		{"Addrs", func(r *RelayRecord) { r.Addrs = r.Addrs[:1] }},
		{"Addrs", func(r *RelayRecord) { r.Addrs = []string{r.Addrs[1], r.Addrs[0]} }},
		{"HTTPURL", func(r *RelayRecord) { r.HTTPURL = "http://evil:8081" }},
		{"NAT", func(r *RelayRecord) { r.NAT = "" }},
		{"Home", func(r *RelayRecord) { r.Home = "home-2" }},
		{"Seq", func(r *RelayRecord) { r.Seq++ }},
		{"Expires", func(r *RelayRecord) { r.Expires += 3600 }},
		{"Sig", func(r *RelayRecord) { r.Sig[0] ^= 1 }},
		{"Sig", func(r *RelayRecord) { r.Sig = r.Sig[:32] }},
		{"Sig", func(r *RelayRecord) { r.Sig = nil }},
	}
	covered := map[string]bool{}
	for _, tt := range tests {
		covered[tt.field] = true
		t.Run(tt.field, func(t *testing.T) {
			r := signedRecord(t, 1, "home-1")
			if err := VerifyRecord(r); err != nil {
				t.Fatalf("untampered: %v", err)
			}
			tt.change(&r)
			err := VerifyRecord(r)
			if !errors.Is(err, ErrBadSignature) && !errors.Is(err, ErrBadRecord) {
				t.Errorf("got %v, want ErrBadSignature or ErrBadRecord", err)
			}
		})
	}
	typ := reflect.TypeFor[RelayRecord]()
	for i := range typ.NumField() {
		if name := typ.Field(i).Name; !covered[name] {
			t.Errorf("field %s has no tamper case", name)
		}
	}
}

func TestVerifyRecordWrongKey(t *testing.T) {
	key, _ := testKey(t, 1)
	_, victim := testKey(t, 2)
	r := RelayRecord{Relay: victim, HTTPURL: "http://evil", Home: "h", Seq: 1, Expires: 2}
	if err := signRecord(key, &r); err != nil {
		t.Fatalf("signRecord: %v", err)
	}
	if err := VerifyRecord(r); !errors.Is(err, ErrBadSignature) {
		t.Errorf("got %v, want ErrBadSignature", err)
	}
}

func TestVerifyRecordBadRelayID(t *testing.T) {
	r := signedRecord(t, 1, "h")
	r.Relay = "not-a-peer-id"
	if err := VerifyRecord(r); !errors.Is(err, ErrBadRecord) {
		t.Errorf("got %v, want ErrBadRecord", err)
	}
}

func TestNodeSignRecord(t *testing.T) {
	n, err := New(Config{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer n.Close()
	before := time.Now()
	r := RelayRecord{Addrs: n.Addrs(), HTTPURL: "http://127.0.0.1:1", Home: "h"}
	if err := n.SignRecord(&r); err != nil {
		t.Fatalf("SignRecord: %v", err)
	}
	if r.Relay != n.ID() {
		t.Errorf("Relay: got %v, want %v", r.Relay, n.ID())
	}
	if r.Seq < uint64(before.UnixNano()) {
		t.Errorf("Seq: got %v, want at least %v", r.Seq, before.UnixNano())
	}
	if want := before.Add(DefaultRecordTTL).Unix(); r.Expires < want || r.Expires > want+1 {
		t.Errorf("Expires: got %v, want about %v", r.Expires, want)
	}
	if err := VerifyRecord(r); err != nil {
		t.Errorf("VerifyRecord: %v", err)
	}

	_, other := testKey(t, 3)
	r2 := RelayRecord{Relay: other, Home: "h"}
	if err := n.SignRecord(&r2); !errors.Is(err, ErrBadRecord) {
		t.Errorf("signing for another relay: got %v, want ErrBadRecord", err)
	}
	if err := n.SignRecord(&RelayRecord{}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("signing without home: got %v, want ErrBadRecord", err)
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	r := signedRecord(t, 1, "home-1")
	valid, err := EncodeRecord(&r)
	if err != nil {
		t.Fatal(err)
	}
	// Every strict prefix is truncated.
	for i := range len(valid) {
		if _, err := DecodeRecord(valid[:i]); !errors.Is(err, ErrBadRecord) {
			t.Fatalf("prefix of %d bytes: got %v, want ErrBadRecord", i, err)
		}
	}
	mk := func(r RelayRecord) []byte {
		b, err := EncodeRecord(&r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tooMany := r
	tooMany.Addrs = nil
	for range MaxRecordAddrs + 1 {
		tooMany.Addrs = append(tooMany.Addrs, "a")
	}
	tooManyBytes, _ := appendRecordBody(nil, &RelayRecord{Relay: "x"})
	tooManyBytes = tooManyBytes[:3+2] // relay, then overwrite count below
	tooManyBytes[3], tooManyBytes[4] = 0, MaxRecordAddrs+1
	tests := []struct {
		name string
		in   []byte
	}{
		{"trailing byte", append(append([]byte{}, valid...), 0)},
		{"too many addrs", tooManyBytes},
		{"no relay", mk(RelayRecord{Home: "h", Sig: []byte{1}})},
		{"no home", mk(RelayRecord{Relay: "r", Sig: []byte{1}})},
		{"no sig", mk(RelayRecord{Relay: "r", Home: "h"})},
		{"relay not utf-8", mk(RelayRecord{Relay: "\xff", Home: "h", Sig: []byte{1}})},
		{"addr not utf-8", mk(RelayRecord{Relay: "r", Addrs: []string{"\xc3"}, Home: "h", Sig: []byte{1}})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := DecodeRecord(tt.in); !errors.Is(err, ErrBadRecord) {
				t.Errorf("got %+v, %v, want ErrBadRecord", got, err)
			}
		})
	}
	if _, err := EncodeRecord(&tooMany); !errors.Is(err, ErrBadRecord) {
		t.Errorf("encoding %d addrs: got %v, want ErrBadRecord", len(tooMany.Addrs), err)
	}
	if _, err := EncodeRecord(&RelayRecord{Relay: strings.Repeat("x", 1<<16)}); !errors.Is(err, ErrBadRecord) {
		t.Errorf("encoding a 64 KiB relay id: got %v, want ErrBadRecord", err)
	}
}

// FuzzDecodeRecord checks that the decoder never panics, that whatever it
// accepts re-encodes to exactly the input (the encoding is canonical, so a
// signature covers one byte string), and that verification never panics.
func FuzzDecodeRecord(f *testing.F) {
	r := signedRecord(f, 1, "home-1")
	valid, _ := EncodeRecord(&r)
	f.Add(valid)
	small, _ := EncodeRecord(&RelayRecord{Relay: "R", Addrs: []string{"A"}, Home: "M", Sig: []byte{1}})
	f.Add(small)
	f.Add([]byte{})
	f.Add([]byte{0, 1, 'x', 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeRecord(data)
		if err != nil {
			if !errors.Is(err, ErrBadRecord) {
				t.Fatalf("error %v does not wrap ErrBadRecord", err)
			}
			return
		}
		again, err := EncodeRecord(&got)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", got, err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoded %x, want %x", again, data)
		}
		_ = VerifyRecord(got)
	})
}
