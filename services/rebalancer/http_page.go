package rebalancer

import (
	"html/template"
	"net/http"
)

// clusterPage renders Status as the cluster view: plain server-side HTML.
var clusterPage = template.Must(template.New("cluster").Funcs(template.FuncMap{
	"pct": func(r float64) string {
		if r == 0 {
			return "–"
		}
		return fmtFloat((r - 1) * 100)
	},
	"f": fmtFloat,
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>allot cluster</title>
<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#eee}.num{text-align:right}</style>
</head><body>
<h1>Cluster</h1>
<p>Rebalancer <b>{{.ID}}</b>{{if .IsLeader}} (leader){{else}}; leader: <b>{{if .Leader}}{{.Leader}}{{else}}unknown{{end}}</b>{{end}}.
{{if .IsLeader}}Balance: busiest is {{pct .BalanceRatio}}% above the mean by series ({{pct .ByCountRatio}}% by targets);
{{.Targets}} targets; recommended scrapers: {{.Recommended}}; moves pending: {{.Pending}}, queued: {{.Queued}}.
Evaluated {{.Updated.Format "2006-01-02 15:04:05"}}.{{end}}</p>
<h2>Scrapers</h2>
<table><tr><th>ID</th><th>Address</th><th>Zone</th><th>Weight</th><th>Targets</th><th>Series</th><th>Samples/s</th><th>Scrape s/s</th><th>Draining</th></tr>
{{range .Scrapers}}<tr><td>{{.ID}}</td><td>{{.Addr}}</td><td>{{.Zone}}</td><td class="num">{{f .Weight}}</td>
<td class="num">{{.Targets}}</td><td class="num">{{f .Series}}</td>
<td class="num">{{with .Load}}{{f .SamplesPerSecond}}{{end}}</td><td class="num">{{with .Load}}{{f .ScrapeSecondsPerSecond}}{{end}}</td>
<td>{{if .Draining}}yes{{end}}</td></tr>
{{end}}</table>
<h2>Recent moves</h2>
<table><tr><th>Started</th><th>Target</th><th>From</th><th>To</th><th>Reason</th><th>Duration</th><th>Outcome</th></tr>
{{range .Moves}}<tr><td>{{.Time.Format "15:04:05.000"}}</td><td>{{.Target}}</td><td>{{.From}}</td><td>{{.To}}</td>
<td>{{.Reason}}</td><td class="num">{{.Duration}}</td><td>{{.Outcome}}</td></tr>
{{end}}</table>
</body></html>
`))

func (r *Rebalancer) serveClusterPage(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := clusterPage.Execute(w, r.Status()); err != nil {
		r.logger.Debug("render cluster page", "err", err)
	}
}
