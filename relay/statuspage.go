package relay

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/meshup/meshup/internal/units"
	"github.com/meshup/meshup/proto"
)

// The status page: a small human view of the relay at GET /, for its
// operator and for anyone checking a relay from outside. It shows what
// /v1/status does, in words; no script, and a Content-Security-Policy that
// allows nothing but its own inline style.

// statusCSS is the page's style. Its hash is in the CSP, so no other
// style (and no script at all) may run.
const statusCSS = `body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.4em}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3em .6em;border-bottom:1px solid #ddd;vertical-align:top}
th{width:40%;font-weight:600}.bad{color:#a00}.ok{color:#070}code{font-size:.9em;word-break:break-all}`

var statusCSP = "default-src 'none'; style-src 'sha256-" + hashCSS() + "'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func hashCSS() string {
	h := sha256.Sum256([]byte(statusCSS))
	return base64.StdEncoding.EncodeToString(h[:])
}

var statusTmpl = template.Must(template.New("status").Funcs(template.FuncMap{
	"bytes": units.Format,
	// Limits as the operator wrote them: "10MB/s", "1TB".
	"limit": func(n int64) string { return units.Rate(n).String() },
	"cap":   func(n int64) string { return units.Size(n).String() },
	"join":  strings.Join,
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshup relay {{.Short}}</title>
<style>{{.CSS}}</style></head>
<body>
<h1>meshup relay</h1>
<table>
<tr><th>Relay id</th><td><code>{{.S.ID}}</code></td></tr>
<tr><th>Version</th><td>{{if .S.Version}}{{.S.Version}}{{else}}unknown{{end}} (protocol {{.Proto}})</td></tr>
<tr><th>Up for</th><td>{{.Uptime}} (since {{.S.Started.Format "2006-01-02 15:04:05 MST"}})</td></tr>
{{if .S.Draining}}<tr><th>Shutting down</th><td class="bad">draining: no new work; finishing the transfers in flight</td></tr>{{end}}
<tr><th>Rendezvous</th><td>{{if .S.Registered}}<span class="ok">connected</span>{{else}}<span class="bad">not connected</span>{{end}} to <code>{{.S.Rendezvous}}</code></td></tr>
<tr><th>Public URL</th><td><code>{{.S.HTTPURL}}</code></td></tr>
<tr><th>Reachability</th><td>NAT: {{.S.NAT}}; {{if .S.Public}}reachable directly{{else}}reached through relay circuits and tunnels{{end}}</td></tr>
<tr><th>Upload protocols served</th><td>{{if .S.Uploads}}{{join .S.Uploads ", "}}{{else}}none{{end}}</td></tr>
<tr><th>Mesh peers</th><td>{{len .S.Peers}}</td></tr>
<tr><th>Memory budget in use</th><td>{{bytes .S.Stats.Reserved}} of {{bytes .S.Budget}}</td></tr>
<tr><th>Mesh connection buffers</th><td>{{bytes .S.MeshMemory}} of at most {{bytes .S.MeshMemoryLimit}} (outside the budget)</td></tr>
<tr><th>Rate limit, all traffic sent</th><td>{{limit .R.MaxRate}}</td></tr>
<tr><th>Rate limit per consumer</th><td>{{limit .R.MaxRatePerConsumer}}</td></tr>
<tr><th>Sent since start</th><td>{{bytes .R.Sent}}{{if .R.Waits}}; slowed by the rate limits {{.R.Waits}} times{{end}}</td></tr>
<tr><th>Volume this month</th><td>{{bytes .R.MonthlyUsed}}{{if .R.MonthlyCap}} of {{cap .R.MonthlyCap}}{{else}} (no cap){{end}}, counted since start</td></tr>
{{if .R.CapReached}}<tr><th>Monthly cap</th><td class="bad">reached: no new work until {{.R.CapResets.Format "2006-01-02 15:04 MST"}}</td></tr>{{end}}
<tr><th>Transfers served</th><td>{{.S.Stats.Requests}} requests, {{bytes .S.Stats.BytesServed}} to consumers; {{.S.Stats.ForwardsOut}} parts forwarded to other relays</td></tr>
<tr><th>Now</th><td>{{.S.Push}} push connections, {{.S.Stats.OpenParts}} parts being pushed</td></tr>
</table>
<p>Machine-readable: <a href="/v1/status">/v1/status</a>.</p>
</body></html>
`))

// statusPage is what the template is given.
type statusPage struct {
	S      statusView
	R      RateStats
	Short  string
	Uptime string
	Proto  int
	CSS    template.CSS
}

type statusView struct {
	Status
	Push int64
}

func (s *Server) handleStatusPage(w http.ResponseWriter, r *http.Request) {
	st := s.Status()
	p := statusPage{
		S:      statusView{st, st.Stats.PushConns},
		R:      st.Stats.Rate,
		Short:  shortID(st.ID),
		Uptime: st.Time.Sub(st.Started).Round(time.Second).String(),
		Proto:  proto.Version,
		CSS:    template.CSS(statusCSS),
	}
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, p); err != nil {
		s.log.Error("status page", "err", err)
		http.Error(w, "status page failed", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.Write(buf.Bytes())
}
