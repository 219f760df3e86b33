package export

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v2"
)

// OTLP protocols.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// Config is the exporters section of the configuration file (allot:
// exporters:) and the export flags. Flags define one OTLP and one remote
// write exporter (named "otlp" and "remote-write"); the file can define
// any number. Settings under queue, batch and retry apply to every exporter
// that does not set its own.
type Config struct {
	OTLP        []OTLPEndpoint        `yaml:"otlp,omitempty"`
	RemoteWrite []RemoteWriteEndpoint `yaml:"remote_write,omitempty"`
	Prometheus  PrometheusConfig      `yaml:"prometheus,omitempty"`
	// QueueDir persists every exporter's queue under <QueueDir>/<name>, so
	// a restart loses nothing queued. Empty: queues are in memory.
	QueueDir string      `yaml:"queue_dir,omitempty"`
	Queue    QueueConfig `yaml:"queue,omitempty"`
	Batch    BatchConfig `yaml:"batch,omitempty"`
	Retry    RetryConfig `yaml:"retry,omitempty"`

	flagOTLP OTLPEndpoint
	flagRW   RemoteWriteEndpoint
}

// OTLPEndpoint is one OTLP exporter.
type OTLPEndpoint struct {
	// Name identifies the exporter in metrics, logs and the queue
	// directory (default "otlp", "otlp-2", ...).
	Name string `yaml:"name,omitempty"`
	// Endpoint: for http/protobuf a base URL (…/v1/metrics is appended),
	// for grpc host:port or http(s)://host:port. Empty: the
	// OTEL_EXPORTER_OTLP_(METRICS_)ENDPOINT environment variables.
	Endpoint string `yaml:"endpoint,omitempty"`
	// Protocol is http/protobuf (default) or grpc.
	Protocol string `yaml:"protocol,omitempty"`
	// Compression is gzip (default), zstd (the OpenTelemetry Collector
	// accepts it; less CPU and half the bytes) or none.
	Compression  string `yaml:"compression,omitempty"`
	ClientConfig `yaml:",inline"`
	Queue        *QueueConfig `yaml:"queue,omitempty"`
	Batch        *BatchConfig `yaml:"batch,omitempty"`
	Retry        *RetryConfig `yaml:"retry,omitempty"`
}

// RemoteWriteEndpoint is one Prometheus remote write exporter.
type RemoteWriteEndpoint struct {
	Name string `yaml:"name,omitempty"`
	URL  string `yaml:"url"`
	// ProtobufMessage chooses the protocol as Prometheus's remote_write
	// does: prometheus.WriteRequest (remote write 1.0, default) or
	// io.prometheus.write.v2.Request (2.0).
	ProtobufMessage string `yaml:"protobuf_message,omitempty"`
	// SendMetadata sends type, help and unit with the samples (default true).
	SendMetadata *bool `yaml:"send_metadata,omitempty"`
	ClientConfig `yaml:",inline"`
	Queue        *QueueConfig `yaml:"queue,omitempty"`
	Batch        *BatchConfig `yaml:"batch,omitempty"`
	Retry        *RetryConfig `yaml:"retry,omitempty"`
}

// RegisterFlags registers the export flags; their defaults are the
// defaults of the configuration.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.flagOTLP.Endpoint, "otlp.endpoint", "", "OTLP endpoint: base URL for http/protobuf (/v1/metrics is appended), host:port or http(s)://host:port for grpc. Empty: $OTEL_EXPORTER_OTLP_ENDPOINT.")
	f.StringVar(&c.flagOTLP.Protocol, "otlp.protocol", ProtocolHTTP, "OTLP protocol: http/protobuf or grpc.")
	f.Var((*headerFlag)(&c.flagOTLP.Headers), "otlp.header", "OTLP request header name=value (repeatable).")
	f.StringVar(&c.flagOTLP.Compression, "otlp.compression", CompressionGzip, "OTLP compression: gzip, zstd (accepted by the OpenTelemetry Collector; less CPU than gzip, half the bytes) or none.")
	f.DurationVar(&c.flagOTLP.Timeout, "otlp.timeout", DefaultTimeout, "Timeout of one OTLP request.")
	f.StringVar(&c.flagOTLP.BearerTokenFile, "otlp.bearer-token-file", "", "File with a bearer token for the OTLP endpoint.")
	registerTLSFlags(f, "otlp", &c.flagOTLP.ClientConfig)

	f.StringVar(&c.flagRW.URL, "remote-write.url", "", "Prometheus remote write URL.")
	f.StringVar(&c.flagRW.ProtobufMessage, "remote-write.protobuf-message", RemoteWriteV1, "Remote write protocol: "+RemoteWriteV1+" (1.0) or "+RemoteWriteV2+" (2.0: metadata per series, created timestamps).")
	f.Var((*headerFlag)(&c.flagRW.Headers), "remote-write.header", "Remote write request header name=value (repeatable).")
	f.DurationVar(&c.flagRW.Timeout, "remote-write.timeout", DefaultTimeout, "Timeout of one remote write request.")
	f.StringVar(&c.flagRW.BearerTokenFile, "remote-write.bearer-token-file", "", "File with a bearer token for remote write.")
	f.Func("remote-write.basic-auth.username", "Basic auth user name for remote write.", func(s string) error {
		if c.flagRW.BasicAuth == nil {
			c.flagRW.BasicAuth = &BasicAuth{}
		}
		c.flagRW.BasicAuth.Username = s
		return nil
	})
	f.Func("remote-write.basic-auth.password-file", "File with the basic auth password for remote write.", func(s string) error {
		if c.flagRW.BasicAuth == nil {
			c.flagRW.BasicAuth = &BasicAuth{}
		}
		c.flagRW.BasicAuth.PasswordFile = s
		return nil
	})
	registerTLSFlags(f, "remote-write", &c.flagRW.ClientConfig)

	f.StringVar(&c.QueueDir, "export.queue-dir", "", "Directory persisting the exporters' queues (e.g. <data.dir>/queue); empty keeps them in memory.")
	f.IntVar(&c.Queue.Size, "export.queue-size", DefaultQueueSize, "Scrapes each exporter queues at most.")
	f.IntVar(&c.Batch.MaxPoints, "export.batch.max-points", DefaultBatchMaxPoints, "Data points per request at most (a bigger scrape is sent whole).")
	f.DurationVar(&c.Batch.MaxWait, "export.batch.max-wait", DefaultBatchMaxWait, "Time a request waits to fill.")
	f.DurationVar(&c.Retry.MaxElapsed, "export.retry.max-elapsed", DefaultMaxElapsed, "Give up on a request after retrying it this long (0: until shutdown).")
	f.BoolVar(&c.Prometheus.Enabled, "export.prometheus", false, "Serve the scraped series for Prometheus to pull.")
}

func registerTLSFlags(f *flag.FlagSet, prefix string, c *ClientConfig) {
	f.StringVar(&c.TLS.CAFile, prefix+".tls.ca-file", "", "CA certificate file verifying the server.")
	f.StringVar(&c.TLS.CertFile, prefix+".tls.cert-file", "", "Client certificate file (mTLS).")
	f.StringVar(&c.TLS.KeyFile, prefix+".tls.key-file", "", "Client key file (mTLS).")
	f.StringVar(&c.TLS.ServerName, prefix+".tls.server-name", "", "Server name to verify.")
	f.BoolVar(&c.TLS.InsecureSkipVerify, prefix+".tls.insecure-skip-verify", false, "Do not verify the server certificate.")
}

// headerFlag is a repeatable name=value flag.
type headerFlag map[string]string

func (h *headerFlag) String() string {
	if h == nil || *h == nil {
		return ""
	}
	parts := make([]string, 0, len(*h))
	for k, v := range *h {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (h *headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("header %q: want name=value", s)
	}
	if *h == nil {
		*h = map[string]string{}
	}
	(*h)[strings.TrimSpace(k)] = v
	return nil
}

// ParseConfig reads the exporters section from YAML, rejecting unknown
// fields, and validates it.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, fmt.Errorf("exporters: %w", err)
	}
	return c, c.Validate()
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// endpoints returns the OTLP and remote write exporters of flags and file,
// named.
func (c *Config) endpoints() ([]OTLPEndpoint, []RemoteWriteEndpoint) {
	var otlp []OTLPEndpoint
	if c.flagOTLP.Endpoint != "" {
		e := c.flagOTLP
		e.Name = "otlp"
		otlp = append(otlp, e)
	}
	otlp = append(otlp, c.OTLP...)
	if len(otlp) == 0 && c.flagRW.URL == "" && len(c.RemoteWrite) == 0 && !c.Prometheus.Enabled &&
		(os.Getenv(envOTLPEndpoint) != "" || os.Getenv(envOTLPMetricsEndpoint) != "") {
		// Nothing configured: the OTLP environment variables decide.
		e := c.flagOTLP
		e.Name = "otlp"
		otlp = append(otlp, e)
	}
	for i := range otlp {
		if otlp[i].Name == "" {
			otlp[i].Name = fmt.Sprintf("otlp-%d", i+1)
		}
	}
	var rw []RemoteWriteEndpoint
	if c.flagRW.URL != "" {
		e := c.flagRW
		e.Name = "remote-write"
		rw = append(rw, e)
	}
	rw = append(rw, c.RemoteWrite...)
	for i := range rw {
		if rw[i].Name == "" {
			rw[i].Name = fmt.Sprintf("remote-write-%d", i+1)
		}
	}
	return otlp, rw
}

// Validate rejects unknown values and contradictory settings.
func (c *Config) Validate() error {
	// The flag is checked even without --remote-write.url, so that a typo
	// does not wait for the URL to show.
	if err := validProtobufMessage(c.flagRW.ProtobufMessage); err != nil {
		return fmt.Errorf("exporters: --remote-write.protobuf-message %w", err)
	}
	otlp, rw := c.endpoints()
	if len(otlp) == 0 && len(rw) == 0 && !c.Prometheus.Enabled {
		return errors.New("exporters: nothing to export to: set --otlp.endpoint, --remote-write.url, $OTEL_EXPORTER_OTLP_ENDPOINT or an exporter in the configuration file")
	}
	names := map[string]bool{}
	checkName := func(kind, name string) error {
		if !nameRE.MatchString(name) {
			return fmt.Errorf("exporters: %s exporter name %q: letters, digits, '.', '_' and '-' only", kind, name)
		}
		if names[name] {
			return fmt.Errorf("exporters: two exporters named %q", name)
		}
		names[name] = true
		return nil
	}
	if err := c.validatePipeline("", c.Queue, c.Batch, c.Retry); err != nil {
		return err
	}
	noEndpoint := 0
	for _, e := range otlp {
		if err := checkName("otlp", e.Name); err != nil {
			return err
		}
		if err := e.validate(); err != nil {
			return fmt.Errorf("exporters: otlp %q: %w", e.Name, err)
		}
		if e.Endpoint == "" {
			noEndpoint++
		}
		if err := c.validateOverrides(e.Name, e.Queue, e.Batch, e.Retry); err != nil {
			return err
		}
	}
	if noEndpoint > 1 {
		return errors.New("exporters: more than one otlp exporter without endpoint (only one can use $OTEL_EXPORTER_OTLP_ENDPOINT)")
	}
	for _, e := range rw {
		if err := checkName("remote write", e.Name); err != nil {
			return err
		}
		u, err := url.Parse(e.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("exporters: remote write %q: url %q: want http(s)://host[:port]/path", e.Name, e.URL)
		}
		if u.Scheme == "http" && e.hasTLS() && !e.TLS.InsecureSkipVerify {
			return fmt.Errorf("exporters: remote write %q: tls_config set but url %q is plain http", e.Name, e.URL)
		}
		if err := validProtobufMessage(e.ProtobufMessage); err != nil {
			return fmt.Errorf("exporters: remote write %q: protobuf_message %w", e.Name, err)
		}
		if err := e.ClientConfig.validate(); err != nil {
			return fmt.Errorf("exporters: remote write %q: %w", e.Name, err)
		}
		if err := c.validateOverrides(e.Name, e.Queue, e.Batch, e.Retry); err != nil {
			return err
		}
	}
	if c.Prometheus.Expire < 0 {
		return errors.New("exporters: prometheus: expire must not be negative")
	}
	return nil
}

func (e *OTLPEndpoint) validate() error {
	switch e.Protocol {
	case "", ProtocolHTTP, ProtocolGRPC:
	case "http/json":
		return errors.New("protocol http/json is not supported: use http/protobuf or grpc")
	default:
		return fmt.Errorf("protocol %q: want http/protobuf or grpc", e.Protocol)
	}
	if err := validCompression(e.Compression); err != nil {
		return err
	}
	if err := e.ClientConfig.validate(); err != nil {
		return err
	}
	if e.Endpoint == "" {
		return nil
	}
	if e.Protocol == ProtocolGRPC {
		_, _, err := grpcTarget(e.Endpoint, e.hasTLS())
		return err
	}
	u, err := url.Parse(e.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("endpoint %q: want http(s)://host[:port][/path] for http/protobuf", e.Endpoint)
	}
	if u.Scheme == "http" && e.hasTLS() && !e.TLS.InsecureSkipVerify {
		return fmt.Errorf("tls_config set but endpoint %q is plain http", e.Endpoint)
	}
	return nil
}

func (c *Config) validateOverrides(name string, q *QueueConfig, b *BatchConfig, r *RetryConfig) error {
	qq, bb, rr := c.Queue, c.Batch, c.Retry
	if q != nil {
		qq = *q
	}
	if b != nil {
		bb = *b
	}
	if r != nil {
		rr = *r
	}
	return c.validatePipeline(name, qq, bb, rr)
}

func (c *Config) validatePipeline(name string, q QueueConfig, b BatchConfig, r RetryConfig) error {
	where := "exporters"
	if name != "" {
		where = fmt.Sprintf("exporters: %q", name)
	}
	switch {
	case q.Size < 0:
		return fmt.Errorf("%s: queue size must not be negative", where)
	case b.MaxPoints < 0 || b.MaxWait < 0:
		return fmt.Errorf("%s: batch max_points and max_wait must not be negative", where)
	case r.Jitter < 0 || r.Jitter >= 1:
		return fmt.Errorf("%s: retry jitter %v: want 0 <= jitter < 1", where, r.Jitter)
	case r.InitialInterval < 0 || r.MaxInterval < 0 || r.MaxElapsed < 0:
		return fmt.Errorf("%s: retry intervals must not be negative", where)
	case r.InitialInterval > 0 && r.MaxInterval > 0 && r.InitialInterval > r.MaxInterval:
		return fmt.Errorf("%s: retry initial_interval %s exceeds max_interval %s", where, r.InitialInterval, r.MaxInterval)
	}
	return nil
}

// pipelineSettings are the queue, batch and retry settings of one exporter.
func (c *Config) pipelineSettings(name string, q *QueueConfig, b *BatchConfig, r *RetryConfig) (QueueConfig, BatchConfig, RetryConfig) {
	qq, bb, rr := c.Queue, c.Batch, c.Retry
	if q != nil {
		qq = *q
	}
	if b != nil {
		bb = *b
	}
	if r != nil {
		rr = *r
	}
	if c.QueueDir != "" {
		qq.Dir = filepath.Join(c.QueueDir, name)
	}
	if rr.MaxElapsed == 0 && r == nil && c.Retry == (RetryConfig{}) {
		rr.MaxElapsed = DefaultMaxElapsed
	}
	return qq, bb, rr
}

// New builds and starts the exporters of cfg as one fan-out. Stop it with
// Shutdown. The pull endpoint, if enabled, is Set.PrometheusHandler.
func New(cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Set, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := newMetrics(reg)
	otlp, rw := cfg.endpoints()
	var built []Exporter
	fail := func(err error) (*Set, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = NewFanout(built...).Shutdown(ctx)
		return nil, err
	}
	for _, e := range otlp {
		q, b, r := cfg.pipelineSettings(e.Name, e.Queue, e.Batch, e.Retry)
		var (
			exp Exporter
			err error
		)
		if e.Protocol == ProtocolGRPC {
			exp, err = newOTLPGRPC(OTLPGRPCConfig{
				Endpoint: e.Endpoint, Compression: e.Compression, Name: e.Name,
				Client: e.ClientConfig, Queue: q, Batch: b, Retry: r,
			}, m, logger)
		} else {
			exp, err = newOTLPHTTP(OTLPHTTPConfig{
				Endpoint: e.Endpoint, Compression: e.Compression, Name: e.Name,
				Client: e.ClientConfig, Queue: q, Batch: b, Retry: r,
			}, m, logger)
		}
		if err != nil {
			return fail(fmt.Errorf("exporters: otlp %q: %w", e.Name, err))
		}
		built = append(built, exp)
	}
	for _, e := range rw {
		q, b, r := cfg.pipelineSettings(e.Name, e.Queue, e.Batch, e.Retry)
		exp, err := newRemoteWrite(RemoteWriteConfig{
			URL: e.URL, Name: e.Name, ProtobufMessage: e.ProtobufMessage, Metadata: e.SendMetadata,
			Client: e.ClientConfig, Queue: q, Batch: b, Retry: r,
		}, m, logger)
		if err != nil {
			return fail(fmt.Errorf("exporters: remote write %q: %w", e.Name, err))
		}
		built = append(built, exp)
	}
	if cfg.Prometheus.Enabled {
		built = append(built, NewPrometheus(cfg.Prometheus, logger))
	}
	return NewFanout(built...), nil
}
