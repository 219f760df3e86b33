package export

import (
	"math"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// seriesString renders a series as name{labels} for comparisons.
func seriesString(ls []prompb.Label) string {
	var name string
	var parts []string
	for _, l := range ls {
		if l.Name == "__name__" {
			name = l.Value
			continue
		}
		parts = append(parts, l.Name+"="+l.Value)
	}
	return name + "{" + strings.Join(parts, ",") + "}"
}

func flatten(req *prompb.WriteRequest) map[string]float64 {
	out := map[string]float64{}
	for _, ts := range req.Timeseries {
		for _, s := range ts.Samples {
			out[seriesString(ts.Labels)] = s.Value
		}
	}
	return out
}

func TestToWriteRequest(t *testing.T) {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	ra := rm.Resource().Attributes()
	ra.PutStr("service.name", "node")
	ra.PutStr("service.instance.id", "h:9100")
	ra.PutStr("server.address", "h")
	ra.PutInt("server.port", 9100)
	ra.PutStr("url.scheme", "http")
	ra.PutStr("k8s.pod.name", "p1")

	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(defaultScopeName)
	ms := sm.Metrics()
	ts := pcommon.Timestamp(1_700_000_000_000 * 1e6)

	c := ms.AppendEmpty()
	c.SetName("reqs_total")
	c.SetDescription("Requests.")
	c.Metadata().PutStr("prometheus.type", "counter")
	sum := c.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	dp := sum.DataPoints().AppendEmpty()
	dp.SetTimestamp(ts)
	dp.SetDoubleValue(10)
	dp.Attributes().PutStr("code", "200")
	ex := dp.Exemplars().AppendEmpty()
	ex.SetDoubleValue(1)
	ex.SetTimestamp(ts)
	ex.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	stale := sum.DataPoints().AppendEmpty()
	stale.SetTimestamp(ts)
	stale.Attributes().PutStr("code", "500")
	stale.SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))

	h := ms.AppendEmpty()
	h.SetName("lat_seconds")
	hp := h.SetEmptyHistogram().DataPoints().AppendEmpty()
	hp.SetTimestamp(ts)
	hp.ExplicitBounds().FromRaw([]float64{0.1, 1})
	hp.BucketCounts().FromRaw([]uint64{1, 2, 3})
	hp.SetCount(6)
	hp.SetSum(4.5)
	hex := hp.Exemplars().AppendEmpty()
	hex.SetDoubleValue(0.5)

	s := ms.AppendEmpty()
	s.SetName("rpc")
	sp := s.SetEmptySummary().DataPoints().AppendEmpty()
	sp.SetTimestamp(ts)
	q := sp.QuantileValues().AppendEmpty()
	q.SetQuantile(0.5)
	q.SetValue(7)
	sp.SetCount(3)
	sp.SetSum(21)

	e := ms.AppendEmpty()
	e.SetName("native")
	eh := e.SetEmptyExponentialHistogram()
	eh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	ep := eh.DataPoints().AppendEmpty()
	ep.SetTimestamp(ts)
	ep.SetScale(1)
	ep.SetCount(12)
	ep.SetSum(3.75)
	ep.SetZeroCount(2)
	ep.SetZeroThreshold(0.001)
	ep.Positive().SetOffset(-2)
	ep.Positive().BucketCounts().FromRaw([]uint64{3, 4, 0, 0, 2})
	ep.Negative().SetOffset(-1)
	ep.Negative().BucketCounts().FromRaw([]uint64{3})

	scoped := rm.ScopeMetrics().AppendEmpty()
	scoped.Scope().SetName("io.example")
	scoped.Scope().SetVersion("v1")
	scoped.Scope().Attributes().PutStr("team", "a")
	g := scoped.Metrics().AppendEmpty()
	g.SetName("g")
	gp := g.SetEmptyGauge().DataPoints().AppendEmpty()
	gp.SetTimestamp(ts)
	gp.SetDoubleValue(2)

	var req prompb.WriteRequest
	ToWriteRequest(md, &req, true)
	got := flatten(&req)
	base := "instance=h:9100,job=node"
	want := map[string]float64{
		"reqs_total{code=200," + base + "}":        10,
		"lat_seconds_bucket{" + base + ",le=0.1}":  1,
		"lat_seconds_bucket{" + base + ",le=1}":    3,
		"lat_seconds_bucket{" + base + ",le=+Inf}": 6,
		"lat_seconds_sum{" + base + "}":            4.5,
		"lat_seconds_count{" + base + "}":          6,
		"rpc{" + base + ",quantile=0.5}":           7,
		"rpc_sum{" + base + "}":                    21,
		"rpc_count{" + base + "}":                  3,
		"g{" + base + ",otel_scope_name=io.example,otel_scope_team=a,otel_scope_version=v1}": 2,
		"target_info{" + base + ",k8s_pod_name=p1}":                                          1,
	}
	staleKey := "reqs_total{code=500," + base + "}"
	require.True(t, math.IsNaN(got[staleKey]) && math.Float64bits(got[staleKey]) == math.Float64bits(staleNaN), "staleness marker")
	delete(got, staleKey)
	delete(got, "native{"+base+"}") // a native histogram has no float sample
	require.Equal(t, want, got)

	for _, series := range req.Timeseries {
		require.True(t, sort.SliceIsSorted(series.Labels, func(i, j int) bool { return series.Labels[i].Name < series.Labels[j].Name }))
		switch seriesString(series.Labels) {
		case "reqs_total{code=200," + base + "}":
			require.Len(t, series.Exemplars, 1)
			require.Equal(t, "trace_id", series.Exemplars[0].Labels[0].Name)
			require.Equal(t, "0102030405060708090a0b0c0d0e0f10", series.Exemplars[0].Labels[0].Value)
		case "lat_seconds_bucket{" + base + ",le=1}":
			require.Len(t, series.Exemplars, 1, "the exemplar 0.5 belongs to bucket (0.1, 1]")
		case "lat_seconds_bucket{" + base + ",le=0.1}":
			require.Empty(t, series.Exemplars)
		case "native{" + base + "}":
			require.Len(t, series.Histograms, 1)
			nh := series.Histograms[0]
			require.Equal(t, int32(1), nh.Schema)
			require.Equal(t, uint64(12), nh.GetCountInt())
			require.Equal(t, uint64(2), nh.GetZeroCountInt())
			// OTLP offset -2 → Prometheus index -1; buckets -1,0 then 3.
			require.Equal(t, []prompb.BucketSpan{{Offset: -1, Length: 2}, {Offset: 2, Length: 1}}, nh.PositiveSpans)
			require.Equal(t, []int64{3, 1, -2}, nh.PositiveDeltas)
			require.Equal(t, []prompb.BucketSpan{{Offset: 0, Length: 1}}, nh.NegativeSpans)
			require.Equal(t, []int64{3}, nh.NegativeDeltas)
			require.Equal(t, int64(1_700_000_000_000), nh.Timestamp)
		}
	}
	require.Equal(t, prompb.MetricMetadata_COUNTER, req.Metadata[0].Type)
	require.Equal(t, "Requests.", req.Metadata[0].Help)
	require.Equal(t, "reqs_total", req.Metadata[0].MetricFamilyName)

	// The request's memory is reused.
	ToWriteRequest(md, &req, false)
	require.Empty(t, req.Metadata)
	require.Len(t, flatten(&req), len(want)+1)
}

func TestLabelName(t *testing.T) {
	for in, want := range map[string]string{
		"ok_name":      "ok_name",
		"k8s.pod.name": "k8s_pod_name",
		"1abc":         "_1abc",
		"a-b":          "a_b",
	} {
		require.Equal(t, want, labelName(in))
	}
}
