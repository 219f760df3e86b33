package component

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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/internal/testcluster"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/otlp"
	"github.com/allot-dev/allot/pkg/sink"
	"github.com/allot-dev/allot/services/rebalancer"
	"github.com/allot-dev/allot/services/scraper"
)

const (
	// interval is every test target's scrape interval.
	interval = time.Second
	// ttl is the lease TTL of scrapers, rebalancers and discoverers.
	ttl = 3 * time.Second
	// eventually bounds conditions that normally hold within a second or
	// two: generous, for -race on a loaded 2-core machine.
	eventually = 30 * time.Second
	poll       = 20 * time.Millisecond
	// job is the catalog job of the targets the tests publish themselves.
	job = "component"
)

// jobConfig is the scrape config of job.
const jobConfig = `
scrape_interval: 1s
scrape_timeout: 1s
`

// cluster is one allot pool in a test: embedded etcd and NATS, a catalog
// publisher, an HTTP server serving every test target, the sink every
// scraper exports to and the ledger that says which scraper sent what.
type cluster struct {
	t       testing.TB
	servers *testcluster.Cluster
	cli     *clientv3.Client // the test's own client, never closed early
	js      jetstream.JetStream
	pub     *events.Publisher
	ks      leases.Keyspace
	srv     *httptest.Server
	host    string
	job     events.Job
	sink    *sink.Sink
	ledger  *ledger

	mu        sync.Mutex
	instances map[string]string // target id -> instance label
}

func newCluster(t testing.TB) *cluster {
	t.Helper()
	tc := testcluster.Start(t)
	c := &cluster{
		t: t, servers: tc, cli: tc.Client,
		ks:        leases.NewKeyspace("/component/"),
		job:       events.NewJob(job, jobConfig),
		sink:      sink.New(0),
		ledger:    newLedger(),
		instances: map[string]string{},
	}
	c.js = c.jetStream()
	var err error
	c.pub, err = events.NewPublisher(context.Background(), c.js, events.Config{}, nil, nil)
	require.NoError(t, err)
	c.srv = httptest.NewServer(newTargets())
	t.Cleanup(c.srv.Close)
	u, err := url.Parse(c.srv.URL)
	require.NoError(t, err)
	c.host = u.Host
	return c
}

// jetStream is a new NATS connection of its own, closed at the end of the
// test. It reconnects without end, and quickly.
func (c *cluster) jetStream() jetstream.JetStream {
	c.t.Helper()
	return c.servers.JetStream(nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
}

// target is the catalog entry of test target name, with the labels a
// discoverer would publish.
func (c *cluster) target(name string) events.Target {
	return events.NewTarget(job, map[string]string{
		"__address__":         c.host,
		"__metrics_path__":    "/t/" + name + "/metrics",
		"__scheme__":          "http",
		"__scrape_interval__": "1s",
		"__scrape_timeout__":  "1s",
		"instance":            name,
		"job":                 job,
	}, c.job.Hash)
}

// putTargets publishes n targets <prefix>0 .. <prefix>n-1 and returns
// their ids.
func (c *cluster) putTargets(prefix string, n int) []string {
	c.t.Helper()
	ts := make([]events.Target, n)
	ids := make([]string, n)
	c.mu.Lock()
	for i := range ts {
		ts[i] = c.target(fmt.Sprintf("%s%d", prefix, i))
		ids[i] = ts[i].ID
		c.instances[ts[i].ID] = ts[i].Labels["instance"]
	}
	c.mu.Unlock()
	// The job goes with its targets (puts are idempotent), so that a
	// test whose discoverer owns the catalog has no job of ours in it.
	require.NoError(c.t, c.pub.PutJob(context.Background(), c.job))
	require.NoError(c.t, c.pub.PutTargets(context.Background(), ts))
	return ids
}

// instance is the instance label of target id.
func (c *cluster) instance(id string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	inst, ok := c.instances[id]
	require.True(c.t, ok, "unknown target %s", id)
	return inst
}

// owners reads the owner of every claimed target from etcd.
func (c *cluster) owners() map[string]string {
	c.t.Helper()
	cs, _, err := leases.ListClaims(context.Background(), c.cli, c.ks)
	require.NoError(c.t, err)
	out := make(map[string]string, len(cs))
	for id, cl := range cs {
		out[id] = cl.Owner
	}
	return out
}

// waitMembers waits until exactly ids are registered members.
func (c *cluster) waitMembers(ids ...string) {
	c.t.Helper()
	ids = slices.Sorted(slices.Values(ids)) // not the caller's to reorder
	waitFor(c.t, eventually, func() (bool, string) {
		ms, _, err := leases.ListMembers(context.Background(), c.cli, c.ks)
		if err != nil {
			return false, err.Error()
		}
		var got []string
		for _, m := range ms {
			got = append(got, m.ID)
		}
		return slices.Equal(got, ids), fmt.Sprintf("members %v, want %v", got, ids)
	})
}

// waitOwned waits until every target in ids is claimed by one of owners.
func (c *cluster) waitOwned(ids []string, owners ...string) {
	c.t.Helper()
	waitFor(c.t, eventually, func() (bool, string) {
		own := c.owners()
		missing := 0
		for _, id := range ids {
			if !slices.Contains(owners, own[id]) {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d targets not owned by %v", missing, len(ids), owners)
	})
}

// waitScraped waits until n samples of `up` were exported for every target
// in ids after since.
func (c *cluster) waitScraped(ids []string, n int, since time.Time) {
	c.t.Helper()
	insts := make([]string, len(ids))
	for i, id := range ids {
		insts[i] = c.instance(id)
	}
	c.waitInstances(insts, n, since)
}

// startOwners starts scrapers ids and waits until they are the members,
// own targets between them and have each exported `up` twice for every
// target: the pool a test starts from.
func (c *cluster) startOwners(targets []string, ids ...string) []*member {
	c.t.Helper()
	ms := make([]*member, len(ids))
	for i, id := range ids {
		ms[i] = c.startScraper(id)
	}
	c.waitMembers(ids...)
	c.waitOwned(targets, ids...)
	c.waitScraped(targets, 2, time.Now())
	return ms
}

// waitInstances waits until n samples of `up` were exported for every
// instance in insts after since.
func (c *cluster) waitInstances(insts []string, n int, since time.Time) {
	c.t.Helper()
	waitFor(c.t, eventually, func() (bool, string) {
		var behind []string
		for _, inst := range insts {
			if len(c.ledger.since(inst, since)) < n {
				behind = append(behind, inst)
			}
		}
		return len(behind) == 0, fmt.Sprintf("%d of %d targets have fewer than %d samples: %v", len(behind), len(insts), n, behind)
	})
}

// member is one scraper running in the test, with an etcd client of its
// own so that the test can cut it off from etcd.
type member struct {
	c      *cluster
	s      *scraper.Scraper
	cli    *clientv3.Client
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	// cut: its etcd client was closed; Run cannot revoke and returns an error.
	cut atomic.Bool
}

// startScraper starts scraper id, exporting through the ledger to the sink.
func (c *cluster) startScraper(id string) *member {
	c.t.Helper()
	return c.startScraperWith(scraper.Config{ID: id}, c.ledger.consumer(id, c.sink))
}

// startScraperWith starts a scraper with cfg exporting to next. It sets the
// keyspace and the scrape options, and the lease TTL and load interval
// unless cfg has them.
func (c *cluster) startScraperWith(cfg scraper.Config, next otlp.Consumer) *member {
	c.t.Helper()
	cli := c.servers.EtcdClient()
	reg := prometheus.NewRegistry()
	cfg.Addr = "test:" + cfg.ID
	cfg.Keyspace = c.ks
	if cfg.Session.TTL == 0 {
		cfg.Session.TTL = ttl
	}
	if cfg.LoadInterval == 0 {
		cfg.LoadInterval = time.Second
	}
	cfg.ScrapeOptions = otlp.ScrapeOptions
	app := otlp.NewAppendable(next, otlp.Options{}, nil, testcluster.Logger())
	s, err := scraper.New(cfg, cli, c.jetStream(), app, reg, testcluster.Logger())
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{c: c, s: s, cli: cli, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { m.done <- s.Run(ctx) }()
	c.t.Cleanup(m.stop)
	return m
}

// stop stops the scraper (gracefully unless it was cut off) and waits for Run.
func (m *member) stop() {
	m.once.Do(func() {
		m.cancel()
		select {
		case err := <-m.done:
			if !m.cut.Load() {
				require.NoError(m.c.t, err, "scraper %s", m.s.ID())
			}
		case <-time.After(eventually):
			m.c.t.Errorf("scraper %s did not stop", m.s.ID())
		}
	})
}

// cutOff closes the scraper's etcd client: its lease is neither renewed nor
// revoked, as for a process partitioned from etcd. The scraper keeps
// running; whatever it owns must be taken over by the others when the
// lease expires, and it must stop forwarding before that.
func (m *member) cutOff() {
	m.cut.Store(true)
	_ = m.cli.Close()
}

// crash kills the scraper as a dying process goes: its etcd client first,
// so that its lease is neither renewed nor revoked, then Run, which can no
// longer reach etcd and forwards nothing more. Its claims stay in etcd
// until the lease expires.
func (m *member) crash() {
	m.cutOff()
	m.stop()
}

// owned is the set of target ids the scraper reports as its own.
func (m *member) owned() []string {
	var out []string
	for _, ts := range m.s.Targets() {
		out = append(out, ts.ID)
	}
	return out
}

// metric sums the samples of family name in the scraper's registry whose
// labels include every pair in match.
func (m *member) metric(name string, match ...string) float64 {
	return gathered(m.c.t, m.reg, name, match...)
}

func gathered(t testing.TB, g prometheus.Gatherer, name string, match ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if !hasLabels(m, match) {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, pairs []string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == pairs[i] && l.GetValue() == pairs[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// startRebalancer starts rebalancer id on its own client; the returned stop
// cancels Run and waits for it (also done at cleanup).
func (c *cluster) startRebalancer(id string) (*rebalancer.Rebalancer, func()) {
	c.t.Helper()
	rb := c.startRebalancerWith(rebalancer.Config{ID: id})
	return rb.r, rb.stop
}

// rebal is one rebalancer running in the test, with an etcd client of its
// own so that the test can kill it.
type rebal struct {
	r    *rebalancer.Rebalancer
	cli  *clientv3.Client
	stop func()
}

// startRebalancerWith starts a rebalancer with cfg. It sets the keyspace,
// and the lease TTL and interval unless cfg has them.
func (c *cluster) startRebalancerWith(cfg rebalancer.Config) *rebal {
	c.t.Helper()
	cfg.Keyspace = c.ks
	if cfg.Session.TTL == 0 {
		cfg.Session.TTL = ttl
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	cli := c.servers.EtcdClient()
	r, err := rebalancer.New(cfg, cli, nil, testcluster.Logger())
	require.NoError(c.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(c.t, err)
			case <-time.After(eventually):
				c.t.Errorf("rebalancer %s did not stop", cfg.ID)
			}
		})
	}
	c.t.Cleanup(stop)
	return &rebal{r: r, cli: cli, stop: stop}
}

// kill closes the rebalancer's etcd client, as when its process dies: it
// neither resigns nor revokes its lease, so its election key and pending
// moves stay until the lease expires. Run goes on (failing to reach etcd)
// until stop.
func (rb *rebal) kill() { _ = rb.cli.Close() }

// waitFor polls cond until it holds or timeout passes; it then fails the
// test with cond's last description of what it saw.
func waitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not after %s: %s", timeout, why)
		}
		<-tick.C
	}
}

// targets serves every test target: /t/<name>/metrics answers with a
// counter that grows by one per scrape of that target and a gauge.
type targets struct {
	mu     sync.Mutex
	counts map[string]int
}

func newTargets() *targets { return &targets{counts: map[string]int{}} }

func (ts *targets) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/t/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	name = strings.TrimSuffix(name, "/metrics")
	ts.mu.Lock()
	ts.counts[name]++
	n := ts.counts[name]
	ts.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = fmt.Fprintf(w, "# TYPE requests_total counter\nrequests_total{code=\"200\"} %d\n# TYPE temperature_celsius gauge\ntemperature_celsius 21.5\n", n)
}
