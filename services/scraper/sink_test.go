package scraper

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
)

// batch is one committed scrape as the sink saw it.
type batch struct {
	scraper string
	target  string    // catalog id, from the scrape target in the context
	ts      int64     // timestamp of the batch's `up` sample (ms), or of its first sample
	up      float64   // value of `up`, NaN-free; -1 if the batch has none
	stale   bool      // every sample is a staleness marker
	at      time.Time // when it was committed
}

// recorder is a storage.AppendableV2 sink that records every committed
// batch, per scraper, for exact assertions.
type recorder struct {
	mu    sync.Mutex
	byID  map[string][]batch
	names map[string]bool // every metric name seen
}

// For returns the appendable scraper should write to.
func (r *recorder) For(scraper string) storage.AppendableV2 {
	return recorderFor{r: r, scraper: scraper}
}

// target returns the batches of target id, in commit order.
func (r *recorder) target(id string) []batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.byID[id])
}

// snapshot returns every batch, grouped by target.
func (r *recorder) snapshot() []batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []batch
	for _, bs := range r.byID {
		out = append(out, bs...)
	}
	return out
}

// byTarget returns the non-stale batches per target.
func (r *recorder) byTarget() map[string][]batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]batch, len(r.byID))
	for id, bs := range r.byID {
		for _, b := range bs {
			if !b.stale {
				out[id] = append(out[id], b)
			}
		}
	}
	return out
}

// count is the number of non-stale batches of target id.
func (r *recorder) count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, b := range r.byID[id] {
		if !b.stale {
			n++
		}
	}
	return n
}

// seen says whether a sample of metric name was ever forwarded.
func (r *recorder) seen(name string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.names[name]
}

type recorderFor struct {
	r       *recorder
	scraper string
}

func (f recorderFor) AppenderV2(ctx context.Context) storage.AppenderV2 {
	a := &recordingAppender{r: f.r, b: batch{scraper: f.scraper, up: -1}}
	if t, ok := scrape.TargetFromContext(ctx); ok {
		a.b.target = t.GetValue(targetIDLabel)
	}
	return a
}

type recordingAppender struct {
	r     *recorder
	b     batch
	n     int
	stale int
	names map[string]bool
}

func (a *recordingAppender) Append(_ storage.SeriesRef, ls labels.Labels, _, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	name := ls.Get(labels.MetricName)
	a.n++
	if isStale(v, h, fh) {
		a.stale++
	}
	if a.n == 1 {
		a.b.ts = t
	}
	if name == "up" {
		a.b.ts = t
		if !isStale(v, h, fh) {
			a.b.up = v
		}
	}
	if a.names == nil {
		a.names = map[string]bool{}
	}
	a.names[name] = true
	return storage.SeriesRef(a.n), nil
}

func (a *recordingAppender) Commit() error {
	if a.n == 0 {
		return nil
	}
	a.b.stale = a.n == a.stale
	a.b.at = time.Now()
	a.r.mu.Lock()
	if a.r.byID == nil {
		a.r.byID, a.r.names = map[string][]batch{}, map[string]bool{}
	}
	a.r.byID[a.b.target] = append(a.r.byID[a.b.target], a.b)
	for n := range a.names {
		a.r.names[n] = true
	}
	a.r.mu.Unlock()
	return nil
}

func (a *recordingAppender) Rollback() error { return nil }
