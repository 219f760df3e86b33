package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	remoteapi "github.com/prometheus/client_golang/exp/api/remote"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/model"
	promexemplar "github.com/prometheus/prometheus/model/exemplar"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/model/value"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// appended is one sample a receiver appended to its storage.
type appended struct {
	series string // name{label=value,...}
	st, t  int64
	v      float64
	h      *histogram.Histogram
	meta   metadata.Metadata
	ex     int // exemplars appended with the series
}

// recorder is a storage.AppendableV2 that records what is committed.
type recorder struct {
	mu  sync.Mutex
	got []appended
}

func (r *recorder) AppenderV2(context.Context) storage.AppenderV2 { return &recordingAppender{r: r} }

func (r *recorder) all() []appended {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]appended(nil), r.got...)
}

type recordingAppender struct {
	r       *recorder
	pending []appended
}

var _ storage.ExemplarAppenderV2 = (*recordingAppender)(nil)

func (a *recordingAppender) Append(_ storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AOptions) (storage.SeriesRef, error) {
	if fh != nil {
		return 0, errors.New("float histogram: allot sends integer ones")
	}
	a.pending = append(a.pending, appended{series: labelsString(ls), st: st, t: t, v: v, h: h, meta: opts.Metadata})
	return storage.SeriesRef(len(a.pending)), nil
}

func (a *recordingAppender) AppendExemplars(ref storage.SeriesRef, _ labels.Labels, es []promexemplar.Exemplar) (storage.SeriesRef, error) {
	a.pending[ref-1].ex += len(es)
	return ref, nil
}

func (a *recordingAppender) Commit() error {
	a.r.mu.Lock()
	defer a.r.mu.Unlock()
	a.r.got = append(a.r.got, a.pending...)
	return nil
}

func (a *recordingAppender) Rollback() error { return nil }

func labelsString(ls labels.Labels) string {
	var parts []string
	ls.Range(func(l labels.Label) {
		if l.Name != model.MetricNameLabel {
			parts = append(parts, l.Name+"="+l.Value)
		}
	})
	return ls.Get(model.MetricNameLabel) + "{" + strings.Join(parts, ",") + "}"
}

// rw2Store stores remote write 2.0 requests as Prometheus's receiver
// (storage/remote writeHandler.Store and appendV2) does: desymbolized with
// the codec Prometheus ships, samples and histograms appended with their
// start timestamp and metadata, exemplars after them, the written counts
// returned in the response headers. Prometheus's storage/remote package
// itself cannot be imported here: its OTLP handler needs Collector modules
// that are not in go.mod. The HTTP side (content negotiation, snappy, 415
// for a message not accepted, the written headers) is Prometheus's
// remoteapi handler, which storage/remote.NewWriteHandler wraps.
type rw2Store struct{ app storage.AppendableV2 }

func (s rw2Store) Store(r *http.Request, msgType remoteapi.WriteMessageType) (*remoteapi.WriteResponse, error) {
	resp := remoteapi.NewWriteResponse()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, err
	}
	if msgType != remoteapi.WriteV2MessageType {
		resp.SetStatusCode(http.StatusBadRequest)
		return resp, fmt.Errorf("unexpected %s", msgType)
	}
	var req writev2.Request
	if err := req.Unmarshal(body); err != nil {
		resp.SetStatusCode(http.StatusBadRequest)
		return resp, err
	}
	app := s.app.AppenderV2(r.Context()).(storage.ExemplarAppenderV2)
	var stats remoteapi.WriteResponseStats
	b := labels.NewScratchBuilder(0)
	for _, ts := range req.Timeseries {
		ls, err := ts.ToLabels(&b, req.Symbols)
		if err != nil {
			return resp, errors.Join(err, app.Rollback())
		}
		m, err := ts.ToMetadata(req.Symbols)
		if err != nil {
			return resp, errors.Join(err, app.Rollback())
		}
		var ref storage.SeriesRef
		for _, smp := range ts.Samples {
			if ref, err = app.Append(0, ls, smp.StartTimestamp, smp.Timestamp, smp.Value, nil, nil, storage.AOptions{Metadata: m}); err != nil {
				return resp, errors.Join(err, app.Rollback())
			}
			stats.Samples++
		}
		for _, hp := range ts.Histograms {
			if ref, err = app.Append(0, ls, hp.StartTimestamp, hp.Timestamp, 0, hp.ToIntHistogram(), nil, storage.AOptions{Metadata: m}); err != nil {
				return resp, errors.Join(err, app.Rollback())
			}
			stats.Histograms++
		}
		var es []promexemplar.Exemplar
		for _, ep := range ts.Exemplars {
			e, err := ep.ToExemplar(&b, req.Symbols)
			if err != nil {
				return resp, errors.Join(err, app.Rollback())
			}
			es = append(es, e)
		}
		if len(es) > 0 {
			if _, err := app.AppendExemplars(ref, ls, es); err != nil {
				return resp, errors.Join(err, app.Rollback())
			}
			stats.Exemplars += len(es)
		}
	}
	if err := app.Commit(); err != nil {
		return resp, err
	}
	resp.Add(stats)
	return resp, nil
}

// newRW2Receiver serves a remote write receiver accepting msgs.
func newRW2Receiver(t *testing.T, msgs ...remoteapi.WriteMessageType) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(remoteapi.NewWriteHandler(rw2Store{app: rec}, msgs))
	t.Cleanup(srv.Close)
	return srv, rec
}

const (
	rw2Start = int64(1_700_000_000_000) // ms
	rw2T     = rw2Start + 60_000
)

func rw2Metric(md pmetric.Metrics, name, help, unit, typ string) pmetric.Metric {
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "app")
	rm.Resource().Attributes().PutStr("service.instance.id", "h:80")
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(defaultScopeName)
	m := sm.Metrics().AppendEmpty()
	m.SetName(name)
	m.SetDescription(help)
	m.SetUnit(unit)
	m.Metadata().PutStr("prometheus.type", typ)
	return m
}

func ms(t int64) pcommon.Timestamp { return pcommon.Timestamp(t * 1e6) }

func TestRemoteWrite2(t *testing.T) {
	const base = "instance=h:80,job=app"
	stale := pmetric.DefaultDataPointFlags.WithNoRecordedValue(true)
	meta := func(typ model.MetricType, help, unit string) metadata.Metadata {
		return metadata.Metadata{Type: typ, Help: help, Unit: unit}
	}
	tests := []struct {
		name  string
		build func(md pmetric.Metrics)
		want  []appended
	}{
		{
			name: "counter with start timestamp and exemplar",
			build: func(md pmetric.Metrics) {
				s := rw2Metric(md, "reqs_total", "Requests.", "", "counter").SetEmptySum()
				s.SetIsMonotonic(true)
				s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				dp := s.DataPoints().AppendEmpty()
				dp.SetStartTimestamp(ms(rw2Start))
				dp.SetTimestamp(ms(rw2T))
				dp.SetDoubleValue(42)
				dp.Attributes().PutStr("code", "200")
				ex := dp.Exemplars().AppendEmpty()
				ex.SetDoubleValue(1)
				ex.SetTimestamp(ms(rw2T))
				ex.SetTraceID(pcommon.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
			},
			want: []appended{{series: "reqs_total{code=200," + base + "}", st: rw2Start, t: rw2T, v: 42, meta: meta(model.MetricTypeCounter, "Requests.", ""), ex: 1}},
		},
		{
			name: "gauge has no start timestamp",
			build: func(md pmetric.Metrics) {
				g := rw2Metric(md, "temp_celsius", "Temperature.", "Cel", "gauge").SetEmptyGauge()
				dp := g.DataPoints().AppendEmpty()
				dp.SetStartTimestamp(ms(rw2Start))
				dp.SetTimestamp(ms(rw2T))
				dp.SetIntValue(-3)
			},
			want: []appended{{series: "temp_celsius{" + base + "}", t: rw2T, v: -3, meta: meta(model.MetricTypeGauge, "Temperature.", "Cel")}},
		},
		{
			name: "classic histogram",
			build: func(md pmetric.Metrics) {
				h := rw2Metric(md, "lat_seconds", "Latency.", "s", "histogram").SetEmptyHistogram()
				h.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				dp := h.DataPoints().AppendEmpty()
				dp.SetStartTimestamp(ms(rw2Start))
				dp.SetTimestamp(ms(rw2T))
				dp.ExplicitBounds().FromRaw([]float64{0.1, 1})
				dp.BucketCounts().FromRaw([]uint64{1, 2, 3})
				dp.SetCount(6)
				dp.SetSum(4.5)
			},
			want: func() []appended {
				m := meta(model.MetricTypeHistogram, "Latency.", "s")
				return []appended{
					{series: "lat_seconds_bucket{" + base + ",le=0.1}", st: rw2Start, t: rw2T, v: 1, meta: m},
					{series: "lat_seconds_bucket{" + base + ",le=1}", st: rw2Start, t: rw2T, v: 3, meta: m},
					{series: "lat_seconds_bucket{" + base + ",le=+Inf}", st: rw2Start, t: rw2T, v: 6, meta: m},
					{series: "lat_seconds_sum{" + base + "}", st: rw2Start, t: rw2T, v: 4.5, meta: m},
					{series: "lat_seconds_count{" + base + "}", st: rw2Start, t: rw2T, v: 6, meta: m},
				}
			}(),
		},
		{
			name: "native histogram",
			build: func(md pmetric.Metrics) {
				eh := rw2Metric(md, "native_seconds", "Native.", "s", "histogram").SetEmptyExponentialHistogram()
				eh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				dp := eh.DataPoints().AppendEmpty()
				dp.SetStartTimestamp(ms(rw2Start))
				dp.SetTimestamp(ms(rw2T))
				dp.SetScale(1)
				dp.SetCount(12)
				dp.SetSum(3.75)
				dp.SetZeroCount(2)
				dp.SetZeroThreshold(0.001)
				dp.Positive().SetOffset(-2)
				dp.Positive().BucketCounts().FromRaw([]uint64{3, 4, 0, 0, 2})
				dp.Negative().SetOffset(-1)
				dp.Negative().BucketCounts().FromRaw([]uint64{1})
			},
			want: []appended{{
				series: "native_seconds{" + base + "}", st: rw2Start, t: rw2T,
				h: &histogram.Histogram{
					Schema: 1, Count: 12, Sum: 3.75, ZeroCount: 2, ZeroThreshold: 0.001,
					// OTLP offset -2 is Prometheus index -1: buckets -1, 0, then 3.
					PositiveSpans:   []histogram.Span{{Offset: -1, Length: 2}, {Offset: 2, Length: 1}},
					PositiveBuckets: []int64{3, 1, -2},
					NegativeSpans:   []histogram.Span{{Offset: 0, Length: 1}},
					NegativeBuckets: []int64{1},
				},
				meta: meta(model.MetricTypeHistogram, "Native.", "s"),
			}},
		},
		{
			name: "summary",
			build: func(md pmetric.Metrics) {
				s := rw2Metric(md, "rpc_seconds", "RPCs.", "s", "summary").SetEmptySummary()
				dp := s.DataPoints().AppendEmpty()
				dp.SetStartTimestamp(ms(rw2Start))
				dp.SetTimestamp(ms(rw2T))
				for _, q := range [][2]float64{{0.5, 0.2}, {0.99, 1.5}} {
					qv := dp.QuantileValues().AppendEmpty()
					qv.SetQuantile(q[0])
					qv.SetValue(q[1])
				}
				dp.SetCount(30)
				dp.SetSum(12)
			},
			want: func() []appended {
				m := meta(model.MetricTypeSummary, "RPCs.", "s")
				return []appended{
					{series: "rpc_seconds{" + base + ",quantile=0.5}", st: rw2Start, t: rw2T, v: 0.2, meta: m},
					{series: "rpc_seconds{" + base + ",quantile=0.99}", st: rw2Start, t: rw2T, v: 1.5, meta: m},
					{series: "rpc_seconds_sum{" + base + "}", st: rw2Start, t: rw2T, v: 12, meta: m},
					{series: "rpc_seconds_count{" + base + "}", st: rw2Start, t: rw2T, v: 30, meta: m},
				}
			}(),
		},
		{
			name: "staleness markers",
			build: func(md pmetric.Metrics) {
				s := rw2Metric(md, "gone_total", "Gone.", "", "counter").SetEmptySum()
				s.SetIsMonotonic(true)
				s.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				dp := s.DataPoints().AppendEmpty()
				dp.SetStartTimestamp(ms(rw2Start))
				dp.SetTimestamp(ms(rw2T))
				dp.SetFlags(stale)
				h := rw2Metric(md, "gone_seconds", "", "", "histogram").SetEmptyHistogram()
				h.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				hp := h.DataPoints().AppendEmpty()
				hp.SetTimestamp(ms(rw2T))
				hp.SetFlags(stale)
				hp.ExplicitBounds().FromRaw([]float64{1})
				hp.BucketCounts().FromRaw([]uint64{0, 0})
				eh := rw2Metric(md, "gone_native", "", "", "histogram").SetEmptyExponentialHistogram()
				eh.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
				ep := eh.DataPoints().AppendEmpty()
				ep.SetTimestamp(ms(rw2T))
				ep.SetFlags(stale)
			},
			want: func() []appended {
				sn := math.Float64frombits(value.StaleNaN)
				hm := meta(model.MetricTypeHistogram, "", "")
				return []appended{
					// A staleness marker ends a series: no start timestamp.
					{series: "gone_total{" + base + "}", t: rw2T, v: sn, meta: meta(model.MetricTypeCounter, "Gone.", "")},
					{series: "gone_seconds_bucket{" + base + ",le=1}", t: rw2T, v: sn, meta: hm},
					{series: "gone_seconds_bucket{" + base + ",le=+Inf}", t: rw2T, v: sn, meta: hm},
					{series: "gone_seconds_sum{" + base + "}", t: rw2T, v: sn, meta: hm},
					{series: "gone_seconds_count{" + base + "}", t: rw2T, v: sn, meta: hm},
					{series: "gone_native{" + base + "}", t: rw2T, h: &histogram.Histogram{Sum: sn}, meta: hm},
				}
			}(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, rec := newRW2Receiver(t, remoteapi.WriteV2MessageType)
			exp, err := NewRemoteWrite(RemoteWriteConfig{
				URL: srv.URL, ProtobufMessage: RemoteWriteV2,
				Batch: BatchConfig{MaxWait: time.Millisecond}, Retry: fastRetry(),
			}, nil, nil)
			require.NoError(t, err)
			md := pmetric.NewMetrics()
			tt.build(md)
			points := md.DataPointCount()
			require.NoError(t, exp.ConsumeMetrics(context.Background(), md))
			require.Eventually(t, func() bool { return len(rec.all()) >= len(tt.want) }, 20*time.Second, 5*time.Millisecond)
			require.NoError(t, exp.Shutdown(context.Background()))

			got := rec.all()
			require.Len(t, got, len(tt.want))
			for i, w := range tt.want {
				g := got[i]
				require.Equal(t, w.series, g.series, "series %d", i)
				require.Equal(t, w.st, g.st, "%s: start timestamp", w.series)
				require.Equal(t, w.t, g.t, "%s: timestamp", w.series)
				require.Equal(t, w.meta, g.meta, "%s: metadata", w.series)
				require.Equal(t, w.ex, g.ex, "%s: exemplars", w.series)
				if math.IsNaN(w.v) {
					require.True(t, value.IsStaleNaN(g.v), "%s: staleness marker, got %v", w.series, g.v)
				} else {
					require.Equal(t, w.v, g.v, w.series)
				}
				if w.h == nil {
					require.Nil(t, g.h, w.series)
					continue
				}
				require.NotNil(t, g.h, w.series)
				if value.IsStaleNaN(w.h.Sum) {
					require.True(t, value.IsStaleNaN(g.h.Sum), "%s: stale native histogram", w.series)
					continue
				}
				require.Equal(t, w.h, g.h, w.series)
			}
			require.Equal(t, float64(points), testutil.ToFloat64(exp.m.sentPoints))
			require.Zero(t, testutil.ToFloat64(exp.m.failed))
		})
	}
}

// TestRemoteWrite2SameSeriesAs1 checks that 2.0 sends the series and values
// 1.0 sends for the benchmark scrape, plus target_info.
func TestRemoteWrite2SameSeriesAs1(t *testing.T) {
	md := benchScrape()
	md.ResourceMetrics().At(0).Resource().Attributes().PutStr("k8s.pod.name", "p1")
	var v1 prompb.WriteRequest
	ToWriteRequest(md, &v1, true)
	var v2 writev2.Request
	syms := writev2.NewSymbolTable()
	ToWriteRequestV2(md, &v2, &syms, true)
	// A second conversion reuses the memory and gives the same request.
	ToWriteRequestV2(md, &v2, &syms, true)

	want := flatten(&v1)
	got := map[string]float64{}
	b := labels.NewScratchBuilder(0)
	for _, ts := range v2.Timeseries {
		ls, err := ts.ToLabels(&b, v2.Symbols)
		require.NoError(t, err)
		names := make([]string, 0, len(ts.LabelsRefs)/2)
		for i := 0; i < len(ts.LabelsRefs); i += 2 {
			names = append(names, v2.Symbols[ts.LabelsRefs[i]])
		}
		require.True(t, sort.StringsAreSorted(names), "labels sorted: %v", names)
		for _, s := range ts.Samples {
			got[labelsString(ls)] = s.Value
		}
	}
	require.Equal(t, want, got)
	require.Contains(t, got, "target_info{instance=host:9100,job=node,k8s_pod_name=p1}")
}

// TestRemoteWrite2Enums checks that the 1.0 and 2.0 enums the conversion
// casts between have the same numbers.
func TestRemoteWrite2Enums(t *testing.T) {
	for v, name := range prompb.MetricMetadata_MetricType_name {
		if v == 0 {
			continue // UNKNOWN, UNSPECIFIED
		}
		require.Equal(t, "METRIC_TYPE_"+name, writev2.Metadata_MetricType_name[v])
	}
	for v, name := range prompb.Histogram_ResetHint_name {
		if v == 0 {
			continue
		}
		require.Equal(t, "RESET_HINT_"+name, writev2.Histogram_ResetHint_name[v])
	}
}

// syncBuffer is a log destination for a test and the sender goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRemoteWrite2Rejected: a receiver that does not take 2.0 costs one
// request per batch, each dropped and counted, never retried, and one
// clear log line per burst; a partial write drops only the part refused.
func TestRemoteWrite2Rejected(t *testing.T) {
	tests := []struct {
		name    string
		handler func(t *testing.T) http.Handler
		reason  string
		dropped float64 // of 3 points
		log     string
	}{
		{
			name: "1.0-only receiver answers 415",
			handler: func(*testing.T) http.Handler {
				return remoteapi.NewWriteHandler(rw2Store{app: &recorder{}}, remoteapi.MessageTypes{remoteapi.WriteV1MessageType})
			},
			reason: "http_415", dropped: 3, log: "receiver does not accept remote write 2.0",
		},
		{
			name: "1.x receiver ignoring the content type answers 204 without written counts",
			handler: func(*testing.T) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
			},
			reason: "http_415", dropped: 3, log: "receiver does not accept remote write 2.0",
		},
		{
			name: "partial write",
			handler: func(*testing.T) http.Handler {
				// Of the request's 2 samples, 1 is written, as a 2.0
				// receiver reports a partial write.
				return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set(rw2SamplesWritten, "1")
					http.Error(w, "out of order sample", http.StatusBadRequest)
				})
			},
			reason: reasonPartial, dropped: 3, log: "receiver wrote 1 of 2",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var requests atomic.Int64
			h := tt.handler(t)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				h.ServeHTTP(w, r)
			}))
			t.Cleanup(srv.Close)
			logs := &syncBuffer{}
			exp, err := NewRemoteWrite(RemoteWriteConfig{
				URL: srv.URL, ProtobufMessage: RemoteWriteV2,
				Batch: BatchConfig{MaxPoints: 1}, Retry: fastRetry(),
			}, nil, slog.New(slog.NewTextHandler(logs, nil)))
			require.NoError(t, err)
			for i := range 3 {
				// Each scrape is one batch of one point and two samples.
				md := testMetrics("a", float64(i+1))
				gp := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0)
				gp.Exemplars().AppendEmpty().SetDoubleValue(1)
				md.ResourceMetrics().At(0).Resource().Attributes().PutStr("team", "x") // adds target_info
				require.NoError(t, exp.ConsumeMetrics(context.Background(), md))
			}
			dropped := func() float64 { return testutil.ToFloat64(exp.m.m.dropped.WithLabelValues("remotewrite", tt.reason)) }
			require.Eventually(t, func() bool { return dropped() == tt.dropped }, 20*time.Second, 5*time.Millisecond)
			require.NoError(t, exp.Shutdown(context.Background()))
			require.Equal(t, int64(3), requests.Load(), "one request per batch")
			require.Equal(t, tt.dropped, dropped())
			require.Zero(t, testutil.ToFloat64(exp.m.retried), "not retried")
			require.Equal(t, 1, strings.Count(logs.String(), "dropping metrics"), "one log line per burst:\n%s", logs)
			require.Contains(t, logs.String(), tt.log)
		})
	}
}
