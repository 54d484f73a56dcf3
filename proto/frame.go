package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"
)

// A frame is a 5-byte header followed by its body:
//
//	type    uint8
//	length  uint32, big endian: length of the body in bytes
//	body    [length]byte
//
// On the push WebSocket each binary message holds exactly one frame. On
// libp2p streams frames follow each other on the byte stream. Readers skip
// frames of unknown type by their length, so peers can add frame types.

// HeaderLen is the length of a frame header.
const HeaderLen = 5

// DefaultMaxFrame is the default limit on a frame body (1 MiB plus room for
// the part data prefix).
const DefaultMaxFrame = 1<<20 + PartDataPrefixLen

// FrameType identifies a frame. Values are never renumbered; new types are
// appended.
type FrameType uint8

const (
	// FramePartBegin (client -> relay) opens a part stream.
	//
	//	stream   uint32   chosen by the sender, increasing on the connection
	//	item     [16]byte item id
	//	off      uint64   offset of the part in the item
	//	len      uint64   length of the part
	//	tokenLen uint16
	//	token    [tokenLen]byte  push token (see Token)
	FramePartBegin FrameType = 0x01

	// FramePartData (client -> relay) carries part bytes, in order.
	//
	//	stream   uint32
	//	data     [rest]byte
	FramePartData FrameType = 0x02

	// FramePartEnd (either direction) ends a part stream. From the relay
	// with StatusOK it means every byte was accepted end to end; any other
	// status means the part was refused or cancelled and the sender must
	// stop. From the sender it aborts the part.
	//
	//	stream   uint32
	//	status   uint16  (Status)
	//	reason   [rest]byte  UTF-8, at most MaxReason bytes
	FramePartEnd FrameType = 0x03

	// FrameAck (relay -> client) acknowledges bytes and grants credit.
	//
	//	stream   uint32
	//	acked    uint64  bytes of the part accepted end to end (cumulative)
	//	limit    uint64  the sender may send bytes of the part below this
	//	                 part-relative offset; never decreases
	FrameAck FrameType = 0x04

	// FrameMsg carries one JSON control message (see Message). It is used
	// on libp2p streams, where there is no WebSocket message framing.
	//
	//	json     [length]byte
	FrameMsg FrameType = 0x10
)

func (t FrameType) String() string {
	switch t {
	case FramePartBegin:
		return "PartBegin"
	case FramePartData:
		return "PartData"
	case FramePartEnd:
		return "PartEnd"
	case FrameAck:
		return "Ack"
	case FrameMsg:
		return "Msg"
	}
	return fmt.Sprintf("FrameType(0x%02x)", uint8(t))
}

// Frame body sizes.
const (
	// PartDataPrefixLen is the part of a PartData body before the data.
	PartDataPrefixLen = 4
	partBeginFixedLen = 4 + 16 + 8 + 8 + 2
	partEndFixedLen   = 4 + 2
	ackLen            = 4 + 8 + 8
	// MaxToken is the largest token a PartBegin may carry.
	MaxToken = 4096
	// MaxReason is the longest reason in a PartEnd or close frame.
	MaxReason = 120
	// MaxPartBeginLen is the longest PartBegin body.
	MaxPartBeginLen = partBeginFixedLen + MaxToken
	// MaxPartEndLen is the longest PartEnd body.
	MaxPartEndLen = partEndFixedLen + MaxReason
)

// Sentinel errors of the frame codec.
var (
	// ErrFrameTooLarge means a frame declared a body longer than allowed.
	ErrFrameTooLarge = errors.New("proto: frame too large")
	// ErrMalformed means a frame body does not match its type's layout.
	ErrMalformed = errors.New("proto: malformed frame")
)

// Header is a decoded frame header.
type Header struct {
	Type FrameType
	Len  uint32
}

// AppendHeader appends a frame header to b.
func AppendHeader(b []byte, t FrameType, bodyLen int) []byte {
	b = append(b, byte(t))
	return binary.BigEndian.AppendUint32(b, uint32(bodyLen))
}

// ReadHeader reads a frame header from r and checks the body length against
// maxBody. The body is left unread.
func ReadHeader(r io.Reader, maxBody int) (Header, error) {
	var b [HeaderLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return Header{}, err
	}
	h := Header{Type: FrameType(b[0]), Len: binary.BigEndian.Uint32(b[1:])}
	if int64(h.Len) > int64(maxBody) {
		return h, fmt.Errorf("%w: %v of %d bytes, limit %d", ErrFrameTooLarge, h.Type, h.Len, maxBody)
	}
	return h, nil
}

// ReadFrame reads one whole frame from r into buf (grown as needed, up to
// maxBody) and returns its header and body. The body aliases buf.
func ReadFrame(r io.Reader, buf []byte, maxBody int) (Header, []byte, error) {
	h, err := ReadHeader(r, maxBody)
	if err != nil {
		return h, nil, err
	}
	if cap(buf) < int(h.Len) {
		buf = make([]byte, h.Len)
	}
	body := buf[:h.Len]
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return h, nil, err
	}
	return h, body, nil
}

// PartBegin is the body of FramePartBegin.
type PartBegin struct {
	Stream uint32
	Item   ItemID
	Off    uint64
	Len    uint64
	Token  string
}

// AppendFrame appends p as a whole frame to b.
func (p PartBegin) AppendFrame(b []byte) []byte {
	b = AppendHeader(b, FramePartBegin, partBeginFixedLen+len(p.Token))
	b = binary.BigEndian.AppendUint32(b, p.Stream)
	b = append(b, p.Item[:]...)
	b = binary.BigEndian.AppendUint64(b, p.Off)
	b = binary.BigEndian.AppendUint64(b, p.Len)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.Token)))
	return append(b, p.Token...)
}

// DecodePartBegin decodes the body of a FramePartBegin.
func DecodePartBegin(body []byte) (PartBegin, error) {
	var p PartBegin
	if len(body) < partBeginFixedLen {
		return p, fmt.Errorf("%w: PartBegin of %d bytes", ErrMalformed, len(body))
	}
	p.Stream = binary.BigEndian.Uint32(body)
	copy(p.Item[:], body[4:20])
	p.Off = binary.BigEndian.Uint64(body[20:])
	p.Len = binary.BigEndian.Uint64(body[28:])
	n := int(binary.BigEndian.Uint16(body[36:]))
	if n > MaxToken || len(body) != partBeginFixedLen+n {
		return p, fmt.Errorf("%w: PartBegin token of %d bytes in a body of %d", ErrMalformed, n, len(body))
	}
	// Off and Len are at most 2^62 each, so their sum cannot wrap a uint64,
	// but it must also fit an int64: callers use int64 offsets.
	if p.Off > 1<<62 || p.Len > 1<<62 || p.Off+p.Len > math.MaxInt64 {
		return p, fmt.Errorf("%w: PartBegin range overflows", ErrMalformed)
	}
	p.Token = string(body[partBeginFixedLen:])
	return p, nil
}

// AppendPartDataHeader appends the header and stream prefix of a PartData
// frame carrying n data bytes; the caller appends or writes the data.
func AppendPartDataHeader(b []byte, stream uint32, n int) []byte {
	b = AppendHeader(b, FramePartData, PartDataPrefixLen+n)
	return binary.BigEndian.AppendUint32(b, stream)
}

// DecodePartData splits the body of a FramePartData.
func DecodePartData(body []byte) (stream uint32, data []byte, err error) {
	if len(body) < PartDataPrefixLen {
		return 0, nil, fmt.Errorf("%w: PartData of %d bytes", ErrMalformed, len(body))
	}
	return binary.BigEndian.Uint32(body), body[PartDataPrefixLen:], nil
}

// PartEnd is the body of FramePartEnd.
type PartEnd struct {
	Stream uint32
	Status Status
	Reason string
}

// AppendFrame appends p as a whole frame to b. A reason longer than
// MaxReason is cut at a rune boundary.
func (p PartEnd) AppendFrame(b []byte) []byte {
	reason := TruncateReason(p.Reason)
	b = AppendHeader(b, FramePartEnd, partEndFixedLen+len(reason))
	b = binary.BigEndian.AppendUint32(b, p.Stream)
	b = binary.BigEndian.AppendUint16(b, uint16(p.Status))
	return append(b, reason...)
}

// DecodePartEnd decodes the body of a FramePartEnd.
func DecodePartEnd(body []byte) (PartEnd, error) {
	var p PartEnd
	if len(body) < partEndFixedLen || len(body) > partEndFixedLen+MaxReason {
		return p, fmt.Errorf("%w: PartEnd of %d bytes", ErrMalformed, len(body))
	}
	p.Stream = binary.BigEndian.Uint32(body)
	p.Status = Status(binary.BigEndian.Uint16(body[4:]))
	reason := body[partEndFixedLen:]
	if !utf8.Valid(reason) {
		return p, fmt.Errorf("%w: PartEnd reason is not UTF-8", ErrMalformed)
	}
	p.Reason = string(reason)
	return p, nil
}

// Ack is the body of FrameAck.
type Ack struct {
	Stream uint32
	Acked  uint64
	Limit  uint64
}

// AppendFrame appends a as a whole frame to b.
func (a Ack) AppendFrame(b []byte) []byte {
	b = AppendHeader(b, FrameAck, ackLen)
	b = binary.BigEndian.AppendUint32(b, a.Stream)
	b = binary.BigEndian.AppendUint64(b, a.Acked)
	return binary.BigEndian.AppendUint64(b, a.Limit)
}

// DecodeAck decodes the body of a FrameAck.
func DecodeAck(body []byte) (Ack, error) {
	if len(body) != ackLen {
		return Ack{}, fmt.Errorf("%w: Ack of %d bytes", ErrMalformed, len(body))
	}
	a := Ack{
		Stream: binary.BigEndian.Uint32(body),
		Acked:  binary.BigEndian.Uint64(body[4:]),
		Limit:  binary.BigEndian.Uint64(body[12:]),
	}
	if a.Acked > a.Limit {
		return a, fmt.Errorf("%w: Ack acked %d beyond limit %d", ErrMalformed, a.Acked, a.Limit)
	}
	return a, nil
}

// TruncateReason cuts s to at most MaxReason bytes at a rune boundary and
// replaces invalid UTF-8.
func TruncateReason(s string) string {
	s = string([]rune(s)) // replaces invalid sequences with U+FFFD
	if len(s) <= MaxReason {
		return s
	}
	s = s[:MaxReason]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
