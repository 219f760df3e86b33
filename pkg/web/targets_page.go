package web

import (
	"context"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// defaultRows is how many rows a page shows unless ?limit says otherwise:
// enough to read, few enough that 100k targets do not make a 100 MB page.
const defaultRows = 1000

type poolView struct {
	Name    string
	Up      int
	Total   int
	Targets []ActiveTarget
}

type countItem struct {
	Name  string
	Count int
}

type targetsView struct {
	nav
	Err      string
	Query    url.Values
	Jobs     []string
	Scrapers []countItem
	States   []countItem
	All      int // targets before filtering
	Total    int // targets matching the filters
	Shown    int
	Limit    int
	Pools    []*poolView
}

// targetQuery is the filter of the targets and service discovery pages.
type targetQuery struct {
	job, state, scraper, text string
}

func parseTargetQuery(q url.Values) targetQuery {
	tq := targetQuery{
		job:     firstOf(q, "job", "pool", "scrapePool"),
		state:   firstOf(q, "state", "health"),
		scraper: q.Get("scraper"),
		text:    strings.ToLower(strings.TrimSpace(q.Get("q"))),
	}
	if tq.state == "any" {
		tq.state = ""
	}
	return tq
}

func firstOf(q url.Values, keys ...string) string {
	for _, k := range keys {
		if v := q.Get(k); v != "" {
			return v
		}
	}
	return ""
}

func (tq targetQuery) matches(a ActiveTarget) bool {
	if tq.job != "" && a.ScrapePool != tq.job {
		return false
	}
	if tq.state != "" && a.Health != tq.state {
		return false
	}
	switch tq.scraper {
	case "":
	case Unowned:
		if a.Scraper != "" {
			return false
		}
	default:
		if a.Scraper != tq.scraper {
			return false
		}
	}
	// The ID too: /cluster links a moved target as /targets?q=<id>.
	return tq.text == "" || containsText(tq.text, a.ID, a.ScrapeURL, a.LastError, a.Labels, a.DiscoveredLabels)
}

// MatchTargets keeps the active targets that the /targets page's job,
// state (up, down, unknown) and scraper (an ID, or "(unowned)") selectors
// keep; "" keeps any. The CLI's allot targets filters with it.
func MatchTargets(targets []ActiveTarget, job, state, scraper string) []ActiveTarget {
	tq := targetQuery{job: job, state: state, scraper: scraper}
	var out []ActiveTarget
	for _, a := range targets {
		if tq.matches(a) {
			out = append(out, a)
		}
	}
	return out
}

// containsText says whether s (lower case) occurs in any of the strings or
// label values given.
func containsText(s string, in ...any) bool {
	for _, v := range in {
		switch v := v.(type) {
		case string:
			if strings.Contains(strings.ToLower(v), s) {
				return true
			}
		case map[string]string:
			for k, lv := range v {
				if strings.Contains(strings.ToLower(k+"="+lv), s) {
					return true
				}
			}
		}
	}
	return false
}

// TargetsPage serves the /targets page: every target grouped by job, with
// its owner, state, last scrape, duration, series and error. Query
// parameters: job (also pool), state (up, down, unknown), scraper (an ID,
// or "(unowned)"), q (text in the ID, URL, labels or error), limit (rows,
// default 1000, 0 = all). ?format=json gives the matching targets in the
// /api/v1/targets shape.
func TargetsPage(src TargetSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		t, err := src.Targets(ctx)
		q := r.URL.Query()
		tq := parseTargetQuery(q)

		matching := Targets{ActiveTargets: []ActiveTarget{}, DroppedTargets: []DroppedTarget{}, DroppedTargetCounts: t.DroppedTargetCounts}
		jobs := map[string]bool{}
		scrapers := map[string]int{}
		states := map[string]int{}
		for _, a := range t.ActiveTargets {
			jobs[a.ScrapePool] = true
			scrapers[ownerName(a.Scraper)]++
			if tq.matches(a) {
				matching.ActiveTargets = append(matching.ActiveTargets, a)
				states[a.Health]++
			}
		}
		matching.Sort()
		if wantsJSON(r) {
			if failed(t, err) {
				WriteError(w, http.StatusServiceUnavailable, "unavailable", err)
				return
			}
			writeJSONWarnings(w, matching, Warnings(err))
			return
		}

		v := targetsView{
			nav:      nav{Title: "Targets", Active: "targets"},
			Query:    q,
			Jobs:     sortedSet(jobs),
			Scrapers: sortedCounts(scrapers),
			States:   sortedCounts(states),
			All:      len(t.ActiveTargets),
			Total:    len(matching.ActiveTargets),
			Limit:    limitParam(q, defaultRows),
		}
		if err != nil {
			v.Err = err.Error()
		}
		pools := map[string]*poolView{}
		for _, a := range matching.ActiveTargets {
			p := pools[a.ScrapePool]
			if p == nil {
				p = &poolView{Name: a.ScrapePool}
				pools[a.ScrapePool] = p
				v.Pools = append(v.Pools, p)
			}
			p.Total++
			if a.Health == "up" {
				p.Up++
			}
			if v.Limit == 0 || v.Shown < v.Limit {
				p.Targets = append(p.Targets, a)
				v.Shown++
			}
		}
		render(w, "targets.html", v)
	})
}

func ownerName(s string) string {
	if s == "" {
		return Unowned
	}
	return s
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sortedCounts(m map[string]int) []countItem {
	out := make([]countItem, 0, len(m))
	for k, n := range m {
		out = append(out, countItem{k, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
