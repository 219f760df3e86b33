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
	names   []string  // metric names in the batch
	stale   bool      // every sample is a staleness marker
	at      time.Time // when it was committed
}

// recorder is a storage.AppendableV2 sink that records every committed
// batch, per scraper, for exact assertions.
type recorder struct {
	mu      sync.Mutex
	batches []batch
}

// For returns the appendable scraper should write to.
func (r *recorder) For(scraper string) storage.AppendableV2 {
	return recorderFor{r: r, scraper: scraper}
}

func (r *recorder) snapshot() []batch {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.batches)
}

// byTarget returns the non-stale batches per target.
func (r *recorder) byTarget() map[string][]batch {
	out := map[string][]batch{}
	for _, b := range r.snapshot() {
		if !b.stale {
			out[b.target] = append(out[b.target], b)
		}
	}
	return out
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
	a.b.names = append(a.b.names, name)
	return storage.SeriesRef(a.n), nil
}

func (a *recordingAppender) Commit() error {
	if a.n == 0 {
		return nil
	}
	a.b.stale = a.n == a.stale
	a.b.at = time.Now()
	a.r.mu.Lock()
	a.r.batches = append(a.r.batches, a.b)
	a.r.mu.Unlock()
	return nil
}

func (a *recordingAppender) Rollback() error { return nil }
