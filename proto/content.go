package proto

import (
	"mime"
	"net/http"
	"strings"
)

// Item responses (a relay's GET /v1/items/{id}, a message served by the
// rendezvous, anything through the tunnel) carry bytes a stranger chose,
// under an origin that also serves the web app. These headers keep that
// content from ever running as a page of that origin:
//
//	X-Content-Type-Options: nosniff   the type is what we say, never sniffed
//	Content-Security-Policy: sandbox; default-src 'none' ...
//	                                  a document opened from the item gets an
//	                                  opaque origin and no scripts
//	Content-Disposition: attachment   unless the type is on the inline list
//
// Inline types are media a browser renders itself and text/plain; never
// text/html, image/svg+xml or anything else that can carry script.

// ItemCSP is the Content-Security-Policy of item responses that are not
// media: no scripts, no subresources, an opaque origin.
const ItemCSP = "sandbox; default-src 'none'"

// MediaCSP is the Content-Security-Policy of inline media. Opening a video
// or an image by its URL makes the browser build a media document that loads
// the same URL as media (or image) and styles it inline; default-src 'none'
// alone would block that (Chromium: "Refused to load media ... default-src").
// A <video src> or <img src> of the item is not governed by the item's own
// policy at all, only by the embedding page's.
const MediaCSP = "sandbox; default-src 'none'; media-src 'self' blob: data:; img-src 'self' blob: data:; style-src 'unsafe-inline'"

// inlineTypes are the media types served inline. Everything else is an
// attachment.
var inlineTypes = map[string]bool{
	"image/png":  true,
	"image/jpeg": true,
	"image/gif":  true,
	"image/webp": true,
	"image/avif": true,
	"text/plain": true,
}

// NormalizeMIME returns the bare media type of t, lowercase and without
// parameters, or application/octet-stream when t is not a valid media type.
func NormalizeMIME(t string) string {
	mt, _, err := mime.ParseMediaType(t)
	if err != nil || !strings.Contains(mt, "/") {
		return "application/octet-stream"
	}
	return mt
}

// InlineMIME reports whether a normalised media type may be shown inline:
// video/*, audio/*, raster images and text/plain.
func InlineMIME(mt string) bool {
	if inlineTypes[mt] {
		return true
	}
	top, _, _ := strings.Cut(mt, "/")
	return top == "video" || top == "audio"
}

// SetItemHeaders sets Content-Type, X-Content-Type-Options,
// Content-Security-Policy and Content-Disposition of an item response for
// an item of type mimeType named name (name may be empty). It returns the
// normalised type it set. Text is always served as UTF-8.
func SetItemHeaders(h http.Header, mimeType, name string) string {
	mt := NormalizeMIME(mimeType)
	ctype := mt
	if mt == "text/plain" {
		ctype = "text/plain; charset=utf-8"
	}
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	disp := "attachment"
	csp := ItemCSP
	if InlineMIME(mt) {
		disp = "inline"
		if mt != "text/plain" {
			csp = MediaCSP
		}
	}
	h.Set("Content-Security-Policy", csp)
	var params map[string]string
	if name != "" {
		params = map[string]string{"filename": name}
	}
	if v := mime.FormatMediaType(disp, params); v != "" {
		h.Set("Content-Disposition", v)
	} else {
		h.Set("Content-Disposition", disp) // a name FormatMediaType cannot encode
	}
	return mt
}
