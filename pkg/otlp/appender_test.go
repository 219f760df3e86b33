package otlp

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// sample is one Append call.
type sample struct {
	ls     labels.Labels
	st, t  int64
	v      float64
	h      *histogram.Histogram
	family string
	typ    model.MetricType
	ex     []exemplar.Exemplar
}

func counter(v float64, t int64) sample {
	return sample{ls: labels.FromStrings("__name__", "c_total", "job", "j", "instance", "h:9100", "k", "v"), t: t, v: v, family: "c_total", typ: model.MetricTypeCounter}
}

func testTarget(extra ...string) *scrape.Target {
	ls := labels.FromStrings(append([]string{
		"job", "j", "instance", "h:9100", "__address__", "h:9100", "__scheme__", "https", "__metrics_path__", "/metrics",
	}, extra...)...)
	return scrape.NewTarget(ls, &config.ScrapeConfig{}, nil, nil)
}

// commitScrape appends samples in one appender of target tg and commits,
// returning what the consumer got (or the Commit error).
func commitScrape(t *testing.T, app *Appendable, rec *recorder, tg *scrape.Target, samples ...sample) (pmetric.Metrics, error) {
	t.Helper()
	ctx := context.Background()
	if tg != nil {
		ctx = scrape.ContextWithTarget(ctx, tg)
	}
	a := app.AppenderV2(ctx)
	for _, s := range samples {
		_, err := a.Append(0, s.ls, s.st, s.t, s.v, s.h, nil, storage.AOptions{
			MetricFamilyName: s.family,
			Metadata:         metadata.Metadata{Type: s.typ},
			Exemplars:        s.ex,
		})
		require.NoError(t, err)
	}
	n := len(rec.all())
	if err := a.Commit(); err != nil {
		return pmetric.Metrics{}, err
	}
	got := rec.all()
	require.Len(t, got, n+1)
	return got[n], nil
}

func onlyMetric(t *testing.T, md pmetric.Metrics) pmetric.Metric {
	t.Helper()
	require.Equal(t, 1, md.ResourceMetrics().Len())
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	require.Equal(t, 1, ms.Len())
	return ms.At(0)
}

func ts(ms int64) pcommon.Timestamp { return pcommon.Timestamp(ms * 1e6) }

func TestCounterStartTimes(t *testing.T) {
	stale := math.Float64frombits(value.StaleNaN)
	type step struct {
		s         sample
		wantStart int64
		wantStale bool
	}
	withST := counter(5, 1000)
	withST.st = 500
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "first observation, then kept, reset, staleness, fresh start",
			steps: []step{
				{s: counter(5, 1000), wantStart: 1000},
				{s: counter(7, 2000), wantStart: 1000},
				{s: counter(7, 3000), wantStart: 1000},
				{s: counter(2, 4000), wantStart: 3999},
				{s: counter(3, 5000), wantStart: 3999},
				{s: counter(stale, 6000), wantStart: 3999, wantStale: true},
				{s: counter(1, 7000), wantStart: 7000},
			},
		},
		{
			name: "start timestamp from the scrape wins",
			steps: []step{
				{s: withST, wantStart: 500},
				{s: counter(6, 2000), wantStart: 500},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			app := NewAppendable(rec, Options{}, nil, nil)
			tg := testTarget()
			for i, st := range tt.steps {
				md, err := commitScrape(t, app, rec, tg, st.s)
				require.NoError(t, err)
				m := onlyMetric(t, md)
				dp := m.Sum().DataPoints().At(0)
				require.Equal(t, ts(st.wantStart), dp.StartTimestamp(), "step %d", i)
				require.Equal(t, st.wantStale, dp.Flags().NoRecordedValue(), "step %d", i)
				if st.wantStale {
					require.Equal(t, pmetric.NumberDataPointValueTypeEmpty, dp.ValueType())
				} else {
					require.Equal(t, st.s.v, dp.DoubleValue())
				}
			}
		})
	}
}

func TestRollbackLeavesStateAlone(t *testing.T) {
	rec := &recorder{}
	app := NewAppendable(rec, Options{}, nil, nil)
	tg := testTarget()
	_, err := commitScrape(t, app, rec, tg, counter(5, 1000))
	require.NoError(t, err)

	a := app.AppenderV2(scrape.ContextWithTarget(context.Background(), tg))
	s := counter(1, 2000)
	_, err = a.Append(0, s.ls, 0, s.t, s.v, nil, nil, storage.AOptions{MetricFamilyName: s.family, Metadata: metadata.Metadata{Type: s.typ}})
	require.NoError(t, err)
	require.NoError(t, a.Rollback())
	require.ErrorIs(t, a.Commit(), ErrDone)

	md, err := commitScrape(t, app, rec, tg, counter(6, 3000))
	require.NoError(t, err)
	require.Equal(t, ts(1000), onlyMetric(t, md).Sum().DataPoints().At(0).StartTimestamp(), "rolled back decrease is no reset")
}

func TestForget(t *testing.T) {
	rec := &recorder{}
	app := NewAppendable(rec, Options{}, nil, nil)
	tg := testTarget()
	_, err := commitScrape(t, app, rec, tg, counter(5, 1000))
	require.NoError(t, err)
	app.Forget(TargetHash(tg))
	md, err := commitScrape(t, app, rec, tg, counter(6, 2000))
	require.NoError(t, err)
	require.Equal(t, ts(2000), onlyMetric(t, md).Sum().DataPoints().At(0).StartTimestamp())

	// A reload hands a new *scrape.Target for the same target: same state.
	reloaded := testTarget()
	require.Equal(t, TargetHash(tg), TargetHash(reloaded))
	md, err = commitScrape(t, app, rec, reloaded, counter(7, 2500))
	require.NoError(t, err)
	require.Equal(t, ts(2000), onlyMetric(t, md).Sum().DataPoints().At(0).StartTimestamp())

	// Another target with the same series has its own state.
	other := testTarget("zone", "b")
	require.NotEqual(t, TargetHash(tg), TargetHash(other))
	md, err = commitScrape(t, app, rec, other, counter(1, 3000))
	require.NoError(t, err)
	require.Equal(t, ts(3000), onlyMetric(t, md).Sum().DataPoints().At(0).StartTimestamp())
}

func classic(le string, v float64, t int64) sample {
	name := "h_bucket"
	ls := labels.FromStrings("__name__", name, "job", "j", "instance", "h:9100", "le", le)
	switch le {
	case "sum":
		ls = labels.FromStrings("__name__", "h_sum", "job", "j", "instance", "h:9100")
	case "count":
		ls = labels.FromStrings("__name__", "h_count", "job", "j", "instance", "h:9100")
	}
	return sample{ls: ls, t: t, v: v, family: "h", typ: model.MetricTypeHistogram}
}

func TestHistogramResets(t *testing.T) {
	rec := &recorder{}
	app := NewAppendable(rec, Options{}, nil, nil)
	tg := testTarget()
	scrapeH := func(t0 int64, b1, inf, sum float64) pmetric.HistogramDataPoint {
		md, err := commitScrape(t, app, rec, tg,
			classic("1", b1, t0), classic("+Inf", inf, t0), classic("sum", sum, t0), classic("count", inf, t0))
		require.NoError(t, err)
		return onlyMetric(t, md).Histogram().DataPoints().At(0)
	}
	require.Equal(t, ts(1000), scrapeH(1000, 1, 4, 10).StartTimestamp())
	require.Equal(t, ts(1000), scrapeH(2000, 2, 5, 11).StartTimestamp())
	// Same count, but a bucket went down: the histogram was reset.
	dp := scrapeH(3000, 1, 5, 3)
	require.Equal(t, ts(2999), dp.StartTimestamp())
	require.Equal(t, []uint64{1, 4}, dp.BucketCounts().AsRaw())

	// A staleness marker keeps the bounds and the start.
	sn := math.Float64frombits(value.StaleNaN)
	md, err := commitScrape(t, app, rec, tg, classic("1", sn, 4000), classic("+Inf", sn, 4000), classic("sum", sn, 4000), classic("count", sn, 4000))
	require.NoError(t, err)
	dp = onlyMetric(t, md).Histogram().DataPoints().At(0)
	require.True(t, dp.Flags().NoRecordedValue())
	require.Equal(t, []float64{1}, dp.ExplicitBounds().AsRaw())
	require.Equal(t, []uint64{0, 0}, dp.BucketCounts().AsRaw())
	require.Equal(t, ts(2999), dp.StartTimestamp())
	// and the series starts afresh when it comes back.
	require.Equal(t, ts(5000), scrapeH(5000, 1, 1, 1).StartTimestamp())
}

func TestNativeHistogramResetHint(t *testing.T) {
	rec := &recorder{}
	app := NewAppendable(rec, Options{}, nil, nil)
	tg := testTarget()
	nh := func(t0 int64, count uint64, hint histogram.CounterResetHint) sample {
		return sample{
			ls: labels.FromStrings("__name__", "n", "job", "j", "instance", "h:9100"), t: t0,
			h: &histogram.Histogram{
				CounterResetHint: hint, Schema: 0, Count: count, Sum: float64(count),
				PositiveSpans: []histogram.Span{{Offset: 0, Length: 1}}, PositiveBuckets: []int64{int64(count)},
			},
			family: "n", typ: model.MetricTypeHistogram,
		}
	}
	start := func(s sample) pcommon.Timestamp {
		md, err := commitScrape(t, app, rec, tg, s)
		require.NoError(t, err)
		m := onlyMetric(t, md)
		require.Equal(t, pmetric.MetricTypeExponentialHistogram, m.Type())
		return m.ExponentialHistogram().DataPoints().At(0).StartTimestamp()
	}
	require.Equal(t, ts(1000), start(nh(1000, 5, histogram.UnknownCounterReset)))
	require.Equal(t, ts(1000), start(nh(2000, 6, histogram.NotCounterReset)))
	require.Equal(t, ts(2999), start(nh(3000, 7, histogram.CounterReset)), "the hint says reset though the count grew")
	require.Equal(t, ts(2999), start(nh(4000, 8, histogram.UnknownCounterReset)))
}

func TestResources(t *testing.T) {
	rec := &recorder{}
	app := NewAppendable(rec, Options{KubernetesAttributes: true}, nil, nil)
	tg := testTarget(
		"__meta_kubernetes_namespace", "ns1",
		"__meta_kubernetes_pod_name", "web-7d4b9c8f6d-x2x4z",
		"__meta_kubernetes_pod_node_name", "node-1",
		"__meta_kubernetes_pod_controller_kind", "ReplicaSet",
		"__meta_kubernetes_pod_controller_name", "web-7d4b9c8f6d",
		"__meta_kubernetes_pod_container_id", "containerd://abc123",
	)
	fed := sample{ls: labels.FromStrings("__name__", "g", "job", "other", "instance", "[::1]:80"), t: 1, v: 1}
	own := sample{ls: labels.FromStrings("__name__", "g", "job", "j", "instance", "h:9100"), t: 1, v: 2}
	md, err := commitScrape(t, app, rec, tg, own, fed)
	require.NoError(t, err)
	require.Equal(t, 2, md.ResourceMetrics().Len(), "honor_labels: one resource per job/instance")
	require.Equal(t, map[string]any{
		"service.name":        "j",
		"service.instance.id": "h:9100",
		"server.address":      "h",
		"server.port":         int64(9100),
		"url.scheme":          "https",
		"k8s.namespace.name":  "ns1",
		"k8s.pod.name":        "web-7d4b9c8f6d-x2x4z",
		"k8s.node.name":       "node-1",
		"k8s.replicaset.name": "web-7d4b9c8f6d",
		"k8s.deployment.name": "web",
		"container.id":        "abc123",
	}, md.ResourceMetrics().At(0).Resource().Attributes().AsRaw())
	res := md.ResourceMetrics().At(1).Resource().Attributes().AsRaw()
	require.Equal(t, "other", res["service.name"])
	require.Equal(t, "::1", res["server.address"])
	require.Equal(t, int64(80), res["server.port"])
}

func TestExemplarIDs(t *testing.T) {
	rec := &recorder{}
	app := NewAppendable(rec, Options{}, nil, nil)
	s := counter(1, 1000)
	s.ex = []exemplar.Exemplar{
		{Labels: labels.FromStrings("trace_id", "not-hex", "span_id", "0102030405060708"), Value: 2, Ts: 900, HasTs: true},
	}
	md, err := commitScrape(t, app, rec, nil, s)
	require.NoError(t, err)
	e := onlyMetric(t, md).Sum().DataPoints().At(0).Exemplars().At(0)
	require.Equal(t, pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, e.SpanID())
	require.True(t, e.TraceID().IsEmpty())
	require.Equal(t, map[string]any{"trace_id": "not-hex"}, e.FilteredAttributes().AsRaw(), "an unusable ID is kept as attribute")
	require.Equal(t, ts(900), e.Timestamp())
}

func TestAppendErrors(t *testing.T) {
	boom := errors.New("boom")
	app := NewAppendable(ConsumerFunc(func(context.Context, pmetric.Metrics) error { return boom }), Options{}, nil, nil)
	a := app.AppenderV2(context.Background())
	_, err := a.Append(0, labels.FromStrings("job", "j"), 0, 1, 1, nil, nil, storage.AOptions{})
	require.ErrorIs(t, err, ErrNoMetricName)
	_, err = a.Append(0, labels.FromStrings("__name__", "x", "job", "j"), 0, 1, 1, nil, nil, storage.AOptions{})
	require.NoError(t, err)
	require.ErrorIs(t, a.Commit(), boom)
	_, err = a.Append(0, labels.FromStrings("__name__", "x"), 0, 1, 1, nil, nil, storage.AOptions{})
	require.ErrorIs(t, err, ErrDone)

	// An empty scrape is not handed on.
	require.NoError(t, app.AppenderV2(context.Background()).Commit())
}

func TestUnitToUCUM(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "",
		"seconds":          "s",
		"milliseconds":     "ms",
		"bytes":            "By",
		"ratio":            "1",
		"bytes_per_second": "By/s",
		"requests_per_day": "requests/d",
		"widgets":          "widgets",
		"celsius":          "Cel",
		"joules_per_":      "J",
	} {
		require.Equal(t, want, unitToUCUM(in), in)
	}
}

// TestClassicFamiliesKeepApart: two histogram or summary families with the
// same labels have separate start-time state (the group hash leaves the
// name out), so the smaller count of one is no reset of the other.
func TestClassicFamiliesKeepApart(t *testing.T) {
	series := func(name, fam string, typ model.MetricType, extra []string, v float64, t0 int64) sample {
		ls := labels.FromStrings(append([]string{"__name__", name, "job", "j", "instance", "h:9100"}, extra...)...)
		return sample{ls: ls, t: t0, v: v, family: fam, typ: typ}
	}
	tests := []struct {
		name    string
		typ     model.MetricType
		samples func(fam string, v float64, t0 int64) []sample
	}{
		{name: "histograms", typ: model.MetricTypeHistogram, samples: func(fam string, v float64, t0 int64) []sample {
			return []sample{
				series(fam+"_bucket", fam, model.MetricTypeHistogram, []string{"le", "+Inf"}, v, t0),
				series(fam+"_count", fam, model.MetricTypeHistogram, nil, v, t0),
			}
		}},
		{name: "summaries", typ: model.MetricTypeSummary, samples: func(fam string, v float64, t0 int64) []sample {
			return []sample{
				series(fam, fam, model.MetricTypeSummary, []string{"quantile", "0.5"}, 1, t0),
				series(fam+"_count", fam, model.MetricTypeSummary, nil, v, t0),
			}
		}},
	}
	for _, tt := range tests {
		for _, encoded := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/encoded=%v", tt.name, encoded), func(t *testing.T) {
				rec := &recorder{}
				var next Consumer = rec
				if encoded {
					enc := &encRecorder{}
					next, rec = enc, &enc.recorder
				}
				app := NewAppendable(next, Options{}, nil, nil)
				tg := testTarget()
				for i, t0 := range []int64{1000, 2000, 3000} {
					// a grows by 10, b by 1 and stays below a.
					s := append(tt.samples("a", float64(100+10*i), t0), tt.samples("b", float64(5+i), t0)...)
					md, err := commitScrape(t, app, rec, tg, s...)
					require.NoError(t, err)
					ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
					require.Equal(t, 2, ms.Len())
					for j := range 2 {
						m := ms.At(j)
						var start pcommon.Timestamp
						if tt.typ == model.MetricTypeHistogram {
							start = m.Histogram().DataPoints().At(0).StartTimestamp()
						} else {
							start = m.Summary().DataPoints().At(0).StartTimestamp()
						}
						require.Equal(t, ts(1000), start, "%s at %d", m.Name(), t0)
					}
				}
			})
		}
	}
}
