package discoverer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

const (
	// eventually is the bound on conditions that normally hold within
	// milliseconds, generous for -race on a loaded 2-core machine.
	eventually = 20 * time.Second
	poll       = 10 * time.Millisecond
)

// cluster is one embedded etcd and NATS server.
type cluster struct {
	etcd    *embedded.Etcd
	nats    *embedded.NATS
	natsDir string
	natsURL string
	ks      leases.Keyspace
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir()}, nil)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	c := &cluster{etcd: e, natsDir: t.TempDir(), ks: leases.NewKeyspace("/test/")}
	c.startNATS(t, "")
	t.Cleanup(func() {
		if c.nats != nil {
			c.nats.Close()
		}
	})
	return c
}

// startNATS starts the NATS server; on a restart it listens where the
// first one did, so clients reconnect.
func (c *cluster) startNATS(t *testing.T, dir string) {
	t.Helper()
	if dir == "" {
		dir = c.natsDir
	}
	addr := ""
	if c.natsURL != "" {
		u, err := url.Parse(c.natsURL)
		require.NoError(t, err)
		addr = u.Host
	}
	n, err := embedded.StartNATS(embedded.NATSConfig{Dir: dir, Addr: addr}, nil)
	require.NoError(t, err)
	c.nats = n
	c.natsURL = n.URL()
}

func (c *cluster) stopNATS() {
	c.nats.Close()
	c.nats = nil
}

func (c *cluster) etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := c.etcd.Client()
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func (c *cluster) jetStream(t *testing.T) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(c.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return js
}

// instance is a running Discoverer with its own clients and registry.
type instance struct {
	*Discoverer
	etcd *clientv3.Client
	reg  *prometheus.Registry
	stop func()
}

func (c *cluster) start(t *testing.T, id string, cfg *config.Config) *instance {
	t.Helper()
	cli := c.etcdClient(t)
	reg := prometheus.NewRegistry()
	d, err := New(Config{ID: id, Keyspace: c.ks, ElectionTTL: 2 * time.Second}, cli, c.jetStream(t), reg, nil)
	require.NoError(t, err)
	require.False(t, d.Ready(), "not ready before a config")
	require.NoError(t, d.ApplyConfig(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { assert.NoError(t, d.Run(ctx)) })
	stop := sync.OnceFunc(func() { cancel(); wg.Wait() })
	t.Cleanup(stop)
	return &instance{Discoverer: d, etcd: cli, reg: reg, stop: stop}
}

// bucket reads both buckets: job name → hash, target id → target.
func bucket(t *testing.T, js jetstream.JetStream) (jobs map[string]string, targets map[string]events.Target) {
	t.Helper()
	jobs, targets, err := readBuckets(js)
	require.NoError(t, err)
	return jobs, targets
}

// readBuckets reads both buckets, checking every key and value as a
// scraper would. A missing bucket reads as empty.
func readBuckets(js jetstream.JetStream) (jobs map[string]string, targets map[string]events.Target, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	jobs, targets = map[string]string{}, map[string]events.Target{}
	read := func(name string, fn func(jetstream.KeyValueEntry) error) error {
		kv, err := js.KeyValue(ctx, name)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
		if err != nil {
			return err
		}
		defer func() { _ = w.Stop() }()
		for {
			select {
			case e := <-w.Updates():
				if e == nil {
					return nil
				}
				if err := fn(e); err != nil {
					return err
				}
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	err = read("allot_jobs", func(e jetstream.KeyValueEntry) error {
		j, err := events.DecodeJob(e.Value())
		if err != nil {
			return err
		}
		if e.Key() != events.JobKey(j.Name) {
			return fmt.Errorf("job %q under key %s", j.Name, e.Key())
		}
		jobs[j.Name] = j.Hash
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	err = read("allot_targets", func(e jetstream.KeyValueEntry) error {
		tt, err := events.DecodeTarget(e.Value())
		if err != nil {
			return err
		}
		if e.Key() != events.TargetKey(tt.ID) {
			return fmt.Errorf("target %s under key %s", tt.ID, e.Key())
		}
		targets[tt.ID] = tt
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return jobs, targets, nil
}

// addresses lists the __address__ of targets, sorted.
func addresses(ts map[string]events.Target) []string {
	var out []string
	for _, tt := range ts {
		out = append(out, tt.Labels["__address__"])
	}
	slices.Sort(out)
	return out
}

// waitBucketAddrs waits until the targets bucket holds exactly these
// addresses and returns how long that took.
func waitBucketAddrs(t *testing.T, js jetstream.JetStream, want ...string) time.Duration {
	t.Helper()
	slices.Sort(want)
	start := time.Now()
	var (
		got []string
		err error
	)
	ok := waitFor(eventually, func() bool {
		var ts map[string]events.Target
		_, ts, err = readBuckets(js)
		got = addresses(ts)
		return err == nil && slices.Equal(got, want)
	})
	require.True(t, ok, "bucket holds %v (err %v), want %v", got, err, want)
	return time.Since(start)
}

// requireBucketIsCatalog checks that the buckets hold exactly d's catalog:
// every active target with its labels and job config hash, nothing else.
func requireBucketIsCatalog(t *testing.T, js jetstream.JetStream, d *Discoverer) {
	t.Helper()
	jobs, targets := bucket(t, js)
	active, _ := d.Targets()
	want := map[string]TargetInfo{}
	for _, a := range active {
		want[a.ID] = a
	}
	require.ElementsMatch(t, slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(targets)))
	for id, tt := range targets {
		require.Equal(t, want[id].Labels, tt.Labels)
		require.Equal(t, want[id].Job, tt.Job)
		require.Equal(t, jobs[tt.Job], tt.ConfigHash, "target %s carries its job's config hash", id)
	}
	d.cat.mu.RLock()
	wantJobs := map[string]string{}
	for n, j := range d.cat.jobs {
		wantJobs[n] = j.event.Hash
	}
	d.cat.mu.RUnlock()
	require.Equal(t, wantJobs, jobs)
}

func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(poll)
	}
}

// writeTargets writes a file_sd file atomically.
func writeTargets(t *testing.T, path string, addrs ...string) {
	t.Helper()
	var b strings.Builder
	b.WriteString("- targets:\n")
	for _, a := range addrs {
		fmt.Fprintf(&b, "  - %q\n", a)
	}
	if len(addrs) == 0 {
		b.Reset()
		b.WriteString("[]\n")
	}
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(b.String()), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func fileSDConfig(t *testing.T, path string) *config.Config {
	t.Helper()
	return loadConfig(t, fmt.Sprintf(`
scrape_configs:
  - job_name: files
    file_sd_configs:
      - files: [%q]
`, path))
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, h.Write(&m))
	return m.GetHistogram().GetSampleCount()
}

func streamLastSeq(t *testing.T, js jetstream.JetStream, bucket string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "KV_"+bucket)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	return info.State.LastSeq
}

// latencyBound is what "within 1 s" means for this build: the race
// detector slows everything several times.
func latencyBound() time.Duration {
	if raceEnabled {
		return 5 * time.Second
	}
	return time.Second
}

func TestFileSDChangesArePublished(t *testing.T) {
	c := startCluster(t)
	js := c.jetStream(t)
	path := filepath.Join(t.TempDir(), "targets.yaml")
	writeTargets(t, path, "h1:80")
	d := c.start(t, "d1", fileSDConfig(t, path))

	require.True(t, waitFor(eventually, d.IsLeader), "a lone discoverer leads")
	waitBucketAddrs(t, js, "h1:80")
	require.True(t, waitFor(eventually, d.Ready))
	requireBucketIsCatalog(t, js, d.Discoverer)
	require.Equal(t, 1.0, testutil.ToFloat64(d.m.leader))
	require.Equal(t, 1.0, testutil.ToFloat64(d.m.targets.WithLabelValues("files", "active")))

	// Added: published within a second.
	writeTargets(t, path, "h1:80", "h2:80")
	took := waitBucketAddrs(t, js, "h1:80", "h2:80")
	t.Logf("added target reached the bucket in %s", took)
	require.Less(t, took, latencyBound())

	// Removed: deleted.
	writeTargets(t, path, "h2:80")
	took = waitBucketAddrs(t, js, "h2:80")
	t.Logf("removed target left the bucket in %s", took)
	require.Less(t, took, latencyBound())
	requireBucketIsCatalog(t, js, d.Discoverer)

	// Unchanged: the file is rewritten with the same targets. File SD
	// sends its groups again; nothing may be published. To know the
	// update was handled, wait for it to be applied, then make a real
	// change: exactly that one change must have been published.
	published := testutil.ToFloat64(d.m.publishedSinceStart)
	seq := streamLastSeq(t, js, "allot_targets")
	applied := histogramCount(t, d.m.applyDuration)
	writeTargets(t, path, "h2:80")
	require.True(t, waitFor(eventually, func() bool { return histogramCount(t, d.m.applyDuration) > applied }))
	writeTargets(t, path, "h2:80", "h3:80")
	waitBucketAddrs(t, js, "h2:80", "h3:80")
	require.Equal(t, published+1, testutil.ToFloat64(d.m.publishedSinceStart), "only the added target is published")
	require.Equal(t, seq+1, streamLastSeq(t, js, "allot_targets"), "one write to the targets bucket")
	require.Equal(t, 2.0, testutil.ToFloat64(d.m.targets.WithLabelValues("files", "active")))
}

func TestApplyConfig(t *testing.T) {
	c := startCluster(t)
	js := c.jetStream(t)
	both := loadConfig(t, `
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80, a2:80]}]
  - job_name: b
    static_configs: [{targets: [b1:80, b2:80, b3:80]}]
`)
	d := c.start(t, "d1", both)
	waitBucketAddrs(t, js, "a1:80", "a2:80", "b1:80", "b2:80", "b3:80")
	require.True(t, waitFor(eventually, d.Ready))
	require.Equal(t, 1.0, testutil.ToFloat64(d.m.reloadSuccessful))
	require.Same(t, both, d.Config(), "Config is the running config")

	// Job b goes: its job and its three targets are deleted, a is untouched.
	published := testutil.ToFloat64(d.m.publishedSinceStart)
	require.NoError(t, d.ApplyConfig(loadConfig(t, `
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80, a2:80]}]
`)))
	waitBucketAddrs(t, js, "a1:80", "a2:80")
	require.True(t, waitFor(eventually, func() bool {
		jobs, _ := bucket(t, js)
		return len(jobs) == 1
	}))
	requireBucketIsCatalog(t, js, d.Discoverer)
	require.True(t, waitFor(eventually, func() bool {
		return testutil.ToFloat64(d.m.publishedSinceStart) == published+4
	}), "one job and three target deletions, got %v", testutil.ToFloat64(d.m.publishedSinceStart)-published)
	require.Equal(t, 1, testutil.CollectAndCount(d.m.targets, "allot_discoverer_targets")/2, "only job a has target gauges")

	// Reapplying the same config keeps the provider running: nothing is
	// discovered or relabelled again.
	before := providerIDs(d.Discoverer)
	require.Len(t, before, 1)
	require.NoError(t, d.ApplyConfig(loadConfig(t, `
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80, a2:80]}]
`)))
	require.Equal(t, before, providerIDs(d.Discoverer))

	// An SD config that cannot start is reported with its job; the rest
	// of the config runs.
	err := d.ApplyConfig(loadConfig(t, fmt.Sprintf(`
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80, a2:80]}]
  - job_name: k8s
    kubernetes_sd_configs:
      - role: pod
        kubeconfig_file: %q
`, filepath.Join(t.TempDir(), "missing-kubeconfig"))))
	require.Error(t, err)
	require.Contains(t, err.Error(), `job "k8s": kubernetes_sd_configs`)
	require.Equal(t, 0.0, testutil.ToFloat64(d.m.reloadSuccessful))
	withK8s := d.Config()
	require.Len(t, withK8s.ScrapeConfigs, 2, "a config applied without some SD configs is the running one")
	require.True(t, waitFor(eventually, func() bool {
		jobs, _ := bucket(t, js)
		_, ok := jobs["k8s"]
		return ok
	}), "the job is published, without targets")
	waitBucketAddrs(t, js, "a1:80", "a2:80")

	require.ErrorContains(t, d.ApplyConfig(nil), "no config")
	dup := loadConfig(t, "scrape_configs:\n  - job_name: a\n")
	dup.ScrapeConfigs = append(dup.ScrapeConfigs, dup.ScrapeConfigs[0])
	require.ErrorContains(t, d.ApplyConfig(dup), "defined twice")
	require.Same(t, withK8s, d.Config(), "a config refused before anything is applied leaves the last one running")
}

func TestRelabelChangeRepublishes(t *testing.T) {
	c := startCluster(t)
	js := c.jetStream(t)
	d := c.start(t, "d1", loadConfig(t, `
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80, a2:80], labels: {env: prod}}]
`))
	waitBucketAddrs(t, js, "a1:80", "a2:80")

	// Relabelling changes: the same groups are relabelled without the
	// provider sending them again.
	require.NoError(t, d.ApplyConfig(loadConfig(t, `
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80, a2:80], labels: {env: prod}}]
    relabel_configs:
      - source_labels: [__address__]
        regex: a1.*
        action: drop
      - source_labels: [env]
        target_label: stage
`)))
	waitBucketAddrs(t, js, "a2:80")
	_, ts := bucket(t, js)
	for _, tt := range ts {
		require.Equal(t, "prod", tt.Labels["stage"])
	}
	_, dropped := d.Targets()
	require.Len(t, dropped, 1)
	require.Equal(t, `relabel_configs[0] (action drop, source_labels [__address__], regex "a1.*") dropped it`, dropped[0].Reason)
	require.Equal(t, "a1:80", dropped[0].DiscoveredLabels["__address__"])
	requireBucketIsCatalog(t, js, d.Discoverer)
}

func TestLeaderFailover(t *testing.T) {
	c := startCluster(t)
	js := c.jetStream(t)
	path := filepath.Join(t.TempDir(), "targets.yaml")
	writeTargets(t, path, "h1:80", "h2:80", "h3:80")
	cfg := fileSDConfig(t, path)
	d1 := c.start(t, "d1", cfg)
	require.True(t, waitFor(eventually, d1.IsLeader))
	d2 := c.start(t, "d2", cfg)
	waitBucketAddrs(t, js, "h1:80", "h2:80", "h3:80")
	require.True(t, waitFor(eventually, d2.Ready), "a follower is ready once configured")
	require.False(t, d2.IsLeader())
	// The standby is hot: it has the whole catalog.
	require.True(t, waitFor(eventually, func() bool { a, _ := d2.Targets(); return len(a) == 3 }))

	// The leader dies without resigning: its etcd client goes away, so
	// its lease is neither renewed nor revoked.
	_ = d1.etcd.Close()
	require.True(t, waitFor(eventually, func() bool { return !d1.IsLeader() }), "the dead leader stops publishing")
	lost := time.Now()
	published := testutil.ToFloat64(d1.m.publishedSinceStart)

	// While nobody leads, the targets change: the new leader must delete
	// h1 and add h4 from its reconciliation.
	writeTargets(t, path, "h2:80", "h3:80", "h4:80")
	require.True(t, waitFor(eventually, func() bool { a, _ := d2.Targets(); return len(a) == 3 && !hasAddr(a, "h1:80") && hasAddr(a, "h4:80") }))

	require.True(t, waitFor(eventually, d2.IsLeader), "the standby takes over")
	t.Logf("standby led %s after the leader died (TTL 2s)", time.Since(lost))
	waitBucketAddrs(t, js, "h2:80", "h3:80", "h4:80")
	require.True(t, waitFor(eventually, d2.Ready))
	requireBucketIsCatalog(t, js, d2.Discoverer)
	require.GreaterOrEqual(t, testutil.ToFloat64(d2.m.reconciliations), 1.0)

	// The old leader, still running, publishes nothing more.
	writeTargets(t, path, "h2:80", "h5:80")
	waitBucketAddrs(t, js, "h2:80", "h5:80")
	requireBucketIsCatalog(t, js, d2.Discoverer)
	require.Equal(t, published, testutil.ToFloat64(d1.m.publishedSinceStart))
	require.False(t, d1.IsLeader())
}

// providerIDs lists the tap providers the discovery manager runs.
func providerIDs(d *Discoverer) []uint64 {
	var ids []uint64
	for _, p := range d.mgr.Providers() {
		if td, ok := p.Discoverer().(*tapDiscoverer); ok {
			ids = append(ids, td.id)
		}
	}
	slices.Sort(ids)
	return ids
}

func hasAddr(ts []TargetInfo, a string) bool {
	return slices.ContainsFunc(ts, func(t TargetInfo) bool { return t.Labels["__address__"] == a })
}

func TestGracefulHandover(t *testing.T) {
	c := startCluster(t)
	js := c.jetStream(t)
	cfg := loadConfig(t, `
scrape_configs:
  - job_name: a
    static_configs: [{targets: [a1:80]}]
`)
	d1 := c.start(t, "d1", cfg)
	require.True(t, waitFor(eventually, d1.IsLeader))
	d2 := c.start(t, "d2", cfg)
	waitBucketAddrs(t, js, "a1:80")

	// A stopped leader revokes its lease: the standby leads at once,
	// long before the 2s TTL could expire.
	start := time.Now()
	d1.stop()
	require.True(t, waitFor(eventually, d2.IsLeader))
	took := time.Since(start)
	t.Logf("handover took %s", took)
	require.Less(t, took, latencyBound()+time.Second)
	require.True(t, waitFor(eventually, d2.Ready))
	requireBucketIsCatalog(t, js, d2.Discoverer)
}

func TestNATSOutage(t *testing.T) {
	for _, tc := range []struct {
		name string
		// lose: the server comes back without its store.
		lose bool
	}{
		{name: "server restarts with its store"},
		{name: "server restarts empty", lose: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t)
			js := c.jetStream(t)
			path := filepath.Join(t.TempDir(), "targets.yaml")
			writeTargets(t, path, "h1:80", "h2:80")
			d := c.start(t, "d1", fileSDConfig(t, path))
			waitBucketAddrs(t, js, "h1:80", "h2:80")
			reconciliations := testutil.ToFloat64(d.m.reconciliations)

			c.stopNATS()
			writeTargets(t, path, "h2:80", "h3:80")
			require.True(t, waitFor(eventually, func() bool { a, _ := d.Targets(); return hasAddr(a, "h3:80") }))

			dir := ""
			if tc.lose {
				dir = t.TempDir()
			}
			c.startNATS(t, dir)
			waitBucketAddrs(t, js, "h2:80", "h3:80")
			requireBucketIsCatalog(t, js, d.Discoverer)
			require.Greater(t, testutil.ToFloat64(d.m.reconciliations), reconciliations)
		})
	}
}

// slowSD is an http_sd endpoint whose answers can be delayed per path.
type slowSD struct {
	*httptest.Server
	mu    sync.Mutex
	delay map[string]time.Duration
}

func newSlowSD(t *testing.T, targets ...string) *slowSD {
	t.Helper()
	s := &slowSD{delay: map[string]time.Duration{}}
	body, err := json.Marshal([]map[string]any{{"targets": targets, "labels": map[string]string{}}})
	require.NoError(t, err)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		d := s.delay[r.URL.Path]
		s.mu.Unlock()
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *slowSD) setDelay(path string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay[path] = d
}

func httpSDConfig(t *testing.T, url string) *config.Config {
	t.Helper()
	return loadConfig(t, fmt.Sprintf(`
scrape_configs:
  - job_name: web
    http_sd_configs:
      - url: %q
`, url))
}

// watchDeletes counts deletions in the targets bucket from now on.
func watchDeletes(t *testing.T, js jetstream.JetStream) func() int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	kv, err := js.KeyValue(ctx, "allot_targets")
	require.NoError(t, err)
	w, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop() })
	var (
		mu      sync.Mutex
		deletes int
	)
	go func() {
		for e := range w.Updates() {
			if e != nil && e.Operation() != jetstream.KeyValuePut {
				mu.Lock()
				deletes++
				mu.Unlock()
			}
		}
	}()
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return deletes
	}
}

// A discoverer waits for slow service discovery before it trusts its
// catalog: on restart it does not delete targets it has not found yet,
// and on reload a replaced provider keeps its targets until its
// successor reports.
func TestSlowDiscoveryDeletesNothing(t *testing.T) {
	c := startCluster(t)
	js := c.jetStream(t)
	sd := newSlowSD(t, "h1:80", "h2:80")
	d1 := c.start(t, "d1", httpSDConfig(t, sd.URL+"/a"))
	waitBucketAddrs(t, js, "h1:80", "h2:80")
	d1.stop()

	deletes := watchDeletes(t, js)
	const slow = 1500 * time.Millisecond
	sd.setDelay("/a", slow)
	start := time.Now()
	d2 := c.start(t, "d2", httpSDConfig(t, sd.URL+"/a"))
	require.True(t, waitFor(eventually, d2.IsLeader))
	require.True(t, waitFor(eventually, d2.Ready))
	require.GreaterOrEqual(t, time.Since(start), slow, "not ready before discovery answered")
	requireBucketIsCatalog(t, js, d2.Discoverer)
	require.Zero(t, deletes(), "restart deleted targets not yet rediscovered")

	// Reload to another endpoint with the same targets: a new provider.
	sd.setDelay("/b", slow)
	published := testutil.ToFloat64(d2.m.publishedSinceStart)
	before := providerIDs(d2.Discoverer)
	require.NoError(t, d2.ApplyConfig(httpSDConfig(t, sd.URL+"/b")))
	require.NotEqual(t, before, providerIDs(d2.Discoverer))
	require.True(t, waitFor(eventually, func() bool {
		d2.Discoverer.tap.mu.Lock()
		defer d2.Discoverer.tap.mu.Unlock()
		return len(d2.Discoverer.tap.awaiting) == 0
	}), "the new provider reports")
	// Its update is applied (it is no longer awaited) and the old
	// provider's end goes through on the next wake-up.
	require.True(t, waitFor(eventually, func() bool {
		d2.cat.mu.RLock()
		defer d2.cat.mu.RUnlock()
		return len(d2.cat.jobs["web"].providers) == 1
	}))
	requireBucketIsCatalog(t, js, d2.Discoverer)
	require.Zero(t, deletes(), "reload deleted targets the new provider also finds")
	// The job's published config does not include SD configs: nothing
	// at all was published.
	require.Equal(t, published, testutil.ToFloat64(d2.m.publishedSinceStart))
}
