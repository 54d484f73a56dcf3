package mesh

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A RelayRecord is one entry of the relay directory that the cluster
// gossips: where a relay can be reached and which cluster member it is
// registered with. The relay signs it with its libp2p key, so cluster
// members can pass records on without being trusted to make them up.
//
// Record encoding (big-endian; str is a uint16 length and that many bytes
// of UTF-8):
//
//	str  Relay     peer id of the relay (Ed25519, so it embeds the key)
//	u16  len(Addrs), then str per address (libp2p multiaddrs)
//	str  HTTPURL   base URL of the relay's HTTP API
//	str  NAT       the relay's NAT type as it reports it; "" is unknown
//	str  Home      cluster member name the relay is registered with
//	u64  Seq       higher replaces lower for the same relay
//	i64  Expires   Unix seconds after which the record is void
//	str  Sig       signature; absent from the signed payload
//
// The signed payload is RecordDomain followed by the encoding above
// without Sig, so that a signature over a record can never be mistaken for
// one over another kind of message signed by the same key.
type RelayRecord struct {
	Relay   string   `json:"relay"`
	Addrs   []string `json:"addrs"`
	HTTPURL string   `json:"http_url"`
	NAT     string   `json:"nat,omitempty"`
	Home    string   `json:"home"`
	Seq     uint64   `json:"seq"`
	Expires int64    `json:"expires"` // Unix seconds
	Sig     []byte   `json:"sig"`
}

// RecordDomain prefixes the payload a relay signs. Bump the version when
// the encoding changes.
const RecordDomain = "meshup relay record v1"

// Limits of the record encoding itself; a Cluster also bounds the whole
// encoded size (ClusterConfig.MaxRecordSize).
const (
	// MaxRecordAddrs is the most addresses a record may carry.
	MaxRecordAddrs = 64
	// DefaultRecordTTL is the lifetime SignRecord gives a record whose
	// Expires is zero.
	DefaultRecordTTL = 10 * time.Minute
)

// Sentinel errors of relay records.
var (
	// ErrBadRecord means a record is not well formed: undecodable, empty
	// required fields, invalid UTF-8, too many addresses.
	ErrBadRecord = errors.New("mesh: malformed relay record")
	// ErrBadSignature means a record's signature does not verify with the
	// key embedded in its relay's peer id.
	ErrBadSignature = errors.New("mesh: relay record signature invalid")
)

// appendStr appends s as a uint16 length and its bytes.
func appendStr(b []byte, s string) ([]byte, error) {
	if len(s) > 0xffff {
		return b, fmt.Errorf("%w: field of %d bytes", ErrBadRecord, len(s))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...), nil
}

// appendRecordBody appends the encoding of every field of r but Sig.
func appendRecordBody(b []byte, r *RelayRecord) ([]byte, error) {
	if len(r.Addrs) > MaxRecordAddrs {
		return b, fmt.Errorf("%w: %d addrs, limit %d", ErrBadRecord, len(r.Addrs), MaxRecordAddrs)
	}
	var err error
	if b, err = appendStr(b, r.Relay); err != nil {
		return b, err
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Addrs)))
	for _, a := range r.Addrs {
		if b, err = appendStr(b, a); err != nil {
			return b, err
		}
	}
	for _, s := range []string{r.HTTPURL, r.NAT, r.Home} {
		if b, err = appendStr(b, s); err != nil {
			return b, err
		}
	}
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	return binary.BigEndian.AppendUint64(b, uint64(r.Expires)), nil
}

// SignedPayload returns the bytes a relay signs: RecordDomain and the
// encoding of every field but Sig.
func (r *RelayRecord) SignedPayload() ([]byte, error) {
	return appendRecordBody([]byte(RecordDomain), r)
}

// AppendRecord appends the encoding of r, signature included, to b.
func AppendRecord(b []byte, r *RelayRecord) ([]byte, error) {
	b, err := appendRecordBody(b, r)
	if err != nil {
		return b, err
	}
	if len(r.Sig) > 0xffff {
		return b, fmt.Errorf("%w: signature of %d bytes", ErrBadRecord, len(r.Sig))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Sig)))
	return append(b, r.Sig...), nil
}

// EncodeRecord returns the encoding of r, signature included.
func EncodeRecord(r *RelayRecord) ([]byte, error) { return AppendRecord(nil, r) }

// recordReader decodes the record encoding.
type recordReader struct {
	b   []byte
	err error
}

func (d *recordReader) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadRecord, fmt.Sprintf(format, args...))
	}
}

func (d *recordReader) u16(what string) int {
	if len(d.b) < 2 {
		d.fail("truncated at %s", what)
		return 0
	}
	v := binary.BigEndian.Uint16(d.b)
	d.b = d.b[2:]
	return int(v)
}

func (d *recordReader) u64(what string) uint64 {
	if len(d.b) < 8 {
		d.fail("truncated at %s", what)
		return 0
	}
	v := binary.BigEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

func (d *recordReader) bytes(what string) []byte {
	n := d.u16(what)
	if d.err != nil {
		return nil
	}
	if len(d.b) < n {
		d.fail("truncated in %s", what)
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *recordReader) str(what string) string {
	v := d.bytes(what)
	if d.err == nil && !utf8.Valid(v) {
		d.fail("%s is not UTF-8", what)
	}
	return string(v)
}

// DecodeRecord decodes one record encoded by AppendRecord; data must hold
// exactly one. It checks the form (CheckRecord), not the signature or
// expiry: see VerifyRecord.
func DecodeRecord(data []byte) (RelayRecord, error) {
	d := recordReader{b: data}
	var r RelayRecord
	r.Relay = d.str("relay")
	n := d.u16("addr count")
	if d.err == nil && n > MaxRecordAddrs {
		d.fail("%d addrs, limit %d", n, MaxRecordAddrs)
	}
	for i := 0; i < n && d.err == nil; i++ {
		r.Addrs = append(r.Addrs, d.str("addr"))
	}
	r.HTTPURL = d.str("http_url")
	r.NAT = d.str("nat")
	r.Home = d.str("home")
	r.Seq = d.u64("seq")
	r.Expires = int64(d.u64("expires"))
	if sig := d.bytes("sig"); len(sig) > 0 {
		r.Sig = append([]byte(nil), sig...)
	}
	if d.err == nil && len(d.b) > 0 {
		d.fail("%d bytes after the record", len(d.b))
	}
	if d.err != nil {
		return RelayRecord{}, d.err
	}
	if err := CheckRecord(&r); err != nil {
		return RelayRecord{}, err
	}
	return r, nil
}

// CheckRecord reports whether r is well formed: a relay, a home, a
// signature, valid UTF-8 everywhere and at most MaxRecordAddrs addresses.
func CheckRecord(r *RelayRecord) error {
	if len(r.Sig) == 0 {
		return fmt.Errorf("%w: no signature", ErrBadRecord)
	}
	return checkFields(r)
}

// checkFields is CheckRecord without the signature.
func checkFields(r *RelayRecord) error {
	switch {
	case r.Relay == "":
		return fmt.Errorf("%w: no relay", ErrBadRecord)
	case r.Home == "":
		return fmt.Errorf("%w: no home", ErrBadRecord)
	case len(r.Addrs) > MaxRecordAddrs:
		return fmt.Errorf("%w: %d addrs, limit %d", ErrBadRecord, len(r.Addrs), MaxRecordAddrs)
	}
	for _, s := range append([]string{r.Relay, r.HTTPURL, r.NAT, r.Home}, r.Addrs...) {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: field is not UTF-8", ErrBadRecord)
		}
	}
	return nil
}

// SignRecord signs r with the node's key. It sets r.Relay to the node's
// peer id (a different non-empty Relay is an error), r.Seq to the current
// time in Unix nanoseconds when zero, and r.Expires to now plus
// DefaultRecordTTL when zero. Seq from the clock is monotonic as long as
// the clock does not step back between two signatures.
func (n *Node) SignRecord(r *RelayRecord) error {
	key := n.host.Peerstore().PrivKey(n.host.ID())
	if key == nil {
		return errors.New("mesh: sign relay record: node has no private key")
	}
	id := n.host.ID().String()
	if r.Relay != "" && r.Relay != id {
		return fmt.Errorf("%w: relay %s is not this node (%s)", ErrBadRecord, r.Relay, id)
	}
	r.Relay = id
	now := time.Now()
	if r.Seq == 0 {
		r.Seq = uint64(now.UnixNano())
	}
	if r.Expires == 0 {
		r.Expires = now.Add(DefaultRecordTTL).Unix()
	}
	return signRecord(key, r)
}

// signRecord sets r.Sig to key's signature of r's payload.
func signRecord(key crypto.PrivKey, r *RelayRecord) error {
	r.Sig = nil
	if err := checkFields(r); err != nil {
		return fmt.Errorf("sign relay record: %w", err)
	}
	payload, err := r.SignedPayload()
	if err != nil {
		return fmt.Errorf("sign relay record: %w", err)
	}
	sig, err := key.Sign(payload)
	if err != nil {
		return fmt.Errorf("mesh: sign relay record: %w", err)
	}
	r.Sig = sig
	return nil
}

// VerifyRecord checks that r is well formed and signed by the key that its
// Relay peer id embeds. It does not look at Expires or Seq; the Cluster
// does.
func VerifyRecord(r RelayRecord) error {
	if err := CheckRecord(&r); err != nil {
		return err
	}
	id, err := peer.Decode(r.Relay)
	if err != nil {
		return fmt.Errorf("%w: relay id: %v", ErrBadRecord, err)
	}
	pub, err := id.ExtractPublicKey()
	if err != nil {
		// Ids that hash a large key (RSA) do not embed it; meshup nodes
		// use Ed25519.
		return fmt.Errorf("%w: relay id embeds no public key: %v", ErrBadSignature, err)
	}
	payload, err := r.SignedPayload()
	if err != nil {
		return err
	}
	ok, err := pub.Verify(payload, r.Sig)
	if err != nil || !ok {
		return ErrBadSignature
	}
	return nil
}
