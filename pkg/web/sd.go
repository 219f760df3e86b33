package web

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

type sdPool struct {
	Name    string
	Active  []ActiveTarget
	Dropped []DroppedTarget
	// Counts before the row limit; DroppedTotal is what discovery counted,
	// which may exceed the dropped targets it kept.
	ActiveTotal, DroppedTotal int
	Reasons                   []countItem
}

type sdView struct {
	nav
	Err   string
	Query url.Values
	Jobs  []string
	Show  string // all, active, dropped
	Pools []*sdPool
	Total int
	Shown int
	Limit int
}

// ServiceDiscoveryPage serves /service-discovery: for every job, each
// target's labels as discovered (before relabelling) next to its labels
// after relabelling, and the targets relabelling dropped with the rule
// that dropped them. Query parameters: job, show (all, active, dropped),
// q (text in the labels), limit (rows, default 1000, 0 = all).
// ?format=json gives the matching targets in the /api/v1/targets shape.
func ServiceDiscoveryPage(src TargetSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		t, err := src.Targets(ctx)
		q := r.URL.Query()
		tq := parseTargetQuery(q)
		show := q.Get("show")
		if show != "active" && show != "dropped" {
			show = "all"
		}

		out := Targets{ActiveTargets: []ActiveTarget{}, DroppedTargets: []DroppedTarget{}, DroppedTargetCounts: map[string]int{}}
		jobs := map[string]bool{}
		for _, a := range t.ActiveTargets {
			jobs[a.ScrapePool] = true
			if show != "dropped" && (tq.job == "" || a.ScrapePool == tq.job) &&
				(tq.text == "" || containsText(tq.text, a.ID, a.ScrapeURL, a.Labels, a.DiscoveredLabels)) {
				out.ActiveTargets = append(out.ActiveTargets, a)
			}
		}
		for _, d := range t.DroppedTargets {
			jobs[d.ScrapePool] = true
			if show != "active" && (tq.job == "" || d.ScrapePool == tq.job) &&
				(tq.text == "" || containsText(tq.text, d.Reason, d.DiscoveredLabels)) {
				out.DroppedTargets = append(out.DroppedTargets, d)
			}
		}
		for job, n := range t.DroppedTargetCounts {
			jobs[job] = true
			if tq.job == "" || job == tq.job {
				out.DroppedTargetCounts[job] = n
			}
		}
		out.Sort()
		if wantsJSON(r) {
			if failed(t, err) {
				WriteError(w, http.StatusServiceUnavailable, "unavailable", err)
				return
			}
			writeJSONWarnings(w, out, Warnings(err))
			return
		}

		v := sdView{
			nav:   nav{Title: "Service discovery", Active: "sd"},
			Query: q,
			Jobs:  sortedSet(jobs),
			Show:  show,
			Total: len(out.ActiveTargets) + len(out.DroppedTargets),
			Limit: limitParam(q, defaultRows),
		}
		if err != nil {
			v.Err = err.Error()
		}
		pools := map[string]*sdPool{}
		pool := func(name string) *sdPool {
			p := pools[name]
			if p == nil {
				p = &sdPool{Name: name}
				pools[name] = p
			}
			return p
		}
		room := func() bool { return v.Limit == 0 || v.Shown < v.Limit }
		for _, a := range out.ActiveTargets {
			p := pool(a.ScrapePool)
			p.ActiveTotal++
			if room() {
				p.Active = append(p.Active, a)
				v.Shown++
			}
		}
		reasons := map[string]map[string]int{}
		for _, d := range out.DroppedTargets {
			p := pool(d.ScrapePool)
			if reasons[d.ScrapePool] == nil {
				reasons[d.ScrapePool] = map[string]int{}
			}
			reasons[d.ScrapePool][d.Reason]++
			if room() {
				p.Dropped = append(p.Dropped, d)
				v.Shown++
			}
		}
		for name, p := range pools {
			p.DroppedTotal = max(out.DroppedTargetCounts[name], countOf(reasons[name]))
			p.Reasons = sortedCounts(reasons[name])
		}
		for _, name := range sortedSet(keys(pools)) {
			v.Pools = append(v.Pools, pools[name])
		}
		render(w, "service_discovery.html", v)
	})
}

func countOf(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

func keys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}
