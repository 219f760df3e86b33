package otlp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Errors of Append and Commit.
var (
	ErrNoMetricName = errors.New("otlp: sample without metric name")
	ErrDone         = errors.New("otlp: appender already committed or rolled back")
)

// Names and labels with a meaning in the conversion.
const (
	targetInfoName     = "target_info"
	scopeInfoName      = "otel_scope_info"
	scopeLabelPrefix   = "otel_scope_"
	scopeNameLabel     = "otel_scope_name"
	scopeVersionLabel  = "otel_scope_version"
	scopeSchemaURLabel = "otel_scope_schema_url"
	metadataTypeKey    = "prometheus.type"
)

// appender collects one scrape of one target. Number points go straight into
// pdata; classic histograms and summaries are assembled from their series
// and written in Commit; points that need the per-series state (start
// timestamps) are listed and completed in Commit, under the target state's
// lock, so that a rolled-back scrape leaves the state as it was.
type appender struct {
	ctx    context.Context
	a      *Appendable
	ts     *targetState
	target *scrape.Target

	md        pmetric.Metrics
	resources []*resourceBuilder
	last      *resourceBuilder

	// scratch is the reusable memory, taken from s (pending and
	// pendingDist: points of the pdata path waiting for their start time;
	// fams, log, pend, out: the encoding path's; attrs, scopeAttrs, hbuf:
	// reused across Append calls), and returned to it by release.
	scratch
	s *scratch

	// created holds the values of counters' _created series (ms) by label
	// hash without the metric name, when they arrive as series.
	created map[uint64]int64

	// The encoding path (fast.go): tab is the target's series table while
	// this appender holds it, seq this appender's number in it; fast is
	// set while the scrape is being encoded.
	tab    *seriesTable
	seq    uint64
	fast   bool
	res    *resEnc
	points int

	cur  sampleLabels // the labels of the sample being appended
	done bool
}

// sampleLabels are the labels of one sample that the conversion reads.
type sampleLabels struct {
	name, job, instance, le, quantile string
	scope                             scopeKey
	hasScope                          bool
}

// pendingNumber is a cumulative number point waiting for its start time.
type pendingNumber struct {
	dp    pmetric.NumberDataPoint
	ls    labels.Labels
	key   uint64
	st, t int64
	v     float64
	stale bool
	// monotonic streams (counters) reset when they decrease.
	monotonic bool
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

// scratch is the reusable memory of an appender; it goes back to a pool
// when the appender is done, so that a scrape's bookkeeping does not
// allocate.
type scratch struct {
	pending     []pendingNumber
	pendingDist []pendingDist
	attrs       []labels.Label // the point's attributes
	scopeAttrs  []labels.Label // otel_scope_<key> labels, prefix removed
	hbuf        []byte
	fams        []*famEnc
	log         []logRec
	pend        []pendStart
	out         []byte // the encoded request; reused, see EncodedConsumer
}

// reset empties s, keeping the memory, and drops its references into a
// scrape's data (log and out hold no pointers).
func (s *scratch) reset() {
	clear(s.pending)
	clear(s.pendingDist)
	clear(s.attrs)
	clear(s.scopeAttrs)
	clear(s.fams)
	clear(s.pend)
	*s = scratch{
		pending: s.pending[:0], pendingDist: s.pendingDist[:0],
		attrs: s.attrs[:0], scopeAttrs: s.scopeAttrs[:0], hbuf: s.hbuf[:0],
		fams: s.fams[:0], log: s.log[:0], pend: s.pend[:0],
		out: s.out[:0],
	}
}

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func newAppender(ctx context.Context, a *Appendable, ts *targetState) *appender {
	t, _ := scrape.TargetFromContext(ctx)
	s := scratchPool.Get().(*scratch)
	ap := &appender{ctx: ctx, a: a, ts: ts, target: t, scratch: *s, s: s}
	// Scrapes of one target do not overlap, except while a reloaded
	// target's old loop ends: the later appender then goes without the
	// table (and without the encoding path).
	if ts.tab.mu.TryLock() {
		ap.tab = ts.tab
		ap.tab.seq++
		ap.seq = ap.tab.seq
		ap.fast = a.enc != nil
	}
	if !ap.fast {
		// The encoding path builds no pdata; toSlow makes it if needed.
		ap.md = pmetric.NewMetrics()
	}
	return ap
}

// release returns the scratch memory, without references into the
// scrape's data, to the pool.
func (ap *appender) release() {
	// The same scratch goes back (no allocation per scrape), with the
	// slices as they grew.
	ap.scratch.reset()
	*ap.s = ap.scratch
	scratchPool.Put(ap.s)
	ap.s = nil
	ap.scratch = scratch{}
	ap.res = nil
	if ap.tab != nil {
		ap.tab.sweep()
		ap.tab.mu.Unlock()
		ap.tab = nil
	}
}

// Append implements storage.AppenderV2. It never fails for a sample with a
// name: what does not fit a family is kept as a gauge of its own.
//
// The reference it returns indexes the target's series table; with the
// table held, a sample whose series comes with the reference of the last
// scrape (as the scrape loop's cache passes it) costs no label parsing.
func (ap *appender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	if ap.done {
		return 0, ErrDone
	}
	if ap.tab == nil {
		key := seriesRef(ls)
		return key, ap.appendSlow(ls, uint64(key), st, t, v, h, fh, opts)
	}
	e := ap.tab.get(ref, ls)
	switch {
	case e != nil && e.matches(&opts):
	case e != nil && e.alt != nil && e.alt.matches(&opts) && !(ap.fast && e.seen == ap.seq):
		// Back to the other options (after a staleness marker). Within
		// one scrape the log needs the entry unchanged: resolve replays.
		e.resolved, *e.alt = *e.alt, e.resolved
	default:
		var err error
		if e, err = ap.resolve(e, ls, opts); err != nil {
			return 0, err
		}
	}
	e.seen = ap.seq
	if ap.fast {
		if ap.appendFast(e, st, t, v, h, fh, opts) {
			return e.ref, nil
		}
		ap.toSlow()
	}
	return e.ref, ap.appendSlow(ls, e.key, st, t, v, h, fh, opts)
}

// appendSlow converts one sample into pdata; key identifies its series'
// state.
func (ap *appender) appendSlow(ls labels.Labels, key uint64, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) error {
	ap.splitLabels(ls)
	if ap.cur.name == "" {
		return ErrNoMetricName
	}
	rb := ap.resource(ap.cur.job, ap.cur.instance)

	switch ap.cur.name {
	case targetInfoName:
		// target_info describes the resource: its labels become resource
		// attributes and it is no metric itself.
		attrs := rb.rm.Resource().Attributes()
		for _, l := range ap.attrs {
			attrs.PutStr(l.Name, l.Value)
		}
		return nil
	case scopeInfoName:
		sb := rb.scope(&ap.cur, ap.scopeAttrs, ap.a.opts)
		attrs := sb.sm.Scope().Attributes()
		for _, l := range ap.attrs {
			attrs.PutStr(l.Name, l.Value)
		}
		return nil
	}
	sb := rb.defaultScope(ap.a.opts)
	if ap.cur.hasScope {
		sb = rb.scope(&ap.cur, ap.scopeAttrs, ap.a.opts)
	}

	kind := kindOf(opts.Metadata.Type, h, fh)
	switch kind {
	case kindExponential, kindCustomBuckets, kindGaugeExponential, kindGaugeCustomBuckets:
		ap.appendNative(sb, kind, key, st, t, h, fh, opts)
	case kindHistogram, kindSummary:
		if !ap.appendClassic(sb, kind, ls, st, t, v, opts) {
			// Not part of its family after all (a broken exposition): keep
			// it as what it is, a series of its own.
			ap.appendNumber(sb, kindGauge, ls, key, st, t, v, opts)
		}
	case kindGaugeHistogram:
		// OTLP has no gauge histogram and the specification drops them; we
		// keep every series (_bucket, _gcount, _gsum) as a gauge, which is
		// exactly what Prometheus stores for them.
		ap.appendNumber(sb, kindGauge, ls, key, st, t, v, opts)
	case kindCounter:
		if isCreatedSeries(ap.cur.name, opts.MetricFamilyName) {
			// An OpenMetrics _created series not parsed as a start
			// timestamp (ParseST off): it is the start of its counter.
			ap.appendCreated(ls, v)
			return nil
		}
		ap.appendNumber(sb, kind, ls, key, st, t, v, opts)
	default:
		ap.appendNumber(sb, kind, ls, key, st, t, v, opts)
	}
	return nil
}

// splitLabels reads the labels the conversion needs and collects the rest,
// the point's attributes, in ap.attrs. Empty values are dropped, as the
// Collector does: in Prometheus an empty label is an absent label.
func (ap *appender) splitLabels(ls labels.Labels) {
	ap.cur = sampleLabels{}
	ap.attrs = ap.attrs[:0]
	ap.scopeAttrs = ap.scopeAttrs[:0]
	ls.Range(func(l labels.Label) {
		switch l.Name {
		case model.MetricNameLabel:
			ap.cur.name = l.Value
			return
		case model.JobLabel:
			ap.cur.job = l.Value
			return
		case model.InstanceLabel:
			ap.cur.instance = l.Value
			return
		case model.BucketLabel:
			ap.cur.le = l.Value
		case model.QuantileLabel:
			ap.cur.quantile = l.Value
		}
		if len(l.Name) > len(scopeLabelPrefix) && strings.HasPrefix(l.Name, scopeLabelPrefix) {
			ap.cur.hasScope = true
			switch l.Name {
			case scopeNameLabel:
				ap.cur.scope.name = l.Value
			case scopeVersionLabel:
				ap.cur.scope.version = l.Value
			case scopeSchemaURLabel:
				ap.cur.scope.schemaURL = l.Value
			default:
				ap.scopeAttrs = append(ap.scopeAttrs, labels.Label{Name: l.Name[len(scopeLabelPrefix):], Value: l.Value})
			}
			return
		}
		if l.Value != "" {
			ap.attrs = append(ap.attrs, l)
		}
	})
	if len(ap.scopeAttrs) > 0 {
		ap.cur.scope.attrs = hashLabels(ap.scopeAttrs)
	}
}

func seriesRef(ls labels.Labels) storage.SeriesRef {
	if h := ls.Hash(); h != 0 {
		return storage.SeriesRef(h)
	}
	return 1
}

func (ap *appender) appendNumber(sb *scopeBuilder, kind metricKind, ls labels.Labels, key uint64, st, t int64, v float64, opts storage.AppendV2Options) {
	fam := sb.family(ap.cur.name, kind, opts)
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
		ap.pending = append(ap.pending, pendingNumber{dp: dp, ls: ls, key: key, st: st, t: t, v: v, stale: stale, monotonic: kind == kindCounter})
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

// createdFor returns the _created start of the counter point p, if its
// family exposed one.
func (ap *appender) createdFor(p *pendingNumber) int64 {
	var k uint64
	k, ap.hbuf = p.ls.HashWithoutLabels(ap.hbuf)
	return ap.created[k]
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
	hint, points := ap.ts.sizeHint, ap.ts.pointHints
	ap.ts.mu.Unlock()
	rb := &resourceBuilder{key: key, rm: rm, hint: hint, points: points}
	ap.resources = append(ap.resources, rb)
	ap.last = rb
	return rb
}

// Commit assembles the classic histograms and summaries, completes the
// start timestamps, updates the state and hands the scrape to the Consumer:
// encoded if it was encoded, else as pdata.
func (ap *appender) Commit() error {
	if ap.done {
		return ErrDone
	}
	ap.done = true
	if ap.fast {
		return ap.commitFast()
	}
	return ap.commitSlow()
}

func (ap *appender) commitSlow() error {
	metrics := 0
	for _, rb := range ap.resources {
		for _, sb := range rb.scopes {
			for _, f := range sb.grouped {
				ap.finishClassic(sb, f)
			}
			metrics += sb.metrics.Len()
		}
	}
	ts := ap.ts
	ts.mu.Lock()
	for i := range ap.pending {
		p := &ap.pending[i]
		var start int64
		if p.stale {
			start = ts.startOfStale(p.key, nil, p.t)
		} else {
			st := p.st
			if st == 0 && ap.created != nil {
				st = ap.createdFor(p)
			}
			start = ts.startFor(p.key, nil, st, p.t, p.v, nil, p.monotonic)
		}
		p.dp.SetStartTimestamp(msToTimestamp(start))
	}
	for i := range ap.pendingDist {
		p := &ap.pendingDist[i]
		var start int64
		switch {
		case p.stale:
			start = ts.startOfStale(p.key, nil, p.t)
		case p.reset && p.st == 0:
			// The exposition says this is a reset (native histogram hint).
			start = ts.startFor(p.key, nil, p.t-1, p.t, p.count, p.buckets, true)
		default:
			start = ts.startFor(p.key, nil, p.st, p.t, p.count, p.buckets, true)
		}
		p.setStart(msToTimestamp(start))
	}
	ts.sizeHint = metrics
	ts.pointHints = ap.pointCounts()
	ts.committed()
	ts.mu.Unlock()
	ap.release()

	// A resource can be left without metrics (only target_info), a scope
	// without metrics (only otel_scope_info).
	ap.md.ResourceMetrics().RemoveIf(func(rm pmetric.ResourceMetrics) bool {
		rm.ScopeMetrics().RemoveIf(func(sm pmetric.ScopeMetrics) bool { return sm.Metrics().Len() == 0 })
		return rm.ScopeMetrics().Len() == 0
	})
	points := ap.md.DataPointCount()
	if points == 0 {
		return nil
	}
	return ap.consumed(points, ap.a.next.ConsumeMetrics(ap.ctx, ap.md))
}

// consumed counts a scrape of points handed to the Consumer, which returned
// err, and wraps err.
func (ap *appender) consumed(points int, err error) error {
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
	ap.release()
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
	key    resourceKey
	rm     pmetric.ResourceMetrics
	hint   int
	points map[string]int // points per metric in the last scrape
	def    *scopeBuilder
	scopes []*scopeBuilder
}

// scopeKey identifies an instrumentation scope: otel_scope_name, _version,
// _schema_url and a hash of the other otel_scope_<key> labels.
type scopeKey struct {
	name, version, schemaURL string
	attrs                    uint64
}

// scopeBuilder collects the metrics of one scope of one resource.
type scopeBuilder struct {
	key      scopeKey
	sm       pmetric.ScopeMetrics
	metrics  pmetric.MetricSlice
	families map[familyKey]*family
	last     *family
	grouped  []*family // classic histograms and summaries, finished in Commit
	points   map[string]int
}

// defaultScope is the scope of samples without otel_scope_* labels: this
// converter.
func (rb *resourceBuilder) defaultScope(opts Options) *scopeBuilder {
	if rb.def == nil {
		rb.def = rb.newScope(scopeKey{}, rb.hint)
		rb.def.sm.Scope().SetName(opts.ScopeName)
		rb.def.sm.Scope().SetVersion(opts.ScopeVersion)
	}
	return rb.def
}

// scope returns the scope named by a sample's otel_scope_* labels.
func (rb *resourceBuilder) scope(cur *sampleLabels, attrs []labels.Label, opts Options) *scopeBuilder {
	if !cur.hasScope {
		return rb.defaultScope(opts)
	}
	for _, sb := range rb.scopes {
		if sb != rb.def && sb.key == cur.scope {
			return sb
		}
	}
	key := scopeKey{
		name:      strings.Clone(cur.scope.name),
		version:   strings.Clone(cur.scope.version),
		schemaURL: strings.Clone(cur.scope.schemaURL),
		attrs:     cur.scope.attrs,
	}
	sb := rb.newScope(key, 0)
	sb.sm.Scope().SetName(key.name)
	sb.sm.Scope().SetVersion(key.version)
	sb.sm.SetSchemaUrl(key.schemaURL)
	putAttributes(sb.sm.Scope().Attributes(), attrs)
	return sb
}

func (rb *resourceBuilder) newScope(key scopeKey, hint int) *scopeBuilder {
	sm := rb.rm.ScopeMetrics().AppendEmpty()
	sm.Metrics().EnsureCapacity(hint)
	sb := &scopeBuilder{key: key, sm: sm, metrics: sm.Metrics(), families: make(map[familyKey]*family, hint), points: rb.points}
	rb.scopes = append(rb.scopes, sb)
	return sb
}

type familyKey struct {
	name string
	kind metricKind
}

// family is one OTLP metric being built.
type family struct {
	key       familyKey
	metric    pmetric.Metric
	numbers   pmetric.NumberDataPointSlice
	groups    map[uint64]*group
	order     []*group
	lastGroup *group
	meta      storage.AppendV2Options // Metadata only, for fallbacks
}

// family returns the metric name of kind, creating it. Samples of a family
// arrive together, so the previous one is checked first.
func (sb *scopeBuilder) family(name string, kind metricKind, opts storage.AppendV2Options) *family {
	if f := sb.last; f != nil && f.key.kind == kind && f.key.name == name {
		return f
	}
	if f, ok := sb.families[familyKey{name, kind}]; ok {
		sb.last = f
		return f
	}
	f := &family{key: familyKey{name: strings.Clone(name), kind: kind}}
	f.meta.Metadata = opts.Metadata
	m := sb.metrics.AppendEmpty()
	m.SetName(f.key.name)
	m.SetDescription(opts.Metadata.Help)
	m.SetUnit(metricUnit(name, opts.Metadata))
	m.Metadata().PutStr(metadataTypeKey, metricType(opts.Metadata))
	hint := sb.points[name]
	switch kind {
	case kindGauge:
		f.numbers = m.SetEmptyGauge().DataPoints()
		f.numbers.EnsureCapacity(hint)
	case kindCounter, kindInfo, kindStateset:
		// Info and stateset values are counts of things that are (1) or
		// are not (0): summed, not averaged, when attributes are
		// aggregated away, hence a non-monotonic Sum (specification).
		s := m.SetEmptySum()
		s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		s.SetIsMonotonic(kind == kindCounter)
		f.numbers = s.DataPoints()
		f.numbers.EnsureCapacity(hint)
	case kindHistogram, kindCustomBuckets:
		h := m.SetEmptyHistogram()
		h.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
		h.DataPoints().EnsureCapacity(hint)
		if kind == kindHistogram {
			f.groups = make(map[uint64]*group, hint)
			f.order = make([]*group, 0, hint)
		}
	case kindSummary:
		m.SetEmptySummary().DataPoints().EnsureCapacity(hint)
		f.groups = make(map[uint64]*group, hint)
		f.order = make([]*group, 0, hint)
	case kindExponential:
		m.SetEmptyExponentialHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	case kindGaugeExponential:
		// A native gauge histogram: each point stands alone. Delta is how
		// Prometheus's OTLP ingestion maps them back to gauge histograms.
		m.SetEmptyExponentialHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	case kindGaugeCustomBuckets:
		m.SetEmptyHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityDelta)
	}
	if kind == kindHistogram || kind == kindSummary {
		sb.grouped = append(sb.grouped, f)
	}
	f.metric = m
	sb.families[f.key] = f
	sb.last = f
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
	kindGaugeExponential
	kindCustomBuckets
	kindGaugeCustomBuckets
)

func (k metricKind) cumulative() bool {
	switch k {
	case kindCounter, kindInfo, kindStateset, kindHistogram, kindSummary, kindExponential, kindCustomBuckets:
		return true
	}
	return false
}

func kindOf(t model.MetricType, h *histogram.Histogram, fh *histogram.FloatHistogram) metricKind {
	if h != nil || fh != nil {
		schema, hint := int32(0), histogram.UnknownCounterReset
		if h != nil {
			schema, hint = h.Schema, h.CounterResetHint
		} else {
			schema, hint = fh.Schema, fh.CounterResetHint
		}
		gauge := hint == histogram.GaugeType || t == model.MetricTypeGaugeHistogram
		switch {
		case histogram.IsCustomBucketsSchema(schema) && gauge:
			return kindGaugeCustomBuckets
		case histogram.IsCustomBucketsSchema(schema):
			return kindCustomBuckets
		case gauge:
			return kindGaugeExponential
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

// hashLabels is FNV-1a over names and values, to tell scopes apart.
func hashLabels(ls []labels.Label) uint64 {
	h := uint64(fnvOffset64)
	for _, l := range ls {
		h = (fnvString(h, l.Name) ^ 0xff) * fnvPrime64
		h = (fnvString(h, l.Value) ^ 0xfe) * fnvPrime64
	}
	return h
}

// FNV-1a, 64 bits.
const (
	fnvOffset64 = 14695981039346656037
	fnvPrime64  = 1099511628211
)

// fnvString continues the FNV-1a hash h over s.
func fnvString(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime64
	}
	return h
}

// metricUnit is the OTLP unit of a metric named name: the family's unit in
// UCUM, or "" where it does not apply (unitApplies).
func metricUnit(name string, meta metadata.Metadata) string {
	if !unitApplies(name, meta.Type) {
		return ""
	}
	return unitToUCUM(meta.Unit)
}

// metricType is the Prometheus type recorded in a metric's metadata.
func metricType(meta metadata.Metadata) string {
	if meta.Type == "" {
		return string(model.MetricTypeUnknown)
	}
	return string(meta.Type)
}

// unitApplies tells whether the family's unit is the unit of the series
// name: the bucket and count series of a histogram or summary kept as
// gauges count observations, they are not in the unit.
func unitApplies(name string, t model.MetricType) bool {
	switch t {
	case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram, model.MetricTypeSummary:
		return !strings.HasSuffix(name, "_bucket") && !strings.HasSuffix(name, "_count") && !strings.HasSuffix(name, "_gcount")
	}
	return true
}

// pointCounts counts the points of every metric of the scrape, the sizes
// to expect next time.
func (ap *appender) pointCounts() map[string]int {
	counts := make(map[string]int, ap.ts.sizeHint)
	for _, rb := range ap.resources {
		for _, sb := range rb.scopes {
			for _, f := range sb.families {
				n := len(f.order)
				if f.key.kind != kindHistogram && f.key.kind != kindSummary {
					n = pointCount(f.metric)
				}
				counts[f.key.name] = max(counts[f.key.name], n)
			}
		}
	}
	return counts
}

func pointCount(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	}
	return 0
}
