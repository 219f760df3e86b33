package otlp

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// recorder is a Consumer that keeps what it receives.
type recorder struct {
	mu  sync.Mutex
	got []pmetric.Metrics
}

func (r *recorder) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, md)
	return nil
}

func (r *recorder) all() []pmetric.Metrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pmetric.Metrics(nil), r.got...)
}

// exposition returns a body for scrape number n (from 1): a counter that
// grows by 10 and resets at scrape 3, a gauge, a histogram and a summary.
func exposition(n int) string {
	c := 10 * n
	if n >= 3 {
		c = n - 2
	}
	return fmt.Sprintf(`# HELP http_requests_total Requests served.
# TYPE http_requests_total counter
http_requests_total{code="200",method="get"} %d
http_requests_total{code="500",method="get"} 1
# HELP temperature_celsius Current temperature.
# TYPE temperature_celsius gauge
temperature_celsius{room="a"} 21.5
# TYPE latency_seconds histogram
latency_seconds_bucket{le="0.1"} 1
latency_seconds_bucket{le="1"} 3
latency_seconds_bucket{le="+Inf"} 4
latency_seconds_sum 5.5
latency_seconds_count 4
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.2
rpc_seconds{quantile="0.9"} 0.7
rpc_seconds_sum 12
rpc_seconds_count 30
untyped_thing 7
`, c)
}

func startTarget(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = fmt.Fprint(w, exposition(int(n.Add(1))))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// runManager runs a real scrape.Manager with one job scraping addr every
// 100 ms into app until the test ends.
func runManager(t *testing.T, app *Appendable, addr string) {
	t.Helper()
	runManagerConfig(t, app, `
scrape_configs:
- job_name: test
  scrape_interval: 100ms
  scrape_timeout: 90ms
`, map[string][]*targetgroup.Group{"test": {{
		Source:  "test",
		Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(addr)}},
	}}})
}

// runManagerConfig runs a real scrape.Manager with the configuration cfg
// and the target groups tsets into app until the test ends.
func runManagerConfig(t *testing.T, app storage.AppendableV2, cfg string, tsets map[string][]*targetgroup.Group) {
	t.Helper()
	c, err := config.Load(cfg, nil)
	require.NoError(t, err)
	opts := &scrape.Options{DiscoveryReloadInterval: model.Duration(10 * time.Millisecond)}
	ScrapeOptions(opts)
	mgr, err := scrape.NewManager(opts, nil, nil, nil, app, prometheus.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, mgr.ApplyConfig(c))
	ch := make(chan map[string][]*targetgroup.Group, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mgr.Run(ch)
	}()
	ch <- tsets
	t.Cleanup(func() {
		mgr.Stop()
		<-done
	})
}

func TestScrapeManagerEndToEnd(t *testing.T) {
	srv, _ := startTarget(t)
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)

	rec := &recorder{}
	app := NewAppendable(rec, Options{ScopeVersion: "test"}, prometheus.NewRegistry(), nil)
	runManager(t, app, u.Host)

	require.Eventually(t, func() bool { return len(rec.all()) >= 3 }, 20*time.Second, 10*time.Millisecond)
	got := rec.all()[:3]

	var firstTS pcommon.Timestamp
	for i, md := range got {
		require.Equal(t, 1, md.ResourceMetrics().Len(), "scrape %d: one resource", i+1)
		rm := md.ResourceMetrics().At(0)
		res := rm.Resource().Attributes().AsRaw()
		_, port, _ := splitHostPort(u.Host)
		require.Equal(t, map[string]any{
			"service.name":        "test",
			"service.instance.id": u.Host,
			"server.address":      "127.0.0.1",
			"server.port":         port,
			"url.scheme":          "http",
		}, res, "scrape %d", i+1)
		require.Equal(t, 1, rm.ScopeMetrics().Len())
		sm := rm.ScopeMetrics().At(0)
		require.Equal(t, DefaultScopeName, sm.Scope().Name())
		require.Equal(t, "test", sm.Scope().Version())
		ms := metricsByName(sm.Metrics())

		// Counter: cumulative monotonic sum, start time by the true reset
		// point rule: first point starts at itself, later ones at the first,
		// a decrease restarts 1 ms before the point.
		c := ms["http_requests_total"]
		require.Equal(t, pmetric.MetricTypeSum, c.Type(), "scrape %d", i+1)
		require.True(t, c.Sum().IsMonotonic())
		require.Equal(t, pmetric.AggregationTemporalityCumulative, c.Sum().AggregationTemporality())
		require.Equal(t, "Requests served.", c.Description())
		require.Equal(t, "counter", c.Metadata().AsRaw()["prometheus.type"])
		require.Equal(t, 2, c.Sum().DataPoints().Len())
		dp := pointWith(t, c.Sum().DataPoints(), "code", "200")
		require.Equal(t, map[string]any{"code": "200", "method": "get"}, dp.Attributes().AsRaw())
		switch i {
		case 0:
			firstTS = dp.Timestamp()
			require.Equal(t, 10.0, dp.DoubleValue())
			require.Equal(t, dp.Timestamp(), dp.StartTimestamp())
		case 1:
			require.Equal(t, 20.0, dp.DoubleValue())
			require.Equal(t, firstTS, dp.StartTimestamp())
		case 2:
			require.Equal(t, 1.0, dp.DoubleValue())
			require.Equal(t, dp.Timestamp()-pcommon.Timestamp(time.Millisecond), dp.StartTimestamp())
		}
		other := pointWith(t, c.Sum().DataPoints(), "code", "500")
		require.Equal(t, firstTS, other.StartTimestamp(), "unchanged series keeps its start")

		g := ms["temperature_celsius"]
		require.Equal(t, pmetric.MetricTypeGauge, g.Type())
		require.Equal(t, 21.5, g.Gauge().DataPoints().At(0).DoubleValue())
		require.Zero(t, g.Gauge().DataPoints().At(0).StartTimestamp())

		un := ms["untyped_thing"]
		require.Equal(t, pmetric.MetricTypeGauge, un.Type())
		require.Equal(t, 7.0, un.Gauge().DataPoints().At(0).DoubleValue())

		h := ms["latency_seconds"]
		require.Equal(t, pmetric.MetricTypeHistogram, h.Type())
		hp := h.Histogram().DataPoints().At(0)
		require.Equal(t, []float64{0.1, 1}, hp.ExplicitBounds().AsRaw())
		require.Equal(t, []uint64{1, 2, 1}, hp.BucketCounts().AsRaw())
		require.Equal(t, uint64(4), hp.Count())
		require.Equal(t, 5.5, hp.Sum())
		require.Equal(t, firstTS, hp.StartTimestamp())

		s := ms["rpc_seconds"]
		require.Equal(t, pmetric.MetricTypeSummary, s.Type())
		sp := s.Summary().DataPoints().At(0)
		require.Equal(t, uint64(30), sp.Count())
		require.Equal(t, 12.0, sp.Sum())
		require.Equal(t, 2, sp.QuantileValues().Len())
		require.Equal(t, 0.9, sp.QuantileValues().At(1).Quantile())
		require.Equal(t, 0.7, sp.QuantileValues().At(1).Value())

		// Report series are gauges.
		for _, name := range []string{"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling", "scrape_series_added"} {
			m, ok := ms[name]
			require.True(t, ok, "scrape %d: %s missing", i+1, name)
			require.Equal(t, pmetric.MetricTypeGauge, m.Type(), name)
		}
		require.Equal(t, 1.0, ms["up"].Gauge().DataPoints().At(0).DoubleValue())
		require.Equal(t, 0, ms["up"].Gauge().DataPoints().At(0).Attributes().Len())
		require.Equal(t, 13.0, ms["scrape_samples_scraped"].Gauge().DataPoints().At(0).DoubleValue())
	}
}

func splitHostPort(hostport string) (string, int64, error) {
	u, err := url.Parse("http://" + hostport)
	if err != nil {
		return "", 0, err
	}
	var p int64
	_, err = fmt.Sscan(u.Port(), &p)
	return u.Hostname(), p, err
}

func metricsByName(ms pmetric.MetricSlice) map[string]pmetric.Metric {
	out := make(map[string]pmetric.Metric, ms.Len())
	for i := 0; i < ms.Len(); i++ {
		out[ms.At(i).Name()] = ms.At(i)
	}
	return out
}

func pointWith(t *testing.T, dps pmetric.NumberDataPointSlice, k, v string) pmetric.NumberDataPoint {
	t.Helper()
	for i := 0; i < dps.Len(); i++ {
		if got, ok := dps.At(i).Attributes().Get(k); ok && got.Str() == v {
			return dps.At(i)
		}
	}
	t.Fatalf("no point with %s=%q", k, v)
	return pmetric.NumberDataPoint{}
}
