package export

import (
	"bytes"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc/encoding"
)

// Compression values of the OTLP exporters. gzip is what every OTLP
// receiver must accept; zstd is accepted by the OpenTelemetry Collector's
// OTLP receiver (HTTP and gRPC) and, at its fastest level, costs about a
// fifth less CPU than gzip for half the bytes (BenchmarkCompress).
const (
	CompressionGzip = "gzip"
	CompressionZstd = "zstd"
	CompressionNone = "none"
)

// checkCompression fills in the default and rejects what is not a known
// value; what names the exporter in the error.
func checkCompression(what string, c *string) error {
	switch *c {
	case "":
		*c = CompressionGzip
	case CompressionGzip, CompressionZstd, CompressionNone:
	default:
		return fmt.Errorf("%s: compression %q: want gzip, zstd or none", what, *c)
	}
	return nil
}

// bodyCompressor compresses request bodies with pooled writers. The zero
// value is ready for use.
type bodyCompressor struct {
	gzips sync.Pool // *gzip.Writer
	joins sync.Pool // *bytes.Buffer: zstd's input, the parts joined
}

// compress writes the concatenation of parts, compressed with compression
// (gzip or zstd), into buf and returns buf's bytes.
func (c *bodyCompressor) compress(compression string, buf *bytes.Buffer, parts [][]byte) ([]byte, error) {
	buf.Reset()
	switch compression {
	case CompressionGzip:
		zw, _ := c.gzips.Get().(*gzip.Writer)
		if zw == nil {
			zw, _ = gzip.NewWriterLevel(buf, gzip.BestSpeed)
		} else {
			zw.Reset(buf)
		}
		defer c.gzips.Put(zw)
		for _, p := range parts {
			if _, err := zw.Write(p); err != nil {
				return nil, fmt.Errorf("gzip: %w", err)
			}
		}
		if err := zw.Close(); err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return buf.Bytes(), nil
	case CompressionZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		// EncodeAll is safe for concurrent use, so one encoder serves
		// every sender; it wants the body in one piece.
		src := []byte(nil)
		if len(parts) == 1 {
			src = parts[0]
		} else {
			j, _ := c.joins.Get().(*bytes.Buffer)
			if j == nil {
				j = new(bytes.Buffer)
			}
			j.Reset()
			for _, p := range parts {
				j.Write(p)
			}
			defer c.joins.Put(j)
			src = j.Bytes()
		}
		// buf takes the output as its storage, so a grown array stays
		// with the pooled buffer.
		*buf = *bytes.NewBuffer(enc.EncodeAll(src, buf.Bytes()[:0]))
		return buf.Bytes(), nil
	}
	return nil, fmt.Errorf("compress: unknown compression %q", compression)
}

// zstdEncoder is the process's zstd encoder for whole bodies, at the
// fastest level.
var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
})

// newZstdWriter is a streaming zstd writer at the fastest level. One
// goroutine: gRPC's senders already run in parallel, and the writer's own
// workers would only compete with them.
func newZstdWriter(w io.Writer) (*zstd.Encoder, error) {
	return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
}

// grpcZstd is the "zstd" compressor for gRPC, as the OpenTelemetry
// Collector's gRPC server registers it; grpc-go has none of its own.
type grpcZstd struct {
	writers sync.Pool // *zstd.Encoder
	readers sync.Pool // *zstd.Decoder
}

func init() { encoding.RegisterCompressor(&grpcZstd{}) }

func (*grpcZstd) Name() string { return CompressionZstd }

func (z *grpcZstd) Compress(w io.Writer) (io.WriteCloser, error) {
	zw, _ := z.writers.Get().(*zstd.Encoder)
	if zw == nil {
		var err error
		if zw, err = newZstdWriter(w); err != nil {
			return nil, err
		}
	} else {
		zw.Reset(w)
	}
	return &pooledZstdWriter{Encoder: zw, pool: &z.writers}, nil
}

func (z *grpcZstd) Decompress(r io.Reader) (io.Reader, error) {
	zr, _ := z.readers.Get().(*zstd.Decoder)
	if zr == nil {
		var err error
		if zr, err = zstd.NewReader(r, zstd.WithDecoderConcurrency(1)); err != nil {
			return nil, err
		}
	} else if err := zr.Reset(r); err != nil {
		return nil, err
	}
	return &pooledZstdReader{Decoder: zr, pool: &z.readers}, nil
}

// pooledZstdWriter returns its encoder to the pool when closed.
type pooledZstdWriter struct {
	*zstd.Encoder
	pool *sync.Pool
}

func (w *pooledZstdWriter) Close() error {
	err := w.Encoder.Close()
	w.pool.Put(w.Encoder)
	return err
}

// pooledZstdReader returns its decoder to the pool at the end of the
// stream, as grpc reads every message to EOF.
type pooledZstdReader struct {
	*zstd.Decoder
	pool *sync.Pool
}

func (r *pooledZstdReader) Read(p []byte) (int, error) {
	if r.Decoder == nil {
		return 0, io.EOF
	}
	n, err := r.Decoder.Read(p)
	if err == io.EOF {
		r.pool.Put(r.Decoder)
		r.Decoder = nil
	}
	return n, err
}
