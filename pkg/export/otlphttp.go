package export

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// OTLPHTTPConfig configures OTLP over HTTP (protobuf).
type OTLPHTTPConfig struct {
	// Endpoint is a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: metrics go to
	// <Endpoint>/v1/metrics. Empty: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
	// (used as is), else OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string
	// Headers are added to every request. Nil: the OTEL_EXPORTER_OTLP_*
	// HEADERS environment variables.
	Headers map[string]string
	// Compression is gzip (default), zstd or none.
	Compression string
	// Timeout bounds one request (default 10s).
	Timeout time.Duration

	// Name labels the exporter's metrics and logs (default "otlphttp").
	Name string
	// Client adds authentication and TLS (its Headers and Timeout are used
	// when the fields above are empty).
	Client ClientConfig
	Queue  QueueConfig
	Batch  BatchConfig
	Retry  RetryConfig
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
	cc := cfg.Client
	if cfg.Headers != nil {
		cc.Headers = cfg.Headers
	}
	if cc.Headers == nil {
		cc.Headers = envHeaders()
	}
	if cfg.Timeout > 0 {
		cc.Timeout = cfg.Timeout
	}
	if err := cc.validate(); err != nil {
		return nil, fmt.Errorf("otlp http: %w", err)
	}
	if err := checkCompression("otlp http", &cfg.Compression); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "otlphttp"
	}
	hc, err := cc.httpClient()
	if err != nil {
		return nil, fmt.Errorf("otlp http: %w", err)
	}
	q, err := cfg.Queue.open(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("otlp http: %w", err)
	}
	c := &otlpHTTPClient{url: u, cfg: &cc, compression: cfg.Compression, hc: hc}
	p := newPipeline(pipelineConfig{name: cfg.Name, batch: cfg.Batch, retry: cfg.Retry, timeout: cc.Timeout}, q, c, m, logger)
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
	url         string
	cfg         *ClientConfig
	compression string // gzip, zstd or none
	hc          *http.Client
	zw          bodyCompressor
}

// sendEncoded posts an encoded ExportMetricsServiceRequest made of parts.
func (c *otlpHTTPClient) sendEncoded(ctx context.Context, parts []*buf) error {
	body := bytesOf(parts)
	compressed := c.compression != CompressionNone
	if compressed {
		z, err := c.zw.compress(c.compression, body)
		if err != nil {
			return permanent(err, "marshal")
		}
		defer c.zw.put(z) // post has ended every read of it by then
		body = [][]byte{z.Bytes()}
	}
	// The parts (and the compressed buffer) are reused once this returns.
	resp, respBody, err := c.cfg.post(ctx, c.hc, c.url, body, func(h http.Header) {
		h.Set("Content-Type", "application/x-protobuf")
		if compressed {
			h.Set("Content-Encoding", c.compression)
		}
	})
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return classifyHTTP(resp, respBody)
	}
	if len(respBody) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/x-protobuf") {
		er := pmetricotlp.NewExportResponse()
		if er.UnmarshalProto(respBody) == nil {
			if n := er.PartialSuccess().RejectedDataPoints(); n > 0 {
				return partialSuccess(n, er.PartialSuccess().ErrorMessage())
			}
		}
	}
	return nil
}

func (c *otlpHTTPClient) close() error {
	c.hc.CloseIdleConnections()
	return nil
}
