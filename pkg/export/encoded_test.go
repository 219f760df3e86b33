package export

import (
	"context"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/otlp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// The appender hands encoded scrapes to a Set (cmd/allot passes the Set as
// the otlp.Consumer).
var _ otlp.EncodedConsumer = (*Set)(nil)

func encode(t *testing.T, md pmetric.Metrics) []byte {
	t.Helper()
	raw, err := (&pmetric.ProtoMarshaler{}).MarshalMetrics(md)
	require.NoError(t, err)
	return raw
}

// TestEncodedScrapes sends encoded scrapes, mixed with pdata ones, through
// the OTLP exporters (which concatenate them into one request) and the
// remote write exporter (which decodes them), from memory and disk queues.
func TestEncodedScrapes(t *testing.T) {
	tests := []struct {
		name        string
		start       func(t *testing.T, q QueueConfig) (Exporter, func() []point)
		wantEncoded bool
	}{
		{name: "otlp http", wantEncoded: true, start: func(t *testing.T, q QueueConfig) (Exporter, func() []point) {
			srv := newOTLPHTTPServer(t, nil)
			exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Queue: q, Batch: BatchConfig{MaxPoints: 7, MaxWait: 10 * time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			return exp, srv.received
		}},
		{name: "otlp grpc", wantEncoded: true, start: func(t *testing.T, q QueueConfig) (Exporter, func() []point) {
			r := startGRPCReceiver(t, nil, nil)
			exp, err := NewOTLPGRPC(OTLPGRPCConfig{Endpoint: "http://" + r.addr, Queue: q, Batch: BatchConfig{MaxPoints: 7, MaxWait: 10 * time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			return exp, r.received
		}},
		{name: "otlp grpc without compression", wantEncoded: true, start: func(t *testing.T, q QueueConfig) (Exporter, func() []point) {
			r := startGRPCReceiver(t, nil, nil)
			exp, err := NewOTLPGRPC(OTLPGRPCConfig{Endpoint: "http://" + r.addr, Compression: CompressionNone, Queue: q, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			return exp, r.received
		}},
	}
	for _, tt := range tests {
		runWithQueues(t, tt.name, func(t *testing.T, q QueueConfig) {
			exp, received := tt.start(t, q)
			t.Cleanup(func() { _ = exp.Shutdown(context.Background()) })
			ee, ok := exp.(encodedExporter)
			require.True(t, ok)
			require.Equal(t, tt.wantEncoded, ee.AcceptsEncoded())
			var want []point
			for i := range 20 {
				md := testMetrics("a", float64(i))
				want = append(want, pointsOf(md)...)
				if i%4 == 3 {
					require.NoError(t, exp.ConsumeMetrics(context.Background(), md))
					continue
				}
				require.NoError(t, ee.ConsumeEncoded(context.Background(), encode(t, md), 1))
			}
			require.Eventually(t, func() bool { return len(received()) == len(want) }, 10*time.Second, 5*time.Millisecond)
			require.ElementsMatch(t, want, received())
		})
	}
}

// runWithQueues runs f as the subtests name/memory and name/disk, with the
// queue configuration of each (the disk one in a temporary directory).
func runWithQueues(t *testing.T, name string, f func(t *testing.T, q QueueConfig)) {
	t.Helper()
	t.Run(name+"/memory", func(t *testing.T) { f(t, QueueConfig{}) })
	t.Run(name+"/disk", func(t *testing.T) { f(t, QueueConfig{Dir: t.TempDir()}) })
}

// TestSetEncoded checks which fan-outs take encoded scrapes, and that the
// exporters that need pdata get it decoded.
func TestSetEncoded(t *testing.T) {
	srv := newOTLPHTTPServer(t, nil)
	otlp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Retry: fastRetry(), Batch: BatchConfig{MaxWait: 5 * time.Millisecond}}, prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = otlp.Shutdown(context.Background()) })
	rw, err := NewRemoteWrite(RemoteWriteConfig{URL: "http://127.0.0.1:1/write"}, prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = rw.Shutdown(ctx)
	})
	prom := NewPrometheus(PrometheusConfig{Enabled: true}, nil)
	rec := &failingExporter{}

	tests := []struct {
		name string
		set  *Set
		want bool
	}{
		{name: "otlp only", set: NewFanout(otlp), want: true},
		{name: "otlp and remote write", set: NewFanout(otlp, rw)},
		{name: "otlp and pull endpoint", set: NewFanout(otlp, prom)},
		{name: "nothing", set: NewFanout()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, tt.set.AcceptsEncoded())
		})
	}

	// A set that does not take encoded scrapes still handles them.
	md := testMetrics("b", 7)
	require.NoError(t, NewFanout(otlp, prom, rec).ConsumeEncoded(context.Background(), encode(t, md), 1))
	require.Len(t, rec.got, 1)
	require.Equal(t, pointsOf(md), pointsOf(rec.got[0]))
	require.Eventually(t, func() bool { return len(srv.received()) == 1 }, 10*time.Second, 5*time.Millisecond)
}
