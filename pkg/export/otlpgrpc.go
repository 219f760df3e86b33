package export

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// OTLPGRPCConfig configures OTLP over gRPC.
type OTLPGRPCConfig struct {
	// Endpoint is host:port, or http://host:port (plain text) or
	// https://host:port (TLS). A bare host:port uses TLS when Client.TLS is
	// configured, plain text otherwise. Empty: OTEL_EXPORTER_OTLP_METRICS_
	// ENDPOINT, else OTEL_EXPORTER_OTLP_ENDPOINT.
	Endpoint string
	// Compression is gzip (default), zstd or none.
	Compression string
	// Name labels the exporter's metrics and logs (default "otlpgrpc").
	Name   string
	Client ClientConfig
	Queue  QueueConfig
	Batch  BatchConfig
	Retry  RetryConfig
}

// OTLPGRPC exports to an OTLP/gRPC endpoint.
type OTLPGRPC struct {
	*pipeline
	target string
}

var _ Exporter = (*OTLPGRPC)(nil)

// NewOTLPGRPC starts an OTLP/gRPC exporter. Stop it with Shutdown.
func NewOTLPGRPC(cfg OTLPGRPCConfig, reg prometheus.Registerer, logger *slog.Logger) (*OTLPGRPC, error) {
	return newOTLPGRPC(cfg, newMetrics(reg), logger)
}

func newOTLPGRPC(cfg OTLPGRPCConfig, m *metrics, logger *slog.Logger) (*OTLPGRPC, error) {
	cc := cfg.Client
	if cc.Headers == nil {
		cc.Headers = envHeaders()
	}
	if err := cc.validate(); err != nil {
		return nil, fmt.Errorf("otlp grpc: %w", err)
	}
	target, useTLS, err := grpcTarget(cfg.Endpoint, cc.hasTLS())
	if err != nil {
		return nil, err
	}
	if err := checkCompression("otlp grpc", &cfg.Compression); err != nil {
		return nil, err
	}
	if cfg.Name == "" {
		cfg.Name = "otlpgrpc"
	}
	creds := insecure.NewCredentials()
	if useTLS {
		tc, err := cc.tlsConfig()
		if err != nil {
			return nil, fmt.Errorf("otlp grpc: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	conn, err := grpc.NewClient(target,
		grpc.WithTransportCredentials(creds),
		grpc.WithPerRPCCredentials(perRPC{c: &cc}),
	)
	if err != nil {
		return nil, fmt.Errorf("otlp grpc: dial %s: %w", target, err)
	}
	q, err := cfg.Queue.open(cfg.Name)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("otlp grpc: %w", err)
	}
	c := &otlpGRPCClient{conn: conn, callOpts: []grpc.CallOption{grpc.ForceCodecV2(rawCodec{})}}
	switch cfg.Compression {
	case CompressionGzip:
		c.callOpts = append(c.callOpts, grpc.UseCompressor(gzip.Name))
	case CompressionZstd:
		c.callOpts = append(c.callOpts, grpc.UseCompressor(CompressionZstd))
	}
	p := newPipeline(pipelineConfig{name: cfg.Name, batch: cfg.Batch, retry: cfg.Retry, timeout: cc.Timeout}, q, c, m, logger)
	return &OTLPGRPC{pipeline: p, target: target}, nil
}

// Target is the gRPC target the exporter dials.
func (e *OTLPGRPC) Target() string { return e.target }

// grpcTarget resolves the endpoint to a gRPC target and whether to use TLS.
func grpcTarget(endpoint string, tlsConfigured bool) (string, bool, error) {
	if endpoint == "" {
		endpoint = os.Getenv(envOTLPMetricsEndpoint)
	}
	if endpoint == "" {
		endpoint = os.Getenv(envOTLPEndpoint)
	}
	if endpoint == "" {
		return "", false, fmt.Errorf("otlp grpc: no endpoint (configure one or set %s)", envOTLPEndpoint)
	}
	if !strings.Contains(endpoint, "://") {
		return endpoint, tlsConfigured, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", false, fmt.Errorf("otlp grpc: endpoint %q: %w", endpoint, err)
	}
	if u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", false, fmt.Errorf("otlp grpc: endpoint %q: want [http(s)://]host:port without path", endpoint)
	}
	switch u.Scheme {
	case "https":
		return u.Host, true, nil
	case "http":
		if tlsConfigured {
			return "", false, fmt.Errorf("otlp grpc: endpoint %q is plain text (http://) but tls_config is set", endpoint)
		}
		return u.Host, false, nil
	}
	return "", false, fmt.Errorf("otlp grpc: endpoint %q: scheme must be http or https", endpoint)
}

type otlpGRPCClient struct {
	conn     *grpc.ClientConn
	callOpts []grpc.CallOption
}

// exportMethod is the OTLP metrics service's Export RPC.
const exportMethod = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"

// sendEncoded calls Export with an encoded request, as it is (rawCodec).
func (c *otlpGRPCClient) sendEncoded(ctx context.Context, parts []*buf) error {
	resp := pmetricotlp.NewExportResponse()
	if err := c.conn.Invoke(ctx, exportMethod, rawRequest(parts), &resp, c.callOpts...); err != nil {
		return classifyGRPC(err)
	}
	if n := resp.PartialSuccess().RejectedDataPoints(); n > 0 {
		return partialSuccess(n, resp.PartialSuccess().ErrorMessage())
	}
	return nil
}

func (c *otlpGRPCClient) close() error { return c.conn.Close() }

// rawRequest is an encoded ExportMetricsServiceRequest: the concatenation
// of its parts.
type rawRequest []*buf

// rawCodec is the "proto" codec for one call: it sends a rawRequest as it
// is and decodes the response with pdata, so that encoded scrapes go out
// without being decoded into pdata and marshalled again.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

// Marshal hands the parts to gRPC without copying them. gRPC's transport
// writes them from its own goroutine and may still hold them when Invoke
// returns (a deadline while the frames wait for flow control, a retry
// buffer), then frees them: each part goes as a counted mem.Buffer that
// holds a reference to the buf, dropped by that free, so the pipeline's
// release after the send does not hand the bytes to another scrape early.
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	req, ok := v.(rawRequest)
	if !ok {
		return nil, fmt.Errorf("otlp grpc: cannot marshal %T", v)
	}
	out := make(mem.BufferSlice, len(req))
	for i, b := range req {
		if mem.IsBelowBufferPoolingThreshold(cap(b.b)) {
			// gRPC would not free it (a plain slice): a copy is as cheap.
			out[i] = mem.SliceBuffer(bytes.Clone(b.b))
			continue
		}
		b.ref()
		out[i] = mem.NewBuffer(&b.b, (*grpcRef)(b))
	}
	return out, nil
}

// grpcRef is a buf as the mem.BufferPool of the mem.Buffer gRPC gets:
// freeing that buffer releases the reference Marshal took.
type grpcRef buf

// Get is not called: mem.NewBuffer only puts back.
func (*grpcRef) Get(n int) *[]byte { b := make([]byte, n); return &b }

// Put releases the reference.
func (r *grpcRef) Put(*[]byte) { (*buf)(r).release() }

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*pmetricotlp.ExportResponse)
	if !ok {
		return fmt.Errorf("otlp grpc: cannot unmarshal into %T", v)
	}
	if err := resp.UnmarshalProto(data.Materialize()); err != nil {
		return fmt.Errorf("otlp grpc: decode response: %w", err)
	}
	return nil
}

// classifyGRPC follows the OTLP specification's retryable codes, and
// honours a RetryInfo detail as Retry-After.
func classifyGRPC(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err // a transport error: retry
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange,
		codes.Unavailable, codes.DataLoss, codes.ResourceExhausted:
		return retryable(err, retryInfo(st))
	}
	return permanent(err, "grpc_"+strings.ToLower(st.Code().String()))
}

func retryInfo(st *status.Status) time.Duration {
	for _, det := range st.Details() {
		if ri, ok := det.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}
