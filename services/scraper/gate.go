package scraper

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
)

// targetIDLabel carries a target's catalog id through the scrape manager so
// that the gate can tell which target a batch belongs to. As a "__" label it
// never reaches a series.
const targetIDLabel = "__allot_target_id__"

// liveness is what the gate needs of a session: whether it is still alive.
// *leases.Session satisfies it.
type liveness interface {
	// Done is closed when the session ends.
	Done() <-chan struct{}
	// Deadline is the local deadline; past it the session is lost even if
	// Done has not been closed yet.
	Deadline() time.Time
}

// gateState is what the gate lets through for one target.
type gateState int32

const (
	// gateOwned forwards every batch.
	gateOwned gateState = iota + 1
	// gatePreparing drops every batch: the scrape loop runs so that it is
	// warm when a move to us takes over, but the claim is not ours yet.
	gatePreparing
	// gateRetired forwards only batches that are all staleness markers,
	// until a deadline: the target left the catalog and its end-of-run
	// staleness markers must still reach the sink.
	gateRetired
)

type gateEntry struct {
	state        atomic.Int32
	retiredUntil atomic.Int64 // unix nanoseconds, for gateRetired

	series     atomic.Int64 // non-stale samples in the last forwarded batch
	lastCommit atomic.Int64 // unix nanoseconds of the last forwarded batch
}

// gate is a storage.AppendableV2 in front of the sink that forwards a
// scrape's batch on Commit only if the batch's target is owned and the
// session is alive at that moment; otherwise it rolls the batch back. This
// is the fencing that keeps samples of a target we no longer own (or that
// we cannot prove we own) away from the sink.
type gate struct {
	next    storage.AppendableV2
	dropped *prometheus.CounterVec

	live atomic.Pointer[liveness]

	mu      sync.RWMutex
	entries map[string]*gateEntry
}

func newGate(next storage.AppendableV2, dropped *prometheus.CounterVec) *gate {
	return &gate{next: next, dropped: dropped, entries: map[string]*gateEntry{}}
}

// setLive makes l the session whose liveness gates every batch; nil shuts
// the gate for all targets.
func (g *gate) setLive(l liveness) {
	if l == nil {
		g.live.Store(nil)
		return
	}
	g.live.Store(&l)
}

// set puts target id in state st, keeping its counters.
func (g *gate) set(id string, st gateState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entries[id]
	if e == nil {
		e = &gateEntry{}
		g.entries[id] = e
	}
	e.state.Store(int32(st))
}

// retire lets only staleness markers of id through until until.
func (g *gate) retire(id string, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	e := g.entries[id]
	if e == nil {
		e = &gateEntry{}
		g.entries[id] = e
	}
	e.retiredUntil.Store(until.UnixNano())
	e.state.Store(int32(gateRetired))
}

// remove shuts the gate for id.
func (g *gate) remove(id string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.entries, id)
}

// removeAll shuts the gate for every target.
func (g *gate) removeAll() {
	g.mu.Lock()
	defer g.mu.Unlock()
	clear(g.entries)
}

// expire forgets retired entries whose deadline has passed.
func (g *gate) expire(now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, e := range g.entries {
		if gateState(e.state.Load()) == gateRetired && now.UnixNano() > e.retiredUntil.Load() {
			delete(g.entries, id)
		}
	}
}

// stats returns the series count of id's last forwarded batch and when it
// was forwarded.
func (g *gate) stats(id string) (series int64, last time.Time, ok bool) {
	g.mu.RLock()
	e := g.entries[id]
	g.mu.RUnlock()
	if e == nil {
		return 0, time.Time{}, false
	}
	if ns := e.lastCommit.Load(); ns != 0 {
		last = time.Unix(0, ns)
	}
	return e.series.Load(), last, true
}

// admit decides, at commit time, whether a batch of target id goes on. It
// returns the entry to account the batch to, or the reason to drop it.
func (g *gate) admit(id string, staleOnly bool, now time.Time) (*gateEntry, string) {
	if id == "" {
		return nil, dropNoTarget
	}
	lp := g.live.Load()
	if lp == nil {
		return nil, dropSession
	}
	l := *lp
	select {
	case <-l.Done():
		return nil, dropSession
	default:
	}
	if !now.Before(l.Deadline()) {
		return nil, dropSession
	}
	g.mu.RLock()
	e := g.entries[id]
	g.mu.RUnlock()
	if e == nil {
		return nil, dropUnowned
	}
	switch gateState(e.state.Load()) {
	case gateOwned:
		return e, ""
	case gatePreparing:
		return nil, dropPreparing
	case gateRetired:
		if staleOnly && now.UnixNano() <= e.retiredUntil.Load() {
			return e, ""
		}
	}
	return nil, dropUnowned
}

// AppenderV2 implements storage.AppendableV2. The target comes from the
// context (scrape.Options.PassMetadataInContext must be set).
func (g *gate) AppenderV2(ctx context.Context) storage.AppenderV2 {
	var id string
	if t, ok := scrape.TargetFromContext(ctx); ok {
		id = t.GetValue(targetIDLabel)
	}
	return &gateAppender{g: g, id: id, next: g.next.AppenderV2(ctx)}
}

// gateAppender passes appends straight to the sink's appender (which only
// buffers until Commit) and decides on Commit.
type gateAppender struct {
	g        *gate
	id       string
	next     storage.AppenderV2
	n, stale int
}

func (a *gateAppender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	a.n++
	if isStale(v, h, fh) {
		a.stale++
	}
	return a.next.Append(ref, ls, st, t, v, h, fh, opts)
}

// Commit forwards the batch if the gate admits it, else rolls it back and
// counts it. A dropped batch is not an error for the scrape loop: the
// target is healthy, it is just not ours to report.
func (a *gateAppender) Commit() error {
	now := time.Now()
	e, reason := a.g.admit(a.id, a.n > 0 && a.n == a.stale, now)
	if reason != "" {
		if a.g.dropped != nil && a.n > 0 {
			a.g.dropped.WithLabelValues(reason).Add(float64(a.n))
		}
		return a.next.Rollback()
	}
	if err := a.next.Commit(); err != nil {
		return err
	}
	if live := a.n - a.stale; live > 0 {
		e.series.Store(int64(live))
		e.lastCommit.Store(now.UnixNano())
	}
	return nil
}

func (a *gateAppender) Rollback() error { return a.next.Rollback() }

func isStale(v float64, h *histogram.Histogram, fh *histogram.FloatHistogram) bool {
	switch {
	case fh != nil:
		return value.IsStaleNaN(fh.Sum)
	case h != nil:
		return value.IsStaleNaN(h.Sum)
	default:
		return value.IsStaleNaN(v)
	}
}
