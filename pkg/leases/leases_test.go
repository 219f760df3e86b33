package leases

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/allot-dev/allot/pkg/embedded"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// etcd's embedded server and gRPC leave these behind for a moment
		// after Close; they are not ours.
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("google.golang.org/grpc/internal/grpcsync.(*CallbackSerializer).run"),
	)
}

// testTTL is the shortest lease etcd allows, so expiry tests stay short.
const testTTL = 2 * time.Second

// testEtcd is one embedded etcd for one test.
type testEtcd struct {
	e   *embedded.Etcd
	cli *clientv3.Client
}

func startEtcd(tb testing.TB) *testEtcd {
	tb.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: tb.TempDir()}, nil)
	require.NoError(tb, err)
	tb.Cleanup(e.Close)
	te := &testEtcd{e: e}
	te.cli = te.client(tb)
	return te
}

// client returns a new client, closed when the test ends.
func (te *testEtcd) client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := te.e.Client()
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// session opens a session that is closed when the test ends.
func (te *testEtcd) session(tb testing.TB, cfg SessionConfig, reg prometheus.Registerer) *Session {
	tb.Helper()
	if cfg.TTL == 0 {
		cfg.TTL = testTTL
	}
	// Not a timeout context: it bounds the session's whole life.
	s, err := NewSession(context.Background(), te.cli, cfg, nil, reg)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func testCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func targets(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%016x", uint64(i)*0x9e3779b97f4a7c15)
	}
	return out
}

// waitClosed waits for ch to close and returns when it did.
func waitClosed(tb testing.TB, ch <-chan struct{}, timeout time.Duration, what string) time.Time {
	tb.Helper()
	select {
	case <-ch:
		return time.Now()
	default:
	}
	select {
	case <-ch:
		return time.Now()
	case <-time.After(timeout):
		tb.Fatalf("%s: not closed after %s", what, timeout)
		return time.Time{}
	}
}

// countClaims counts the claims held on lease id.
func countClaims(tb testing.TB, cli *clientv3.Client, ks Keyspace, id clientv3.LeaseID) int {
	tb.Helper()
	all, _, err := ListClaims(testCtx(tb), cli, ks)
	require.NoError(tb, err)
	n := 0
	for _, c := range all {
		if c.Lease == id {
			n++
		}
	}
	return n
}
