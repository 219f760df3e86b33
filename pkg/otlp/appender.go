package otlp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Errors of Append.
var (
	ErrNoMetricName = errors.New("otlp: sample without metric name")
	ErrDone         = errors.New("otlp: appender already committed or rolled back")
)

const (
	targetInfoName = "target_info"
	scopeInfoName  = "otel_scope_info"
)

// appender collects one scrape of one target. Number points go straight into
// pdata; points that need the per-series state (start timestamps) are listed
// in pending and completed in Commit, under the target state's lock.
type appender struct {
	ctx    context.Context
	a      *Appendable
	ts     *targetState
	target *scrape.Target

	md        pmetric.Metrics
	resources []*resourceBuilder
	last      *resourceBuilder

	pending     []pendingNumber
	pendingDist []pendingDist

	// scratch space reused across Append calls.
	attrs []labels.Label
	cur   sampleLabels
	hbuf  []byte
	done  bool

	// created holds the _created values of counters by label hash without
	// the metric name, when they arrive as series.
	created map[uint64]int64
}

// sampleLabels are the labels of one sample that the conversion reads.
type sampleLabels struct {
	name, job, instance, le, quantile string
}

// pendingDist is a cumulative distribution point waiting for its start time.
type pendingDist struct {
	setStart func(pcommon.Timestamp)
	key      uint64
	st, t    int64
	count    float64
	buckets  []uint64
	stale    bool
	reset    bool
}

// pendingNumber is a cumulative number point waiting for its start time.
type pendingNumber struct {
	dp    pmetric.NumberDataPoint
	ls    labels.Labels
	key   uint64
	st, t int64
	v     float64
	stale bool
}

func newAppender(ctx context.Context, a *Appendable, ts *targetState) *appender {
	t, _ := scrape.TargetFromContext(ctx)
	return &appender{
		ctx:    ctx,
		a:      a,
		ts:     ts,
		target: t,
		md:     pmetric.NewMetrics(),
	}
}

// Append implements storage.AppenderV2.
func (ap *appender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	if ap.done {
		return 0, ErrDone
	}
	ap.splitLabels(ls)
	if ap.cur.name == "" {
		return 0, ErrNoMetricName
	}
	if ref == 0 {
		ref = seriesRef(ls)
	}
	rb := ap.resource(ap.cur.job, ap.cur.instance)

	switch ap.cur.name {
	case targetInfoName:
		// target_info describes the resource; its labels become resource
		// attributes and it is not a metric itself.
		for _, l := range ap.attrs {
			rb.rm.Resource().Attributes().PutStr(l.Name, l.Value)
		}
		return ref, nil
	}

	kind := kindOf(opts.Metadata.Type, h, fh)
	switch kind {
	case kindExponential, kindCustomBuckets:
		ap.appendNative(rb, kind, uint64(ref), st, t, h, fh, opts)
	case kindHistogram, kindGaugeHistogram, kindSummary:
		if !ap.appendClassic(rb, kind, ls, st, t, v, opts) {
			// Not part of its family after all (broken exposition): keep it
			// as what it is, a series of its own.
			ap.appendNumber(rb, kindGauge, ls, uint64(ref), st, t, v, storage.AppendV2Options{Exemplars: opts.Exemplars})
		}
	case kindCounter:
		if fam := opts.MetricFamilyName; fam != "" && strings.HasSuffix(ap.cur.name, "_created") && ap.cur.name == fam+"_created" {
			// An OpenMetrics _created series not parsed as a start
			// timestamp (ParseST off): it is the start of its counter.
			ap.appendCreated(ls, v)
			return ref, nil
		}
		ap.appendNumber(rb, kind, ls, uint64(ref), st, t, v, opts)
	default:
		ap.appendNumber(rb, kind, ls, uint64(ref), st, t, v, opts)
	}
	return ref, nil
}

// splitLabels reads the labels the conversion needs and collects the rest,
// the point's attributes, in ap.attrs. Empty values are dropped, as the
// Collector does: in Prometheus an empty label is an absent label.
func (ap *appender) splitLabels(ls labels.Labels) {
	ap.cur = sampleLabels{}
	ap.attrs = ap.attrs[:0]
	ls.Range(func(l labels.Label) {
		switch l.Name {
		case model.MetricNameLabel:
			ap.cur.name = l.Value
		case model.JobLabel:
			ap.cur.job = l.Value
		case model.InstanceLabel:
			ap.cur.instance = l.Value
		default:
			switch l.Name {
			case model.BucketLabel:
				ap.cur.le = l.Value
			case model.QuantileLabel:
				ap.cur.quantile = l.Value
			}
			if l.Value != "" {
				ap.attrs = append(ap.attrs, l)
			}
		}
	})
}

func seriesRef(ls labels.Labels) storage.SeriesRef {
	if h := ls.Hash(); h != 0 {
		return storage.SeriesRef(h)
	}
	return 1
}

func (ap *appender) appendNumber(rb *resourceBuilder, kind metricKind, ls labels.Labels, key uint64, st, t int64, v float64, opts storage.AppendV2Options) {
	fam := rb.family(ap.cur.name, kind, opts)
	dp := fam.numbers.AppendEmpty()
	dp.SetTimestamp(msToTimestamp(t))
	stale := value.IsStaleNaN(v)
	if stale {
		dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
	} else {
		dp.SetDoubleValue(v)
	}
	putAttributes(dp.Attributes(), ap.attrs)
	if len(opts.Exemplars) > 0 {
		putExemplars(dp.Exemplars(), opts.Exemplars)
	}
	if kind.cumulative() {
		ap.pending = append(ap.pending, pendingNumber{dp: dp, ls: ls, key: key, st: st, t: t, v: v, stale: stale})
	}
}

// appendCreated records the value of a counter's _created series (seconds)
// as the start of the counter series with the same labels.
func (ap *appender) appendCreated(ls labels.Labels, v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
		return
	}
	var k uint64
	k, ap.hbuf = ls.HashWithoutLabels(ap.hbuf)
	if ap.created == nil {
		ap.created = make(map[uint64]int64)
	}
	ap.created[k] = int64(v * 1000)
}

func putAttributes(m pcommon.Map, ls []labels.Label) {
	m.EnsureCapacity(len(ls))
	for _, l := range ls {
		m.PutStr(l.Name, l.Value)
	}
}

// resource returns the builder of the resource (job, instance), usually the
// target's and the same as for the previous sample.
func (ap *appender) resource(job, instance string) *resourceBuilder {
	if rb := ap.last; rb != nil && rb.key.job == job && rb.key.instance == instance {
		return rb
	}
	for _, rb := range ap.resources {
		if rb.key.job == job && rb.key.instance == instance {
			ap.last = rb
			return rb
		}
	}
	key := resourceKey{job: strings.Clone(job), instance: strings.Clone(instance)}
	rm := ap.md.ResourceMetrics().AppendEmpty()
	ap.ts.mu.Lock()
	ap.ts.resourceFor(key, ap.target).CopyTo(rm.Resource())
	hint := ap.ts.sizeHint
	ap.ts.mu.Unlock()
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(ap.a.opts.ScopeName)
	sm.Scope().SetVersion(ap.a.opts.ScopeVersion)
	sm.Metrics().EnsureCapacity(hint)
	rb := &resourceBuilder{
		key:      key,
		rm:       rm,
		metrics:  sm.Metrics(),
		families: make(map[familyKey]*family, hint),
	}
	ap.resources = append(ap.resources, rb)
	ap.last = rb
	return rb
}

// Commit completes the start timestamps, hands the scrape to the Consumer
// and updates the state.
func (ap *appender) Commit() error {
	if ap.done {
		return ErrDone
	}
	ap.done = true
	for _, rb := range ap.resources {
		for _, f := range rb.grouped {
			ap.finishClassic(f)
		}
	}
	ts := ap.ts
	ts.mu.Lock()
	for i := range ap.pending {
		p := &ap.pending[i]
		var start int64
		switch {
		case p.stale:
			start = ts.startOfStale(p.key, p.t)
		default:
			st := p.st
			if st == 0 && ap.created != nil {
				st = ap.createdFor(p)
			}
			start = ts.startFor(p.key, st, p.t, p.v, nil)
		}
		p.dp.SetStartTimestamp(msToTimestamp(start))
	}
	for i := range ap.pendingDist {
		p := &ap.pendingDist[i]
		var start int64
		switch {
		case p.stale:
			start = ts.startOfStale(p.key, p.t)
		case p.reset && p.st == 0:
			start = ts.startFor(p.key, p.t-1, p.t, p.count, p.buckets)
		default:
			start = ts.startFor(p.key, p.st, p.t, p.count, p.buckets)
		}
		p.setStart(msToTimestamp(start))
	}
	n := 0
	for _, rb := range ap.resources {
		n += rb.metrics.Len()
	}
	ts.sizeHint = n
	ts.committed()
	ts.mu.Unlock()

	points := ap.md.DataPointCount()
	if points == 0 {
		return nil
	}
	err := ap.a.next.ConsumeMetrics(ap.ctx, ap.md)
	ap.a.metrics.commits.Inc()
	ap.a.metrics.points.Add(float64(points))
	if err != nil {
		ap.a.metrics.consumeErrors.Inc()
		return fmt.Errorf("otlp: consume scrape of %s: %w", ap.targetName(), err)
	}
	return nil
}

// Rollback drops the scrape.
func (ap *appender) Rollback() error {
	if ap.done {
		return ErrDone
	}
	ap.done = true
	ap.a.metrics.rollbacks.Inc()
	return nil
}

func (ap *appender) targetName() string {
	if ap.target == nil {
		return "unknown target"
	}
	return ap.target.String()
}

// resourceBuilder collects the metrics of one resource in one scrape.
type resourceBuilder struct {
	key      resourceKey
	rm       pmetric.ResourceMetrics
	metrics  pmetric.MetricSlice
	families map[familyKey]*family
	last     *family
	grouped  []*family // classic histograms and summaries, finished in Commit
}

type familyKey struct {
	name string
	kind metricKind
}

// family is one OTLP metric being built.
type family struct {
	key     familyKey
	metric  pmetric.Metric
	numbers pmetric.NumberDataPointSlice
	groups  map[uint64]*group
	order   []*group
}

// family returns the metric name of kind, creating it. Samples of a family
// arrive together, so the previous one is checked first.
func (rb *resourceBuilder) family(name string, kind metricKind, opts storage.AppendV2Options) *family {
	if f := rb.last; f != nil && f.key.kind == kind && f.key.name == name {
		return f
	}
	if f, ok := rb.families[familyKey{name, kind}]; ok {
		rb.last = f
		return f
	}
	f := &family{key: familyKey{name: strings.Clone(name), kind: kind}}
	m := rb.metrics.AppendEmpty()
	m.SetName(f.key.name)
	m.SetDescription(opts.Metadata.Help)
	m.SetUnit(opts.Metadata.Unit)
	if opts.Metadata.Type != "" {
		m.Metadata().PutStr("prometheus.type", string(opts.Metadata.Type))
	}
	switch kind {
	case kindGauge:
		f.numbers = m.SetEmptyGauge().DataPoints()
	case kindCounter, kindInfo, kindStateset:
		s := m.SetEmptySum()
		s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		s.SetIsMonotonic(kind == kindCounter)
		f.numbers = s.DataPoints()
	case kindHistogram, kindCustomBuckets:
		m.SetEmptyHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	case kindGaugeHistogram:
		// OTLP has no gauge histogram. A Histogram whose points each stand
		// alone is what Delta temporality describes; Prometheus's own OTLP
		// ingestion maps delta histograms back to gauge histograms.
		m.SetEmptyHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	case kindSummary:
		m.SetEmptySummary()
	case kindExponential:
		m.SetEmptyExponentialHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	}
	switch kind {
	case kindHistogram, kindGaugeHistogram, kindSummary:
		rb.grouped = append(rb.grouped, f)
	}
	f.metric = m
	rb.families[f.key] = f
	rb.last = f
	return f
}

// metricKind is the OTLP shape a Prometheus family converts to.
type metricKind uint8

const (
	kindGauge metricKind = iota
	kindCounter
	kindInfo
	kindStateset
	kindHistogram
	kindGaugeHistogram
	kindSummary
	kindExponential
	kindCustomBuckets
)

func (k metricKind) cumulative() bool {
	switch k {
	case kindCounter, kindHistogram, kindSummary, kindExponential, kindCustomBuckets:
		return true
	}
	return false
}

func kindOf(t model.MetricType, h *histogram.Histogram, fh *histogram.FloatHistogram) metricKind {
	switch {
	case h != nil:
		if histogram.IsCustomBucketsSchema(h.Schema) {
			return kindCustomBuckets
		}
		return kindExponential
	case fh != nil:
		if histogram.IsCustomBucketsSchema(fh.Schema) {
			return kindCustomBuckets
		}
		return kindExponential
	}
	switch t {
	case model.MetricTypeCounter:
		return kindCounter
	case model.MetricTypeHistogram:
		return kindHistogram
	case model.MetricTypeGaugeHistogram:
		return kindGaugeHistogram
	case model.MetricTypeSummary:
		return kindSummary
	case model.MetricTypeInfo:
		return kindInfo
	case model.MetricTypeStateset:
		return kindStateset
	}
	return kindGauge
}

// createdFor returns the _created start of the counter point p, if its
// family exposed one.
func (ap *appender) createdFor(p *pendingNumber) int64 {
	var k uint64
	k, ap.hbuf = p.ls.HashWithoutLabels(ap.hbuf)
	return ap.created[k]
}
