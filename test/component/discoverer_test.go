package component

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/internal/testcluster"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/services/discoverer"
)

// TestDiscovererFailover: two discoverers run a file_sd config; the leader
// is cut off from etcd; the standby takes over and publishes; a target
// added to the file is scraped within a few seconds and one removed stops
// (with staleness markers); the catalog and the scrapers' targets are
// exactly the file's, none lost, none twice.
func TestDiscovererFailover(t *testing.T) {
	c := newCluster(t)
	path := filepath.Join(t.TempDir(), "targets.yaml")
	file := names("f-", 0, 10)
	writeFileSD(t, path, c.host, file)
	cfg, err := config.Load(fmt.Sprintf(`
scrape_configs:
  - job_name: files
    scrape_interval: 1s
    scrape_timeout: 1s
    file_sd_configs:
      - files: [%q]
`, path), nil)
	require.NoError(t, err)

	d1 := c.startDiscoverer("d1", cfg)
	waitFor(t, eventually, func() (bool, string) { return d1.IsLeader(), "d1 leads" })
	d2 := c.startDiscoverer("d2", cfg)
	a, b := c.startScraper("a"), c.startScraper("b")
	c.waitMembers("a", "b")
	c.waitInstances(file, 2, time.Now())
	requireCatalog(t, c, file, a, b)
	require.False(t, d2.IsLeader())

	// The leader dies without resigning: its lease is neither renewed nor
	// revoked, and the standby waits for it to expire.
	d1.cutOff()
	killed := time.Now()
	published := d1.published()
	waitFor(t, eventually, func() (bool, string) {
		return d2.IsLeader() && !d1.IsLeader(), fmt.Sprintf("d1 leads %v, d2 leads %v", d1.IsLeader(), d2.IsLeader())
	})
	t.Logf("standby leads %s after the leader was cut off (election TTL %s)", time.Since(killed).Round(time.Millisecond), ttl)

	// The file changes: f-10 comes, f-0 goes.
	file = names("f-", 1, 11)
	changed := time.Now()
	writeFileSD(t, path, c.host, file)
	var first time.Time
	waitFor(t, eventually, func() (bool, string) {
		es := c.ledger.since("f-10", changed)
		if len(es) == 0 {
			return false, "f-10 not scraped yet"
		}
		first = es[0].ts
		return true, ""
	})
	took := first.Sub(changed)
	t.Logf("target added to the file under the new leader: first scrape after %s", took.Round(time.Millisecond))
	require.Less(t, took, 5*time.Second, "new target scraped")
	// The removed target stops with staleness markers: it left discovery.
	waitFor(t, eventually, func() (bool, string) {
		ss := c.sink.Find("up{", `service.instance.id="f-0"`)
		if len(ss) != 1 {
			return false, fmt.Sprintf("%d up series of f-0", len(ss))
		}
		smp := c.sink.Samples(ss[0])
		return smp[len(smp)-1].Stale, "no staleness marker after f-0 left the file"
	})
	requireCatalog(t, c, file, a, b)
	require.Equal(t, published, d1.published(), "the cut-off leader published after it lost the lease")
	require.False(t, d1.IsLeader())
}

// requireCatalog waits until the targets bucket and the scrapers hold
// exactly the instances in want, then checks that neither holds any twice.
func requireCatalog(t *testing.T, c *cluster, want []string, ms ...*member) {
	t.Helper()
	slices.Sort(want)
	_, kv, err := events.Buckets(context.Background(), c.js, events.Config{})
	require.NoError(t, err)
	var bucket, scraped map[string]int
	waitFor(t, eventually, func() (bool, string) {
		bucket = map[string]int{}
		keys, err := kv.Keys(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for _, k := range keys {
			e, err := kv.Get(context.Background(), k)
			if err != nil {
				return false, err.Error()
			}
			tg, err := events.DecodeTarget(e.Value())
			require.NoError(t, err, "key %s", k)
			bucket[tg.Labels["instance"]]++
		}
		scraped = map[string]int{}
		for _, m := range ms {
			for _, ts := range m.s.Targets() {
				scraped[ts.Labels["instance"]]++
			}
		}
		got, own := slices.Sorted(maps.Keys(bucket)), slices.Sorted(maps.Keys(scraped))
		return slices.Equal(got, want) && slices.Equal(own, want),
			fmt.Sprintf("file %v, catalog %v, scraped %v", want, got, own)
	})
	for inst, n := range bucket {
		require.Equal(t, 1, n, "instance %s is in the catalog %d times", inst, n)
	}
	for inst, n := range scraped {
		require.Equal(t, 1, n, "instance %s is scraped by %d scrapers", inst, n)
	}
}

// discovering is one discoverer running in the test on its own etcd client.
type discovering struct {
	*discoverer.Discoverer
	t      testing.TB
	cli    *clientv3.Client
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

func (c *cluster) startDiscoverer(id string, cfg *config.Config) *discovering {
	c.t.Helper()
	cli := c.servers.EtcdClient()
	reg := prometheus.NewRegistry()
	d, err := discoverer.New(discoverer.Config{ID: id, Keyspace: c.ks, ElectionTTL: ttl}, cli, c.jetStream(), reg, testcluster.Logger())
	require.NoError(c.t, err)
	require.NoError(c.t, d.ApplyConfig(cfg))
	ctx, cancel := context.WithCancel(context.Background())
	x := &discovering{Discoverer: d, t: c.t, cli: cli, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { x.done <- d.Run(ctx) }()
	c.t.Cleanup(func() {
		x.once.Do(func() {
			cancel()
			select {
			case err := <-x.done:
				require.NoError(c.t, err)
			case <-time.After(eventually):
				c.t.Errorf("discoverer %s did not stop", id)
			}
		})
	})
	return x
}

// cutOff closes the discoverer's etcd client: its election lease is
// neither renewed nor revoked.
func (d *discovering) cutOff() { _ = d.cli.Close() }

// published is the number of catalog changes it has had acknowledged.
func (d *discovering) published() float64 {
	return gathered(d.t, d.reg, "allot_events_published_total")
}

// names returns prefix<from> .. prefix<to-1>.
func names(prefix string, from, to int) []string {
	out := make([]string, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// writeFileSD writes a file_sd file atomically: one group per target on
// host, with its own metrics path and instance label.
func writeFileSD(t *testing.T, path, host string, insts []string) {
	t.Helper()
	var b strings.Builder
	for _, inst := range insts {
		fmt.Fprintf(&b, "- targets: [%q]\n  labels: {__metrics_path__: %q, instance: %q}\n", host, "/t/"+inst+"/metrics", inst)
	}
	if len(insts) == 0 {
		b.WriteString("[]\n")
	}
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(b.String()), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}
