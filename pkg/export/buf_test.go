package export

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBufClasses(t *testing.T) {
	prev := -1
	for _, n := range []int{0, 1, 4096, 4097, 5120, 5121, 8192, 8193, 160 << 10, 1 << 20, 1<<20 + 1, 1 << 26} {
		c, size := classOf(n)
		require.GreaterOrEqual(t, size, n)
		require.GreaterOrEqual(t, c, prev, "classes grow with the size")
		require.Less(t, c, numClasses)
		if n > 4096 {
			require.LessOrEqual(t, size-n, n/4, "at most a quarter wasted (%d for %d)", size, n)
		}
		prev = c
	}
	c, _ := classOf(1<<26 + 1)
	require.Equal(t, -1, c, "too large to pool")

	b := getBuf(5000)
	require.Len(t, b.b, 5000)
	b.ref()
	b.release()
	b.release()
	require.Panics(t, b.release, "a release too many")
}

// TestEncodedConsumerRetainsNothing checks the ownership rule of
// otlp.EncodedConsumer through every OTLP exporter and queue: the caller
// overwrites req as soon as ConsumeEncoded returns (as the appender reuses
// it for the next scrape), while the backend first refuses (503, so the
// batches stay queued and are sent again), and what the backend gets is
// still every scrape, intact. A queue that kept req would send the
// overwritten bytes, and the race detector would see the scrape loop write
// memory an exporter reads.
func TestEncodedConsumerRetainsNothing(t *testing.T) {
	const scrapes = 40
	tests := []struct {
		name  string
		start func(t *testing.T, q QueueConfig) (Exporter, func() []point)
	}{
		{name: "otlp http", start: func(t *testing.T, q QueueConfig) (Exporter, func() []point) {
			srv := newOTLPHTTPServer(t, func(n int64) (int, http.Header) {
				if n <= 3 {
					return http.StatusServiceUnavailable, nil
				}
				return 0, nil
			})
			exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Queue: q, Batch: BatchConfig{MaxPoints: 5, MaxWait: time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			return exp, srv.received
		}},
		{name: "otlp http without compression", start: func(t *testing.T, q QueueConfig) (Exporter, func() []point) {
			srv := newOTLPHTTPServer(t, nil)
			exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Compression: CompressionNone, Queue: q, Batch: BatchConfig{MaxPoints: 5, MaxWait: time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			return exp, srv.received
		}},
		{name: "otlp grpc", start: func(t *testing.T, q QueueConfig) (Exporter, func() []point) {
			r := startGRPCReceiver(t, nil, func(n int64) error {
				if n <= 3 {
					return status.Error(codes.Unavailable, "not yet")
				}
				return nil
			})
			exp, err := NewOTLPGRPC(OTLPGRPCConfig{Endpoint: "http://" + r.addr, Compression: CompressionNone, Queue: q, Batch: BatchConfig{MaxPoints: 5, MaxWait: time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			return exp, r.received
		}},
	}
	for _, tt := range tests {
		runWithQueues(t, tt.name, func(t *testing.T, q QueueConfig) {
			exp, received := tt.start(t, q)
			// Two exporters of a fan-out get the same req.
			other, otherReceived := tt.start(t, QueueConfig{})
			set := NewFanout(exp, other)
			t.Cleanup(func() { _ = set.Shutdown(context.Background()) })
			require.True(t, set.AcceptsEncoded())

			var want []point
			var req []byte // the caller's, reused
			for i := range scrapes {
				md := testMetrics("a", float64(i))
				want = append(want, pointsOf(md)...)
				req = append(req[:0], encode(t, md)...)
				require.NoError(t, set.ConsumeEncoded(context.Background(), req, 1))
				copy(req, bytes.Repeat([]byte{0xff}, len(req)))
			}
			for _, got := range []func() []point{received, otherReceived} {
				require.Eventually(t, func() bool { return len(got()) >= len(want) }, 10*time.Second, 5*time.Millisecond)
				require.ElementsMatch(t, want, got())
			}
		})
	}
}

// TestReusedBody checks the request body the HTTP exporters (OTLP, remote
// write) send from pooled memory: the parts read as one, again from the start for a retry,
// and not at all once the request has ended.
func TestReusedBody(t *testing.T) {
	rb := newReusedBody([][]byte{[]byte("ab"), nil, []byte("cde")})
	require.EqualValues(t, 5, rb.size)
	for range 2 {
		r := rb.reader()
		got, err := io.ReadAll(io.LimitReader(r, 100))
		require.NoError(t, err)
		require.Equal(t, "abcde", string(got))
	}
	r := rb.reader()
	p := make([]byte, 1)
	_, err := r.Read(p)
	require.NoError(t, err)
	rb.close()
	_, err = r.Read(p)
	require.ErrorIs(t, err, errBodyReused)
}

// TestGRPCFreesParts checks that gRPC gives back the reference the codec
// takes on every part it sends, so that the parts go back to the pool.
func TestGRPCFreesParts(t *testing.T) {
	r := startGRPCReceiver(t, nil, nil)
	for _, compression := range []string{CompressionGzip, CompressionZstd, CompressionNone} {
		exp, err := NewOTLPGRPC(OTLPGRPCConfig{Endpoint: "http://" + r.addr, Compression: compression, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
		require.NoError(t, err)
		c := exp.c.(*otlpGRPCClient)
		parts := []*buf{copyBuf(encode(t, testMetrics("a", 1))), copyBuf(encode(t, testMetrics("b", 2)))}
		require.NoError(t, c.sendEncoded(context.Background(), parts))
		for _, b := range parts {
			require.Eventually(t, func() bool { return b.refs.Load() == 1 }, 5*time.Second, time.Millisecond, "gRPC holds a reference")
			b.release()
		}
		require.NoError(t, exp.Shutdown(context.Background()))
	}
}
