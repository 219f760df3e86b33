package otlp

import (
	"sync"
	"time"

	"github.com/prometheus/prometheus/scrape"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// sweepEvery and idleCommits bound the series state of a target: every
// sweepEvery commits, series not seen in the last idleCommits commits are
// dropped. Series that vanish normally get a staleness marker and are dropped
// at once; this catches the rest (explicit timestamps, sample limits).
const (
	sweepEvery  = 16
	idleCommits = 32
)

// targetState is the conversion state of one target: per series, the start
// timestamp and the previous value for reset detection. Appenders read and
// write it only in Commit, under mu, so a scrape that is rolled back leaves
// no trace.
type targetState struct {
	key     uint64
	opts    Options
	targets []*scrape.Target // guarded by Appendable.mu; the newest only
	// lastUsed is guarded by Appendable.mu.
	lastUsed time.Time

	// tab is the series table of the appenders (it has its own lock).
	tab *seriesTable

	mu        sync.Mutex
	series    map[uint64]*seriesState
	commits   uint64
	resources map[resourceKey]pcommon.Resource
	// sizeHint is the number of metrics of the last commit and pointHints
	// the number of points of each, to presize (replaced, never changed).
	sizeHint   int
	pointHints map[string]int
}

// seriesState is what the true-reset-point rule needs of one cumulative
// stream: when it started and its last value (count for distributions).
type seriesState struct {
	start   int64 // ms
	last    float64
	buckets []uint64 // last bucket counts of a distribution, for reset detection
	seen    uint64   // commit number of the last observation
	// dead is set when the state leaves the map, so that a pointer cached
	// in a series table is not used any more.
	dead bool
}

func newTargetState(key uint64, t *scrape.Target, opts Options) *targetState {
	ts := &targetState{
		key:       key,
		opts:      opts,
		tab:       newSeriesTable(),
		series:    make(map[uint64]*seriesState),
		resources: make(map[resourceKey]pcommon.Resource),
	}
	if t != nil {
		ts.targets = []*scrape.Target{t}
	}
	return ts
}

// forget empties the state; an appender still open on it commits into an
// empty map and starts afresh.
func (ts *targetState) forget() {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, s := range ts.series {
		s.dead = true
	}
	clear(ts.series)
	clear(ts.resources)
}

// lookup returns the live state of key, through the cache of a series
// table entry (nil without one). Must hold ts.mu.
func (ts *targetState) lookup(key uint64, cache **seriesState) *seriesState {
	if cache == nil {
		return ts.series[key]
	}
	if s := *cache; s != nil && !s.dead {
		return s
	}
	s := ts.series[key]
	*cache = s
	return s
}

// startFor applies the true-reset-point rule to one cumulative observation
// of series key at t with value v (counters) or count v (distributions).
// Only a monotonic stream can reset; a non-monotonic one (info, stateset)
// keeps the start of its first observation.
// st is the start timestamp from the scrape (0 if none); it wins when sane.
// It returns the start timestamp to report, in ms. Must hold ts.mu.
func (ts *targetState) startFor(key uint64, cache **seriesState, st, t int64, v float64, buckets []uint64, monotonic bool) int64 {
	s := ts.lookup(key, cache)
	if s == nil {
		s = &seriesState{start: t}
		ts.series[key] = s
		if cache != nil {
			*cache = s
		}
		if st > 0 && st <= t {
			s.start = st
		}
		s.last, s.seen = v, ts.commits
		s.buckets = append(s.buckets[:0], buckets...)
		return s.start
	}
	switch {
	case st > 0 && st <= t:
		s.start = st
	case monotonic && (v < s.last || bucketsDecreased(buckets, s.buckets)):
		// A reset: the stream restarted somewhere in (previous, t]. Like the
		// Collector's adjuster, say it started 1 ms before this point.
		s.start = t - 1
	}
	s.last, s.seen = v, ts.commits
	s.buckets = append(s.buckets[:0], buckets...)
	return s.start
}

// startOfStale returns the start of a series that got a staleness marker
// and forgets the series: if it comes back, it is a new stream.
func (ts *targetState) startOfStale(key uint64, cache **seriesState, t int64) int64 {
	s := ts.lookup(key, cache)
	if s == nil {
		return t
	}
	delete(ts.series, key)
	s.dead = true
	return s.start
}

// committed ends a commit: it counts it and now and then drops idle series.
func (ts *targetState) committed() {
	ts.commits++
	if ts.commits%sweepEvery != 0 {
		return
	}
	for k, s := range ts.series {
		if ts.commits-s.seen > idleCommits {
			s.dead = true
			delete(ts.series, k)
		}
	}
}

func bucketsDecreased(cur, prev []uint64) bool {
	if len(cur) != len(prev) {
		// A different layout is not a reset by itself.
		return false
	}
	for i := range cur {
		if cur[i] < prev[i] {
			return true
		}
	}
	return false
}
