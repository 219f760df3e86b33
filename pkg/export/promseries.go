package export

import (
	"encoding/hex"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// staleNaN is Prometheus's staleness marker (model/value.StaleNaN), spelled
// out so that this package does not pull in the Prometheus storage code.
var staleNaN = math.Float64frombits(0x7ff0000000000002)

// defaultScopeName is the scope pkg/otlp gives metrics without
// otel_scope_* labels; its metrics get no scope labels back.
const defaultScopeName = "github.com/allot-dev/allot"

// derivedResourceAttrs are the resource attributes pkg/otlp derives from
// the target; the others came from target_info (or discovery) and are
// written back as a target_info series.
var derivedResourceAttrs = map[string]bool{
	"service.name":        true,
	"service.instance.id": true,
	"server.address":      true,
	"server.port":         true,
	"url.scheme":          true,
}

// ToWriteRequest turns metrics converted by pkg/otlp back into the series
// Prometheus scraped, as a remote write 1.0 request, reusing req's memory:
// job and instance from service.name and service.instance.id, the scope as
// otel_scope_* labels, histograms and summaries as their _bucket/quantile,
// _sum and _count series, exponential histograms as native histograms,
// NoRecordedValue as the staleness marker, the remaining resource
// attributes as target_info. With metadata, each family's type, help and
// unit are added once.
func ToWriteRequest(md pmetric.Metrics, req *prompb.WriteRequest, metadata bool) {
	req.Timeseries = req.Timeseries[:0]
	req.Metadata = req.Metadata[:0]
	w := rwWriter{req: req, metadata: metadata}
	var c seriesConverter
	c.convert(md, &w)
}

// seriesSink receives the Prometheus series of a conversion, in order: a
// family, its series, each followed by its samples, histograms and
// exemplars. Remote write 1.0 (rwWriter) and 2.0 (rw2Writer) build their
// messages from it, so that the conversion itself exists once.
type seriesSink interface {
	// family starts the series of one metric family; f is nil for
	// target_info, whose type the conversion does not know.
	family(f *family)
	// series starts a series: ls sorted by name, valid only until the next
	// call; st is its start (created) timestamp in ms, 0 if none.
	series(ls []prompb.Label, st int64)
	sample(v float64, t int64)
	histogram(h prompb.Histogram)
	exemplar(e prompb.Exemplar)
}

// family is the metadata of a metric family.
type family struct {
	name, help, unit string
	typ              prompb.MetricMetadata_MetricType
}

// seriesConverter walks converted metrics and hands their series to a
// sink. Its buffers are reused from one convert to the next.
type seriesConverter struct {
	sink  seriesSink
	base  []prompb.Label
	scope []prompb.Label
	ls    []prompb.Label
	extra []prompb.Label
	fam   family
}

func (c *seriesConverter) convert(md pmetric.Metrics, sink seriesSink) {
	c.sink = sink
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		c.base = resourceLabels(rm.Resource().Attributes(), c.base[:0])
		first := int64(0)
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			sm := sms.At(j)
			c.scope = scopeLabels(sm, c.scope[:0])
			ms := sm.Metrics()
			for k := 0; k < ms.Len(); k++ {
				if t := c.metric(ms.At(k)); first == 0 {
					first = t
				}
			}
		}
		c.targetInfo(rm.Resource().Attributes(), first)
	}
	c.sink = nil
}

// series starts a series with the base, scope and point labels plus name
// and extra, sorted.
func (c *seriesConverter) series(name string, attrs pcommon.Map, st int64, extra ...prompb.Label) {
	ls := append(c.ls[:0], prompb.Label{Name: "__name__", Value: name})
	ls = append(ls, c.base...)
	ls = append(ls, c.scope...)
	attrs.Range(func(k string, v pcommon.Value) bool {
		ls = append(ls, prompb.Label{Name: labelName(k), Value: v.AsString()})
		return true
	})
	ls = append(ls, extra...)
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	c.ls = ls
	c.sink.series(ls, st)
}

func (c *seriesConverter) sample(v float64, t pcommon.Timestamp, noValue bool) {
	if noValue {
		v = staleNaN
	}
	c.sink.sample(v, toMs(t))
}

func toMs(t pcommon.Timestamp) int64 { return int64(t) / 1e6 }

// start is the start timestamp a series carries: that of cumulative points
// (counters, histograms, summaries), none for gauges and for staleness
// markers, which end a series rather than continue it.
func start(cumulative, stale bool, t pcommon.Timestamp) int64 {
	if !cumulative || stale {
		return 0
	}
	return toMs(t)
}

// metric writes the series of one metric and returns its first timestamp.
func (c *seriesConverter) metric(m pmetric.Metric) int64 {
	c.fam = family{name: m.Name(), help: m.Description(), unit: m.Unit(), typ: metadataType(m)}
	c.sink.family(&c.fam)
	var first pcommon.Timestamp
	switch m.Type() {
	case pmetric.MetricTypeGauge, pmetric.MetricTypeSum:
		var dps pmetric.NumberDataPointSlice
		counter := false
		if m.Type() == pmetric.MetricTypeSum {
			dps = m.Sum().DataPoints()
			counter = c.fam.typ == prompb.MetricMetadata_COUNTER && m.Sum().AggregationTemporality() == pmetric.AggregationTemporalityCumulative
		} else {
			dps = m.Gauge().DataPoints()
		}
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			stale := dp.Flags().NoRecordedValue()
			c.series(m.Name(), dp.Attributes(), start(counter, stale, dp.StartTimestamp()))
			v := dp.DoubleValue()
			if dp.ValueType() == pmetric.NumberDataPointValueTypeInt {
				v = float64(dp.IntValue())
			}
			c.sample(v, dp.Timestamp(), stale)
			c.exemplars(dp.Exemplars())
			first = min0(first, dp.Timestamp())
		}
	case pmetric.MetricTypeHistogram:
		cumulative := m.Histogram().AggregationTemporality() == pmetric.AggregationTemporalityCumulative
		dps := m.Histogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			stale := dp.Flags().NoRecordedValue()
			st := start(cumulative, stale, dp.StartTimestamp())
			bounds, counts := dp.ExplicitBounds(), dp.BucketCounts()
			var cum uint64
			for b := 0; b <= bounds.Len(); b++ {
				le := math.Inf(1)
				if b < bounds.Len() {
					le = bounds.At(b)
				}
				if b < counts.Len() {
					cum += counts.At(b)
				}
				if b == bounds.Len() && !stale {
					cum = dp.Count()
				}
				c.series(m.Name()+"_bucket", dp.Attributes(), st, prompb.Label{Name: "le", Value: formatFloat(le)})
				c.sample(float64(cum), dp.Timestamp(), stale)
				c.bucketExemplars(dp.Exemplars(), le, b, bounds)
			}
			c.series(m.Name()+"_sum", dp.Attributes(), st)
			c.sample(dp.Sum(), dp.Timestamp(), stale)
			c.series(m.Name()+"_count", dp.Attributes(), st)
			c.sample(float64(dp.Count()), dp.Timestamp(), stale)
			first = min0(first, dp.Timestamp())
		}
	case pmetric.MetricTypeSummary:
		dps := m.Summary().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			stale := dp.Flags().NoRecordedValue()
			st := start(true, stale, dp.StartTimestamp())
			qs := dp.QuantileValues()
			for q := 0; q < qs.Len(); q++ {
				c.series(m.Name(), dp.Attributes(), st, prompb.Label{Name: "quantile", Value: formatFloat(qs.At(q).Quantile())})
				c.sample(qs.At(q).Value(), dp.Timestamp(), stale)
			}
			c.series(m.Name()+"_sum", dp.Attributes(), st)
			c.sample(dp.Sum(), dp.Timestamp(), stale)
			c.series(m.Name()+"_count", dp.Attributes(), st)
			c.sample(float64(dp.Count()), dp.Timestamp(), stale)
			first = min0(first, dp.Timestamp())
		}
	case pmetric.MetricTypeExponentialHistogram:
		eh := m.ExponentialHistogram()
		cumulative := eh.AggregationTemporality() == pmetric.AggregationTemporalityCumulative
		dps := eh.DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			c.series(m.Name(), dp.Attributes(), start(cumulative, dp.Flags().NoRecordedValue(), dp.StartTimestamp()))
			c.sink.histogram(nativeHistogram(dp, eh.AggregationTemporality()))
			c.exemplars(dp.Exemplars())
			first = min0(first, dp.Timestamp())
		}
	}
	return toMs(first)
}

func min0(a, b pcommon.Timestamp) pcommon.Timestamp {
	if a == 0 || b < a {
		return b
	}
	return a
}

// nativeHistogram converts an exponential histogram point to a Prometheus
// native histogram: OTLP bucket index i is Prometheus index i+1.
func nativeHistogram(dp pmetric.ExponentialHistogramDataPoint, temporality pmetric.AggregationTemporality) prompb.Histogram {
	h := prompb.Histogram{Timestamp: toMs(dp.Timestamp())}
	if temporality == pmetric.AggregationTemporalityDelta {
		h.ResetHint = prompb.Histogram_GAUGE
	}
	if dp.Flags().NoRecordedValue() {
		h.Sum = staleNaN
		h.Count = &prompb.Histogram_CountInt{CountInt: 0}
		return h
	}
	h.Count = &prompb.Histogram_CountInt{CountInt: dp.Count()}
	h.Sum = dp.Sum()
	h.Schema = dp.Scale()
	h.ZeroThreshold = dp.ZeroThreshold()
	h.ZeroCount = &prompb.Histogram_ZeroCountInt{ZeroCountInt: dp.ZeroCount()}
	h.PositiveSpans, h.PositiveDeltas = spansAndDeltas(dp.Positive())
	h.NegativeSpans, h.NegativeDeltas = spansAndDeltas(dp.Negative())
	return h
}

// spansAndDeltas encodes dense OTLP buckets as Prometheus spans (split at
// runs of empty buckets) and count deltas.
func spansAndDeltas(b pmetric.ExponentialHistogramDataPointBuckets) ([]prompb.BucketSpan, []int64) {
	counts := b.BucketCounts()
	var (
		spans  []prompb.BucketSpan
		deltas []int64
		prev   int64
		last   int32
		first  = b.Offset() + 1 // Prometheus index of counts[0]
	)
	for i := 0; i < counts.Len(); i++ {
		c := counts.At(i)
		if c == 0 {
			continue
		}
		idx := first + int32(i)
		switch {
		case len(spans) == 0:
			spans = append(spans, prompb.BucketSpan{Offset: idx, Length: 1})
		case idx == last+1:
			spans[len(spans)-1].Length++
		default:
			spans = append(spans, prompb.BucketSpan{Offset: idx - last - 1, Length: 1})
		}
		last = idx
		deltas = append(deltas, int64(c)-prev)
		prev = int64(c)
	}
	return spans, deltas
}

func (c *seriesConverter) exemplars(es pmetric.ExemplarSlice) {
	for i := 0; i < es.Len(); i++ {
		c.sink.exemplar(exemplar(es.At(i)))
	}
}

// bucketExemplars puts on the bucket series of bucket b the exemplars
// whose value falls into it, as Prometheus exposes them.
func (c *seriesConverter) bucketExemplars(es pmetric.ExemplarSlice, le float64, b int, bounds pcommon.Float64Slice) {
	lower := math.Inf(-1)
	if b > 0 {
		lower = bounds.At(b - 1)
	}
	for i := 0; i < es.Len(); i++ {
		e := es.At(i)
		if v := exemplarValue(e); v > lower && v <= le {
			c.sink.exemplar(exemplar(e))
		}
	}
}

func exemplarValue(e pmetric.Exemplar) float64 {
	if e.ValueType() == pmetric.ExemplarValueTypeInt {
		return float64(e.IntValue())
	}
	return e.DoubleValue()
}

func exemplar(e pmetric.Exemplar) prompb.Exemplar {
	out := prompb.Exemplar{Value: exemplarValue(e), Timestamp: toMs(e.Timestamp())}
	if id := e.TraceID(); !id.IsEmpty() {
		out.Labels = append(out.Labels, prompb.Label{Name: "trace_id", Value: hex.EncodeToString(id[:])})
	}
	if id := e.SpanID(); !id.IsEmpty() {
		out.Labels = append(out.Labels, prompb.Label{Name: "span_id", Value: hex.EncodeToString(id[:])})
	}
	e.FilteredAttributes().Range(func(k string, v pcommon.Value) bool {
		out.Labels = append(out.Labels, prompb.Label{Name: labelName(k), Value: v.AsString()})
		return true
	})
	slices.SortFunc(out.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// resourceLabels are job and instance.
func resourceLabels(attrs pcommon.Map, ls []prompb.Label) []prompb.Label {
	if v, ok := attrs.Get("service.name"); ok && v.AsString() != "" {
		ls = append(ls, prompb.Label{Name: "job", Value: v.AsString()})
	}
	if v, ok := attrs.Get("service.instance.id"); ok && v.AsString() != "" {
		ls = append(ls, prompb.Label{Name: "instance", Value: v.AsString()})
	}
	return ls
}

// scopeLabels restore the otel_scope_* labels of a scope that came from
// the exposition.
func scopeLabels(sm pmetric.ScopeMetrics, ls []prompb.Label) []prompb.Label {
	sc := sm.Scope()
	if sc.Name() == defaultScopeName || sc.Name() == "" && sc.Version() == "" && sc.Attributes().Len() == 0 {
		return ls
	}
	if sc.Name() != "" {
		ls = append(ls, prompb.Label{Name: "otel_scope_name", Value: sc.Name()})
	}
	if sc.Version() != "" {
		ls = append(ls, prompb.Label{Name: "otel_scope_version", Value: sc.Version()})
	}
	if sm.SchemaUrl() != "" {
		ls = append(ls, prompb.Label{Name: "otel_scope_schema_url", Value: sm.SchemaUrl()})
	}
	sc.Attributes().Range(func(k string, v pcommon.Value) bool {
		ls = append(ls, prompb.Label{Name: "otel_scope_" + labelName(k), Value: v.AsString()})
		return true
	})
	return ls
}

// targetInfo writes the resource attributes that did not come from the
// target as a target_info series.
func (c *seriesConverter) targetInfo(attrs pcommon.Map, t int64) {
	extra := c.extra[:0]
	attrs.Range(func(k string, v pcommon.Value) bool {
		if !derivedResourceAttrs[k] {
			extra = append(extra, prompb.Label{Name: labelName(k), Value: v.AsString()})
		}
		return true
	})
	c.extra = extra
	if len(extra) == 0 {
		return
	}
	c.sink.family(nil)
	saved := c.scope
	c.scope = nil
	c.series("target_info", pcommon.NewMap(), 0, extra...)
	c.scope = saved
	c.sink.sample(1, t)
}

// rwWriter builds a remote write 1.0 request.
type rwWriter struct {
	req      *prompb.WriteRequest
	metadata bool
	seen     map[string]bool
	ts       *prompb.TimeSeries
}

var _ seriesSink = (*rwWriter)(nil)

// family adds the family's metadata once: 1.0 carries it per family, apart
// from the series.
func (w *rwWriter) family(f *family) {
	if !w.metadata || f == nil {
		return
	}
	if w.seen == nil {
		w.seen = make(map[string]bool)
	}
	if w.seen[f.name] {
		return
	}
	w.seen[f.name] = true
	w.req.Metadata = append(w.req.Metadata, prompb.MetricMetadata{
		Type:             f.typ,
		MetricFamilyName: f.name,
		Help:             f.help,
		Unit:             f.unit,
	})
}

// series appends a time series, reusing the memory of the one that held
// its place in an earlier request. 1.0 has no start timestamps.
func (w *rwWriter) series(ls []prompb.Label, _ int64) {
	n := len(w.req.Timeseries)
	if n < cap(w.req.Timeseries) {
		w.req.Timeseries = w.req.Timeseries[:n+1]
		ts := &w.req.Timeseries[n]
		ts.Labels, ts.Samples, ts.Exemplars, ts.Histograms = ts.Labels[:0], ts.Samples[:0], ts.Exemplars[:0], ts.Histograms[:0]
	} else {
		w.req.Timeseries = append(w.req.Timeseries, prompb.TimeSeries{})
	}
	w.ts = &w.req.Timeseries[n]
	w.ts.Labels = append(w.ts.Labels, ls...)
}

func (w *rwWriter) sample(v float64, t int64) {
	w.ts.Samples = append(w.ts.Samples, prompb.Sample{Value: v, Timestamp: t})
}

func (w *rwWriter) histogram(h prompb.Histogram) { w.ts.Histograms = append(w.ts.Histograms, h) }

func (w *rwWriter) exemplar(e prompb.Exemplar) { w.ts.Exemplars = append(w.ts.Exemplars, e) }

func metadataType(m pmetric.Metric) prompb.MetricMetadata_MetricType {
	if v, ok := m.Metadata().Get("prometheus.type"); ok {
		switch v.Str() {
		case "counter":
			return prompb.MetricMetadata_COUNTER
		case "gauge":
			return prompb.MetricMetadata_GAUGE
		case "histogram":
			return prompb.MetricMetadata_HISTOGRAM
		case "gaugehistogram":
			return prompb.MetricMetadata_GAUGEHISTOGRAM
		case "summary":
			return prompb.MetricMetadata_SUMMARY
		case "info":
			return prompb.MetricMetadata_INFO
		case "stateset":
			return prompb.MetricMetadata_STATESET
		}
		return prompb.MetricMetadata_UNKNOWN
	}
	switch m.Type() {
	case pmetric.MetricTypeSum:
		if m.Sum().IsMonotonic() {
			return prompb.MetricMetadata_COUNTER
		}
		return prompb.MetricMetadata_GAUGE
	case pmetric.MetricTypeGauge:
		return prompb.MetricMetadata_GAUGE
	case pmetric.MetricTypeHistogram, pmetric.MetricTypeExponentialHistogram:
		return prompb.MetricMetadata_HISTOGRAM
	case pmetric.MetricTypeSummary:
		return prompb.MetricMetadata_SUMMARY
	}
	return prompb.MetricMetadata_UNKNOWN
}

// labelName makes an attribute key a classic Prometheus label name.
func labelName(k string) string {
	ok := k != "" && !(k[0] >= '0' && k[0] <= '9')
	for i := 0; ok && i < len(k); i++ {
		c := k[i]
		ok = c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
	}
	if ok {
		return k
	}
	b := []byte(k)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || b[0] >= '0' && b[0] <= '9' {
		b = append([]byte{'_'}, b...)
	}
	return string(b)
}

// formatFloat writes le and quantile values as Prometheus does.
func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}
