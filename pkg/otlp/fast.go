package otlp

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"google.golang.org/protobuf/encoding/protowire"
)

// The encoding path. When the Consumer is an EncodedConsumer, an appender
// that holds its target's series table writes every sample straight into
// OTLP protobuf: per metric a buffer of encoded data points, the point's
// attributes copied from the series' entry (encoded once, when the series
// first appeared), the start timestamp left as a fixed-size slot that Commit
// fills under the state lock. Commit wraps the buffers into one
// ResourceMetrics. Whatever the encoder does not handle (see resolve and
// appendFast) sends the scrape down the pdata path: the samples appended so
// far are replayed into the pdata builder from a log, and the scrape
// continues there, so both paths always produce the same metrics.

// logRec is one sample taken by the encoder, for a replay into the pdata
// builder, and for a number point with a start timestamp slot, where the
// slot is. It holds no pointers (the entry is an index into the table, which
// does not move or reuse entries while an appender holds it), so that
// appending it costs no write barrier while the collector runs, and the log
// needs no clearing.
type logRec struct {
	idx   uint32 // of the entry in seriesTable.entries
	off   int32  // of the 8 bytes of the start timestamp in the family's buf; -1: none
	st, t int64
	v     float64
}

// pendStart is the start timestamp slot of a classic histogram or summary
// point, to fill in Commit; the rest (key, times, count, bucket counts)
// is g's, which does not change until then.
type pendStart struct {
	f   *famEnc
	off int // of the 8 bytes in f.buf
	g   *groupEnc
}

// resolve (re)derives entry e of ls (nil: a new entry) from the labels and
// the options: what the encoder does with its samples.
func (ap *appender) resolve(e *entry, ls labels.Labels, opts storage.AppendV2Options) (*entry, error) {
	ap.splitLabels(ls)
	if ap.cur.name == "" {
		return nil, ErrNoMetricName
	}
	if e == nil {
		e = ap.tab.add(ls)
		e.key = uint64(seriesRef(ls))
	} else {
		if ap.fast && e.seen == ap.seq {
			// The series comes again in this scrape with other options;
			// the log refers to the entry as it was.
			ap.toSlow()
		}
		// Keep the current resolution as the alternative, and reuse the
		// old alternative's buffer.
		if e.alt == nil {
			e.alt = new(resolved)
		}
		e.resolved, *e.alt = resolved{attrs: e.alt.attrs[:0]}, e.resolved
	}
	e.famName = strings.Clone(opts.MetricFamilyName)
	e.meta = opts.Metadata

	name := ap.cur.name
	if name == targetInfoName || name == scopeInfoName || ap.cur.hasScope {
		return e, nil
	}
	kind := kindOf(opts.Metadata.Type, nil, nil)
	switch kind {
	case kindHistogram, kindSummary:
		suffix, bound, label, ok := classicRole(kind, name, opts.MetricFamilyName, ap.cur.le, ap.cur.quantile)
		if ok {
			ap.resolveClassic(e, ls, kind, suffix, bound, label)
			e.res = ap.tab.resource(ap.cur.job, ap.cur.instance)
			return e, nil
		}
		kind = kindGauge
	case kindGaugeHistogram:
		kind = kindGauge
	case kindCounter:
		if isCreatedSeries(name, opts.MetricFamilyName) {
			return e, nil
		}
	}
	e.role = roleNumber
	e.fam = ap.tab.family(familyKey{name: name, kind: kind})
	e.attrs = appendLabelAttrs(e.attrs, fieldNumberAttrs, ap.attrs, "")
	e.res = ap.tab.resource(ap.cur.job, ap.cur.instance)
	return e, nil
}

func (ap *appender) resolveClassic(e *entry, ls labels.Labels, kind metricKind, suffix string, bound float64, label string) {
	switch suffix {
	case "_bucket":
		e.role = roleBucket
	case "":
		e.role = roleQuantile
	case "_sum":
		e.role = roleSum
	case "_count":
		e.role = roleCount
	case "_created":
		e.role = roleCreated
	}
	e.bound, e.label = bound, strings.Clone(label)
	e.fam = ap.tab.family(familyKey{name: e.famName, kind: kind})
	drop, field := model.BucketLabel, fieldHistAttrs
	if kind == kindSummary {
		drop, field = model.QuantileLabel, fieldSummaryAttrs
	}
	var gk uint64
	gk, ap.hbuf = ls.HashWithoutLabels(ap.hbuf, drop)
	g := ap.tab.group(e.fam, gk)
	if g.attrs == nil {
		g.attrs = appendLabelAttrs(make([]byte, 0, 64), field, ap.attrs, drop)
		g.g.key = groupStateKey(gk, kind, e.famName)
	}
	e.group = g
}

// appendFast encodes one sample. It reports false if the sample needs the
// pdata builder.
func (ap *appender) appendFast(e *entry, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) bool {
	if e.role == roleSlow || h != nil || fh != nil || len(opts.Exemplars) > 0 {
		return false
	}
	if ap.res == nil {
		ap.res = e.res
	} else if e.res != ap.res {
		// More than one resource in a scrape (honor_labels).
		return false
	}
	f := e.fam
	if f.seq != ap.seq {
		ap.touch(f, e)
	}
	if e.role == roleNumber {
		ap.encodeNumber(f, e, st, t, v)
		return true
	}
	ap.logSample(logRec{idx: e.index(), off: -1, st: st, t: t, v: v})
	g := e.group
	if g.seq != ap.seq {
		g.seq = ap.seq
		g.g = group{key: g.g.key, t: t, buckets: g.g.buckets[:0]}
		f.groups = append(f.groups, g)
	}
	gg := &g.g
	if value.IsStaleNaN(v) {
		gg.stale = true
	}
	if st > 0 && (gg.st == 0 || st < gg.st) {
		gg.st = st
	}
	switch e.role {
	case roleBucket, roleQuantile:
		gg.buckets = append(gg.buckets, bucket{bound: e.bound, value: v, label: e.label})
	case roleSum:
		gg.sum, gg.hasSum = v, true
	case roleCount:
		gg.count, gg.hasCount = v, true
	case roleCreated:
		gg.created = v
	}
	return true
}

// touch adds f to this scrape, at the place where the pdata builder would
// create the metric: the first sample of the family.
func (ap *appender) touch(f *famEnc, e *entry) {
	f.seq = ap.seq
	f.buf = f.buf[:0]
	f.groups = f.groups[:0]
	if len(f.header) == 0 || f.meta != e.meta {
		f.header = encodeMetricHeader(f.header[:0], f.key, e.meta)
		f.meta = e.meta
	}
	ap.fams = append(ap.fams, f)
}

// encodeMetricHeader writes the fields of a Metric before its data, as
// scopeBuilder.family sets them.
func encodeMetricHeader(b []byte, key familyKey, meta metadata.Metadata) []byte {
	b = appendLenField(b, fieldMetricName, key.name)
	if meta.Help != "" {
		b = appendLenField(b, fieldMetricDescription, meta.Help)
	}
	if u := metricUnit(key.name, meta); u != "" {
		b = appendLenField(b, fieldMetricUnit, u)
	}
	return appendStrKeyValue(b, fieldMetricMetadata, metadataTypeKey, metricType(meta))
}

// encodeNumber appends the data point of a number sample: the entry's
// attributes are pre-encoded, the rest is fixed-size, so that the point is
// one size check and a few stores. The buffers are written through local
// slices and only their lengths stored back (x = x[:n] stores no pointer):
// storing a slice into the heap costs a write barrier per sample while the
// collector runs, which it often does next to the scrape loop.
func (ap *appender) encodeNumber(f *famEnc, e *entry, st, t int64, v float64) {
	stale := value.IsStaleNaN(v)
	n := len(e.attrs) + 9 + 9
	if stale {
		n = len(e.attrs) + 9 + 2
	}
	cum := f.key.kind.cumulative()
	if cum {
		n += startSlot
	}
	if cap(f.buf)-len(f.buf) < n+3 {
		f.buf = slices.Grow(f.buf, n+3)
	}
	b := f.buf
	b = append(b, tagDataPoint)
	b = protowire.AppendVarint(b, uint64(n))
	off := int32(-1)
	if cum {
		off = int32(len(b) + 1)
		b = append(b, tagStart, 0, 0, 0, 0, 0, 0, 0, 0)
	}
	b = append(b, tagTime)
	b = binary.LittleEndian.AppendUint64(b, uint64(msToTimestamp(t)))
	if stale {
		b = append(b, tagFlags, noRecordedValue)
	} else {
		b = append(b, tagDouble)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
	}
	b = append(b, e.attrs...)
	f.buf = f.buf[:len(b)] // b did not grow: same array
	ap.logSample(logRec{idx: e.index(), off: off, st: st, t: t, v: v})
	ap.points++
}

// logSample appends r to the log without a write barrier.
func (ap *appender) logSample(r logRec) {
	if len(ap.log) == cap(ap.log) {
		ap.log = slices.Grow(ap.log, 1)
	}
	ap.log = ap.log[:len(ap.log)+1]
	ap.log[len(ap.log)-1] = r
}

// toSlow switches the scrape to the pdata builder: the samples encoded so
// far are appended again there, with the options they came with.
func (ap *appender) toSlow() {
	ap.fast = false
	if ap.md == (pmetric.Metrics{}) {
		ap.md = pmetric.NewMetrics()
	}
	for _, r := range ap.log {
		e := ap.tab.entries[r.idx]
		opts := storage.AppendV2Options{MetricFamilyName: e.famName, Metadata: e.meta}
		// Cannot fail: resolve took only series with a name.
		_ = ap.appendSlow(e.ls, e.key, r.st, r.t, r.v, nil, nil, opts)
	}
	ap.log = ap.log[:0]
	ap.fams = ap.fams[:0]
	clear(ap.pend)
	ap.pend = ap.pend[:0]
	ap.res = nil
	ap.points = 0
}

// commitFast finishes the classic points, fills the start timestamps,
// updates the state and hands the encoded scrape to the EncodedConsumer.
func (ap *appender) commitFast() error {
	if ap.keptAsGauges() {
		ap.toSlow()
		return ap.commitSlow()
	}
	for _, f := range ap.fams {
		switch f.key.kind {
		case kindHistogram:
			for _, g := range f.groups {
				ap.encodeHistogram(f, g)
			}
		case kindSummary:
			for _, g := range f.groups {
				ap.encodeSummary(f, g)
			}
		}
	}

	ts := ap.ts
	entries := ap.tab.entries
	ts.mu.Lock()
	// Number points in the order they came, then classic points: the
	// order of the pdata path (pending, then pendingDist).
	for i := range ap.log {
		r := &ap.log[i]
		if r.off < 0 {
			continue
		}
		e := entries[r.idx]
		var start int64
		if value.IsStaleNaN(r.v) {
			start = ts.startOfStale(e.key, &e.state, r.t)
		} else {
			start = ts.startFor(e.key, &e.state, r.st, r.t, r.v, nil, e.fam.key.kind == kindCounter)
		}
		putFixed64(e.fam.buf[r.off:], uint64(msToTimestamp(start)))
	}
	for i := range ap.pend {
		p := &ap.pend[i]
		gg := &p.g.g
		var start int64
		if gg.stale {
			start = ts.startOfStale(gg.key, &p.g.state, gg.t)
		} else {
			var buckets []uint64
			if p.f.key.kind == kindHistogram {
				buckets = p.g.counts
			}
			start = ts.startFor(gg.key, &p.g.state, ap.groupStart(gg), gg.t, gg.count, buckets, true)
		}
		putFixed64(p.f.buf[p.off:], uint64(msToTimestamp(start)))
	}
	if ap.res != nil && ap.res.encoded == nil {
		ap.res.encoded = encodeResource(ts.resourceFor(ap.res.key, ap.target))
	}
	ts.committed()
	ts.mu.Unlock()

	points := ap.points
	if points == 0 {
		ap.release()
		return nil
	}
	// The request is built in the appender's scratch memory and handed over
	// before release returns that memory to the pool: the consumer copies
	// what it keeps (EncodedConsumer), so an encoded scrape allocates
	// nothing once the pool holds a buffer of its size.
	err := ap.a.enc.ConsumeEncoded(ap.ctx, ap.assemble(), points)
	ap.release()
	return ap.consumed(points, err)
}

// keptAsGauges tells whether a classic group of the scrape has no count
// (a summary without _count, a histogram without buckets or _count): the
// pdata builder keeps its series as gauges, which the encoder does not do.
func (ap *appender) keptAsGauges() bool {
	for _, f := range ap.fams {
		if f.key.kind != kindHistogram && f.key.kind != kindSummary {
			continue
		}
		for _, g := range f.groups {
			gg := &g.g
			if !gg.stale && !gg.hasCount && (f.key.kind == kindSummary || len(gg.buckets) == 0) {
				return true
			}
		}
	}
	return false
}

// openClassicPoint appends the start of a classic point of g with an
// n-byte payload to f.buf: its tag and size, the start timestamp slot
// (listed for Commit) and the timestamp.
func (ap *appender) openClassicPoint(f *famEnc, g *groupEnc, n int) []byte {
	b := append(f.buf, tagDataPoint)
	b = protowire.AppendVarint(b, uint64(n))
	ap.pend = append(ap.pend, pendStart{f: f, off: len(b) + 1, g: g})
	b = append(b, tagStart, 0, 0, 0, 0, 0, 0, 0, 0)
	return appendFixed64Field(b, fieldTime, uint64(msToTimestamp(g.g.t)))
}

func (ap *appender) encodeHistogram(f *famEnc, g *groupEnc) {
	gg := &g.g
	var all uint64
	g.bounds, g.counts, all = classicLayout(gg, g.bounds[:0], g.counts[:0])
	n := startSlot + 9 + lenFieldSize(8*len(g.counts)) + len(g.attrs)
	if len(g.bounds) > 0 {
		n += lenFieldSize(8 * len(g.bounds))
	}
	if gg.stale {
		n += 2
	} else {
		if all != 0 {
			n += 9
		}
		if gg.hasSum {
			n += 9
		}
	}
	b := ap.openClassicPoint(f, g, n)
	if !gg.stale {
		if all != 0 {
			b = appendFixed64Field(b, fieldHistCount, all)
		}
		if gg.hasSum {
			b = appendFixed64Field(b, fieldHistSum, math.Float64bits(gg.sum))
		}
	}
	b = appendTag(b, fieldHistCounts, wireLen)
	b = protowire.AppendVarint(b, uint64(8*len(g.counts)))
	for _, c := range g.counts {
		b = binary.LittleEndian.AppendUint64(b, c)
	}
	if len(g.bounds) > 0 {
		b = appendTag(b, fieldHistBounds, wireLen)
		b = protowire.AppendVarint(b, uint64(8*len(g.bounds)))
		for _, x := range g.bounds {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
		}
	}
	b = append(b, g.attrs...)
	if gg.stale {
		b = append(b, fieldHistFlags<<3|wireVarint, noRecordedValue)
	}
	f.buf = b
	ap.points++
}

// encodeSummary writes a summary point as finishSummary builds it. Zero
// values are left out as pdata's marshaller leaves them out (which also
// turns −0 into 0).
func (ap *appender) encodeSummary(f *famEnc, g *groupEnc) {
	gg := &g.g
	n := startSlot + 9 + len(g.attrs)
	count := floatToCount(gg.count)
	if gg.stale {
		n += 2
	} else {
		slices.SortStableFunc(gg.buckets, func(a, b bucket) int { return cmpFloat(a.bound, b.bound) })
		if count != 0 {
			n += 9
		}
		if gg.sum != 0 {
			n += 9
		}
		for _, q := range gg.buckets {
			n += lenFieldSize(quantileSize(q))
		}
	}
	b := ap.openClassicPoint(f, g, n)
	if gg.stale {
		b = append(b, fieldSummaryFlags<<3|wireVarint, noRecordedValue)
	} else {
		if count != 0 {
			b = appendFixed64Field(b, fieldSummaryCount, count)
		}
		if gg.sum != 0 {
			b = appendFixed64Field(b, fieldSummarySum, math.Float64bits(gg.sum))
		}
		for _, q := range gg.buckets {
			b = appendTag(b, fieldSummaryQuantiles, wireLen)
			b = protowire.AppendVarint(b, uint64(quantileSize(q)))
			if q.bound != 0 {
				b = appendFixed64Field(b, fieldQuantile, math.Float64bits(q.bound))
			}
			if q.value != 0 {
				b = appendFixed64Field(b, fieldQuantileValue, math.Float64bits(q.value))
			}
		}
	}
	f.buf = append(b, g.attrs...)
	ap.points++
}

func quantileSize(q bucket) int {
	n := 0
	if q.bound != 0 {
		n += 9
	}
	if q.value != 0 {
		n += 9
	}
	return n
}

// assemble wraps the encoded metrics into one ResourceMetrics field of an
// ExportMetricsServiceRequest, in ap.out: sizes first, then one pass of
// appends into a buffer grown once (reused across scrapes, so not zeroed).
func (ap *appender) assemble() []byte {
	scope := ap.a.scopeEnc
	smLen := lenFieldSize(len(scope))
	for _, f := range ap.fams {
		smLen += lenFieldSize(metricSize(f))
	}
	rmLen := lenFieldSize(len(ap.res.encoded)) + lenFieldSize(smLen)
	b := slices.Grow(ap.out[:0], lenFieldSize(rmLen))
	b = appendTag(b, fieldResourceMetrics, wireLen)
	b = protowire.AppendVarint(b, uint64(rmLen))
	b = appendLenField(b, fieldRMResource, ap.res.encoded)
	b = appendTag(b, fieldRMScopeMetrics, wireLen)
	b = protowire.AppendVarint(b, uint64(smLen))
	b = appendLenField(b, fieldSMScope, scope)
	for _, f := range ap.fams {
		b = appendTag(b, fieldSMMetrics, wireLen)
		b = protowire.AppendVarint(b, uint64(metricSize(f)))
		b = append(b, f.header...)
		field, trailer := dataField(f.key.kind)
		b = appendTag(b, field, wireLen)
		b = protowire.AppendVarint(b, uint64(len(f.buf)+len(trailer)))
		b = append(b, f.buf...)
		b = append(b, trailer...)
	}
	ap.out = b
	return b
}

func metricSize(f *famEnc) int {
	_, trailer := dataField(f.key.kind)
	return len(f.header) + lenFieldSize(len(f.buf)+len(trailer))
}

// Fields after the data points: aggregation temporality (cumulative = 2)
// and monotonicity.
var (
	trailerCounter    = []byte{fieldTemporality<<3 | wireVarint, 2, fieldMonotonic<<3 | wireVarint, 1}
	trailerCumulative = []byte{fieldTemporality<<3 | wireVarint, 2}
)

// dataField is the Metric field of the data of kind and what follows its
// points.
func dataField(kind metricKind) (int, []byte) {
	switch kind {
	case kindCounter:
		return fieldMetricSum, trailerCounter
	case kindInfo, kindStateset:
		return fieldMetricSum, trailerCumulative
	case kindHistogram:
		return fieldMetricHistogram, trailerCumulative
	case kindSummary:
		return fieldMetricSummary, nil
	}
	return fieldMetricGauge, nil
}

// isCreatedSeries tells whether a counter sample is its family's _created
// series (an OpenMetrics start time not parsed as one).
func isCreatedSeries(name, fam string) bool {
	return fam != "" && len(name) == len(fam)+len("_created") &&
		strings.HasSuffix(name, "_created") && strings.HasPrefix(name, fam)
}
