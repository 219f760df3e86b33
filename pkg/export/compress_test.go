package export

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestCheckCompression(t *testing.T) {
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "", want: CompressionGzip},
		{in: "gzip", want: CompressionGzip},
		{in: "zstd", want: CompressionZstd},
		{in: "none", want: CompressionNone},
		{in: "brotli", err: `otlp http: compression "brotli": want gzip, zstd or none`},
		{in: "GZIP", err: `compression "GZIP"`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			c := tt.in
			err := checkCompression("otlp http", &c)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, c)
		})
	}
}

// TestBodyCompressorRoundTrip compresses bodies of several parts again and
// again with the pooled writers and decodes each with a fresh reader.
func TestBodyCompressorRoundTrip(t *testing.T) {
	decoders := map[string]func([]byte) ([]byte, error){
		CompressionGzip: func(b []byte) ([]byte, error) {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			return io.ReadAll(zr)
		},
		CompressionZstd: func(b []byte) ([]byte, error) {
			zr, err := zstd.NewReader(bytes.NewReader(b))
			if err != nil {
				return nil, err
			}
			defer zr.Close()
			return io.ReadAll(zr)
		},
	}
	var c bodyCompressor
	for compression, decode := range decoders {
		t.Run(compression, func(t *testing.T) {
			for i := range 5 {
				parts := [][]byte{bytes.Repeat([]byte("metric"), 100*i+1), nil, []byte{byte(i)}, bytes.Repeat([]byte{0, 1, 2}, 5000)}
				out, err := c.compress(compression, parts)
				require.NoError(t, err)
				got, err := decode(out.Bytes())
				require.NoError(t, err)
				require.Equal(t, bytes.Join(parts, nil), got, "round %d", i)
				c.put(out)
			}
		})
	}
	_, err := c.compress("lz4", nil)
	require.ErrorContains(t, err, `unknown compression "lz4"`)
}

// TestOTLPCompressions sends points with every compression over both
// protocols to real receivers, which decode them (the gRPC server through
// the registered "zstd" compressor).
func TestOTLPCompressions(t *testing.T) {
	for _, compression := range []string{CompressionGzip, CompressionZstd, CompressionNone} {
		t.Run("http/"+compression, func(t *testing.T) {
			srv := newOTLPHTTPServer(t, nil)
			exp, err := NewOTLPHTTP(OTLPHTTPConfig{Endpoint: srv.URL, Compression: compression, Batch: BatchConfig{MaxPoints: 3, MaxWait: time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			for i := range 10 {
				require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("s", float64(i))))
			}
			require.Eventually(t, func() bool { return len(srv.received()) == 10 }, 10*time.Second, 5*time.Millisecond)
			require.NoError(t, exp.Shutdown(context.Background()))
			want := ""
			if compression != CompressionNone {
				want = compression
			}
			srv.mu.Lock()
			defer srv.mu.Unlock()
			for _, h := range srv.headers {
				require.Equal(t, want, h.Get("Content-Encoding"))
			}
		})
		t.Run("grpc/"+compression, func(t *testing.T) {
			r := startGRPCReceiver(t, nil, nil)
			exp, err := NewOTLPGRPC(OTLPGRPCConfig{Endpoint: "http://" + r.addr, Compression: compression, Batch: BatchConfig{MaxPoints: 3, MaxWait: time.Millisecond}, Retry: fastRetry()}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			for i := range 10 {
				require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("s", float64(i))))
			}
			require.Eventually(t, func() bool { return len(r.received()) == 10 }, 10*time.Second, 5*time.Millisecond)
			require.NoError(t, exp.Shutdown(context.Background()))
		})
	}
}
