// Package testcluster runs what allot's service tests run against: an
// embedded etcd and NATS for each test ([Start]), the history of a
// keyspace's claims and moves as etcd has it ([WatchHistory]), and, once the
// test binary is done, a check that no goroutine of the code under test
// outlived its test ([VerifyTestMain]).
package testcluster

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/embedded"
)

// Cluster is an embedded etcd and NATS serving one test, with their data in
// the test's temporary directory. Everything it starts or opens is closed
// when the test ends.
type Cluster struct {
	Etcd *embedded.Etcd
	NATS *embedded.NATS
	// Client is the test's own etcd client.
	Client *clientv3.Client

	t testing.TB
}

// Start starts etcd and NATS for t and waits until both serve.
func Start(t testing.TB) *Cluster {
	t.Helper()
	dir := t.TempDir()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(dir, "etcd")}, nil)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	c := &Cluster{Etcd: e, t: t}
	c.Client = c.EtcdClient()
	n, err := embedded.StartNATS(embedded.NATSConfig{Dir: filepath.Join(dir, "nats")}, nil)
	require.NoError(t, err)
	t.Cleanup(n.Close)
	c.NATS = n
	return c
}

// EtcdClient returns a new etcd client, for a member of the cluster that
// needs one of its own.
func (c *Cluster) EtcdClient() *clientv3.Client {
	c.t.Helper()
	cli, err := c.Etcd.Client()
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// JetStream returns the JetStream context of a new NATS connection made
// with opts.
func (c *Cluster) JetStream(opts ...nats.Option) jetstream.JetStream {
	c.t.Helper()
	nc, err := nats.Connect(c.NATS.URL(), opts...)
	require.NoError(c.t, err)
	c.t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(c.t, err)
	return js
}

// Logger is the logger to give the code under test: nil, which it takes
// for none, unless ALLOT_TEST_LOG is set, then everything to stderr.
func Logger() *slog.Logger {
	if os.Getenv("ALLOT_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
