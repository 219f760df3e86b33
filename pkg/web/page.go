package web

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

//go:embed templates/*.html
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"ago": func(t time.Time) string { return Ago(time.Now(), t) },
	"ms": func(s float64) string {
		if s == 0 {
			return ""
		}
		return (time.Duration(s * float64(time.Second))).Truncate(time.Microsecond).String()
	},
	"dur":  humanDuration,
	"list": func(s ...string) []string { return s },
	"labels": func(m map[string]string) []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			out = append(out, k+`="`+v+`"`)
		}
		sort.Strings(out)
		return out
	},
	"ratio": func(f float64) string {
		if f == 0 || math.IsNaN(f) || math.IsInf(f, 0) {
			return "–"
		}
		return fmt.Sprintf("%.3f", f)
	},
	"num": Num,
	// width is a bar width for a style attribute, from a percentage.
	"width": func(pct float64) template.CSS {
		return template.CSS(fmt.Sprintf("width:%.1f%%", math.Max(0, math.Min(100, pct))))
	},
	// setq returns the page's query with key set to value ("" removes it),
	// for filter links that keep the other filters.
	"setq": func(q url.Values, kv ...string) string {
		c := url.Values{}
		for k, v := range q {
			c[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				c.Del(kv[i])
			} else {
				c.Set(kv[i], kv[i+1])
			}
		}
		if len(c) == 0 {
			return "?"
		}
		return "?" + c.Encode()
	},
	"owner": func(s string) string {
		if s == "" {
			return Unowned
		}
		return s
	},
}).ParseFS(templateFS, "templates/*.html"))

// Unowned is how pages (and the CLI tables) name the owner of a target
// nobody owns, and the scraper filter value that selects such targets.
const Unowned = "(unowned)"

// Ago is how long before now t was, rounded by humanDuration ("never" for
// a zero t). The pages and the CLI tables both use it.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return humanDuration(now.Sub(t)) + " ago"
}

// humanDuration rounds d for reading: 1.234s, 3m4s, 2h5m.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Truncate(time.Millisecond).String()
	case d < time.Minute:
		return d.Truncate(10 * time.Millisecond).String()
	case d < time.Hour:
		return d.Truncate(time.Second).String()
	}
	return d.Truncate(time.Minute).String()
}

// nav is the pages' navigation bar; Active names the current entry.
type nav struct {
	Title  string
	Active string
}

// render executes a page template into a buffer first, so that a template
// error becomes a 500 rather than half a page.
func render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := templates.ExecuteTemplate(&buf, name, data); err != nil {
		http.Error(w, fmt.Sprintf("render %s: %v", name, err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = buf.WriteTo(w)
}

// wantsJSON says whether a page request asks for the page's JSON form:
// ?format=json, or an Accept header that prefers JSON to HTML.
func wantsJSON(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	accept := r.Header.Get("Accept")
	return strings.Contains(accept, "application/json") && !strings.Contains(accept, "text/html")
}

// limitParam reads ?limit: how many rows a page shows (0 = all).
func limitParam(q url.Values, def int) int {
	if v := q.Get("limit"); v != "" {
		var n int
		if _, err := fmt.Sscan(v, &n); err == nil && n >= 0 {
			return n
		}
	}
	return def
}

// Num prints a count or rate for people: 12, 3.25, 12.3k, 1.20M. The pages
// and the CLI tables (allot status, allot targets) both use it.
func Num(f float64) string {
	switch {
	case f >= 1e6:
		return fmt.Sprintf("%.2fM", f/1e6)
	case f >= 1e4:
		return fmt.Sprintf("%.1fk", f/1e3)
	case f == math.Trunc(f):
		return fmt.Sprintf("%.0f", f)
	}
	return fmt.Sprintf("%.2f", f)
}
