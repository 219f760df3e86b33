package otlp

import (
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Salts keep the state of a distribution apart from the state of a series
// with the same labels.
const (
	saltClassic = 0x9e3779b97f4a7c15
	saltSummary = 0xc2b2ae3d27d4eb4f
	saltNative  = 0x165667b19e3779f9
)

// group is one data point of a classic histogram or summary, assembled from
// its _bucket/quantile, _sum, _count and _created series.
type group struct {
	key       uint64
	attrs     []labels.Label
	t, st     int64
	buckets   []bucket // le or quantile → value, in arrival order
	sum       float64
	count     float64
	hasSum    bool
	hasCount  bool
	created   float64 // seconds, from a _created series
	stale     bool
	exemplars pmetric.ExemplarSlice
	hasEx     bool
}

type bucket struct {
	bound, value float64
	label        string // the le or quantile label as exposed
}

// appendClassic adds one series of a classic histogram or summary family to
// its group. It reports false if the series is not part of the family after
// all (it is then converted as a gauge of its own name).
func (ap *appender) appendClassic(sb *scopeBuilder, kind metricKind, ls labels.Labels, st, t int64, v float64, opts storage.AppendV2Options) bool {
	famName := opts.MetricFamilyName
	suffix, bound, boundLabel, ok := classicRole(kind, ap.cur.name, famName, ap.cur.le, ap.cur.quantile)
	if !ok {
		return false
	}

	fam := sb.family(famName, kind, opts)
	drop := "le"
	if kind == kindSummary {
		drop = "quantile"
	}
	// The series of a group arrive together: compare with the last group
	// before hashing.
	g := fam.lastGroup
	if g == nil || !sameAttrs(g.attrs, ap.attrs, drop) {
		var gk uint64
		gk, ap.hbuf = ls.HashWithoutLabels(ap.hbuf, drop)
		g = ap.group(fam, kind, gk, drop, t)
		fam.lastGroup = g
	}
	if value.IsStaleNaN(v) {
		g.stale = true
	}
	if st > 0 && (g.st == 0 || st < g.st) {
		g.st = st
	}
	switch suffix {
	case "_bucket", "":
		g.buckets = append(g.buckets, bucket{bound: bound, value: v, label: boundLabel})
	case "_sum":
		g.sum, g.hasSum = v, true
	case "_count":
		g.count, g.hasCount = v, true
	case "_created":
		g.created = v
	}
	if len(opts.Exemplars) > 0 {
		if !g.hasEx {
			g.exemplars, g.hasEx = pmetric.NewExemplarSlice(), true
		}
		putExemplars(g.exemplars, opts.Exemplars)
	}
	return true
}

// classicRole tells which series of its family's point a sample named name
// is: its suffix ("_bucket", "" for a quantile, "_sum", "_count",
// "_created") and for a bucket or quantile the bound and its label. It
// reports false if the series is not part of the family after all.
func classicRole(kind metricKind, name, famName, le, quantile string) (suffix string, bound float64, boundLabel string, ok bool) {
	if famName == "" {
		return "", 0, "", false
	}
	suffix, ok = strings.CutPrefix(name, famName)
	if !ok {
		return "", 0, "", false
	}
	switch suffix {
	case "_bucket":
		if kind == kindSummary {
			return "", 0, "", false
		}
		b, err := strconv.ParseFloat(le, 64)
		if err != nil {
			return "", 0, "", false
		}
		return suffix, b, le, true
	case "":
		if kind != kindSummary {
			return "", 0, "", false
		}
		q, err := strconv.ParseFloat(quantile, 64)
		if err != nil {
			return "", 0, "", false
		}
		return suffix, q, quantile, true
	case "_sum", "_count", "_created":
		return suffix, 0, "", true
	}
	return "", 0, "", false
}

// groupStateKey is the state key of a classic point: the hash of its
// labels without le/quantile (and without the name, which
// HashWithoutLabels leaves out) salted by its type and family name, so
// that two families with the same labels keep apart.
func groupStateKey(gk uint64, kind metricKind, famName string) uint64 {
	salt := uint64(saltClassic)
	if kind == kindSummary {
		salt = saltSummary
	}
	return gk ^ salt ^ fnvString(fnvOffset64, famName)
}

// group returns the group with hash gk, creating it.
func (ap *appender) group(fam *family, kind metricKind, gk uint64, drop string, t int64) *group {
	if g, ok := fam.groups[gk]; ok {
		return g
	}
	g := &group{key: groupStateKey(gk, kind, fam.key.name), t: t}
	g.attrs = make([]labels.Label, 0, len(ap.attrs))
	for _, l := range ap.attrs {
		if l.Name != drop {
			g.attrs = append(g.attrs, l)
		}
	}
	if fam.groups == nil {
		fam.groups = make(map[uint64]*group)
	}
	fam.groups[gk] = g
	fam.order = append(fam.order, g)
	return g
}

// sameAttrs reports whether attrs without the label drop are groupAttrs.
func sameAttrs(groupAttrs, attrs []labels.Label, drop string) bool {
	i := 0
	for _, l := range attrs {
		if l.Name == drop {
			continue
		}
		if i >= len(groupAttrs) || groupAttrs[i] != l {
			return false
		}
		i++
	}
	return i == len(groupAttrs)
}

// finishClassic writes the groups of a classic histogram or summary family
// as points and lists them for their start times. A group that cannot make
// a valid point (a summary without _count, a histogram with neither buckets
// nor _count) is not dropped, as the specification would have it, but kept
// as gauges of its series.
func (ap *appender) finishClassic(sb *scopeBuilder, f *family) {
	for _, g := range f.order {
		if !g.stale && !g.hasCount && (f.key.kind == kindSummary || len(g.buckets) == 0) {
			ap.fallbackGauges(sb, f, g)
			continue
		}
		if f.key.kind == kindSummary {
			ap.finishSummary(f, g)
		} else {
			ap.finishHistogram(f, g)
		}
	}
	if pointsOf(f) == 0 {
		// Every group fell back: the family itself stays empty.
		sb.metrics.RemoveIf(func(m pmetric.Metric) bool { return m == f.metric })
	}
}

func (ap *appender) finishSummary(f *family, g *group) {
	dp := f.metric.Summary().DataPoints().AppendEmpty()
	dp.SetTimestamp(msToTimestamp(g.t))
	putAttributes(dp.Attributes(), g.attrs)
	if g.stale {
		dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
	} else {
		slices.SortStableFunc(g.buckets, func(a, b bucket) int { return cmpFloat(a.bound, b.bound) })
		qs := dp.QuantileValues()
		qs.EnsureCapacity(len(g.buckets))
		for _, b := range g.buckets {
			q := qs.AppendEmpty()
			q.SetQuantile(b.bound)
			q.SetValue(b.value)
		}
		dp.SetSum(g.sum)
		dp.SetCount(floatToCount(g.count))
	}
	ap.pendingDist = append(ap.pendingDist, pendingDist{
		setStart: dp.SetStartTimestamp, key: g.key, st: ap.groupStart(g), t: g.t,
		count: g.count, stale: g.stale,
	})
}

func (ap *appender) finishHistogram(f *family, g *group) {
	dp := f.metric.Histogram().DataPoints().AppendEmpty()
	dp.SetTimestamp(msToTimestamp(g.t))
	putAttributes(dp.Attributes(), g.attrs)
	if g.hasEx {
		g.exemplars.MoveAndAppendTo(dp.Exemplars())
	}
	counts := classicBuckets(g, dp)
	ap.pendingDist = append(ap.pendingDist, pendingDist{
		setStart: dp.SetStartTimestamp, key: g.key, st: ap.groupStart(g), t: g.t,
		count: g.count, buckets: counts, stale: g.stale,
	})
}

// fallbackGauges writes the series of group g as gauges, as exposed.
func (ap *appender) fallbackGauges(sb *scopeBuilder, f *family, g *group) {
	bucketName, bucketLabel := f.key.name+"_bucket", model.BucketLabel
	if f.key.kind == kindSummary {
		bucketName, bucketLabel = f.key.name, model.QuantileLabel
	}
	put := func(name string, v float64, extra *labels.Label) pmetric.NumberDataPoint {
		dp := sb.family(name, kindGauge, f.meta).numbers.AppendEmpty()
		dp.SetTimestamp(msToTimestamp(g.t))
		dp.SetDoubleValue(v)
		putAttributes(dp.Attributes(), g.attrs)
		if extra != nil {
			dp.Attributes().PutStr(extra.Name, extra.Value)
		}
		return dp
	}
	first := true
	for _, b := range g.buckets {
		dp := put(bucketName, b.value, &labels.Label{Name: bucketLabel, Value: b.label})
		if first && g.hasEx {
			g.exemplars.MoveAndAppendTo(dp.Exemplars())
		}
		first = false
	}
	if g.hasSum {
		put(f.key.name+"_sum", g.sum, nil)
	}
}

// classicBuckets writes the bounds and counts of classicLayout into dp and
// returns the counts for reset detection (nil for a staleness marker).
func classicBuckets(g *group, dp pmetric.HistogramDataPoint) []uint64 {
	bounds, counts, all := classicLayout(g, nil, nil)
	dp.ExplicitBounds().FromRaw(bounds)
	dp.BucketCounts().FromRaw(counts)
	if g.stale {
		dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
		return nil
	}
	dp.SetCount(all)
	if g.hasSum {
		dp.SetSum(g.sum)
	}
	return counts
}

// classicLayout turns the cumulative le buckets of g into OTLP bounds and
// per-bucket counts (appended to the given slices) and the total count. The
// total is the +Inf bucket, else _count, else the last bucket: the three
// agree in a valid exposition. A broken one is repaired into a valid point
// rather than dropped: buckets with a NaN bound go, a repeated bound keeps
// its larger count, decreasing cumulative counts are raised to the previous
// one, and the total is at least the last bucket, so that the counts always
// add up to the count. A staleness marker keeps its bounds, with zero
// counts, so that a conversion back to Prometheus can mark every bucket
// series stale. g.count becomes the total.
func classicLayout(g *group, bounds []float64, counts []uint64) ([]float64, []uint64, uint64) {
	bs := g.buckets
	if !strictlyIncreasing(bs) {
		// Buckets come in order almost always; when they do, dropping NaN
		// bounds, sorting and merging duplicates would change nothing.
		bs = slices.DeleteFunc(bs, func(b bucket) bool { return math.IsNaN(b.bound) })
		slices.SortStableFunc(bs, func(a, b bucket) int { return cmpFloat(a.bound, b.bound) })
		out := bs[:0]
		for _, b := range bs {
			if n := len(out); n > 0 && out[n-1].bound == b.bound {
				out[n-1].value = math.Max(out[n-1].value, b.value)
				continue
			}
			out = append(out, b)
		}
		bs = out
		g.buckets = bs
	}
	total, hasTotal := g.count, g.hasCount
	if n := len(bs); n > 0 && math.IsInf(bs[n-1].bound, 1) {
		total, hasTotal = bs[n-1].value, true
		bs = bs[:n-1]
	}
	for _, b := range bs {
		bounds = append(bounds, b.bound)
	}
	if g.stale {
		for range len(bs) + 1 {
			counts = append(counts, 0)
		}
		return bounds, counts, 0
	}
	var prev uint64
	for _, b := range bs {
		cum := max(floatToCount(b.value), prev)
		counts = append(counts, cum-prev)
		prev = cum
	}
	if !hasTotal {
		total = 0
	}
	all := max(floatToCount(total), prev)
	counts = append(counts, all-prev)
	g.count = float64(all)
	return bounds, counts, all
}

// strictlyIncreasing tells whether the bounds of bs increase strictly,
// without NaN (which compares false).
func strictlyIncreasing(bs []bucket) bool {
	for i := range bs {
		if math.IsNaN(bs[i].bound) || i > 0 && !(bs[i-1].bound < bs[i].bound) {
			return false
		}
	}
	return true
}

// groupStart is the start timestamp the scrape gave for a group: a
// start timestamp of its series, else its _created sample.
func (ap *appender) groupStart(g *group) int64 {
	if g.st > 0 {
		return g.st
	}
	if g.created > 0 && !math.IsNaN(g.created) && !math.IsInf(g.created, 0) {
		return int64(g.created * 1000)
	}
	return 0
}

// appendNative converts a native histogram: exponential buckets to an
// ExponentialHistogram, custom buckets (NHCB) to a Histogram.
func (ap *appender) appendNative(sb *scopeBuilder, kind metricKind, key uint64, st, t int64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) {
	if fh == nil {
		fh = h.ToFloat(nil)
	}
	fam := sb.family(ap.cur.name, kind, opts)
	stale := value.IsStaleNaN(fh.Sum)
	gauge := kind == kindGaugeExponential || kind == kindGaugeCustomBuckets
	reset := fh.CounterResetHint == histogram.CounterReset
	var counts []uint64
	var setStart func(pcommon.Timestamp)
	switch kind {
	case kindCustomBuckets, kindGaugeCustomBuckets:
		dp := fam.metric.Histogram().DataPoints().AppendEmpty()
		dp.SetTimestamp(msToTimestamp(t))
		putAttributes(dp.Attributes(), ap.attrs)
		if len(opts.Exemplars) > 0 {
			putExemplars(dp.Exemplars(), opts.Exemplars)
		}
		if stale {
			dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
		} else {
			dp.ExplicitBounds().FromRaw(slices.Clone(fh.CustomValues))
			counts = make([]uint64, len(fh.CustomValues)+1)
			denseBuckets(fh.PositiveSpans, fh.PositiveBuckets, func(i int, c float64) {
				if i >= 0 && i < len(counts) {
					counts[i] = floatToCount(c)
				}
			})
			dp.BucketCounts().FromRaw(counts)
			dp.SetCount(floatToCount(fh.Count))
			dp.SetSum(fh.Sum)
		}
		setStart = dp.SetStartTimestamp
	default:
		dp := fam.metric.ExponentialHistogram().DataPoints().AppendEmpty()
		dp.SetTimestamp(msToTimestamp(t))
		putAttributes(dp.Attributes(), ap.attrs)
		if len(opts.Exemplars) > 0 {
			putExemplars(dp.Exemplars(), opts.Exemplars)
		}
		if stale {
			dp.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
		} else {
			dp.SetScale(fh.Schema)
			dp.SetCount(floatToCount(fh.Count))
			dp.SetSum(fh.Sum)
			dp.SetZeroThreshold(fh.ZeroThreshold)
			dp.SetZeroCount(floatToCount(fh.ZeroCount))
			expBuckets(dp.Positive(), fh.PositiveSpans, fh.PositiveBuckets)
			expBuckets(dp.Negative(), fh.NegativeSpans, fh.NegativeBuckets)
		}
		setStart = dp.SetStartTimestamp
	}
	if gauge {
		return
	}
	ap.pendingDist = append(ap.pendingDist, pendingDist{
		setStart: setStart, key: key ^ saltNative, st: st, t: t,
		count: fh.Count, buckets: counts, stale: stale, reset: reset,
	})
}

// expBuckets writes Prometheus spans and absolute float counts as a dense
// OTLP bucket range. A Prometheus bucket index i covers (base^(i-1), base^i]
// and an OTLP index i covers (base^i, base^(i+1)], hence the offset − 1.
func expBuckets(b pmetric.ExponentialHistogramDataPointBuckets, spans []histogram.Span, counts []float64) {
	if len(spans) == 0 {
		return
	}
	first := int(spans[0].Offset)
	end := 0
	for _, s := range spans {
		end += int(s.Offset) + int(s.Length)
	}
	n := end - first
	if n <= 0 {
		return
	}
	raw := make([]uint64, n)
	denseBuckets(spans, counts, func(i int, c float64) {
		if i -= first; i >= 0 && i < n {
			raw[i] = floatToCount(c)
		}
	})
	b.SetOffset(int32(first - 1))
	b.BucketCounts().FromRaw(raw)
}

// denseBuckets calls f with the Prometheus index of every bucket the spans
// cover and its absolute count.
func denseBuckets(spans []histogram.Span, counts []float64, f func(i int, c float64)) {
	pos := 0
	ci := 0
	for _, s := range spans {
		pos += int(s.Offset)
		for j := uint32(0); j < s.Length && ci < len(counts); j++ {
			f(pos, counts[ci])
			pos++
			ci++
		}
	}
}

// floatToCount converts a Prometheus float count to an OTLP count: negative
// and NaN values (broken expositions) become 0 rather than 2^64−1.
func floatToCount(v float64) uint64 {
	if !(v > 0) {
		return 0
	}
	if v >= math.MaxUint64 {
		return math.MaxUint64
	}
	return uint64(math.Round(v))
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func pointsOf(f *family) int {
	if f.key.kind == kindSummary {
		return f.metric.Summary().DataPoints().Len()
	}
	return f.metric.Histogram().DataPoints().Len()
}
