package export

import (
	"compress/gzip"
	"context"
	"github.com/klauspost/compress/zstd"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// testMetrics returns one scrape: a gauge "g" with one point of value v at
// time v seconds and series label s.
func testMetrics(series string, v float64) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "test")
	m := rm.ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("g")
	dp := m.SetEmptyGauge().DataPoints().AppendEmpty()
	dp.Attributes().PutStr("s", series)
	dp.SetTimestamp(pcommon.Timestamp(v * 1e9))
	dp.SetDoubleValue(v)
	return md
}

// point is one received number point.
type point struct {
	series string
	v      float64
}

func pointsOf(md pmetric.Metrics) []point {
	var out []point
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		sms := md.ResourceMetrics().At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if ms.At(k).Type() != pmetric.MetricTypeGauge {
					continue
				}
				dps := ms.At(k).Gauge().DataPoints()
				for l := 0; l < dps.Len(); l++ {
					s, _ := dps.At(l).Attributes().Get("s")
					out = append(out, point{s.Str(), dps.At(l).DoubleValue()})
				}
			}
		}
	}
	return out
}

// otlpHTTPServer is an OTLP/HTTP receiver that decodes every request. fail
// decides the status of each request (0 = accept).
type otlpHTTPServer struct {
	*httptest.Server
	mu       sync.Mutex
	points   []point
	headers  []http.Header
	requests atomic.Int64
	fail     func(n int64) (status int, header http.Header)
	stop     chan struct{}
}

func newOTLPHTTPServer(t *testing.T, fail func(n int64) (int, http.Header)) *otlpHTTPServer {
	s := &otlpHTTPServer{fail: fail, stop: make(chan struct{})}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := s.requests.Add(1)
		if r.URL.Path != "/v1/metrics" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "bad path or type", http.StatusNotFound)
			return
		}
		if s.fail != nil {
			if code, h := s.fail(n); code != 0 {
				for k, v := range h {
					w.Header()[k] = v
				}
				if code == -1 { // hang until the client gives up
					// The server notices a closed connection only once
					// the body is read.
					_, _ = io.Copy(io.Discard, r.Body)
					select {
					case <-r.Context().Done():
					case <-s.stop:
					}
					return
				}
				http.Error(w, "nope", code)
				return
			}
		}
		var body io.Reader = r.Body
		switch r.Header.Get("Content-Encoding") {
		case "gzip":
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		case "zstd":
			zr, err := zstd.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			defer zr.Close()
			body = zr
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req := pmetricotlp.NewExportRequest()
		if err := req.UnmarshalProto(raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.points = append(s.points, pointsOf(req.Metrics())...)
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		resp, _ := pmetricotlp.NewExportResponse().MarshalProto()
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(resp)
	}))
	t.Cleanup(s.Close)
	t.Cleanup(func() { close(s.stop) }) // runs first: unblock hanging handlers
	return s
}

func (s *otlpHTTPServer) received() []point {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]point(nil), s.points...)
}

func fastRetry() RetryConfig {
	return RetryConfig{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond, Jitter: 0.2}
}

func TestOTLPHTTP(t *testing.T) {
	tests := []struct {
		name string
		fail func(n int64) (int, http.Header)
		// want is how many of the 20 points arrive; dropped how many are
		// counted dropped with reason.
		want    int
		dropped map[string]float64
		retried bool
	}{
		{name: "accepting backend", want: 20},
		{
			name: "503 then recovery",
			fail: func(n int64) (int, http.Header) {
				if n <= 4 {
					return http.StatusServiceUnavailable, nil
				}
				return 0, nil
			},
			want: 20, retried: true,
		},
		{
			name: "429 with Retry-After",
			fail: func(n int64) (int, http.Header) {
				if n == 1 {
					return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}
				}
				return 0, nil
			},
			want: 20, retried: true,
		},
		{
			name: "400 drops the batch, the rest continues",
			fail: func(n int64) (int, http.Header) {
				if n == 1 {
					return http.StatusBadRequest, nil
				}
				return 0, nil
			},
			want: -1, dropped: map[string]float64{"http_400": -1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOTLPHTTPServer(t, tt.fail)
			reg := prometheus.NewRegistry()
			exp, err := NewOTLPHTTP(OTLPHTTPConfig{
				Endpoint: srv.URL,
				Headers:  map[string]string{"X-Tenant": "t1"},
				Batch:    BatchConfig{MaxPoints: 5, MaxWait: 10 * time.Millisecond},
				Retry:    fastRetry(),
			}, reg, nil)
			require.NoError(t, err)
			for i := range 20 {
				require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", float64(i))))
			}
			sent := func() float64 { return testutil.ToFloat64(exp.m.sentPoints) }
			dropped := func() float64 {
				return testutil.ToFloat64(exp.m.m.dropped.WithLabelValues("otlphttp", "http_400"))
			}
			require.Eventually(t, func() bool { return sent()+dropped() == 20 }, 20*time.Second, 10*time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, exp.Shutdown(ctx))

			got := srv.received()
			if tt.want >= 0 {
				require.Len(t, got, tt.want)
			} else {
				require.NotEmpty(t, got)
				require.Less(t, len(got), 20)
				require.Equal(t, float64(20-len(got)), dropped())
			}
			// In order, no duplicates.
			for i := 1; i < len(got); i++ {
				require.Less(t, got[i-1].v, got[i].v)
			}
			require.Equal(t, "t1", srv.headers[0].Get("X-Tenant"))
			require.Equal(t, "gzip", srv.headers[0].Get("Content-Encoding"))
			if tt.retried {
				require.Positive(t, testutil.ToFloat64(exp.m.retried))
			}
			require.Equal(t, float64(len(got)), sent())
		})
	}
}

func TestOTLPHTTPHangingBackendTimesOut(t *testing.T) {
	srv := newOTLPHTTPServer(t, func(n int64) (int, http.Header) {
		if n <= 2 {
			return -1, nil
		}
		return 0, nil
	})
	exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Timeout: 200 * time.Millisecond, Retry: fastRetry()}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", 1)))
	require.Eventually(t, func() bool { return len(srv.received()) == 1 }, 20*time.Second, 10*time.Millisecond)
	require.Equal(t, 2.0, testutil.ToFloat64(exp.m.failed), "two timed-out attempts")
	require.NoError(t, exp.Shutdown(context.Background()))
}

func TestOTLPHTTPShutdownUnblocksHangingSend(t *testing.T) {
	srv := newOTLPHTTPServer(t, func(int64) (int, http.Header) { return -1, nil })
	exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Timeout: time.Hour}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", 1)))
	require.Eventually(t, func() bool { return srv.requests.Load() >= 1 }, 20*time.Second, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, exp.Shutdown(ctx), context.DeadlineExceeded)
	require.Equal(t, 1.0, testutil.ToFloat64(exp.m.m.dropped.WithLabelValues("otlphttp", reasonShutdown)))
	require.ErrorIs(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", 2)), ErrShutdown)
}

func TestOTLPHTTPQueueFull(t *testing.T) {
	srv := newOTLPHTTPServer(t, func(int64) (int, http.Header) { return -1, nil })
	exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Queue: QueueConfig{Size: 2}, Batch: BatchConfig{MaxPoints: 1}}, nil, nil)
	require.NoError(t, err)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = exp.Shutdown(ctx)
	}()
	var full int
	for i := range 10 {
		if err := exp.ConsumeMetrics(context.Background(), testMetrics("a", float64(i))); err != nil {
			require.ErrorIs(t, err, ErrQueueFull)
			full++
		}
	}
	require.GreaterOrEqual(t, full, 7, "at most queue size + the batch in flight are accepted")
	require.Equal(t, float64(full), testutil.ToFloat64(exp.m.m.dropped.WithLabelValues("otlphttp", reasonQueueFull)))
}

func TestOTLPHTTPEndpoint(t *testing.T) {
	tests := []struct {
		name, endpoint, env, metricsEnv, want, err string
	}{
		{name: "base url", endpoint: "http://collector:4318", want: "http://collector:4318/v1/metrics"},
		{name: "base url with path", endpoint: "https://x.example/otlp/", want: "https://x.example/otlp/v1/metrics"},
		{name: "env base", env: "http://env:4318", want: "http://env:4318/v1/metrics"},
		{name: "metrics env as is", env: "http://env:4318", metricsEnv: "http://m:1/custom", want: "http://m:1/custom"},
		{name: "flag wins", endpoint: "http://flag:1", metricsEnv: "http://m:1/custom", want: "http://flag:1/v1/metrics"},
		{name: "none", err: "no endpoint"},
		{name: "bad scheme", endpoint: "collector:4318", err: "want http(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envOTLPEndpoint, tt.env)
			t.Setenv(envOTLPMetricsEndpoint, tt.metricsEnv)
			got, err := otlpHTTPURL(tt.endpoint)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}
