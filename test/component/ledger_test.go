package component

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/allot-dev/allot/pkg/otlp"
	"github.com/allot-dev/allot/pkg/sink"
)

// entry is one `up` point as a scraper exported it.
type entry struct {
	scraper string
	ts      time.Time // the sample's timestamp: when the scrape ran
	at      time.Time // when the scraper exported it
	stale   bool
}

// ledger records which scraper exported each `up` point, by instance. The
// sink merges the scrapers' output into one series per target, as a real
// backend does; the ledger is what tells their contributions apart.
type ledger struct {
	mu   sync.Mutex
	byID map[string][]entry
}

func newLedger() *ledger { return &ledger{byID: map[string][]entry{}} }

// consumer notes what scraper exports and passes it on to next.
func (l *ledger) consumer(scraper string, next otlp.Consumer) otlp.Consumer {
	return otlp.ConsumerFunc(func(ctx context.Context, md pmetric.Metrics) error {
		l.record(scraper, md)
		return next.ConsumeMetrics(ctx, md)
	})
}

func (l *ledger) record(scraper string, md pmetric.Metrics) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		v, ok := rm.Resource().Attributes().Get("service.instance.id")
		if !ok {
			continue
		}
		inst := v.AsString()
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				m := ms.At(k)
				if m.Name() != "up" || m.Type() != pmetric.MetricTypeGauge {
					continue
				}
				dps := m.Gauge().DataPoints()
				for p := 0; p < dps.Len(); p++ {
					dp := dps.At(p)
					l.byID[inst] = append(l.byID[inst], entry{
						scraper: scraper,
						ts:      dp.Timestamp().AsTime(),
						at:      now,
						stale:   dp.Flags().NoRecordedValue(),
					})
				}
			}
		}
	}
}

// of returns every point of instance, in export order.
func (l *ledger) of(instance string) []entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.byID[instance])
}

// since returns the non-stale points of instance exported after t.
func (l *ledger) since(instance string, t time.Time, scrapers ...string) []entry {
	var out []entry
	for _, e := range l.of(instance) {
		if !e.stale && e.at.After(t) && (len(scrapers) == 0 || slices.Contains(scrapers, e.scraper)) {
			out = append(out, e)
		}
	}
	return out
}

// continuity describes one series in a time window.
type continuity struct {
	samples int
	// missing counts the scrapes that did not arrive: a gap of more than
	// 1.5 intervals between neighbours counts round(gap/interval) - 1.
	missing int
	// duplicated counts neighbours less than half an interval apart.
	duplicated int
	// stale counts staleness markers (NoRecordedValue), in the whole series.
	stale  int
	maxGap time.Duration
	minGap time.Duration
}

func (c continuity) anomalies() int { return c.missing + c.duplicated }

func (c continuity) String() string {
	return fmt.Sprintf("%d samples, %d missing, %d duplicated, %d stale, gaps %s..%s",
		c.samples, c.missing, c.duplicated, c.stale, c.minGap, c.maxGap)
}

// analyse looks at the samples of one series with timestamps in [from, to].
func analyse(ss []sink.Sample, from, to time.Time) continuity {
	var c continuity
	var ts []time.Time
	for _, s := range ss {
		if s.Stale {
			c.stale++
			continue
		}
		if s.T.Before(from) || s.T.After(to) {
			continue
		}
		ts = append(ts, s.T)
	}
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	c.samples = len(ts)
	c.minGap = time.Duration(math.MaxInt64)
	for i := 1; i < len(ts); i++ {
		gap := ts[i].Sub(ts[i-1])
		c.maxGap = max(c.maxGap, gap)
		c.minGap = min(c.minGap, gap)
		switch {
		case gap < interval/2:
			c.duplicated++
		case gap > 3*interval/2:
			c.missing += max(1, int(math.Round(float64(gap)/float64(interval)))-1)
		}
	}
	if len(ts) < 2 {
		c.minGap = 0
	}
	return c
}
