package export

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/otlp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

const e2eExposition = `# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200"} 1027
http_requests_total{code="500"} 3
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
# TYPE target_info gauge
target_info{version="1.2"} 1
`

// e2eWant is every series Prometheus would store for e2eExposition (the
// job and instance labels added by the test), value by value.
var e2eWant = map[string]float64{
	`http_requests_total{code=200,%s}`:          1027,
	`http_requests_total{code=500,%s}`:          3,
	`temperature_celsius{%s,room=a}`:            21.5,
	`latency_seconds_bucket{%s,le=0.1}`:         1,
	`latency_seconds_bucket{%s,le=1}`:           3,
	`latency_seconds_bucket{%s,le=+Inf}`:        4,
	`latency_seconds_sum{%s}`:                   5.5,
	`latency_seconds_count{%s}`:                 4,
	`rpc_seconds{%s,quantile=0.5}`:              0.2,
	`rpc_seconds{%s,quantile=0.9}`:              0.7,
	`rpc_seconds_sum{%s}`:                       12,
	`rpc_seconds_count{%s}`:                     30,
	`target_info{%s,version=1.2}`:               1,
	`up{%s}`:                                    1,
	`scrape_samples_scraped{%s}`:                13,
	`scrape_samples_post_metric_relabeling{%s}`: 13,
}

// otlpHTTPRecorder is an OTLP/HTTP server keeping every decoded request.
type otlpHTTPRecorder struct {
	mu  sync.Mutex
	got []pmetric.Metrics
}

func (r *otlpHTTPRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body := req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzipReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	er := pmetricotlp.NewExportRequest()
	if err := er.UnmarshalProto(raw); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.got = append(r.got, er.Metrics())
	r.mu.Unlock()
}

func (r *otlpHTTPRecorder) all() []pmetric.Metrics {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]pmetric.Metrics(nil), r.got...)
}

// TestScrapeToEveryExporter scrapes a target with Prometheus's scrape
// manager through otlp.Appendable into a fan-out of OTLP/HTTP, OTLP/gRPC,
// remote write and the pull endpoint, and checks what each backend
// decodes, value by value.
func TestScrapeToEveryExporter(t *testing.T) {
	t.Setenv(envOTLPEndpoint, "")
	t.Setenv(envOTLPMetricsEndpoint, "")
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, e2eExposition)
	}))
	defer target.Close()
	tu, err := url.Parse(target.URL)
	require.NoError(t, err)

	httpRec := &otlpHTTPRecorder{}
	httpSrv := httptest.NewServer(httpRec)
	defer httpSrv.Close()
	grpcRec := startGRPCReceiver(t, nil, nil)
	rw := newRWReceiver(t, nil)

	set, err := New(Config{
		OTLP: []OTLPEndpoint{
			{Name: "http", Endpoint: httpSrv.URL},
			{Name: "grpc", Endpoint: grpcRec.addr, Protocol: ProtocolGRPC},
		},
		RemoteWrite: []RemoteWriteEndpoint{{Name: "rw", URL: rw.URL}},
		Prometheus:  PrometheusConfig{Enabled: true},
		Batch:       BatchConfig{MaxWait: 10 * time.Millisecond},
	}, prometheus.NewRegistry(), nil)
	require.NoError(t, err)

	app := otlp.NewAppendable(set, otlp.Options{}, nil, nil)
	cfg, err := config.Load(`
scrape_configs:
- job_name: node
  scrape_interval: 100ms
  scrape_timeout: 90ms
`, nil)
	require.NoError(t, err)
	opts := &scrape.Options{DiscoveryReloadInterval: model.Duration(10 * time.Millisecond)}
	otlp.ScrapeOptions(opts)
	mgr, err := scrape.NewManager(opts, nil, nil, nil, app, prometheus.NewRegistry())
	require.NoError(t, err)
	require.NoError(t, mgr.ApplyConfig(cfg))
	tsets := make(chan map[string][]*targetgroup.Group, 1)
	tsets <- map[string][]*targetgroup.Group{"node": {{Source: "t", Targets: []model.LabelSet{{model.AddressLabel: model.LabelValue(tu.Host)}}}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mgr.Run(tsets)
	}()

	base := "instance=" + tu.Host + ",job=node"
	want := map[string]float64{}
	for k, v := range e2eWant {
		want[fmt.Sprintf(k, base)] = v
	}
	require.Eventually(t, func() bool {
		return len(httpRec.all()) >= 2 && grpcRec.requests.Load() >= 2 && len(rw.series()) >= len(want)
	}, 20*time.Second, 20*time.Millisecond)
	mgr.Stop()
	<-done
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, set.Shutdown(ctx))

	// Remote write: every series, every value.
	got := rw.series()
	for k, v := range want {
		samples, ok := got[k]
		require.True(t, ok, "remote write lacks %s; has %v", k, keys(got))
		for _, s := range samples {
			require.Equal(t, v, s.Value, k)
		}
	}
	for k := range got {
		if !strings.HasPrefix(k, "scrape_") {
			_, ok := want[k]
			require.True(t, ok, "unexpected series %s", k)
		}
	}

	// OTLP over HTTP and gRPC carry the same conversion.
	first := httpRec.all()[0]
	require.Equal(t, 1, first.ResourceMetrics().Len())
	res := first.ResourceMetrics().At(0).Resource().Attributes().AsRaw()
	require.Equal(t, "node", res["service.name"])
	require.Equal(t, "1.2", res["version"])
	var names []string
	ms := first.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		names = append(names, ms.At(i).Name())
	}
	require.Subset(t, names, []string{"http_requests_total", "temperature_celsius", "latency_seconds", "rpc_seconds", "up"})

	// The pull endpoint exposes the same series.
	rec := httptest.NewRecorder()
	set.PrometheusHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(rec.Body.String()))
	require.NoError(t, err, rec.Body.String())
	pulled := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := name + "{" + strings.Join(ls, ",") + "}"
			switch {
			case m.Counter != nil:
				pulled[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				pulled[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				pulled[name+"_count{"+strings.Join(ls, ",")+"}"] = float64(m.Histogram.GetSampleCount())
			case m.Summary != nil:
				pulled[name+"_sum{"+strings.Join(ls, ",")+"}"] = m.Summary.GetSampleSum()
			}
		}
	}
	for _, k := range []string{
		fmt.Sprintf(`http_requests_total{code=200,%s}`, base),
		fmt.Sprintf(`temperature_celsius{%s,room=a}`, base),
		fmt.Sprintf(`latency_seconds_count{%s}`, base),
		fmt.Sprintf(`rpc_seconds_sum{%s}`, base),
		fmt.Sprintf(`target_info{%s,version=1.2}`, base),
	} {
		require.Equal(t, want[k], pulled[k], k)
	}
	require.False(t, math.IsNaN(pulled[fmt.Sprintf(`up{%s}`, base)]))
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func gzipReader(r io.Reader) (io.ReadCloser, error) { return gzip.NewReader(r) }
