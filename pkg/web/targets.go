package web

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"time"
)

// ActiveTarget is a target as the Prometheus HTTP API's /api/v1/targets
// shows it, plus the scraper that owns it.
type ActiveTarget struct {
	ID                 string            `json:"id"`
	DiscoveredLabels   map[string]string `json:"discoveredLabels"`
	Labels             map[string]string `json:"labels"`
	ScrapePool         string            `json:"scrapePool"`
	ScrapeURL          string            `json:"scrapeUrl"`
	GlobalURL          string            `json:"globalUrl"`
	LastError          string            `json:"lastError"`
	LastScrape         time.Time         `json:"lastScrape"`
	LastScrapeDuration float64           `json:"lastScrapeDuration"`
	Health             string            `json:"health"`
	ScrapeInterval     string            `json:"scrapeInterval"`
	ScrapeTimeout      string            `json:"scrapeTimeout"`
	Scraper            string            `json:"scraper"`
	Series             int               `json:"series"`
}

// DroppedTarget is a target that relabelling dropped.
type DroppedTarget struct {
	DiscoveredLabels map[string]string `json:"discoveredLabels"`
	ScrapePool       string            `json:"scrapePool"`
	Reason           string            `json:"reason,omitempty"`
}

// Targets is the data of a /api/v1/targets answer.
type Targets struct {
	ActiveTargets       []ActiveTarget  `json:"activeTargets"`
	DroppedTargets      []DroppedTarget `json:"droppedTargets"`
	DroppedTargetCounts map[string]int  `json:"droppedTargetCounts"`
}

// TargetSource provides targets. Implementations must be safe for
// concurrent use and return promptly when ctx ends.
type TargetSource interface {
	Targets(ctx context.Context) (Targets, error)
}

// TargetSourceFunc adapts a function to TargetSource.
type TargetSourceFunc func(ctx context.Context) (Targets, error)

// Targets calls f.
func (f TargetSourceFunc) Targets(ctx context.Context) (Targets, error) { return f(ctx) }

// Sort orders targets by pool, then URL, as Prometheus's pages do.
func (t *Targets) Sort() {
	sort.Slice(t.ActiveTargets, func(i, j int) bool {
		a, b := t.ActiveTargets[i], t.ActiveTargets[j]
		if a.ScrapePool != b.ScrapePool {
			return a.ScrapePool < b.ScrapePool
		}
		return a.ScrapeURL < b.ScrapeURL
	})
	sort.SliceStable(t.DroppedTargets, func(i, j int) bool {
		return t.DroppedTargets[i].ScrapePool < t.DroppedTargets[j].ScrapePool
	})
}

type apiResponse struct {
	Status    string `json:"status"`
	Data      any    `json:"data,omitempty"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
	// Warnings, as in Prometheus's API: the answer is incomplete, and
	// each says what is missing.
	Warnings []string `json:"warnings,omitempty"`
}

// WriteJSON writes v as a successful Prometheus API answer.
func WriteJSON(w http.ResponseWriter, v any) {
	writeJSONWarnings(w, v, nil)
}

// writeJSONWarnings writes v as a successful answer that may be incomplete.
func writeJSONWarnings(w http.ResponseWriter, v any, warnings []string) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(apiResponse{Status: "success", Data: v, Warnings: warnings})
}

// Warnings splits a source's error into one warning per failure (one per
// unreachable scraper when it comes from Remote.Fetch).
func Warnings(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, Warnings(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// partial reports whether every failure in err is a peer that did not
// answer (see UnreachableError): the rest of the view is sound.
func partial(err error) bool {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !partial(e) {
				return false
			}
		}
		return true
	}
	var u *UnreachableError
	return errors.As(err, &u)
}

// failed reports whether a source's answer is a failure, to be answered
// with 503, rather than an incomplete view, to be served with warnings:
// there is an error, nothing came back, and the error is not just peers
// that did not answer (then an empty view is the honest answer).
func failed(t Targets, err error) bool {
	return err != nil && len(t.ActiveTargets)+len(t.DroppedTargets) == 0 && !partial(err)
}

// writeJSONBody writes v as JSON without the API envelope.
func writeJSONBody(w http.ResponseWriter, v any) {
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes a Prometheus API error answer.
func WriteError(w http.ResponseWriter, code int, typ string, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(apiResponse{Status: "error", ErrorType: typ, Error: err.Error()})
}

type localScopeKey struct{}

// LocalScope reports whether the request behind ctx asked for this
// process's own view only (`scope=local`, what Remote asks for). A source
// that merges the views of other processes must not ask them then: a peer
// that advertises an address reaching the asker would otherwise make it ask
// itself, without end.
func LocalScope(ctx context.Context) bool {
	v, _ := ctx.Value(localScopeKey{}).(bool)
	return v
}

// TargetsAPI serves GET /api/v1/targets with Prometheus's query parameter
// `state` (active, dropped, any) and `scrapePool`, plus `scraper` and
// `scope=local` (see LocalScope).
//
// When some sources do not answer (a scraper is down), the answer is still
// 200 with what the others gave, and `warnings` names each missing source,
// as Prometheus's API does for partial answers: a dead scraper must not
// blank the view of the live ones. 503 is left for a source that gave
// nothing at all for another reason (etcd unreachable, empty catalog).
func TargetsAPI(src TargetSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		if r.URL.Query().Get("scope") == "local" {
			ctx = context.WithValue(ctx, localScopeKey{}, true)
		}
		t, err := src.Targets(ctx)
		if failed(t, err) {
			WriteError(w, http.StatusServiceUnavailable, "unavailable", err)
			return
		}
		t = Filter(t, r.URL.Query().Get("state"), r.URL.Query().Get("scrapePool"), r.URL.Query().Get("scraper"), "")
		writeJSONWarnings(w, t, Warnings(err))
	})
}

// Filter keeps the targets matching state (active|dropped|any, empty = any),
// pool, scraper and health (empty = all).
func Filter(t Targets, state, pool, scraper, health string) Targets {
	out := Targets{DroppedTargetCounts: t.DroppedTargetCounts}
	if state != "dropped" {
		for _, a := range t.ActiveTargets {
			if (pool == "" || a.ScrapePool == pool) && (scraper == "" || a.Scraper == scraper) && (health == "" || a.Health == health) {
				out.ActiveTargets = append(out.ActiveTargets, a)
			}
		}
	}
	if state != "active" && scraper == "" && health == "" {
		for _, d := range t.DroppedTargets {
			if pool == "" || d.ScrapePool == pool {
				out.DroppedTargets = append(out.DroppedTargets, d)
			}
		}
	}
	if out.ActiveTargets == nil {
		out.ActiveTargets = []ActiveTarget{}
	}
	if out.DroppedTargets == nil {
		out.DroppedTargets = []DroppedTarget{}
	}
	return out
}
