package proto

import (
	"fmt"
	"net/http"
)

// Status is the result code carried by PartEnd frames, control error
// messages and WebSocket close codes (as CloseCodeBase+Status). Codes are
// grouped by class and never renumbered:
//
//	0        ok
//	100-199  refused or over a limit: the request was understood and declined
//	200-299  malformed: the peer broke the protocol
//	300-399  internal: the fault is ours
type Status uint16

// Status codes.
const (
	StatusOK Status = 0

	StatusUnauthorized  Status = 100 // token missing or its signature is bad
	StatusExpired       Status = 101 // token expired
	StatusWrongRelay    Status = 102 // token names another relay
	StatusForbidden     Status = 103 // token does not cover this item, range or direction
	StatusNotWanted     Status = 104 // nobody waits for this part any more
	StatusOverLimit     Status = 105 // a configured limit was reached
	StatusOffline       Status = 106 // the item's publisher is offline
	StatusNotFound      Status = 107 // no such item
	StatusUnavailable   Status = 108 // no relay can serve the request
	StatusSourceError   Status = 109 // the publisher could not read the item
	StatusCancelled     Status = 110 // the requester gave up
	StatusOriginRefused Status = 111 // Origin not in the allow-list
	StatusTimeout       Status = 112 // a deadline passed: no valid first message after a handshake, or idle
	StatusConflict      Status = 113 // disagrees with what exists: a swarm member announcing another size
	StatusGone          Status = 114 // no longer held: expired, deleted, or bytes a streamed upload already dropped

	StatusMalformed     Status = 200 // undecodable frame or message
	StatusTooLarge      Status = 201 // frame or message over the size limit
	StatusUnknownStream Status = 202 // frame for a stream that is not open
	StatusFlowViolation Status = 203 // data sent beyond the granted credit
	StatusProtocol      Status = 204 // valid frame at the wrong time

	StatusInternal Status = 300
)

var statusText = map[Status]string{
	StatusOK:            "ok",
	StatusUnauthorized:  "unauthorized",
	StatusExpired:       "token expired",
	StatusWrongRelay:    "token for another relay",
	StatusForbidden:     "forbidden",
	StatusNotWanted:     "not wanted",
	StatusOverLimit:     "over limit",
	StatusOffline:       "publisher offline",
	StatusNotFound:      "not found",
	StatusUnavailable:   "unavailable",
	StatusSourceError:   "source error",
	StatusCancelled:     "cancelled",
	StatusOriginRefused: "origin refused",
	StatusTimeout:       "timeout",
	StatusConflict:      "conflict",
	StatusGone:          "gone",
	StatusMalformed:     "malformed",
	StatusTooLarge:      "too large",
	StatusUnknownStream: "unknown stream",
	StatusFlowViolation: "flow control violation",
	StatusProtocol:      "protocol error",
	StatusInternal:      "internal error",
}

func (s Status) String() string {
	if t, ok := statusText[s]; ok {
		return t
	}
	return fmt.Sprintf("status %d", uint16(s))
}

// IsMalformed reports whether s blames the peer for breaking the protocol.
// Known reports whether s is one of the statuses of this version. A peer
// may send any number; callers that count by status (metrics labels) map
// the unknown ones to one bucket.
func (s Status) Known() bool {
	_, ok := statusText[s]
	return ok
}

func (s Status) IsMalformed() bool { return s >= 200 && s < 300 }

// HTTPStatus maps s to the HTTP status code a client should see.
func (s Status) HTTPStatus() int {
	switch s {
	case StatusOK:
		return http.StatusOK
	case StatusUnauthorized, StatusExpired:
		return http.StatusUnauthorized
	case StatusWrongRelay, StatusForbidden, StatusOriginRefused:
		return http.StatusForbidden
	case StatusNotFound:
		return http.StatusNotFound
	case StatusOverLimit:
		return http.StatusTooManyRequests
	case StatusOffline, StatusUnavailable, StatusNotWanted, StatusCancelled, StatusSourceError:
		return http.StatusServiceUnavailable
	case StatusTooLarge:
		return http.StatusRequestEntityTooLarge
	case StatusTimeout:
		return http.StatusRequestTimeout
	case StatusConflict:
		return http.StatusConflict
	case StatusGone:
		return http.StatusGone
	}
	if s.IsMalformed() {
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

// CloseCodeBase is added to a Status to form a WebSocket close code in the
// private range 4000-4999.
const CloseCodeBase = 4000

// CloseCode returns the WebSocket close code for s.
func (s Status) CloseCode() int { return CloseCodeBase + int(s) }

// StatusFromCloseCode returns the Status of a WebSocket close code, or
// StatusInternal with ok false when the code is not one of ours.
func StatusFromCloseCode(code int) (s Status, ok bool) {
	if code < CloseCodeBase || code > CloseCodeBase+999 {
		return StatusInternal, false
	}
	return Status(code - CloseCodeBase), true
}

// Error is an error that carries a Status for the peer.
type Error struct {
	Status Status
	Msg    string
}

func (e *Error) Error() string {
	if e.Msg == "" {
		return e.Status.String()
	}
	return e.Status.String() + ": " + e.Msg
}

// Is makes errors.Is compare Errors by status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status
}

// Errorf returns an *Error with status s and a formatted message.
func Errorf(s Status, format string, args ...any) *Error {
	return &Error{Status: s, Msg: fmt.Sprintf(format, args...)}
}
