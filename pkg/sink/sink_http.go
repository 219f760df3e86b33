package sink

import (
	"encoding/json"
	"html/template"
	"math"
	"net/http"
	"strings"
)

// Handler serves the receivers and the pages:
//
//	POST /v1/metrics      OTLP/HTTP (protobuf or JSON, optionally gzip)
//	POST /api/v1/write    Prometheus remote write 1.0
//	GET  /                what arrived, as HTML
//	GET  /api/v1/stats    totals as JSON
//	GET  /api/v1/series   series names as JSON (?match=substring)
//	GET  /api/v1/samples  every recorded sample of the series matching
//	                      ?match=substring, as {series: [[unix_ms, value, stale], ...]}
func (s *Sink) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/metrics", s.serveOTLP)
	mux.HandleFunc("/api/v1/write", s.serveRemoteWrite)
	mux.HandleFunc("/api/v1/stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, s.Stats())
	})
	mux.HandleFunc("/api/v1/series", func(w http.ResponseWriter, r *http.Request) {
		match := r.URL.Query().Get("match")
		var out []Series
		for _, k := range s.Series() {
			if strings.Contains(string(k), match) {
				out = append(out, k)
			}
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("/api/v1/samples", func(w http.ResponseWriter, r *http.Request) {
		match := r.URL.Query().Get("match")
		out := map[Series][][3]any{}
		for _, k := range s.Series() {
			if !strings.Contains(string(k), match) {
				continue
			}
			smp := s.Samples(k)
			rows := make([][3]any, len(smp))
			for i, x := range smp {
				var v any = x.V
				if math.IsNaN(x.V) || math.IsInf(x.V, 0) {
					v = nil // JSON has no NaN; stale markers are NaN in remote write
				}
				rows[i] = [3]any{x.T.UnixMilli(), v, x.Stale}
			}
			out[k] = rows
		}
		writeJSON(w, out)
	})
	mux.HandleFunc("/", s.servePage)
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

var page = template.Must(template.New("sink").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>allot sink</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;text-align:left}tr:nth-child(even){background:#f4f4f4}code{font-size:90%}</style>
</head><body>
<h1>allot sink</h1>
<p>{{.Stats.Series}} series, {{.Stats.Points}} points; requests: {{range $k, $v := .Stats.Requests}}{{$k}}={{$v}} {{end}}; last at {{.Stats.Last.Format "15:04:05"}}</p>
<table><tr><th>series</th><th>points</th><th>last value</th><th>last timestamp</th></tr>
{{range .Rows}}<tr><td><code>{{.Series}}</code></td><td>{{.N}}</td><td>{{.Last.V}}</td><td>{{.Last.T.Format "15:04:05.000"}}</td></tr>
{{end}}</table>{{if .More}}<p>… {{.More}} more series (filter with ?match=)</p>{{end}}
</body></html>`))

func (s *Sink) servePage(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	type row struct {
		Series Series
		N      int
		Last   Sample
	}
	match := r.URL.Query().Get("match")
	var rows []row
	more := 0
	for _, k := range s.Series() {
		if !strings.Contains(string(k), match) {
			continue
		}
		if len(rows) >= 500 {
			more++
			continue
		}
		smp := s.Samples(k)
		rows = append(rows, row{Series: k, N: len(smp), Last: smp[len(smp)-1]})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = page.Execute(w, struct {
		Stats Stats
		Rows  []row
		More  int
	}{s.Stats(), rows, more})
}
