package export

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/prometheus/prompb"
	"github.com/stretchr/testify/require"
)

// rwReceiver is a remote write 1.0 receiver that decodes every request.
// failing(now) decides a status to answer instead (0 = accept).
type rwReceiver struct {
	*httptest.Server
	mu       sync.Mutex
	samples  map[string][]prompb.Sample
	metadata []prompb.MetricMetadata
	requests atomic.Int64
	failing  func(n int64) int
}

func newRWReceiver(t *testing.T, failing func(n int64) int) *rwReceiver {
	r := &rwReceiver{samples: map[string][]prompb.Sample{}, failing: failing}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n := r.requests.Add(1)
		if req.Header.Get("Content-Encoding") != "snappy" || req.Header.Get("X-Prometheus-Remote-Write-Version") != "0.1.0" {
			http.Error(w, "bad headers", http.StatusUnsupportedMediaType)
			return
		}
		if r.failing != nil {
			if code := r.failing(n); code != 0 {
				http.Error(w, "failing", code)
				return
			}
		}
		compressed, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		raw, err := snappy.Decode(nil, compressed)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var wr prompb.WriteRequest
		if err := wr.Unmarshal(raw); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		for _, ts := range wr.Timeseries {
			k := seriesString(ts.Labels)
			r.samples[k] = append(r.samples[k], ts.Samples...)
		}
		r.metadata = append(r.metadata, wr.Metadata...)
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *rwReceiver) series() map[string][]prompb.Sample {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string][]prompb.Sample, len(r.samples))
	for k, v := range r.samples {
		out[k] = append([]prompb.Sample(nil), v...)
	}
	return out
}

func (r *rwReceiver) count() int {
	n := 0
	for _, s := range r.series() {
		n += len(s)
	}
	return n
}

// TestRemoteWriteOutageThenRecovery: the backend answers 503 for two
// seconds while scrapes keep coming; afterwards every sample of every
// series has arrived, once, in order.
func TestRemoteWriteOutageThenRecovery(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	r := newRWReceiver(t, func(int64) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	reg := prometheus.NewRegistry()
	exp, err := NewRemoteWrite(RemoteWriteConfig{
		URL:   r.URL + "/api/v1/write",
		Batch: BatchConfig{MaxPoints: 8, MaxWait: 5 * time.Millisecond},
		Retry: fastRetry(),
	}, reg, nil)
	require.NoError(t, err)

	const scrapes = 60
	recover := time.AfterFunc(2*time.Second, func() { down.Store(false) })
	defer recover.Stop()
	interval := time.NewTicker(50 * time.Millisecond) // the scrape interval of this test
	defer interval.Stop()
	for i := range scrapes {
		for _, s := range []string{"a", "b", "c"} {
			require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics(s, float64(i))))
		}
		<-interval.C
	}
	require.Eventually(t, func() bool { return r.count() == 3*scrapes }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, exp.Shutdown(context.Background()))

	got := r.series()
	require.Len(t, got, 3)
	for k, samples := range got {
		require.Len(t, samples, scrapes, k)
		for i, s := range samples {
			require.Equal(t, float64(i), s.Value, "%s in order, no gap, no duplicate", k)
			require.Equal(t, int64(i*1000), s.Timestamp)
		}
	}
	require.Positive(t, testutil.ToFloat64(exp.m.retried))
	require.Equal(t, float64(3*scrapes), testutil.ToFloat64(exp.m.sentPoints))
}

func TestRemoteWriteRejectedBatchIsDroppedAndCounted(t *testing.T) {
	r := newRWReceiver(t, func(n int64) int {
		if n == 2 {
			return http.StatusBadRequest
		}
		return 0
	})
	exp, err := NewRemoteWrite(RemoteWriteConfig{URL: r.URL, Batch: BatchConfig{MaxPoints: 1}, Retry: fastRetry()}, nil, nil)
	require.NoError(t, err)
	for i := range 5 {
		require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", float64(i))))
	}
	dropped := func() float64 { return testutil.ToFloat64(exp.m.m.dropped.WithLabelValues("remotewrite", "http_400")) }
	require.Eventually(t, func() bool { return testutil.ToFloat64(exp.m.sentPoints)+dropped() == 5 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, exp.Shutdown(context.Background()))
	require.Equal(t, 1.0, dropped())
	require.Equal(t, 4, r.count(), "the rest continues")
	require.Zero(t, testutil.ToFloat64(exp.m.retried), "a 400 is not retried")
}

// TestPersistentQueueSurvivesRestart: scrapes queued while the backend is
// down are on disk when the exporter stops, and the next exporter on the
// same directory delivers them, once, in order.
func TestPersistentQueueSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	var down atomic.Bool
	down.Store(true)
	r := newRWReceiver(t, func(int64) int {
		if down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	})
	cfg := RemoteWriteConfig{URL: r.URL, Queue: QueueConfig{Dir: dir, Size: 100}, Batch: BatchConfig{MaxPoints: 4, MaxWait: time.Millisecond}, Retry: fastRetry()}
	first, err := NewRemoteWrite(cfg, nil, nil)
	require.NoError(t, err)
	for i := range 10 {
		require.NoError(t, first.ConsumeMetrics(context.Background(), testMetrics("a", float64(i))))
	}
	require.Eventually(t, func() bool { return r.requests.Load() >= 2 }, 20*time.Second, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, first.Shutdown(ctx), context.DeadlineExceeded)
	require.Zero(t, r.count())

	down.Store(false)
	second, err := NewRemoteWrite(cfg, nil, nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return r.count() == 10 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, second.ConsumeMetrics(context.Background(), testMetrics("a", 10)))
	require.Eventually(t, func() bool { return r.count() == 11 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, second.Shutdown(context.Background()))
	got := r.series()["g{job=test,s=a}"]
	require.Len(t, got, 11)
	for i, s := range got {
		require.Equal(t, float64(i), s.Value)
	}

	// Everything is acknowledged: a third start sends nothing again.
	third, err := NewRemoteWrite(cfg, nil, nil)
	require.NoError(t, err)
	require.Zero(t, third.q.len())
	require.NoError(t, third.Shutdown(context.Background()))
	require.Equal(t, 11, r.count())
}
