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
	w := rwWriter{req: req}
	req.Timeseries = req.Timeseries[:0]
	req.Metadata = req.Metadata[:0]
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		w.base = resourceLabels(rm.Resource().Attributes(), w.base[:0])
		first := int64(0)
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			sm := sms.At(j)
			w.scope = scopeLabels(sm, w.scope[:0])
			ms := sm.Metrics()
			for k := 0; k < ms.Len(); k++ {
				m := ms.At(k)
				if t := w.metric(m); first == 0 {
					first = t
				}
				if metadata {
					w.meta(m)
				}
			}
		}
		w.targetInfo(rm.Resource().Attributes(), first)
	}
}

type rwWriter struct {
	req   *prompb.WriteRequest
	base  []prompb.Label
	scope []prompb.Label
	seen  map[string]bool
}

// series appends a time series with the base, scope and point labels plus
// name and extra, sorted.
func (w *rwWriter) series(name string, attrs pcommon.Map, extra ...prompb.Label) *prompb.TimeSeries {
	n := len(w.req.Timeseries)
	if n < cap(w.req.Timeseries) {
		w.req.Timeseries = w.req.Timeseries[:n+1]
		ts := &w.req.Timeseries[n]
		ts.Labels, ts.Samples, ts.Exemplars, ts.Histograms = ts.Labels[:0], ts.Samples[:0], ts.Exemplars[:0], ts.Histograms[:0]
	} else {
		w.req.Timeseries = append(w.req.Timeseries, prompb.TimeSeries{})
	}
	ts := &w.req.Timeseries[n]
	ls := append(ts.Labels, prompb.Label{Name: "__name__", Value: name})
	ls = append(ls, w.base...)
	ls = append(ls, w.scope...)
	attrs.Range(func(k string, v pcommon.Value) bool {
		ls = append(ls, prompb.Label{Name: labelName(k), Value: v.AsString()})
		return true
	})
	ls = append(ls, extra...)
	slices.SortFunc(ls, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	ts.Labels = ls
	return ts
}

func sample(ts *prompb.TimeSeries, v float64, t pcommon.Timestamp, noValue bool) {
	if noValue {
		v = staleNaN
	}
	ts.Samples = append(ts.Samples, prompb.Sample{Value: v, Timestamp: toMs(t)})
}

func toMs(t pcommon.Timestamp) int64 { return int64(t) / 1e6 }

// metric writes the series of one metric and returns its first timestamp.
func (w *rwWriter) metric(m pmetric.Metric) int64 {
	var first pcommon.Timestamp
	switch m.Type() {
	case pmetric.MetricTypeGauge, pmetric.MetricTypeSum:
		var dps pmetric.NumberDataPointSlice
		if m.Type() == pmetric.MetricTypeSum {
			dps = m.Sum().DataPoints()
		} else {
			dps = m.Gauge().DataPoints()
		}
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			ts := w.series(m.Name(), dp.Attributes())
			v := dp.DoubleValue()
			if dp.ValueType() == pmetric.NumberDataPointValueTypeInt {
				v = float64(dp.IntValue())
			}
			sample(ts, v, dp.Timestamp(), dp.Flags().NoRecordedValue())
			exemplars(ts, dp.Exemplars())
			first = min0(first, dp.Timestamp())
		}
	case pmetric.MetricTypeHistogram:
		dps := m.Histogram().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			stale := dp.Flags().NoRecordedValue()
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
				ts := w.series(m.Name()+"_bucket", dp.Attributes(), prompb.Label{Name: "le", Value: formatFloat(le)})
				sample(ts, float64(cum), dp.Timestamp(), stale)
				bucketExemplars(ts, dp.Exemplars(), le, b, bounds)
			}
			sample(w.series(m.Name()+"_sum", dp.Attributes()), dp.Sum(), dp.Timestamp(), stale)
			sample(w.series(m.Name()+"_count", dp.Attributes()), float64(dp.Count()), dp.Timestamp(), stale)
			first = min0(first, dp.Timestamp())
		}
	case pmetric.MetricTypeSummary:
		dps := m.Summary().DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			stale := dp.Flags().NoRecordedValue()
			qs := dp.QuantileValues()
			for q := 0; q < qs.Len(); q++ {
				ts := w.series(m.Name(), dp.Attributes(), prompb.Label{Name: "quantile", Value: formatFloat(qs.At(q).Quantile())})
				sample(ts, qs.At(q).Value(), dp.Timestamp(), stale)
			}
			sample(w.series(m.Name()+"_sum", dp.Attributes()), dp.Sum(), dp.Timestamp(), stale)
			sample(w.series(m.Name()+"_count", dp.Attributes()), float64(dp.Count()), dp.Timestamp(), stale)
			first = min0(first, dp.Timestamp())
		}
	case pmetric.MetricTypeExponentialHistogram:
		eh := m.ExponentialHistogram()
		dps := eh.DataPoints()
		for i := 0; i < dps.Len(); i++ {
			dp := dps.At(i)
			ts := w.series(m.Name(), dp.Attributes())
			ts.Histograms = append(ts.Histograms, nativeHistogram(dp, eh.AggregationTemporality()))
			exemplars(ts, dp.Exemplars())
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

func exemplars(ts *prompb.TimeSeries, es pmetric.ExemplarSlice) {
	for i := 0; i < es.Len(); i++ {
		ts.Exemplars = append(ts.Exemplars, exemplar(es.At(i)))
	}
}

// bucketExemplars puts on the bucket series of bucket b the exemplars
// whose value falls into it, as Prometheus exposes them.
func bucketExemplars(ts *prompb.TimeSeries, es pmetric.ExemplarSlice, le float64, b int, bounds pcommon.Float64Slice) {
	lower := math.Inf(-1)
	if b > 0 {
		lower = bounds.At(b - 1)
	}
	for i := 0; i < es.Len(); i++ {
		e := es.At(i)
		if v := exemplarValue(e); v > lower && v <= le {
			ts.Exemplars = append(ts.Exemplars, exemplar(e))
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
func (w *rwWriter) targetInfo(attrs pcommon.Map, t int64) {
	var extra []prompb.Label
	attrs.Range(func(k string, v pcommon.Value) bool {
		if !derivedResourceAttrs[k] {
			extra = append(extra, prompb.Label{Name: labelName(k), Value: v.AsString()})
		}
		return true
	})
	if len(extra) == 0 {
		return
	}
	saved := w.scope
	w.scope = nil
	ts := w.series("target_info", pcommon.NewMap(), extra...)
	w.scope = saved
	ts.Samples = append(ts.Samples, prompb.Sample{Value: 1, Timestamp: t})
}

func (w *rwWriter) meta(m pmetric.Metric) {
	if w.seen == nil {
		w.seen = make(map[string]bool)
	}
	if w.seen[m.Name()] {
		return
	}
	w.seen[m.Name()] = true
	w.req.Metadata = append(w.req.Metadata, prompb.MetricMetadata{
		Type:             metadataType(m),
		MetricFamilyName: m.Name(),
		Help:             m.Description(),
		Unit:             m.Unit(),
	})
}

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
