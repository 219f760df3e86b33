package export

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// PrometheusConfig configures the pull endpoint.
type PrometheusConfig struct {
	// Enabled serves the latest value of every series at the handler.
	Enabled bool `yaml:"enabled,omitempty"`
	// Expire forgets a series not updated for this long (default 5m): its
	// target left this scraper.
	Expire time.Duration `yaml:"expire,omitempty"`
}

// Prometheus is a pull endpoint: an http.Handler exposing the latest point
// of every series it consumed, with its timestamp, as Prometheus exposition
// (text, OpenMetrics or protobuf by content negotiation), for users who
// still scrape the scrapers (like federation). Series come back as
// Prometheus scraped them (see ToWriteRequest); a staleness marker or
// Expire removes one.
type Prometheus struct {
	expire time.Duration
	logger *slog.Logger
	now    func() time.Time

	mu     sync.Mutex
	series map[string]*promSeries
}

type promSeries struct {
	family  string
	typ     dto.MetricType
	help    string
	unit    string
	metric  *dto.Metric
	updated time.Time
}

var (
	_ Exporter     = (*Prometheus)(nil)
	_ http.Handler = (*Prometheus)(nil)
)

// NewPrometheus returns a pull endpoint.
func NewPrometheus(cfg PrometheusConfig, logger *slog.Logger) *Prometheus {
	if cfg.Expire <= 0 {
		cfg.Expire = 5 * time.Minute
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Prometheus{expire: cfg.Expire, logger: logger, now: time.Now, series: make(map[string]*promSeries)}
}

// readOnly marks a consumer that does not keep or change md, so that a
// fan-out need not copy it.
func (*Prometheus) readOnly() {}

// Shutdown does nothing: the endpoint holds no resources.
func (*Prometheus) Shutdown(context.Context) error { return nil }

// ConsumeMetrics updates the exposed series. It does not keep md.
func (p *Prometheus) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		rm := rms.At(i)
		base := resourceLabels(rm.Resource().Attributes(), nil)
		var first pcommon.Timestamp
		sms := rm.ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			scope := scopeLabels(sms.At(j), nil)
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if t := p.metric(ms.At(k), base, scope, now); first == 0 || t < first && t != 0 {
					first = t
				}
			}
		}
		// target_info for the resource attributes that did not come from
		// the target itself.
		var extra []labelPair
		rm.Resource().Attributes().Range(func(k string, v pcommon.Value) bool {
			if !derivedResourceAttrs[k] {
				extra = append(extra, labelPair{labelName(k), v.AsString()})
			}
			return true
		})
		if len(extra) > 0 {
			m := &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(1)}}
			p.put("target_info", dto.MetricType_GAUGE, "Target metadata", "", appendPairs(base, nil, pcommon.NewMap(), extra...), m, first, now)
		}
	}
	return nil
}

type labelPair struct{ name, value string }

func appendPairs(base, scope []prompb.Label, attrs pcommon.Map, extra ...labelPair) []*dto.LabelPair {
	out := make([]*dto.LabelPair, 0, len(base)+len(scope)+attrs.Len()+len(extra))
	for _, l := range base {
		out = append(out, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
	}
	for _, l := range scope {
		out = append(out, &dto.LabelPair{Name: proto.String(l.Name), Value: proto.String(l.Value)})
	}
	attrs.Range(func(k string, v pcommon.Value) bool {
		out = append(out, &dto.LabelPair{Name: proto.String(labelName(k)), Value: proto.String(v.AsString())})
		return true
	})
	for _, l := range extra {
		out = append(out, &dto.LabelPair{Name: proto.String(l.name), Value: proto.String(l.value)})
	}
	slices.SortFunc(out, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// metric stores the points of one metric and returns its first timestamp.
func (p *Prometheus) metric(m pmetric.Metric, base, scope []prompb.Label, now time.Time) pcommon.Timestamp {
	f := &incoming{p: p, m: m, typ: dtoType(m), base: base, scope: scope, now: now}
	switch m.Type() {
	case pmetric.MetricTypeGauge, pmetric.MetricTypeSum:
		var dps pmetric.NumberDataPointSlice
		if m.Type() == pmetric.MetricTypeSum {
			dps = m.Sum().DataPoints()
		} else {
			dps = m.Gauge().DataPoints()
		}
		putPoints(f, dps, func(dp pmetric.NumberDataPoint) *dto.Metric {
			v := dp.DoubleValue()
			if dp.ValueType() == pmetric.NumberDataPointValueTypeInt {
				v = float64(dp.IntValue())
			}
			switch f.typ {
			case dto.MetricType_COUNTER:
				return &dto.Metric{Counter: &dto.Counter{Value: proto.Float64(v), CreatedTimestamp: created(dp.StartTimestamp())}}
			case dto.MetricType_UNTYPED:
				return &dto.Metric{Untyped: &dto.Untyped{Value: proto.Float64(v)}}
			default:
				return &dto.Metric{Gauge: &dto.Gauge{Value: proto.Float64(v)}}
			}
		})
	case pmetric.MetricTypeHistogram:
		putPoints(f, m.Histogram().DataPoints(), func(dp pmetric.HistogramDataPoint) *dto.Metric {
			h := &dto.Histogram{SampleCount: proto.Uint64(dp.Count()), SampleSum: proto.Float64(dp.Sum()), CreatedTimestamp: created(dp.StartTimestamp())}
			var cum uint64
			for b := 0; b < dp.ExplicitBounds().Len(); b++ {
				if b < dp.BucketCounts().Len() {
					cum += dp.BucketCounts().At(b)
				}
				h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(dp.ExplicitBounds().At(b)), CumulativeCount: proto.Uint64(cum)})
			}
			return &dto.Metric{Histogram: h}
		})
	case pmetric.MetricTypeExponentialHistogram:
		temporality := m.ExponentialHistogram().AggregationTemporality()
		putPoints(f, m.ExponentialHistogram().DataPoints(), func(dp pmetric.ExponentialHistogramDataPoint) *dto.Metric {
			nh := nativeHistogram(dp, temporality)
			h := &dto.Histogram{
				SampleCount: proto.Uint64(dp.Count()), SampleSum: proto.Float64(dp.Sum()),
				Schema: proto.Int32(dp.Scale()), ZeroThreshold: proto.Float64(dp.ZeroThreshold()),
				ZeroCount: proto.Uint64(dp.ZeroCount()), PositiveDelta: nh.PositiveDeltas, NegativeDelta: nh.NegativeDeltas,
				CreatedTimestamp: created(dp.StartTimestamp()),
			}
			for _, s := range nh.PositiveSpans {
				h.PositiveSpan = append(h.PositiveSpan, &dto.BucketSpan{Offset: proto.Int32(s.Offset), Length: proto.Uint32(s.Length)})
			}
			for _, s := range nh.NegativeSpans {
				h.NegativeSpan = append(h.NegativeSpan, &dto.BucketSpan{Offset: proto.Int32(s.Offset), Length: proto.Uint32(s.Length)})
			}
			if len(h.PositiveSpan)+len(h.NegativeSpan) == 0 && dp.ZeroThreshold() == 0 {
				// An empty native histogram needs a marker to be one.
				h.ZeroThreshold = proto.Float64(0)
				h.PositiveSpan = []*dto.BucketSpan{{Offset: proto.Int32(0), Length: proto.Uint32(0)}}
			}
			return &dto.Metric{Histogram: h}
		})
	case pmetric.MetricTypeSummary:
		putPoints(f, m.Summary().DataPoints(), func(dp pmetric.SummaryDataPoint) *dto.Metric {
			s := &dto.Summary{SampleCount: proto.Uint64(dp.Count()), SampleSum: proto.Float64(dp.Sum()), CreatedTimestamp: created(dp.StartTimestamp())}
			for q := 0; q < dp.QuantileValues().Len(); q++ {
				qv := dp.QuantileValues().At(q)
				s.Quantile = append(s.Quantile, &dto.Quantile{Quantile: proto.Float64(qv.Quantile()), Value: proto.Float64(qv.Value())})
			}
			return &dto.Metric{Summary: s}
		})
	}
	return f.first
}

// incoming is one OTLP metric on its way into the exposed series.
type incoming struct {
	p           *Prometheus
	m           pmetric.Metric
	typ         dto.MetricType
	base, scope []prompb.Label
	now         time.Time
	// first is the earliest timestamp of its points.
	first pcommon.Timestamp
}

// dataPoint is what every kind of OTLP data point has.
type dataPoint interface {
	Timestamp() pcommon.Timestamp
	Attributes() pcommon.Map
	Flags() pmetric.DataPointFlags
}

// putPoints stores each point of dps under its series, as value makes it,
// or removes the series of a point that records no value (a staleness
// marker).
func putPoints[P dataPoint](f *incoming, dps interface {
	Len() int
	At(int) P
}, value func(P) *dto.Metric,
) {
	for i := 0; i < dps.Len(); i++ {
		dp := dps.At(i)
		if t := dp.Timestamp(); f.first == 0 || t < f.first {
			f.first = t
		}
		ls := appendPairs(f.base, f.scope, dp.Attributes())
		if dp.Flags().NoRecordedValue() {
			f.p.remove(f.m.Name(), ls)
			continue
		}
		f.p.put(f.m.Name(), f.typ, f.m.Description(), f.m.Unit(), ls, value(dp), dp.Timestamp(), f.now)
	}
}

func created(t pcommon.Timestamp) *timestamppb.Timestamp {
	if t == 0 {
		return nil
	}
	return timestamppb.New(t.AsTime())
}

func dtoType(m pmetric.Metric) dto.MetricType {
	if v, ok := m.Metadata().Get("prometheus.type"); ok {
		switch v.Str() {
		case "unknown":
			return dto.MetricType_UNTYPED
		case "gaugehistogram":
			if m.Type() == pmetric.MetricTypeGauge {
				return dto.MetricType_GAUGE
			}
			return dto.MetricType_GAUGE_HISTOGRAM
		case "info", "stateset":
			return dto.MetricType_GAUGE
		}
	}
	switch m.Type() {
	case pmetric.MetricTypeSum:
		if m.Sum().IsMonotonic() {
			return dto.MetricType_COUNTER
		}
	case pmetric.MetricTypeHistogram, pmetric.MetricTypeExponentialHistogram:
		return dto.MetricType_HISTOGRAM
	case pmetric.MetricTypeSummary:
		return dto.MetricType_SUMMARY
	}
	return dto.MetricType_GAUGE
}

func seriesKey(name string, ls []*dto.LabelPair) string {
	var b strings.Builder
	b.WriteString(name)
	for _, l := range ls {
		b.WriteByte(0xff)
		b.WriteString(l.GetName())
		b.WriteByte(0xfe)
		b.WriteString(l.GetValue())
	}
	return b.String()
}

// put stores a series; must hold p.mu.
func (p *Prometheus) put(name string, typ dto.MetricType, help, unit string, ls []*dto.LabelPair, m *dto.Metric, t pcommon.Timestamp, now time.Time) {
	m.Label = ls
	if t != 0 {
		m.TimestampMs = proto.Int64(toMs(t))
	}
	p.series[seriesKey(name, ls)] = &promSeries{family: name, typ: typ, help: help, unit: unit, metric: m, updated: now}
}

func (p *Prometheus) remove(name string, ls []*dto.LabelPair) {
	delete(p.series, seriesKey(name, ls))
}

// Gather returns the exposed metric families, sorted; series not updated
// within Expire are dropped first.
func (p *Prometheus) Gather() []*dto.MetricFamily {
	now := p.now()
	p.mu.Lock()
	fams := map[string]*dto.MetricFamily{}
	for k, s := range p.series {
		if now.Sub(s.updated) > p.expire {
			delete(p.series, k)
			continue
		}
		f := fams[s.family]
		if f == nil {
			f = &dto.MetricFamily{Name: proto.String(s.family), Type: s.typ.Enum()}
			if s.help != "" {
				f.Help = proto.String(s.help)
			}
			// No UNIT: OpenMetrics requires it to be a suffix of the name,
			// and the OTLP unit is the UCUM abbreviation.
			fams[s.family] = f
		}
		if f.GetType() != s.typ {
			continue // one name, two types: keep the first
		}
		f.Metric = append(f.Metric, s.metric)
	}
	p.mu.Unlock()
	out := make([]*dto.MetricFamily, 0, len(fams))
	for _, f := range fams {
		slices.SortFunc(f.Metric, func(a, b *dto.Metric) int {
			return strings.Compare(seriesKey("", a.Label), seriesKey("", b.Label))
		})
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out
}

// ServeHTTP writes the exposition in the format the client asks for.
func (p *Prometheus) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	format := expfmt.NegotiateIncludingOpenMetrics(r.Header)
	w.Header().Set("Content-Type", string(format))
	enc := expfmt.NewEncoder(w, format)
	for _, f := range p.Gather() {
		if err := enc.Encode(f); err != nil {
			p.logger.Warn("encode metrics", "family", f.GetName(), "err", err)
			return
		}
	}
	if c, ok := enc.(expfmt.Closer); ok {
		_ = c.Close()
	}
}
