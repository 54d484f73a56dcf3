package proto

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
)

func TestStatusHTTPStatus(t *testing.T) {
	tests := []struct {
		s    Status
		want int
	}{
		{StatusOK, http.StatusOK},
		{StatusUnauthorized, http.StatusUnauthorized},
		{StatusExpired, http.StatusUnauthorized},
		{StatusWrongRelay, http.StatusForbidden},
		{StatusForbidden, http.StatusForbidden},
		{StatusNotWanted, http.StatusServiceUnavailable},
		{StatusOverLimit, http.StatusTooManyRequests},
		{StatusOffline, http.StatusServiceUnavailable},
		{StatusNotFound, http.StatusNotFound},
		{StatusUnavailable, http.StatusServiceUnavailable},
		{StatusSourceError, http.StatusServiceUnavailable},
		{StatusCancelled, http.StatusServiceUnavailable},
		{StatusOriginRefused, http.StatusForbidden},
		{StatusTimeout, http.StatusRequestTimeout},
		{StatusConflict, http.StatusConflict},
		{StatusGone, http.StatusGone},
		{StatusMalformed, http.StatusBadRequest},
		{StatusTooLarge, http.StatusRequestEntityTooLarge},
		{StatusUnknownStream, http.StatusBadRequest},
		{StatusFlowViolation, http.StatusBadRequest},
		{StatusProtocol, http.StatusBadRequest},
		{StatusInternal, http.StatusInternalServerError},
		{250, http.StatusBadRequest},          // an unknown malformed status
		{150, http.StatusInternalServerError}, // unknown statuses of other classes
		{399, http.StatusInternalServerError},
		{65535, http.StatusInternalServerError},
	}
	for _, tt := range tests {
		if got := tt.s.HTTPStatus(); got != tt.want {
			t.Errorf("%v (%d): got %v, want %v", tt.s, uint16(tt.s), got, tt.want)
		}
	}
}

// Every named status is covered by the table above.
func TestStatusTextComplete(t *testing.T) {
	named := []Status{
		StatusOK, StatusUnauthorized, StatusExpired, StatusWrongRelay, StatusForbidden,
		StatusNotWanted, StatusOverLimit, StatusOffline, StatusNotFound, StatusUnavailable,
		StatusSourceError, StatusCancelled, StatusOriginRefused, StatusTimeout, StatusConflict, StatusMalformed,
		StatusTooLarge, StatusUnknownStream, StatusFlowViolation, StatusProtocol, StatusInternal, StatusGone,
	}
	if len(named) != len(statusText) {
		t.Errorf("got %d statuses with text, want %d", len(statusText), len(named))
	}
	for _, s := range named {
		if _, ok := statusText[s]; !ok {
			t.Errorf("status %d has no text", uint16(s))
		}
	}
}

func TestStatusString(t *testing.T) {
	tests := []struct {
		s    Status
		want string
	}{
		{StatusOK, "ok"},
		{StatusNotFound, "not found"},
		{StatusFlowViolation, "flow control violation"},
		{150, "status 150"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("got %v, want %v", got, tt.want)
		}
	}
}

func TestStatusIsMalformed(t *testing.T) {
	tests := []struct {
		s    Status
		want bool
	}{
		{StatusOK, false},
		{StatusForbidden, false},
		{199, false},
		{StatusMalformed, true},
		{StatusProtocol, true},
		{299, true},
		{StatusInternal, false},
	}
	for _, tt := range tests {
		if got := tt.s.IsMalformed(); got != tt.want {
			t.Errorf("%d: got %v, want %v", uint16(tt.s), got, tt.want)
		}
	}
}

func TestCloseCode(t *testing.T) {
	tests := []struct {
		s    Status
		want int
	}{
		{StatusOK, 4000},
		{StatusUnauthorized, 4100},
		{StatusNotFound, 4107},
		{StatusMalformed, 4200},
		{StatusInternal, 4300},
	}
	for _, tt := range tests {
		if got := tt.s.CloseCode(); got != tt.want {
			t.Errorf("%v: got %v, want %v", tt.s, got, tt.want)
		}
		s, ok := StatusFromCloseCode(tt.want)
		if s != tt.s || !ok {
			t.Errorf("StatusFromCloseCode(%d): got %v, %v, want %v, true", tt.want, s, ok, tt.s)
		}
	}
}

func TestStatusFromCloseCode(t *testing.T) {
	tests := []struct {
		code   int
		want   Status
		wantOK bool
	}{
		{4000, StatusOK, true},
		{4103, StatusForbidden, true},
		{4999, 999, true},
		{3999, StatusInternal, false},
		{5000, StatusInternal, false},
		{1000, StatusInternal, false}, // normal closure is not ours
		{1011, StatusInternal, false},
		{-4000, StatusInternal, false},
	}
	for _, tt := range tests {
		got, ok := StatusFromCloseCode(tt.code)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("StatusFromCloseCode(%d): got %v, %v, want %v, %v", tt.code, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestErrorIs(t *testing.T) {
	notFound := Errorf(StatusNotFound, "item %s", "abc")
	tests := []struct {
		name   string
		err    error
		target error
		want   bool
	}{
		{"same status", notFound, &Error{Status: StatusNotFound}, true},
		{"other message", notFound, Errorf(StatusNotFound, "other"), true},
		{"wrapped", fmt.Errorf("serve: %w", notFound), &Error{Status: StatusNotFound}, true},
		{"other status", notFound, &Error{Status: StatusForbidden}, false},
		{"not an Error", notFound, io.EOF, false},
		{"token sentinels by status", ErrTokenExpired, &Error{Status: StatusExpired}, true},
		{"plain error", errors.New("x"), &Error{Status: StatusNotFound}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errors.Is(tt.err, tt.target); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  *Error
		want string
	}{
		{Errorf(StatusNotFound, "item %s", "abc"), "not found: item abc"},
		{&Error{Status: StatusOverLimit}, "over limit"},
		{&Error{Status: 150, Msg: "x"}, "status 150: x"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %v, want %v", got, tt.want)
		}
	}
}
