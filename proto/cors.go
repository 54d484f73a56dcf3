package proto

import "net/http"

// CORS for the public, credential-less resources of rendezvous and relays
// (issue 13): the browser library, /v1/info, an item's metadata, the item
// redirect and the item bytes. They are read with capabilities in the URL
// (read tokens) or are public, never with cookies, so any origin may read
// them: a page on another site imports /web/v1/meshup.js from a
// rendezvous and fetches items with fetch(), reading statuses and the
// headers a resumable download needs.

// CORSExposeHeaders are the response headers, beyond the CORS-safelisted
// ones, that a page on another origin may read.
const CORSExposeHeaders = "Content-Range, Content-Disposition, ETag, Accept-Ranges, Retry-After, Meshup-Relay"

// SetPublicCORS lets any origin read a response without credentials.
func SetPublicCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Expose-Headers", CORSExposeHeaders)
}

// ServePreflight answers a CORS preflight (OPTIONS) for a public GET or
// HEAD resource: requests with Range, If-Range, If-None-Match or a bearer
// token (Authorization) from any origin, without credentials.
func ServePreflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD")
	h.Set("Access-Control-Allow-Headers", "Range, If-Range, If-None-Match, If-Modified-Since, Authorization")
	h.Set("Access-Control-Max-Age", "86400")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}
