package export

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	writev2 "github.com/prometheus/prometheus/prompb/io/prometheus/write/v2"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// RemoteWriteConfig configures Prometheus remote write 1.0 or 2.0.
type RemoteWriteConfig struct {
	// URL receives the snappy-compressed requests.
	URL string
	// ProtobufMessage is the protocol: RemoteWriteV1 (default) or
	// RemoteWriteV2.
	ProtobufMessage string
	// Name labels the exporter's metrics and logs (default "remotewrite").
	Name string
	// Metadata sends the type, help and unit of each metric family with
	// the samples (default true): with 1.0 once per family and request,
	// with 2.0 on every series.
	Metadata *bool
	Client   ClientConfig
	Queue    QueueConfig
	Batch    BatchConfig
	Retry    RetryConfig
}

// RemoteWrite exports with the Prometheus remote write protocol, 1.0 or
// 2.0. The OTLP metrics are turned back into the series Prometheus scraped,
// so the receiver stores what Prometheus's own remote write would have
// sent.
type RemoteWrite struct {
	*pipeline
}

var _ Exporter = (*RemoteWrite)(nil)

// NewRemoteWrite starts a remote write exporter. Stop it with Shutdown.
func NewRemoteWrite(cfg RemoteWriteConfig, reg prometheus.Registerer, logger *slog.Logger) (*RemoteWrite, error) {
	return newRemoteWrite(cfg, newMetrics(reg), logger)
}

func newRemoteWrite(cfg RemoteWriteConfig, m *metrics, logger *slog.Logger) (*RemoteWrite, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("remote write: url %q: want http(s)://host[:port]/path", cfg.URL)
	}
	if err := validProtobufMessage(cfg.ProtobufMessage); err != nil {
		return nil, fmt.Errorf("remote write: protobuf_message %w", err)
	}
	if err := cfg.Client.validate(); err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = "remotewrite"
	}
	hc, err := cfg.Client.httpClient()
	if err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	q, err := cfg.Queue.open(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("remote write: %w", err)
	}
	cc := cfg.Client
	c := &remoteWriteClient{
		url: u.String(), cfg: &cc, hc: hc,
		metadata: cfg.Metadata == nil || *cfg.Metadata,
		v2:       cfg.ProtobufMessage == RemoteWriteV2,
	}
	p := newPipeline(pipelineConfig{name: cfg.Name, batch: cfg.Batch, retry: cfg.Retry, timeout: cc.Timeout}, q, c, m, logger)
	return &RemoteWrite{pipeline: p}, nil
}

type remoteWriteClient struct {
	url      string
	cfg      *ClientConfig
	hc       *http.Client
	metadata bool
	v2       bool
	bufs     sync.Pool // *rwBuffers
}

// rwBuffers are the memory of one request, reused by the next.
type rwBuffers struct {
	req    prompb.WriteRequest
	req2   writev2.Request
	rw2    rw2Writer
	syms   writev2.SymbolsTable
	raw    []byte
	snappy []byte
}

// encode marshals md as the client's protocol into b.raw and returns the
// samples and histograms it holds (counted for 2.0 only).
func (c *remoteWriteClient) encode(md pmetric.Metrics, b *rwBuffers) (int, error) {
	if !c.v2 {
		ToWriteRequest(md, &b.req, c.metadata)
		n := b.req.Size()
		if cap(b.raw) < n {
			b.raw = make([]byte, n)
		}
		b.raw = b.raw[:n]
		_, err := b.req.MarshalToSizedBuffer(b.raw)
		return 0, err
	}
	if b.rw2.req == nil {
		b.syms = writev2.NewSymbolTable()
		b.rw2 = rw2Writer{req: &b.req2, syms: &b.syms}
	}
	b.rw2.metadata = c.metadata
	b.rw2.convert(md)
	raw, err := b.req2.OptimizedMarshal(b.raw[:0])
	b.raw = raw
	return b.rw2.sent, err
}

func (c *remoteWriteClient) send(ctx context.Context, md pmetric.Metrics) error {
	b, _ := c.bufs.Get().(*rwBuffers)
	if b == nil {
		b = &rwBuffers{}
	}
	defer c.bufs.Put(b)
	sent, err := c.encode(md, b)
	if err != nil {
		return permanent(fmt.Errorf("marshal: %w", err), "marshal")
	}
	b.snappy = snappy.Encode(b.snappy[:cap(b.snappy)], b.raw)
	// b goes back to the pool, and its memory to the next request, once
	// this returns.
	resp, body, err := c.cfg.post(ctx, c.hc, c.url, [][]byte{b.snappy}, func(h http.Header) {
		h.Set("Content-Encoding", "snappy")
		h.Set("User-Agent", "allot")
		if c.v2 {
			h.Set("Content-Type", rw2ContentType)
			h.Set("X-Prometheus-Remote-Write-Version", rw2Version)
		} else {
			h.Set("Content-Type", "application/x-protobuf")
			h.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
		}
	})
	if err != nil {
		return err
	}
	if c.v2 {
		return checkRW2Response(resp, body, sent, md.DataPointCount())
	}
	if resp.StatusCode/100 != 2 {
		return classifyHTTP(resp, body)
	}
	return nil
}

func (c *remoteWriteClient) close() error {
	c.hc.CloseIdleConnections()
	return nil
}
