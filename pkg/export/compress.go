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

// validCompression rejects what is not a known value ("" is the default).
func validCompression(c string) error {
	switch c {
	case "", CompressionGzip, CompressionZstd, CompressionNone:
		return nil
	}
	return fmt.Errorf("compression %q: want gzip, zstd or none", c)
}

// checkCompression rejects what is not a known value and fills in the
// default; what names the exporter in the error.
func checkCompression(what string, c *string) error {
	if err := validCompression(*c); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if *c == "" {
		*c = CompressionGzip
	}
	return nil
}

// bodyCompressor compresses request bodies with pooled writers into pooled
// buffers. The zero value is ready for use.
type bodyCompressor struct {
	gzips sync.Pool // *gzip.Writer
	bufs  sync.Pool // *bytes.Buffer: compressed bodies, and zstd's joined input
}

// compress returns the concatenation of parts, compressed with compression
// (gzip or zstd), in a pooled buffer that the caller gives back with put
// once nothing reads the body any more.
func (c *bodyCompressor) compress(compression string, parts [][]byte) (*bytes.Buffer, error) {
	buf := c.buffer()
	var err error
	switch compression {
	case CompressionGzip:
		err = c.gzipInto(buf, parts)
	case CompressionZstd:
		err = c.zstdInto(buf, parts)
	default:
		err = fmt.Errorf("compress: unknown compression %q", compression)
	}
	if err != nil {
		c.put(buf)
		return nil, err
	}
	return buf, nil
}

// put gives back a buffer compress returned.
func (c *bodyCompressor) put(buf *bytes.Buffer) { c.bufs.Put(buf) }

func (c *bodyCompressor) buffer() *bytes.Buffer {
	buf, _ := c.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		return new(bytes.Buffer)
	}
	buf.Reset()
	return buf
}

func (c *bodyCompressor) gzipInto(buf *bytes.Buffer, parts [][]byte) error {
	zw, _ := c.gzips.Get().(*gzip.Writer)
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(buf, gzip.BestSpeed)
	} else {
		zw.Reset(buf)
	}
	defer c.gzips.Put(zw)
	for _, p := range parts {
		if _, err := zw.Write(p); err != nil {
			return fmt.Errorf("gzip: %w", err)
		}
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return nil
}

func (c *bodyCompressor) zstdInto(buf *bytes.Buffer, parts [][]byte) error {
	enc, err := zstdEncoder()
	if err != nil {
		return fmt.Errorf("zstd: %w", err)
	}
	// EncodeAll is safe for concurrent use, so one encoder serves every
	// sender; it wants the body in one piece.
	var src []byte
	if len(parts) == 1 {
		src = parts[0]
	} else {
		j := c.buffer()
		defer c.put(j)
		for _, p := range parts {
			j.Write(p)
		}
		src = j.Bytes()
	}
	// buf takes the output as its storage, so a grown array stays with
	// the pooled buffer (and nothing is copied).
	*buf = *bytes.NewBuffer(enc.EncodeAll(src, buf.Bytes()[:0]))
	return nil
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
