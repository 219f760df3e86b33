package export

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"

	"github.com/golang/snappy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/prompb"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// RemoteWriteConfig configures Prometheus remote write 1.0.
type RemoteWriteConfig struct {
	// URL receives the snappy-compressed WriteRequests.
	URL string
	// Name labels the exporter's metrics and logs (default "remotewrite").
	Name string
	// Metadata sends the type, help and unit of each metric family with
	// the samples (default true; Prometheus sends them separately).
	Metadata *bool
	Client   ClientConfig
	Queue    QueueConfig
	Batch    BatchConfig
	Retry    RetryConfig
}

// RemoteWrite exports with the Prometheus remote write 1.0 protocol. The
// OTLP metrics are turned back into the series Prometheus scraped, so the
// receiver stores what Prometheus's own remote write would have sent.
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
	c := &remoteWriteClient{url: u.String(), cfg: &cc, hc: hc, metadata: cfg.Metadata == nil || *cfg.Metadata}
	p := newPipeline(pipelineConfig{name: cfg.Name, batch: cfg.Batch, retry: cfg.Retry, timeout: cc.Timeout}, q, c, m, logger)
	return &RemoteWrite{pipeline: p}, nil
}

type remoteWriteClient struct {
	url      string
	cfg      *ClientConfig
	hc       *http.Client
	metadata bool
	bufs     sync.Pool // *rwBuffers
}

type rwBuffers struct {
	req    prompb.WriteRequest
	raw    []byte
	snappy []byte
}

func (c *remoteWriteClient) send(ctx context.Context, md pmetric.Metrics) error {
	b, _ := c.bufs.Get().(*rwBuffers)
	if b == nil {
		b = &rwBuffers{}
	}
	defer c.bufs.Put(b)
	ToWriteRequest(md, &b.req, c.metadata)
	n := b.req.Size()
	if cap(b.raw) < n {
		b.raw = make([]byte, n)
	}
	b.raw = b.raw[:n]
	if _, err := b.req.MarshalToSizedBuffer(b.raw); err != nil {
		return permanent(fmt.Errorf("marshal: %w", err), "marshal")
	}
	b.snappy = snappy.Encode(b.snappy[:cap(b.snappy)], b.raw)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(b.snappy))
	if err != nil {
		return permanent(err, "request")
	}
	if err := c.cfg.setHeaders(req); err != nil {
		return err
	}
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("User-Agent", "allot")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return classifyHTTP(resp, body)
	}
	return nil
}

func (c *remoteWriteClient) close() error {
	c.hc.CloseIdleConnections()
	return nil
}
