package httptunnel

import (
	"net/http"
	"testing"
)

func TestFilterResponseLocation(t *testing.T) {
	for _, tc := range []struct {
		status int
		loc    string
		kept   bool
	}{
		{http.StatusCreated, "abc123", true},
		{http.StatusCreated, "files/abc123", true},
		{http.StatusCreated, "https://rendezvous.example/v1/items/x", true},
		{http.StatusFound, "https://evil.example/", false},
		{http.StatusTemporaryRedirect, "abc123", false},
		{http.StatusOK, "abc123", false},
	} {
		res := &http.Response{StatusCode: tc.status, Header: http.Header{"Location": {tc.loc}}}
		if err := FilterResponse(res); err != nil {
			t.Fatal(err)
		}
		if got := res.Header.Get("Location") == tc.loc; got != tc.kept {
			t.Errorf("status %d Location %q: kept %v, want %v", tc.status, tc.loc, got, tc.kept)
		}
	}
}
