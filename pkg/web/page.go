package web

import (
	"context"
	"embed"
	"html/template"
	"net/http"
	"sort"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Truncate(time.Millisecond).String() + " ago"
	},
	"ms": func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Truncate(time.Microsecond).String()
	},
	"list": func(s ...string) []string { return s },
	"labels": func(m map[string]string) []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			out = append(out, k+`="`+v+`"`)
		}
		sort.Strings(out)
		return out
	},
}).ParseFS(templateFS, "templates/*.html"))

type poolView struct {
	Name    string
	Up      int
	Total   int
	Targets []ActiveTarget
}

// TargetsPage serves the HTML /targets page: targets grouped by pool, with
// owner, health, last scrape, duration, series and error. Query parameters
// `pool`, `scraper` and `health` filter it.
func TargetsPage(src TargetSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		t, err := src.Targets(ctx)
		q := r.URL.Query()
		t = Filter(t, "active", q.Get("pool"), q.Get("scraper"), q.Get("health"))
		pools := map[string]*poolView{}
		scrapers := map[string]int{}
		for _, a := range t.ActiveTargets {
			p := pools[a.ScrapePool]
			if p == nil {
				p = &poolView{Name: a.ScrapePool}
				pools[a.ScrapePool] = p
			}
			p.Total++
			if a.Health == "up" {
				p.Up++
			}
			p.Targets = append(p.Targets, a)
			scrapers[a.Scraper]++
		}
		var views []*poolView
		for _, p := range pools {
			views = append(views, p)
		}
		sort.Slice(views, func(i, j int) bool { return views[i].Name < views[j].Name })
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = templates.ExecuteTemplate(w, "targets.html", map[string]any{
			"Pools":    views,
			"Scrapers": scrapers,
			"Err":      err,
			"Query":    q,
			"Total":    len(t.ActiveTargets),
		})
	})
}
