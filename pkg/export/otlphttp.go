package export

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// Environment variables of the OTLP exporter specification that apply when
// no endpoint is configured.
const (
	envOTLPEndpoint        = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPMetricsEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	envOTLPHeaders         = "OTEL_EXPORTER_OTLP_HEADERS"
	envOTLPMetricsHeaders  = "OTEL_EXPORTER_OTLP_METRICS_HEADERS"
)

// Compression values.
const (
	CompressionGzip = "gzip"
	CompressionNone = "none"
)

// OTLPHTTPConfig configures OTLP over HTTP (protobuf).
type OTLPHTTPConfig struct {
	// Endpoint is a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: metrics go to
	// <Endpoint>/v1/metrics. Empty: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
	// (used as is), else OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string `yaml:"endpoint"`
	// Headers are added to every request. Empty: the OTEL_EXPORTER_OTLP_*
	// HEADERS environment variables.
	Headers map[string]string `yaml:"headers,omitempty"`
	// Compression is gzip (default) or none.
	Compression string `yaml:"compression,omitempty"`
	// Timeout bounds one request (default 10s).
	Timeout time.Duration `yaml:"timeout,omitempty"`

	// Name labels the exporter's metrics and logs (default "otlphttp").
	Name      string      `yaml:"name,omitempty"`
	QueueSize int         `yaml:"queue_size,omitempty"`
	Batch     BatchConfig `yaml:"batch,omitempty"`
	Retry     RetryConfig `yaml:"retry,omitempty"`
	// Client, if set, sends the requests (TLS and auth are configured on it).
	Client *http.Client `yaml:"-"`
}

// OTLPHTTP exports to an OTLP/HTTP endpoint.
type OTLPHTTP struct {
	*pipeline
	url string
}

var _ Exporter = (*OTLPHTTP)(nil)

// NewOTLPHTTP starts an OTLP/HTTP exporter. Stop it with Shutdown.
func NewOTLPHTTP(cfg OTLPHTTPConfig, reg prometheus.Registerer, logger *slog.Logger) (*OTLPHTTP, error) {
	return newOTLPHTTP(cfg, newMetrics(reg), logger)
}

func newOTLPHTTP(cfg OTLPHTTPConfig, m *metrics, logger *slog.Logger) (*OTLPHTTP, error) {
	u, err := otlpHTTPURL(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if cfg.Headers == nil {
		cfg.Headers = envHeaders()
	}
	switch cfg.Compression {
	case "":
		cfg.Compression = CompressionGzip
	case CompressionGzip, CompressionNone:
	default:
		return nil, fmt.Errorf("otlp http: compression %q: want gzip or none", cfg.Compression)
	}
	if cfg.Name == "" {
		cfg.Name = "otlphttp"
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultQueueSize
	}
	hc := cfg.Client
	if hc == nil {
		hc = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	c := &otlpHTTPClient{url: u, headers: cfg.Headers, gzip: cfg.Compression == CompressionGzip, hc: hc}
	p := newPipeline(pipelineConfig{name: cfg.Name, batch: cfg.Batch, retry: cfg.Retry, timeout: cfg.Timeout},
		newMemQueue(cfg.QueueSize), c, m, logger)
	return &OTLPHTTP{pipeline: p, url: u}, nil
}

// URL is where the exporter posts.
func (e *OTLPHTTP) URL() string { return e.url }

// otlpHTTPURL resolves the metrics URL from the configured base URL or the
// environment.
func otlpHTTPURL(endpoint string) (string, error) {
	raw, full := endpoint, false
	if raw == "" {
		if v := os.Getenv(envOTLPMetricsEndpoint); v != "" {
			raw, full = v, true
		} else {
			raw = os.Getenv(envOTLPEndpoint)
		}
	}
	if raw == "" {
		return "", fmt.Errorf("otlp http: no endpoint (configure one or set %s)", envOTLPEndpoint)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("otlp http: endpoint %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return "", fmt.Errorf("otlp http: endpoint %q: want http(s)://host[:port][/path]", raw)
	}
	if !full {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/metrics"
	}
	return u.String(), nil
}

// envHeaders reads the OTLP headers environment variables: comma-separated
// key=value pairs, URL-encoded values.
func envHeaders() map[string]string {
	out := map[string]string{}
	for _, env := range []string{envOTLPHeaders, envOTLPMetricsHeaders} {
		for _, kv := range strings.Split(os.Getenv(env), ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				continue
			}
			if dv, err := url.QueryUnescape(strings.TrimSpace(v)); err == nil {
				v = dv
			}
			out[strings.TrimSpace(k)] = v
		}
	}
	return out
}

type otlpHTTPClient struct {
	url     string
	headers map[string]string
	gzip    bool
	hc      *http.Client
	bufs    sync.Pool
}

func (c *otlpHTTPClient) send(ctx context.Context, md pmetric.Metrics) error {
	raw, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		return permanent(fmt.Errorf("marshal: %w", err), "marshal")
	}
	body := raw
	buf, _ := c.bufs.Get().(*bytes.Buffer)
	if buf == nil {
		buf = new(bytes.Buffer)
	}
	defer c.bufs.Put(buf)
	if c.gzip {
		buf.Reset()
		zw, _ := gzip.NewWriterLevel(buf, gzip.BestSpeed)
		if _, err := zw.Write(raw); err != nil {
			return permanent(fmt.Errorf("gzip: %w", err), "marshal")
		}
		if err := zw.Close(); err != nil {
			return permanent(fmt.Errorf("gzip: %w", err), "marshal")
		}
		body = buf.Bytes()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return permanent(err, "request")
	}
	req.Header.Set("Content-Type", "application/x-protobuf")
	if c.gzip {
		req.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("post %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return classifyHTTP(resp, rb)
	}
	return nil
}

func (c *otlpHTTPClient) close() error {
	c.hc.CloseIdleConnections()
	return nil
}
