package export

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

func TestPrometheusEndpoint(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	p := NewPrometheus(PrometheusConfig{Expire: time.Minute}, nil)
	p.now = func() time.Time { return now }
	get := func(accept string) string {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		p.ServeHTTP(rec, req)
		require.Equal(t, http.StatusOK, rec.Code)
		return rec.Body.String()
	}

	require.NoError(t, p.ConsumeMetrics(context.Background(), testMetrics("a", 1)))
	require.NoError(t, p.ConsumeMetrics(context.Background(), testMetrics("b", 2)))
	require.NoError(t, p.ConsumeMetrics(context.Background(), testMetrics("a", 3)))
	body := get("")
	require.Contains(t, body, `g{job="test",s="a"} 3 3000`)
	require.Contains(t, body, `g{job="test",s="b"} 2 2000`)
	require.Contains(t, get("application/openmetrics-text; version=1.0.0"), "# EOF")

	// A staleness marker removes the series.
	stale := testMetrics("a", 4)
	stale.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().At(0).Gauge().DataPoints().At(0).
		SetFlags(pmetric.DefaultDataPointFlags.WithNoRecordedValue(true))
	require.NoError(t, p.ConsumeMetrics(context.Background(), stale))
	body = get("")
	require.NotContains(t, body, `s="a"`)
	require.Contains(t, body, `s="b"`)

	// A series not updated within Expire goes.
	now = now.Add(2 * time.Minute)
	require.Empty(t, strings.TrimSpace(get("")))
	require.NoError(t, p.Shutdown(context.Background()))
}

// failingExporter records what it gets and fails.
type failingExporter struct {
	got []pmetric.Metrics
	err error
}

func (f *failingExporter) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	f.got = append(f.got, md)
	return f.err
}

func (f *failingExporter) Shutdown(context.Context) error { return nil }

func TestFanout(t *testing.T) {
	full := &failingExporter{err: ErrQueueFull}
	ok := &failingExporter{}
	prom := NewPrometheus(PrometheusConfig{}, nil)
	set := NewFanout(full, prom, ok)
	md := testMetrics("a", 1)
	err := set.ConsumeMetrics(context.Background(), md)
	require.ErrorIs(t, err, ErrQueueFull, "a full queue is reported")
	require.Len(t, ok.got, 1, "and does not keep the others from the data")
	require.Len(t, full.got, 1)
	require.Equal(t, pointsOf(md), pointsOf(full.got[0]))
	require.Equal(t, pointsOf(md), pointsOf(ok.got[0]))
	// Every owner but the last gets its own copy; the last gets md.
	full.got[0].ResourceMetrics().At(0).Resource().Attributes().PutStr("changed", "yes")
	_, changed := ok.got[0].ResourceMetrics().At(0).Resource().Attributes().Get("changed")
	require.False(t, changed)
	require.NotNil(t, set.PrometheusHandler())
	require.Len(t, prom.Gather(), 1)
	require.NoError(t, set.Shutdown(context.Background()))
}
