package targetallocator

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
)

// notReadyBody is what /scrape_configs answers, with 503, before the job
// catalog has been read. The Collector's target allocator client reads the
// body of /scrape_configs whatever the status code and parses it as a map
// of job → scrape config: an empty body parses as an empty map, and the
// client then drops every job it got from us. A JSON array cannot parse as
// a map, so the client logs the error and keeps its current jobs (and, at
// start-up, retries with backoff).
var notReadyBody = []byte(`["allot: the target allocator API is not ready yet (the job catalog has not been read); keep the current scrape configs"]` + "\n")

// Handler serves the Target Allocator API:
//
//   - GET /scrape_configs: job name → scrape config (JSON), secrets shown
//     only to requests that came over TLS, as the Target Allocator does;
//   - GET /jobs: job name → {"_link": "/jobs/<job, query-escaped>/targets"};
//   - GET /jobs/{job}/targets?collector_id=ID: the targets of job owned by
//     collector ID, [{"targets":["host:port"],"labels":{...}}], registering
//     the collector on its first poll and keeping it alive with every poll;
//     without collector_id, owner → {"_link", "targets"} for every owner.
//
// Mount it at "/scrape_configs", "/jobs" and "/jobs/". The job in the path
// is query-escaped by the Collector (url.QueryEscape: a space is "+", a
// slash "%2F") and collector_id is not escaped at all; both are read that
// way. /jobs and /jobs/{job}/targets carry an ETag and answer 304 to a
// matching If-None-Match.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/scrape_configs", a.instrument("scrape_configs", a.serveScrapeConfigs))
	mux.Handle("/jobs", a.instrument("jobs", a.serveJobs))
	mux.Handle("/jobs/", a.instrument("targets", a.serveTargets))
	return mux
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (a *API) instrument(name string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			sw.Header().Set("Allow", "GET, HEAD")
			writeError(sw, http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed", r.Method))
		} else {
			h(sw, r)
		}
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		a.metrics.requests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc()
	})
}

func (a *API) serveScrapeConfigs(w http.ResponseWriter, r *http.Request) {
	b, ok := a.configs.get(r.TLS != nil)
	w.Header().Set("Content-Type", "application/json")
	if !ok {
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write(notReadyBody)
		return
	}
	// An ETag but never a 304: the client parses a 304's empty body as
	// "no jobs" (see notReadyBody). It does not send If-None-Match anyway.
	w.Header().Set("ETag", b.etag)
	_, _ = w.Write(b.data)
}

type link struct {
	Link string `json:"_link"`
}

func (a *API) serveJobs(w http.ResponseWriter, r *http.Request) {
	if !a.cat.isSynced() {
		writeError(w, http.StatusServiceUnavailable, errNotReady)
		return
	}
	out := map[string]link{}
	for _, job := range a.cat.jobNames() {
		out[job] = link{Link: jobLink(job)}
	}
	writeBody(w, r, newBody(mustJSON(out)))
}

func jobLink(job string) string { return "/jobs/" + url.QueryEscape(job) + "/targets" }

var errNotReady = fmt.Errorf("allot target allocator API not ready: catalog, claims or members not read yet")

func (a *API) serveTargets(w http.ResponseWriter, r *http.Request) {
	rawJob, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.EscapedPath(), "/jobs/"), "/targets")
	if !ok || rawJob == "" {
		writeError(w, http.StatusNotFound, fmt.Errorf("not found: want /jobs/{job}/targets"))
		return
	}
	job, err := url.QueryUnescape(rawJob)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("job %q: %w", rawJob, err))
		return
	}
	id, hasID, err := collectorID(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	// Not ready means "no answer", never "no targets": HTTP SD keeps the
	// targets it has when a refresh fails.
	if !a.Ready() {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, errNotReady)
		return
	}
	if !hasID {
		writeBody(w, r, a.allOwners(job))
		return
	}
	if a.isScraper(id) {
		writeError(w, http.StatusConflict, fmt.Errorf("collector_id %q is the ID of a scraper", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.FirstPollWait)
	defer cancel()
	addr := hostOf(r.RemoteAddr)
	c, fresh, err := a.reg.ensure(ctx, id, time.Now(), func(id string, reg *registration) { a.register(id, addr, reg) })
	if errors.Is(err, errIDTaken) {
		writeError(w, http.StatusConflict, err)
		return
	}
	if err != nil {
		a.logger.Warn("poll from unregistered collector", "collector", id, "err", err)
		writeError(w, http.StatusServiceUnavailable, err)
		return
	}
	if fresh {
		a.checkRefresh(id, r.Header.Get("X-Prometheus-Refresh-Interval-Seconds"))
	}
	// Answer the first polls (one per job, concurrent) with the
	// collector's share rather than nothing: the next poll is a refresh
	// interval (30 s) away. Later polls find the round done at once.
	if !a.roundDone(c.firstRound) {
		if rev, err := a.waitRound(ctx, c.firstRound); err == nil {
			_ = a.mir.waitRev(ctx, rev)
		}
	}
	writeBody(w, r, a.answerFor(job, id))
}

func (a *API) isScraper(id string) bool {
	ms := a.members.Load()
	if ms == nil {
		return false
	}
	i := slices.IndexFunc(*ms, func(m leases.Member) bool { return m.ID == id })
	return i >= 0 && (*ms)[i].Kind != leases.KindCollector
}

// collectorID reads collector_id from a raw query. The Collector does not
// escape it; an escaped one (from a person or another tool) is unescaped.
func collectorID(rawQuery string) (string, bool, error) {
	for part := range strings.SplitSeq(rawQuery, "&") {
		v, ok := strings.CutPrefix(part, "collector_id=")
		if !ok {
			if part == "collector_id" {
				return "", true, fmt.Errorf("collector_id is empty")
			}
			continue
		}
		if strings.Contains(v, "%") {
			if u, err := url.QueryUnescape(v); err == nil {
				v = u
			}
		}
		if err := validID(v); err != nil {
			return "", true, err
		}
		return v, true, nil
	}
	return "", false, nil
}

// validID accepts what pod names, host names and the Collector's
// ${env:...} expansions give, and nothing that would confuse an etcd key.
func validID(id string) error {
	if id == "" {
		return fmt.Errorf("collector_id is empty")
	}
	if len(id) > 253 {
		return fmt.Errorf("collector_id is longer than 253 characters")
	}
	for _, r := range id {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:@", r)
		if !ok {
			return fmt.Errorf("collector_id %q: character %q not allowed (letters, digits and . _ - : @)", id, r)
		}
	}
	return nil
}

// targetGroup is one entry of an HTTP SD answer.
type targetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

type answerKey struct{ job, collector string }

type answerEntry struct {
	catGen, mirGen uint64
	body           body
}

// answerCache keeps each collector's answer per job until the catalog or
// the claims change, so that polls cost a map lookup when nothing changed.
type answerCache struct {
	mu      sync.Mutex
	entries map[answerKey]answerEntry
}

func newAnswerCache() *answerCache { return &answerCache{entries: map[answerKey]answerEntry{}} }

// maxAnswers bounds the cache (collectors × jobs).
const maxAnswers = 100000

// answerFor is the targets of job that collector owns, as an HTTP SD
// answer; also the ones it owned last that nobody has claimed since.
func (a *API) answerFor(job, collector string) body {
	a.cat.mu.RLock()
	a.mir.mu.RLock()
	key := answerKey{job, collector}
	catGen, mirGen := a.cat.gen, a.mir.gen
	a.answers.mu.Lock()
	e, ok := a.answers.entries[key]
	a.answers.mu.Unlock()
	if ok && e.catGen == catGen && e.mirGen == mirGen {
		a.mir.mu.RUnlock()
		a.cat.mu.RUnlock()
		return e.body
	}
	ids := make([]string, 0, len(a.cat.byJob[job]))
	for id := range a.cat.byJob[job] {
		if cl, ok := a.mir.claims[id]; ok && cl.Owner == collector {
			ids = append(ids, id)
		} else if !ok && a.mir.lastOwner[id] == collector {
			ids = append(ids, id) // see mirror.lastOwner
		}
	}
	slices.Sort(ids)
	groups := make([]targetGroup, len(ids))
	for i, id := range ids {
		t := a.cat.targets[id]
		groups[i] = targetGroup{Targets: []string{t.Labels["__address__"]}, Labels: t.Labels}
	}
	a.mir.mu.RUnlock()
	a.cat.mu.RUnlock()

	b := newBody(appendGroups(nil, groups))
	a.answers.mu.Lock()
	if len(a.answers.entries) >= maxAnswers {
		clear(a.answers.entries)
	}
	a.answers.entries[key] = answerEntry{catGen: catGen, mirGen: mirGen, body: b}
	a.answers.mu.Unlock()
	return b
}

type ownerTargets struct {
	Link    string        `json:"_link"`
	Targets []targetGroup `json:"targets"`
}

// allOwners is every owner's targets of job (the Target Allocator's answer
// without collector_id), including live collectors that own none of them
// and scrapers that own some.
func (a *API) allOwners(job string) body {
	out := map[string]*ownerTargets{}
	entry := func(owner string) *ownerTargets {
		e := out[owner]
		if e == nil {
			e = &ownerTargets{Link: jobLink(job) + "?collector_id=" + owner, Targets: []targetGroup{}}
			out[owner] = e
		}
		return e
	}
	if ms := a.members.Load(); ms != nil {
		for _, m := range *ms {
			if m.Kind == leases.KindCollector {
				entry(m.ID)
			}
		}
	}
	a.cat.mu.RLock()
	a.mir.mu.RLock()
	ids := make([]string, 0, len(a.cat.byJob[job]))
	for id := range a.cat.byJob[job] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if cl, ok := a.mir.claims[id]; ok {
			t := a.cat.targets[id]
			e := entry(cl.Owner)
			e.Targets = append(e.Targets, targetGroup{Targets: []string{t.Labels["__address__"]}, Labels: t.Labels})
		}
	}
	a.mir.mu.RUnlock()
	a.cat.mu.RUnlock()
	return newBody(mustJSON(out))
}

// writeBody answers 200 with b, or 304 if the client has it already.
func writeBody(w http.ResponseWriter, r *http.Request, b body) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ETag", b.etag)
	if etagMatch(r.Header.Get("If-None-Match"), b.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	_, _ = w.Write(b.data)
}

func etagMatch(header, etag string) bool {
	for c := range strings.SplitSeq(header, ",") {
		c = strings.TrimPrefix(strings.TrimSpace(c), "W/")
		if c == etag || c == "*" {
			return true
		}
	}
	return false
}

func writeError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(mustJSON(map[string]string{"status": "error", "error": err.Error()}), '\n'))
}

// checkRefresh warns when a collector polls so rarely (HTTP SD
// refresh_interval, which Prometheus sends in a header) that its lease
// could expire between two polls.
func (a *API) checkRefresh(id, header string) {
	secs, err := strconv.ParseFloat(header, 64)
	if err != nil || secs <= 0 {
		return
	}
	refresh := time.Duration(secs * float64(time.Second))
	if 2*refresh > a.cfg.CollectorTTL {
		a.logger.Warn("collector polls less than twice per collector TTL; it may lose its targets between polls",
			"collector", id, "refresh_interval", refresh, "collector_ttl", a.cfg.CollectorTTL)
	}
}
