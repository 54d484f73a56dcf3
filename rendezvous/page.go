package rendezvous

import (
	"bytes"
	"fmt"
	"html/template"
	"net/http"

	"github.com/meshup/meshup/proto"
)

// pageTmpl renders the share page of an item (GET /i/{id}) and its 404.
var pageTmpl = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{{if .Found}}{{.Name}} · meshup{{else}}Not found · meshup{{end}}</title>
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem}
dt{color:#666}
pre{white-space:pre-wrap;word-break:break-word;background:#f4f4f4;padding:1rem;border-radius:.4rem}
a.dl{display:inline-block;margin-top:1rem;padding:.6rem 1.2rem;background:#2563eb;color:#fff;border-radius:.4rem;text-decoration:none}
.off{color:#b45309}.on{color:#15803d}
</style>
</head>
<body>
{{if .Found -}}
<h1>{{.Name}}</h1>
<dl>
<dt>Size</dt><dd>{{.Size}}</dd>
<dt>Type</dt><dd>{{.MIME}}</dd>
<dt>Status</dt><dd>{{if .Online}}<span class="on">online</span>{{else}}<span class="off">publisher offline</span>{{end}}</dd>
</dl>
{{if .IsMessage}}<pre>{{.Text}}</pre>{{end}}
<a class="dl" href="{{.Download}}" download>Download</a>
{{- else -}}
<h1>Not found</h1>
<p>There is no item here. It may have been withdrawn, or the link is wrong.</p>
{{- end}}
</body>
</html>
`))

// pageData is what pageTmpl shows.
type pageData struct {
	Found     bool
	Name      string
	Size      string
	MIME      string
	Online    bool
	IsMessage bool
	Text      string
	Download  string
}

// handlePage serves the share page of an item.
func (s *Server) handlePage(w http.ResponseWriter, r *http.Request) {
	var d pageData
	code := http.StatusNotFound
	if id, err := proto.ParseItemID(r.PathValue("id")); err == nil {
		if v, ok := s.lookupItem(id); ok {
			code = http.StatusOK
			d = pageData{
				Found:     true,
				Name:      v.name,
				Size:      humanSize(v.size),
				MIME:      v.mime,
				Online:    v.online || v.kind == proto.KindMessage,
				IsMessage: v.kind == proto.KindMessage,
				Text:      v.text,
				Download:  "/v1/items/" + id.String(),
			}
		}
	}
	var buf bytes.Buffer
	if err := pageTmpl.Execute(&buf, d); err != nil {
		s.log.Error("render item page", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// humanSize formats n bytes with a binary unit: "512 B", "1.5 KiB".
func humanSize(n int64) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	f, exp := float64(n)/1024, 0
	for f >= 1023.95 && exp < 5 { // would print as 1024.0: use the next unit
		f /= 1024
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", f, "KMGTPE"[exp])
}
