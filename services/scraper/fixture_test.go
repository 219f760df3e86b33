package scraper

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/internal/testcluster"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

const (
	testInterval = time.Second
	// testTTL is the lease TTL of the failover tests.
	testTTL = 2 * time.Second
	// poolTTL is the lease TTL of the steady-state test. A process starved
	// of CPU for longer than TTL - TTL/5 - TTL/3 loses its lease, which is
	// correct but not what that test is about: 300 targets scraped every
	// second under -race on a busy 2-core machine starve it for seconds.
	poolTTL = leases.DefaultTTL
	testJob = "pool"
)

// testJobConfig strips nothing it should not: the relabel rule would drop
// every target if it were applied again, and the metric relabel rule must
// still drop dropped_metric.
const testJobConfig = `
scrape_interval: 1s
scrape_timeout: 1s
static_configs: [{targets: ["never-scraped:1"]}]
relabel_configs:
- {action: drop, source_labels: [__address__], regex: ".+"}
metric_relabel_configs:
- {action: drop, source_labels: [__name__], regex: dropped_metric}
`

// fixture is one allot pool in a test: embedded etcd and NATS, a catalog
// publisher, an HTTP server serving every test target, and a sink.
type fixture struct {
	t       *testing.T
	servers *testcluster.Cluster
	cli     *clientv3.Client
	js      jetstream.JetStream
	pub     *events.Publisher
	srv     *httptest.Server
	sink    *recorder
	ks      leases.Keyspace
	job     events.Job
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c := testcluster.Start(t)
	js := c.JetStream()
	pub, err := events.NewPublisher(context.Background(), js, events.Config{}, nil, nil)
	require.NoError(t, err)
	srv := httptest.NewServer(http.HandlerFunc(serveMetrics))
	t.Cleanup(srv.Close)

	f := &fixture{
		t: t, servers: c, cli: c.Client, js: js, pub: pub, srv: srv,
		sink: &recorder{},
		ks:   leases.NewKeyspace("/test/"),
		job:  events.NewJob(testJob, testJobConfig),
	}
	require.NoError(t, pub.PutJob(context.Background(), f.job))
	return f
}

// serveMetrics serves every test target: /t/<n>/metrics answers with a few
// series, /garbage/... with text that does not parse, /slow/... not before
// the scrape timeout.
func serveMetrics(w http.ResponseWriter, r *http.Request) {
	switch {
	case strings.HasPrefix(r.URL.Path, "/garbage/"):
		_, _ = w.Write([]byte("this is { not the exposition format\n"))
	case strings.HasPrefix(r.URL.Path, "/slow/"):
		select {
		case <-r.Context().Done():
		case <-time.After(3 * time.Second):
		}
	default:
		_, _ = fmt.Fprintf(w, "# TYPE requests_total counter\nrequests_total{path=%q} 42\n# TYPE temperature gauge\ntemperature 21.5\ndropped_metric 1\n", r.URL.Path)
	}
}

// target is the catalog entry of the test target at path, with the labels
// a discoverer would publish.
func (f *fixture) target(path string) events.Target {
	u, err := url.Parse(f.srv.URL)
	require.NoError(f.t, err)
	return events.NewTarget(testJob, map[string]string{
		"__address__":         u.Host,
		"__metrics_path__":    path,
		"__scheme__":          "http",
		"__scrape_interval__": "1s",
		"__scrape_timeout__":  "1s",
		"instance":            path,
		"job":                 testJob,
	}, f.job.Hash)
}

// putTargets publishes n targets /t/<prefix><i>/metrics and returns them.
func (f *fixture) putTargets(prefix string, n int) []events.Target {
	ts := make([]events.Target, n)
	for i := range ts {
		ts[i] = f.target(fmt.Sprintf("/t/%s%d/metrics", prefix, i))
	}
	require.NoError(f.t, f.pub.PutTargets(context.Background(), ts))
	return ts
}

// claims returns the owner of every claimed target.
func (f *fixture) claims() map[string]string {
	cs, _, err := leases.ListClaims(context.Background(), f.cli, f.ks)
	require.NoError(f.t, err)
	out := make(map[string]string, len(cs))
	for id, c := range cs {
		out[id] = c.Owner
	}
	return out
}

func (f *fixture) waitMembers(ids ...string) {
	f.t.Helper()
	slices.Sort(ids)
	require.Eventually(f.t, func() bool {
		ms, _, err := leases.ListMembers(context.Background(), f.cli, f.ks)
		if err != nil {
			return false
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.ID)
		}
		return slices.Equal(got, ids)
	}, 20*time.Second, 20*time.Millisecond, "members %v", ids)
}

// running is one scraper running in the test.
type running struct {
	f      *fixture
	s      *Scraper
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// start starts scraper id with lease TTL ttl.
func (f *fixture) start(id string, ttl time.Duration) *running {
	f.t.Helper()
	return f.run(Config{ID: id, Session: leases.SessionConfig{TTL: ttl}})
}

// run starts a scraper with cfg, its address, keyspace and load interval
// set for the fixture.
func (f *fixture) run(cfg Config) *running {
	f.t.Helper()
	cfg.Addr = "test:" + cfg.ID
	cfg.Keyspace = f.ks
	cfg.LoadInterval = time.Second
	reg := prometheus.NewRegistry()
	s, err := New(cfg, f.servers.EtcdClient(), f.servers.JetStream(), f.sink.For(cfg.ID), reg, testcluster.Logger())
	require.NoError(f.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{f: f, s: s, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	f.t.Cleanup(r.stop)
	return r
}

// stop stops the scraper gracefully and waits for Run to return.
func (r *running) stop() {
	r.once.Do(func() {
		r.cancel()
		select {
		case err := <-r.done:
			require.NoError(r.f.t, err)
		case <-time.After(30 * time.Second):
			r.f.t.Fatalf("scraper %s did not stop", r.s.ID())
		}
	})
}

// kill makes the scraper vanish as a killed process would (its lease is
// left to expire) and waits until its goroutines are gone.
func (r *running) kill() {
	r.s.crash()
	r.stop()
}

// owned is the set of target ids the scraper reports as its own.
func (r *running) owned() map[string]TargetStatus {
	out := map[string]TargetStatus{}
	for _, ts := range r.s.Targets() {
		out[ts.ID] = ts
	}
	return out
}

// counter sums the samples of a counter family in the scraper's registry.
func (r *running) counter(name string) float64 {
	mfs, err := r.reg.Gather()
	require.NoError(r.f.t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

// movesIn is allot_scraper_moves_in_total{result}.
func (r *running) movesIn(result string) float64 {
	return testutil.ToFloat64(r.s.metrics.movesIn.WithLabelValues(result))
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// observe lets the pool run for d: a measurement window, not a wait for a
// condition.
func observe(d time.Duration) { <-time.After(d) }

// checkEveryInterval asserts that in [from, to) every target in ids has
// exactly one sample per scrape interval, all from one scraper. It returns
// the scraper of each target.
func checkEveryInterval(t *testing.T, sink *recorder, ids []string, from, to time.Time) map[string]string {
	t.Helper()
	owner := map[string]string{}
	bt := sink.byTarget()
	lo, hi := from.UnixMilli(), to.UnixMilli()
	iv := testInterval.Milliseconds()
	for _, id := range ids {
		var ts []int64
		scrapers := map[string]bool{}
		for _, b := range bt[id] {
			if b.ts >= lo && b.ts < hi {
				ts = append(ts, b.ts)
				scrapers[b.scraper] = true
			}
		}
		require.Len(t, scrapers, 1, "target %s scraped by %v", id, scrapers)
		for s := range scrapers {
			owner[id] = s
		}
		slices.Sort(ts)
		// One sample per interval: no more samples than intervals, and no
		// interval missed (that leaves ~2 intervals between samples).
		// Anything between is a scrape that ran late on a busy machine;
		// two scrapers in one interval are checkExclusive's business.
		require.NotEmpty(t, ts, "target %s", id)
		require.LessOrEqual(t, int64(len(ts)), (hi-lo)/iv+1, "target %s: more samples than intervals", id)
		require.Less(t, ts[0]-lo, iv*19/10, "target %s: first sample late", id)
		require.Less(t, hi-ts[len(ts)-1], iv*19/10, "target %s: last sample early", id)
		for i := 1; i < len(ts); i++ {
			require.LessOrEqual(t, ts[i]-ts[i-1], iv*19/10, "target %s: an interval without a sample", id)
		}
	}
	return owner
}

// waitScraped waits until every target in ids has n samples.
func waitScraped(t *testing.T, sink *recorder, ids []string, n int) {
	t.Helper()
	var behind atomic.Int64
	ok := assert.Eventually(t, func() bool {
		n64 := int64(0)
		for _, id := range ids {
			if sink.count(id) < n {
				n64++
			}
		}
		behind.Store(n64)
		return n64 == 0
	}, 30*time.Second, 100*time.Millisecond)
	require.True(t, ok, "%d of %d targets scraped fewer than %d times", behind.Load(), len(ids), n)
}

func ids(ts []events.Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// firstAfter is the first non-stale batch of target id committed by one of
// scrapers after t.
func firstAfter(sink *recorder, id string, t time.Time, scrapers ...string) (batch, bool) {
	for _, b := range sink.target(id) {
		if !b.stale && b.at.After(t) && slices.Contains(scrapers, b.scraper) {
			return b, true
		}
	}
	return batch{}, false
}
