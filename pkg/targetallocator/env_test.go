package targetallocator

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	promhttp "github.com/prometheus/prometheus/discovery/http"
	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v2"

	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// waitFor bounds eventual conditions: generous for -race on a loaded
// machine, while each assertion can still fail.
const waitFor = 20 * time.Second

// env is an embedded etcd and NATS with a catalog publisher.
type env struct {
	etcd *clientv3.Client
	js   jetstream.JetStream
	pub  *events.Publisher
	ks   leases.Keyspace
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir()}, nil)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	cli, err := e.Client()
	require.NoError(t, err)
	t.Cleanup(func() { _ = cli.Close() })

	n, err := embedded.StartNATS(embedded.NATSConfig{Dir: t.TempDir()}, nil)
	require.NoError(t, err)
	t.Cleanup(n.Close)
	nc, err := nats.Connect(n.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	pub, err := events.NewPublisher(t.Context(), js, events.Config{}, nil, nil)
	require.NoError(t, err)
	return &env{etcd: cli, js: js, pub: pub, ks: leases.NewKeyspace("/allot-test/")}
}

// jobConfig is a scrape config as the discoverer publishes it: parsed,
// validated and marshalled by Prometheus with its secrets, without SD
// configs and relabel_configs.
func jobConfig(t *testing.T, name string) string {
	t.Helper()
	text := fmt.Sprintf(`job_name: %q
scrape_interval: 15s
scrape_timeout: 10s
basic_auth:
  username: allot
  password: s3cret-password
metric_relabel_configs:
- source_labels: [a]
  target_label: b
  action: keepequal
`, name)
	var sc promconfig.ScrapeConfig
	require.NoError(t, yaml.UnmarshalStrict([]byte(text), &sc))
	require.NoError(t, sc.Validate(promconfig.DefaultGlobalConfig))
	b, err := yaml.Marshal(&sc)
	require.NoError(t, err)
	require.Contains(t, string(b), "s3cret-password", "the published config carries the secret")
	return string(b)
}

func target(job string, i int) events.Target {
	addr := fmt.Sprintf("10.%d.%d.%d:9100", len(job), i/250, i%250)
	return events.NewTarget(job, map[string]string{
		"__address__":         addr,
		"__scheme__":          "http",
		"__metrics_path__":    "/metrics",
		"__scrape_interval__": "15s",
		"__scrape_timeout__":  "10s",
		"job":                 job,
		"instance":            addr,
	}, "")
}

// publish puts jobs with n targets each and returns every target by
// "job|address".
func (e *env) publish(t *testing.T, n int, jobs ...string) map[string]events.Target {
	t.Helper()
	all := map[string]events.Target{}
	for _, job := range jobs {
		j := events.NewJob(job, jobConfig(t, job))
		require.NoError(t, e.pub.PutJob(t.Context(), j))
		ts := make([]events.Target, n)
		for i := range ts {
			ts[i] = target(job, i)
			ts[i].ConfigHash = j.Hash
			all[job+"|"+ts[i].Labels["__address__"]] = ts[i]
		}
		require.NoError(t, e.pub.PutTargets(t.Context(), ts))
	}
	return all
}

// start runs an API until the test ends and serves its Handler.
func (e *env) start(t *testing.T, cfg Config) (*API, *httptest.Server) {
	t.Helper()
	api, srv := e.newAPI(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- api.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(waitFor):
			t.Error("Run did not return")
		}
	})
	require.Eventually(t, api.Ready, waitFor, 10*time.Millisecond, "API never ready")
	return api, srv
}

func (e *env) newAPI(t *testing.T, cfg Config) (*API, *httptest.Server) {
	t.Helper()
	cfg.Keyspace = e.ks
	if cfg.CollectorTTL == 0 {
		cfg.CollectorTTL = 2 * time.Second
	}
	api, err := New(cfg, e.etcd, e.js, prometheus.NewRegistry(), nil)
	require.NoError(t, err)
	srv := httptest.NewServer(api.Handler())
	t.Cleanup(srv.Close)
	return api, srv
}

// otelCollector plays the OTel Collector's prometheus receiver with
// target_allocator configured: its scrape config sync is the receiver's
// targetallocator.Manager.sync (GET /scrape_configs, parse the body whatever
// the status, one http_sd_config per job pointing at
// /jobs/<url.QueryEscape(job)>/targets?collector_id=<id>, validate), and
// its targets come from Prometheus's own HTTP SD (discovery/http), the code
// the receiver runs.
type otelCollector struct {
	endpoint string
	id       string
	client   *http.Client

	mu   sync.Mutex
	jobs map[string]*promconfig.ScrapeConfig
	sds  map[string]*promhttp.Discovery
	// targets is job → address → labels from the last successful refresh
	// of each job, kept when a refresh fails, as the scrape manager does.
	targets map[string]map[string]model.LabelSet
}

func newCollector(endpoint, id string, client *http.Client) *otelCollector {
	if client == nil {
		client = http.DefaultClient
	}
	return &otelCollector{endpoint: endpoint, id: id, client: client,
		sds: map[string]*promhttp.Discovery{}, targets: map[string]map[string]model.LabelSet{}}
}

// fetchScrapeConfigs is the receiver's getScrapeConfigsResponse.
func fetchScrapeConfigs(client *http.Client, endpoint string) (map[string]*promconfig.ScrapeConfig, int, error) {
	resp, err := client.Get(endpoint + "/scrape_configs")
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, resp.StatusCode, err
	}
	m := map[string]*promconfig.ScrapeConfig{}
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, resp.StatusCode, err
	}
	return m, resp.StatusCode, nil
}

// sync is one /scrape_configs poll; on error the jobs stay as they were.
func (c *otelCollector) sync() error {
	m, _, err := fetchScrapeConfigs(c.client, c.endpoint)
	if err != nil {
		return err
	}
	for job, sc := range m {
		sd := promhttp.DefaultSDConfig
		sd.RefreshInterval = model.Duration(30 * time.Second)
		sd.URL = fmt.Sprintf("%s/jobs/%s/targets?collector_id=%s", c.endpoint, url.QueryEscape(job), c.id)
		sd.HTTPClientConfig.FollowRedirects = false
		sc.ServiceDiscoveryConfigs = discovery.Configs{&sd}
		if sc.ScrapeFallbackProtocol == "" {
			sc.ScrapeFallbackProtocol = promconfig.PrometheusText0_0_4
		}
		if err := sc.Validate(promconfig.DefaultGlobalConfig); err != nil {
			return fmt.Errorf("validate job %s: %w", job, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.jobs = m
	for job := range c.sds {
		if _, ok := m[job]; !ok {
			delete(c.sds, job)
			delete(c.targets, job)
		}
	}
	return nil
}

// refresh runs every job's HTTP SD once, concurrently, as the discovery
// manager does; it returns the first error.
func (c *otelCollector) refresh(ctx context.Context) error {
	c.mu.Lock()
	jobs := make(map[string]*promhttp.Discovery, len(c.jobs))
	for job, sc := range c.jobs {
		d, ok := c.sds[job]
		if !ok {
			sd := sc.ServiceDiscoveryConfigs[0].(*promhttp.SDConfig)
			metrics := sd.NewDiscovererMetrics(prometheus.NewRegistry(), discovery.NewRefreshMetrics(prometheus.NewRegistry()))
			var err error
			d, err = promhttp.NewDiscovery(sd, discovery.DiscovererOptions{Metrics: metrics, HTTPClientOptions: []commoncfg.HTTPClientOption{}})
			if err != nil {
				c.mu.Unlock()
				return err
			}
			c.sds[job] = d
		}
		jobs[job] = d
	}
	c.mu.Unlock()

	var wg sync.WaitGroup
	errs := make(chan error, len(jobs))
	for job, d := range jobs {
		wg.Go(func() {
			groups, err := d.Refresh(ctx)
			if err != nil {
				errs <- fmt.Errorf("job %s: %w", job, err)
				return
			}
			got := map[string]model.LabelSet{}
			for _, g := range groups {
				for _, tg := range g.Targets {
					got[string(tg[model.AddressLabel])] = g.Labels
				}
			}
			c.mu.Lock()
			c.targets[job] = got
			c.mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// owned lists "job|address" of every target the collector would scrape.
func (c *otelCollector) owned() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for job, ts := range c.targets {
		for addr := range ts {
			out = append(out, job+"|"+addr)
		}
	}
	sort.Strings(out)
	return out
}

// coverage checks that the collectors' targets are exactly want, each
// once, and describes what is wrong otherwise.
func coverage(want map[string]events.Target, cs ...*otelCollector) (bool, string) {
	seen := map[string][]string{}
	for _, c := range cs {
		for _, k := range c.owned() {
			seen[k] = append(seen[k], c.id)
		}
	}
	var problems []string
	for k := range want {
		if len(seen[k]) != 1 {
			problems = append(problems, fmt.Sprintf("%s owned by %v", k, seen[k]))
		}
	}
	for k := range seen {
		if _, ok := want[k]; !ok {
			problems = append(problems, fmt.Sprintf("%s is not a target", k))
		}
	}
	sort.Strings(problems)
	if len(problems) > 5 {
		problems = append(problems[:5], fmt.Sprintf("... %d in all", len(problems)))
	}
	return len(problems) == 0, strings.Join(problems, "; ")
}

func tlsClient(srv *httptest.Server) *http.Client {
	tr := srv.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // test server
	return &http.Client{Transport: tr}
}
