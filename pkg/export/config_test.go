package export

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		err  string
	}{
		{
			name: "full",
			yaml: `
otlp:
  - name: collector
    endpoint: https://collector:4318
    headers: {X-Tenant: a}
    bearer_token_file: /run/token
    tls_config: {ca_file: /etc/ca.pem}
    batch: {max_points: 1000}
  - name: vendor
    endpoint: vendor:4317
    protocol: grpc
    compression: none
    basic_auth: {username: u, password: p}
remote_write:
  - url: http://mimir/api/v1/push
    send_metadata: false
  - url: http://prometheus/api/v1/write
    protobuf_message: io.prometheus.write.v2.Request
    retry: {initial_interval: 1s, max_interval: 30s, max_elapsed: 0s}
prometheus: {enabled: true, expire: 10m}
queue_dir: /var/lib/allot/queue
queue: {size: 4096}
`,
		},
		{name: "unknown field", yaml: "otlp:\n  - endpoint: http://a\n    endpiont: x\n", err: "endpiont"},
		{name: "unknown section", yaml: "kafka: {}\n", err: "kafka"},
		{name: "nothing", yaml: "{}\n", err: "nothing to export"},
		{name: "bad protocol", yaml: "otlp: [{endpoint: 'http://a', protocol: thrift}]\n", err: "protocol \"thrift\""},
		{name: "json protocol", yaml: "otlp: [{endpoint: 'http://a', protocol: http/json}]\n", err: "http/json is not supported"},
		{name: "grpc endpoint with path", yaml: "otlp: [{endpoint: 'http://a:4317/v1/metrics', protocol: grpc}]\n", err: "without path"},
		{name: "http endpoint without scheme", yaml: "otlp: [{endpoint: 'a:4318'}]\n", err: "want http(s)"},
		{name: "tls over plain http", yaml: "otlp: [{endpoint: 'http://a', tls_config: {ca_file: /ca.pem}}]\n", err: "plain http"},
		{name: "two auths", yaml: "otlp: [{endpoint: 'http://a', bearer_token: x, basic_auth: {username: u}}]\n", err: "mutually exclusive"},
		{name: "token twice", yaml: "remote_write: [{url: 'http://a', bearer_token: x, bearer_token_file: /f}]\n", err: "mutually exclusive"},
		{name: "authorization header and auth", yaml: "remote_write: [{url: 'http://a', bearer_token: x, headers: {Authorization: y}}]\n", err: "mutually exclusive"},
		{name: "duplicate names", yaml: "otlp: [{name: x, endpoint: 'http://a'}]\nremote_write: [{name: x, url: 'http://b'}]\n", err: "two exporters named"},
		{name: "bad name", yaml: "otlp: [{name: '../x', endpoint: 'http://a'}]\n", err: "letters, digits"},
		{name: "bad compression", yaml: "otlp: [{endpoint: 'http://a', compression: brotli}]\n", err: `compression "brotli": want gzip, zstd or none`},
		{name: "zstd", yaml: "otlp: [{endpoint: 'http://a', compression: zstd}]\n"},
		{name: "remote write 1.0 by name", yaml: "remote_write: [{url: 'http://a', protobuf_message: prometheus.WriteRequest}]\n"},
		{
			name: "unknown protobuf_message", yaml: "remote_write: [{url: 'http://a', protobuf_message: io.prometheus.write.v3.Request}]\n",
			err: `protobuf_message "io.prometheus.write.v3.Request": want prometheus.WriteRequest (remote write 1.0) or io.prometheus.write.v2.Request (remote write 2.0)`,
		},
		{name: "bad url", yaml: "remote_write: [{url: 'mimir:9009'}]\n", err: "want http(s)"},
		{name: "negative queue", yaml: "remote_write: [{url: 'http://a', queue: {size: -1}}]\n", err: "negative"},
		{name: "jitter", yaml: "retry: {jitter: 1.5}\nremote_write: [{url: 'http://a'}]\n", err: "jitter"},
		{name: "intervals", yaml: "retry: {initial_interval: 1m, max_interval: 1s}\nremote_write: [{url: 'http://a'}]\n", err: "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(envOTLPEndpoint, "")
			t.Setenv(envOTLPMetricsEndpoint, "")
			_, err := ParseConfig([]byte(tt.yaml))
			if tt.err == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.err)
		})
	}
}

func TestFlags(t *testing.T) {
	t.Setenv(envOTLPEndpoint, "")
	t.Setenv(envOTLPMetricsEndpoint, "")
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{
		"--otlp.endpoint=collector:4317", "--otlp.protocol=grpc", "--otlp.header=X-A=1", "--otlp.header=X-B=2",
		"--remote-write.url=http://mimir/api/v1/push", "--remote-write.basic-auth.username=u",
		"--export.queue-dir=/data/queue",
	}))
	require.NoError(t, c.Validate())
	otlp, rw := c.endpoints()
	require.Len(t, otlp, 1)
	require.Equal(t, "otlp", otlp[0].Name)
	require.Equal(t, ProtocolGRPC, otlp[0].Protocol)
	require.Equal(t, map[string]string{"X-A": "1", "X-B": "2"}, otlp[0].Headers)
	require.Equal(t, DefaultTimeout, otlp[0].Timeout)
	require.Len(t, rw, 1)
	require.Equal(t, "u", rw[0].BasicAuth.Username)
	q, b, r := c.pipelineSettings("otlp", nil, nil, nil)
	require.Equal(t, filepath.Join("/data/queue", "otlp"), q.Dir)
	require.Equal(t, DefaultQueueSize, q.Size)
	require.Equal(t, DefaultBatchMaxPoints, b.MaxPoints)
	require.Equal(t, DefaultMaxElapsed, r.MaxElapsed)

	// Contradictions in flags are rejected too.
	var bad Config
	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	bad.RegisterFlags(fs)
	require.NoError(t, fs.Parse([]string{"--otlp.endpoint=http://collector:4317", "--otlp.protocol=grpc", "--otlp.tls.ca-file=/ca.pem"}))
	require.ErrorContains(t, bad.Validate(), "plain text")
	require.Error(t, fs.Parse([]string{"--otlp.header=novalue"}))
}

func TestFlagProtobufMessage(t *testing.T) {
	t.Setenv(envOTLPEndpoint, "")
	t.Setenv(envOTLPMetricsEndpoint, "")
	tests := []struct {
		args []string
		want string // protocol of the flag exporter
		err  string
	}{
		{args: []string{"--remote-write.url=http://a"}, want: RemoteWriteV1},
		{args: []string{"--remote-write.url=http://a", "--remote-write.protobuf-message=" + RemoteWriteV2}, want: RemoteWriteV2},
		{
			args: []string{"--remote-write.url=http://a", "--remote-write.protobuf-message=2.0"},
			err:  `--remote-write.protobuf-message "2.0": want prometheus.WriteRequest (remote write 1.0) or io.prometheus.write.v2.Request (remote write 2.0)`,
		},
		// Rejected before the URL is missed.
		{args: []string{"--remote-write.protobuf-message=v2"}, err: "--remote-write.protobuf-message"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var c Config
			fs := flag.NewFlagSet("test", flag.ContinueOnError)
			c.RegisterFlags(fs)
			require.NoError(t, fs.Parse(tt.args))
			if tt.err != "" {
				require.ErrorContains(t, c.Validate(), tt.err)
				return
			}
			require.NoError(t, c.Validate())
			_, rw := c.endpoints()
			require.Len(t, rw, 1)
			require.Equal(t, tt.want, rw[0].ProtobufMessage)
			set, err := New(c, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			require.Equal(t, tt.want == RemoteWriteV2, set.Exporters()[0].(*RemoteWrite).c.(*remoteWriteClient).v2)
			require.NoError(t, set.Shutdown(context.Background()))
		})
	}
}

func TestFlagsFromEnvironment(t *testing.T) {
	t.Setenv(envOTLPEndpoint, "http://env:4318")
	var c Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	require.NoError(t, c.Validate())
	otlp, _ := c.endpoints()
	require.Len(t, otlp, 1)
	set, err := New(c, prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	require.Equal(t, "http://env:4318/v1/metrics", set.Exporters()[0].(*OTLPHTTP).URL())
	require.Nil(t, set.PrometheusHandler())
	require.NoError(t, set.Shutdown(context.Background()))
}

func TestNewFailsCleanly(t *testing.T) {
	t.Setenv(envOTLPEndpoint, "")
	t.Setenv(envOTLPMetricsEndpoint, "")
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	c := Config{
		OTLP:     []OTLPEndpoint{{Endpoint: "http://a:4318"}},
		QueueDir: file, // not a directory: the queue cannot open
	}
	_, err := New(c, nil, nil)
	require.Error(t, err)
	// goleak (TestMain) checks that the exporter built first was stopped.
}
