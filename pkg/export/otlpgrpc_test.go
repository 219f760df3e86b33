package export

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/config"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// grpcReceiver is a real OTLP/gRPC server recording what it decodes.
type grpcReceiver struct {
	pmetricotlp.UnimplementedGRPCServer
	addr     string
	mu       sync.Mutex
	points   []point
	md       []metadata.MD
	requests atomic.Int64
	fail     func(n int64) error
}

func (r *grpcReceiver) Export(ctx context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	n := r.requests.Add(1)
	if r.fail != nil {
		if err := r.fail(n); err != nil {
			return pmetricotlp.NewExportResponse(), err
		}
	}
	md, _ := metadata.FromIncomingContext(ctx)
	r.mu.Lock()
	r.points = append(r.points, pointsOf(req.Metrics())...)
	r.md = append(r.md, md)
	r.mu.Unlock()
	return pmetricotlp.NewExportResponse(), nil
}

func (r *grpcReceiver) received() []point {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]point(nil), r.points...)
}

func startGRPCReceiver(t *testing.T, tc *tls.Config, fail func(n int64) error) *grpcReceiver {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var opts []grpc.ServerOption
	if tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	srv := grpc.NewServer(opts...)
	r := &grpcReceiver{addr: lis.Addr().String(), fail: fail}
	pmetricotlp.RegisterGRPCServer(srv, r)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return r
}

func TestOTLPGRPC(t *testing.T) {
	unavailable := func(n int64) error {
		if n <= 3 {
			return status.Error(codes.Unavailable, "warming up")
		}
		return nil
	}
	throttled := func(n int64) error {
		if n == 1 {
			st, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(300 * time.Millisecond)})
			return st.Err()
		}
		return nil
	}
	invalid := func(n int64) error {
		if n == 1 {
			return status.Error(codes.InvalidArgument, "bad data")
		}
		return nil
	}
	tests := []struct {
		name    string
		fail    func(int64) error
		dropped string
		retried bool
	}{
		{name: "accepting"},
		{name: "unavailable then recovery", fail: unavailable, retried: true},
		{name: "resource exhausted with RetryInfo", fail: throttled, retried: true},
		{name: "invalid argument drops", fail: invalid, dropped: "grpc_invalidargument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := startGRPCReceiver(t, nil, tt.fail)
			exp, err := NewOTLPGRPC(OTLPGRPCConfig{
				Endpoint: "http://" + r.addr,
				Client:   ClientConfig{Headers: map[string]string{"X-Tenant": "t1"}, BearerToken: "s3cret"},
				Batch:    BatchConfig{MaxPoints: 5, MaxWait: 10 * time.Millisecond},
				Retry:    fastRetry(),
			}, prometheus.NewRegistry(), nil)
			require.NoError(t, err)
			for i := range 20 {
				require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", float64(i))))
			}
			dropped := func() float64 {
				if tt.dropped == "" {
					return 0
				}
				return testutil.ToFloat64(exp.m.m.dropped.WithLabelValues("otlpgrpc", tt.dropped))
			}
			require.Eventually(t, func() bool { return testutil.ToFloat64(exp.m.sentPoints)+dropped() == 20 }, 20*time.Second, 10*time.Millisecond)
			require.NoError(t, exp.Shutdown(context.Background()))
			got := r.received()
			for i := 1; i < len(got); i++ {
				require.Less(t, got[i-1].v, got[i].v, "in order")
			}
			require.Equal(t, float64(len(got)), testutil.ToFloat64(exp.m.sentPoints))
			if tt.dropped == "" {
				require.Len(t, got, 20)
			} else {
				require.Positive(t, dropped())
				require.NotEmpty(t, got)
			}
			require.Equal(t, []string{"t1"}, r.md[0].Get("x-tenant"))
			require.Equal(t, []string{"Bearer s3cret"}, r.md[0].Get("authorization"))
			if tt.retried {
				require.Positive(t, testutil.ToFloat64(exp.m.retried))
			}
		})
	}
}

func TestOTLPGRPCMutualTLS(t *testing.T) {
	pki := newPKI(t)
	r := startGRPCReceiver(t, pki.serverTLS(t), nil)
	exp, err := NewOTLPGRPC(OTLPGRPCConfig{
		Endpoint: r.addr, // bare host:port: TLS because tls_config is set
		Client: ClientConfig{TLS: config.TLSConfig{
			CAFile: pki.caFile, CertFile: pki.clientCert, KeyFile: pki.clientKey, ServerName: "127.0.0.1",
		}},
		Retry: fastRetry(),
	}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, exp.ConsumeMetrics(context.Background(), testMetrics("a", 1)))
	require.Eventually(t, func() bool { return len(r.received()) == 1 }, 20*time.Second, 10*time.Millisecond)
	require.NoError(t, exp.Shutdown(context.Background()))

	// Without a client certificate the server refuses the handshake, which
	// is retried until shutdown.
	noCert, err := NewOTLPGRPC(OTLPGRPCConfig{
		Endpoint: "https://" + r.addr,
		Client:   ClientConfig{TLS: config.TLSConfig{CAFile: pki.caFile}},
		Retry:    fastRetry(),
	}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, noCert.ConsumeMetrics(context.Background(), testMetrics("a", 2)))
	require.Eventually(t, func() bool { return testutil.ToFloat64(noCert.m.failed) >= 2 }, 20*time.Second, 10*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_ = noCert.Shutdown(ctx)
	require.Len(t, r.received(), 1)
}

func TestGRPCTarget(t *testing.T) {
	tests := []struct {
		endpoint string
		tls      bool
		target   string
		useTLS   bool
		err      string
	}{
		{endpoint: "collector:4317", target: "collector:4317"},
		{endpoint: "collector:4317", tls: true, target: "collector:4317", useTLS: true},
		{endpoint: "https://collector:4317", target: "collector:4317", useTLS: true},
		{endpoint: "http://collector:4317", target: "collector:4317"},
		{endpoint: "http://collector:4317", tls: true, err: "plain text"},
		{endpoint: "http://collector:4317/v1/metrics", err: "without path"},
		{endpoint: "ftp://collector:4317", err: "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint, func(t *testing.T) {
			target, useTLS, err := grpcTarget(tt.endpoint, tt.tls)
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.target, target)
			require.Equal(t, tt.useTLS, useTLS)
		})
	}
}

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written to files.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
	pool                                                 *x509.CertPool
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	p := &pki{pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.caFile = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	issue := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		kder, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	p.serverCert, p.serverKey = issue("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = issue("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

func (p *pki) serverTLS(t *testing.T) *tls.Config {
	cert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	require.NoError(t, err)
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: p.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
	return path
}
