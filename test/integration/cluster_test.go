//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	mobynet "github.com/moby/moby/api/types/network"
	tc "github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
)

const (
	allotImage = "allot:dev"
	etcdImage  = "gcr.io/etcd-development/etcd:v3.7.3"
	natsImage  = "nats:2.15.2"

	// leaseTTL is the scrapers' and the rebalancer's --lease.ttl: allot's
	// default. A session must ride out an etcd leader election (1-2 s with
	// etcd's default 1 s election timeout): it tolerates at least
	// TTL - margin (TTL/5) - renewal period (TTL/3) = 2.3 s without a
	// renewal, where a 3 s TTL tolerates 1.4 s.
	leaseTTL = 5 * time.Second
	// interval is the scrape interval. It is longer than the TTL plus the
	// takeover, so a crashed scraper's targets are claimed again before
	// their next scrape is due: at most one sample missing per target.
	interval = 10 * time.Second
	// rebalanceEvery is the rebalancer's --rebalancer.interval.
	rebalanceEvery = 2 * time.Second
	targets        = 30
)

func image(env, def string) string {
	if v := os.Getenv(env); v != "" {
		return v
	}
	return def
}

// cluster is one allot deployment on two networks: "control" carries etcd,
// "data" carries NATS, the targets and the sink. Scrapers and the discoverer
// sit on both, so a scraper can be cut off from etcd alone.
//
// Its methods take the *testing.T of the (sub)test that calls them, so a
// failure ends that subtest and not the whole run; the containers belong to
// the top-level test.
type cluster struct {
	t       *testing.T // owner of the containers and networks
	control *tc.DockerNetwork
	data    *tc.DockerNetwork

	etcd       []*tc.DockerContainer
	nats       *tc.DockerContainer
	sink       *tc.DockerContainer
	discoverer *tc.DockerContainer
	rebalancer *tc.DockerContainer
	sinkURL    string
	discURL    string
	rebURL     string

	mu       sync.Mutex
	scrapers map[string]*tc.DockerContainer

	etcdc  *etcdClient
	claims *claimLog
	// instances maps target IDs to instance labels (demo targets and the
	// extra target), from the discoverer's catalog.
	instMu    sync.Mutex
	instances map[string]string
}

var allotConfig = `global:
  scrape_interval: ` + interval.String() + `
  scrape_timeout: 4s
scrape_configs:
- job_name: demo
  http_sd_configs:
  - url: http://demo:9100/sd
    refresh_interval: 5s
- job_name: extra
  file_sd_configs:
  - files: [/etc/allot/extra.json]
    refresh_interval: 1s
`

func newCluster(t *testing.T, scrapers int) *cluster {
	t.Helper()
	if os.Getenv("TESTCONTAINERS_RYUK_DISABLED") == "" {
		t.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	}
	// Published ports are on loopback (see run). Inside a container,
	// testcontainers would otherwise take the default gateway for the
	// Docker host and send the tests' requests there.
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	ctx := t.Context()
	c := &cluster{t: t, scrapers: map[string]*tc.DockerContainer{}, instances: map[string]string{}}
	var err error
	if c.control, err = network.New(ctx); err != nil {
		t.Fatalf("control network: %v", err)
	}
	t.Cleanup(func() { _ = c.control.Remove(context.Background()) })
	if c.data, err = network.New(ctx); err != nil {
		t.Fatalf("data network: %v", err)
	}
	t.Cleanup(func() { _ = c.data.Remove(context.Background()) })
	t.Logf("container logs go to %s", t.ArtifactDir())

	// etcd: three members started together; none is ready before quorum,
	// so health is checked once all three run.
	var initial []string
	for i := 1; i <= 3; i++ {
		initial = append(initial, fmt.Sprintf("etcd%d=http://etcd%d:2380", i, i))
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("etcd%d", i)
		c.etcd = append(c.etcd, c.run(t, name, image("ETCD_IMAGE", etcdImage), []*tc.DockerNetwork{c.control}, []string{"2379/tcp"},
			tc.WithCmd("/usr/local/bin/etcd", "--name", name, "--data-dir", "/var/lib/etcd/data",
				"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://"+name+":2379",
				"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://"+name+":2380",
				"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
				"--initial-cluster-token", "allot-it", "--heartbeat-interval", "100", "--election-timeout", "1000")))
	}
	c.waitEtcdHealthy(t, 90*time.Second)
	c.etcdc = newEtcdClient(t, c)
	c.claims = startClaimLog(t, c.etcdc)

	c.nats = c.run(t, "nats", image("NATS_IMAGE", natsImage), []*tc.DockerNetwork{c.data}, []string{"4222/tcp"},
		tc.WithCmd("-js", "-sd", "/tmp/js", "-p", "4222"),
		// Scratch has no shell for an in-container port check, so readiness
		// is the server's own log line.
		tc.WithWaitStrategy(wait.ForLog("Server is ready").WithStartupTimeout(30*time.Second)))
	c.run(t, "demo", image("ALLOT_IMAGE", allotImage), []*tc.DockerNetwork{c.data}, []string{"9100/tcp"},
		tc.WithCmd("demo", "--demo.targets", fmt.Sprint(targets), "--demo.advertise", "demo:9100", "--web.listen-address", ":9100"),
		healthcheck("http://127.0.0.1:9100/"),
		tc.WithWaitStrategy(wait.ForHTTP("/sd").WithPort("9100/tcp").WithStartupTimeout(30*time.Second)))
	c.sink = c.run(t, "sink", image("ALLOT_IMAGE", allotImage), []*tc.DockerNetwork{c.data}, []string{"4318/tcp"},
		tc.WithCmd("sink", "--web.listen-address", ":4318"),
		healthcheck("http://127.0.0.1:4318/-/healthy"),
		tc.WithWaitStrategy(wait.ForHTTP("/-/healthy").WithPort("4318/tcp").WithStartupTimeout(30*time.Second)))
	c.sinkURL = c.endpoint(t, c.sink, "4318/tcp")

	c.discoverer = c.run(t, "discoverer", image("ALLOT_IMAGE", allotImage), []*tc.DockerNetwork{c.control, c.data}, []string{"8080/tcp"},
		tc.WithCmd(append([]string{"discoverer", "--config.file", "/etc/allot/allot.yml"}, c.clusterFlags(false)...)...),
		// Copied as root; the image's user (65532) only reads them.
		tc.WithFiles(
			tc.ContainerFile{Reader: strings.NewReader(allotConfig), ContainerFilePath: "/etc/allot/allot.yml", FileMode: 0o644},
			tc.ContainerFile{Reader: strings.NewReader("[]"), ContainerFilePath: "/etc/allot/extra.json", FileMode: 0o644},
		),
		tc.WithWaitStrategy(wait.ForHTTP("/-/ready").WithPort("8080/tcp").WithStartupTimeout(90*time.Second)))
	c.discURL = c.endpoint(t, c.discoverer, "8080/tcp")
	c.rebalancer = c.run(t, "rebalancer", image("ALLOT_IMAGE", allotImage), []*tc.DockerNetwork{c.control}, []string{"8080/tcp"},
		tc.WithCmd(append([]string{"rebalancer", "--rebalancer.id", "rebalancer", "--rebalancer.interval", rebalanceEvery.String()}, c.clusterFlags(true)...)...),
		tc.WithWaitStrategy(wait.ForHTTP("/-/ready").WithPort("8080/tcp").WithStartupTimeout(90*time.Second)))
	c.rebURL = c.endpoint(t, c.rebalancer, "8080/tcp")
	for i := 1; i <= scrapers; i++ {
		c.addScraper(t, fmt.Sprintf("scraper-%d", i))
	}
	return c
}

// clusterFlags are the flags every networked role takes; with session, also
// the lease flag of the roles that hold a session (scraper, rebalancer).
func (c *cluster) clusterFlags(session bool) []string {
	f := []string{
		"--etcd.endpoints", "http://etcd1:2379,http://etcd2:2379,http://etcd3:2379",
		"--nats.url", "nats://nats:4222",
		"--startup.timeout", "90s",
		"--log.level", "debug",
	}
	if session {
		f = append(f, "--lease.ttl", leaseTTL.String())
	}
	return f
}

func (c *cluster) scraperRequest(id string) []tc.ContainerCustomizer {
	return []tc.ContainerCustomizer{
		tc.WithCmd(append([]string{"scraper", "--scraper.id", id, "--otlp.endpoint", "http://sink:4318",
			"--web.external-address", id + ":8080"}, c.clusterFlags(true)...)...),
		tc.WithWaitStrategy(wait.ForHTTP("/-/healthy").WithPort("8080/tcp").WithStartupTimeout(90 * time.Second)),
	}
}

func (c *cluster) addScraper(t *testing.T, id string) *tc.DockerContainer {
	t.Helper()
	s, err := c.startScraper(t, id)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startScraper starts scraper id; unlike addScraper it may run on any
// goroutine.
func (c *cluster) startScraper(t *testing.T, id string) (*tc.DockerContainer, error) {
	s, err := c.start(t, id, image("ALLOT_IMAGE", allotImage), []*tc.DockerNetwork{c.control, c.data}, []string{"8080/tcp"}, c.scraperRequest(id)...)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.scrapers[id] = s
	c.mu.Unlock()
	return s, nil
}

func (c *cluster) scraper(id string) *tc.DockerContainer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.scrapers[id]
}

// healthcheck replaces the image's HEALTHCHECK (which probes :8080) for the
// roles that serve elsewhere, so `docker ps` tells the truth.
func healthcheck(url string) tc.CustomizeRequestOption {
	return tc.WithConfigModifier(func(cfg *container.Config) {
		cfg.Healthcheck = &container.HealthConfig{
			Test:     []string{"CMD", "/allot", "healthcheck", "--url", url},
			Interval: 10 * time.Second, Timeout: 3 * time.Second, Retries: 3,
		}
	})
}

// run starts a container named name (also its alias on every network). Its
// ports are published on loopback only: nothing of the cluster is reachable
// from outside this machine, and the tests talk to nothing but 127.0.0.1
// and the private networks. Its whole log is written to the artifact
// directory at the end, and its tail to the test log if the test failed.
func (c *cluster) run(t *testing.T, name, img string, nets []*tc.DockerNetwork, ports []string, opts ...tc.ContainerCustomizer) *tc.DockerContainer {
	t.Helper()
	ctr, err := c.start(t, name, img, nets, ports, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return ctr
}

// start is run for any goroutine: it returns the error.
func (c *cluster) start(t *testing.T, name, img string, nets []*tc.DockerNetwork, ports []string, opts ...tc.ContainerCustomizer) (*tc.DockerContainer, error) {
	for _, n := range nets {
		opts = append(opts, network.WithNetwork([]string{name}, n))
	}
	opts = append(opts,
		tc.WithName(fmt.Sprintf("allot-it-%s-%d", name, time.Now().UnixNano()%1e6)),
		// Without exposed ports testcontainers publishes every port the
		// image EXPOSEs, on all interfaces.
		tc.WithExposedPorts(ports...),
		tc.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = mobynet.PortMap{}
			for _, p := range ports {
				hc.PortBindings[mobynet.MustParsePort(p)] = []mobynet.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
			}
		}),
	)
	ctr, err := tc.Run(t.Context(), img, opts...)
	if ctr != nil {
		c.t.Cleanup(func() {
			c.saveLogs(name, ctr)
			_ = ctr.Terminate(context.Background())
		})
	}
	if err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, img, err)
	}
	return ctr, nil
}

func (c *cluster) saveLogs(name string, ctr *tc.DockerContainer) {
	b, err := containerLogs(ctr)
	if err != nil {
		c.t.Logf("logs of %s: %v", name, err)
		return
	}
	_ = os.WriteFile(filepath.Join(c.t.ArtifactDir(), name+".log"), b, 0o644)
	if !c.t.Failed() || strings.HasPrefix(name, "etcd") || name == "nats" || name == "demo" || name == "sink" {
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	c.t.Logf("--- last logs of %s ---\n%s", name, strings.Join(lines, "\n"))
}

func containerLogs(ctr *tc.DockerContainer) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rc, err := ctr.Logs(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// logTimes returns the times of a container's log lines (logfmt, as allot
// writes them) that contain msg.
func logTimes(t *testing.T, ctr *tc.DockerContainer, msg string) []time.Time {
	t.Helper()
	b, err := containerLogs(ctr)
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	var out []time.Time
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, msg) || !strings.HasPrefix(line, "time=") {
			continue
		}
		ts, _, _ := strings.Cut(strings.TrimPrefix(line, "time="), " ")
		if at, err := time.Parse(time.RFC3339Nano, ts); err == nil {
			out = append(out, at)
		}
	}
	return out
}

func (c *cluster) endpoint(t *testing.T, ctr *tc.DockerContainer, port string) string {
	t.Helper()
	ep, err := ctr.PortEndpoint(t.Context(), port, "http")
	if err != nil {
		t.Fatalf("endpoint %s: %v", port, err)
	}
	return ep
}

// docker runs the docker CLI, for what testcontainers doesn't wrap (kill -9,
// network disconnect).
func docker(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

func getJSON(t *testing.T, u string, v any) {
	t.Helper()
	if err := tryJSON(u, v); err != nil {
		t.Fatal(err)
	}
}

// tryJSON is getJSON for polling: it returns errors instead of failing.
func tryJSON(u string, v any) error {
	resp, err := httpClient.Get(u)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	return nil
}

// samples returns, per series whose key contains match, the timestamps (ms)
// of its samples, staleness markers left out. The sink answers
// {series: [[unix_ms, value|null, stale], ...]}.
func (c *cluster) samples(t *testing.T, match string) map[string][]int64 {
	t.Helper()
	var raw map[string][][3]any
	getJSON(t, c.sinkURL+"/api/v1/samples?match="+url.QueryEscape(match), &raw)
	out := make(map[string][]int64, len(raw))
	for k, rows := range raw {
		ts := make([]int64, 0, len(rows))
		for _, r := range rows {
			if stale, _ := r[2].(bool); stale {
				continue
			}
			ms, ok := r[0].(float64)
			if !ok {
				t.Fatalf("sink: sample %v of %s has no timestamp", r, k)
			}
			ts = append(ts, int64(ms))
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		out[k] = ts
	}
	return out
}

// up returns the `up` timestamps of every target of the jobs, by instance.
func (c *cluster) up(t *testing.T, jobs ...string) map[string][]int64 {
	t.Helper()
	out := map[string][]int64{}
	for k, v := range c.samples(t, "up{") {
		keep := false
		for _, job := range jobs {
			keep = keep || strings.Contains(k, fmt.Sprintf("service.name=%q", job))
		}
		if !keep {
			continue
		}
		_, rest, ok := strings.Cut(k, `service.instance.id="`)
		if !ok {
			t.Fatalf("sink series %s has no service.instance.id", k)
		}
		inst, _, _ := strings.Cut(rest, `"`)
		out[inst] = append(out[inst], v...)
	}
	for _, ts := range out {
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	waitForWhy(t, timeout, what, func() (bool, string) { return cond(), "" })
}

// waitForWhy is waitFor with a condition that says why it does not hold
// yet; the last reason is in the failure.
func waitForWhy(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			if why != "" {
				why = " (last: " + why + ")"
			}
			t.Fatalf("timed out after %s waiting for %s%s", timeout, what, why)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("cancelled waiting for %s", what)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// pause lets time pass for the cluster to do its work (a window of samples
// to analyse), without busy-waiting.
func pause(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-t.Context().Done():
		t.Fatal("cancelled")
	case <-time.After(d):
	}
}

// waitScraping waits until every demo target has a sample newer than since.
func (c *cluster) waitScraping(t *testing.T, since time.Time, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, fmt.Sprintf("all %d demo targets scraped after %s", targets, since.Format("15:04:05.000")), func() bool {
		up := c.up(t, "demo")
		if len(up) < targets {
			return false
		}
		for _, ts := range up {
			if len(ts) == 0 || ts[len(ts)-1] < since.UnixMilli() {
				return false
			}
		}
		return true
	})
}

// catalog returns the discoverer's active targets: ID → instance label,
// for the pools demo and extra.
func (c *cluster) catalog(t *testing.T) map[string]string {
	t.Helper()
	var body struct {
		Data struct {
			ActiveTargets []struct {
				ID     string            `json:"id"`
				Labels map[string]string `json:"labels"`
				Pool   string            `json:"scrapePool"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	getJSON(t, c.discURL+"/api/v1/targets?state=active", &body)
	out := map[string]string{}
	for _, a := range body.Data.ActiveTargets {
		if a.Pool == "demo" || a.Pool == "extra" {
			out[a.ID] = a.Labels["instance"]
		}
	}
	c.instMu.Lock()
	for id, inst := range out {
		c.instances[id] = inst
	}
	c.instMu.Unlock()
	return out
}

// instance is the instance label of a target ID seen in the catalog.
func (c *cluster) instance(id string) string {
	c.instMu.Lock()
	defer c.instMu.Unlock()
	if inst, ok := c.instances[id]; ok {
		return inst
	}
	return id
}

// rebalancerStatus is the part of the rebalancer's GET /api/v1/cluster the
// tests read.
type rebalancerStatus struct {
	Leader  string `json:"leader"`
	Pending int    `json:"pending_moves"`
	Queued  int    `json:"queued_moves"`
}

func (c *cluster) rebalancerStatus(t *testing.T) rebalancerStatus {
	t.Helper()
	var st rebalancerStatus
	getJSON(t, c.rebURL+"/api/v1/cluster", &st)
	return st
}

// settle waits until the cluster is at rest with exactly the scrapers
// want: they are the members, every catalog target is claimed by one of
// them, the rebalancer leads with no move queued or pending, no claim
// changed for two rebalancer intervals, and every demo target was scraped
// after all that.
func (c *cluster) settle(t *testing.T, timeout time.Duration, want ...string) {
	t.Helper()
	sort.Strings(want)
	start := time.Now()
	waitForWhy(t, timeout, fmt.Sprintf("cluster settled on %v", want), func() (bool, string) {
		members := c.etcdc.members(t)
		if strings.Join(members, ",") != strings.Join(want, ",") {
			return false, fmt.Sprintf("members %v", members)
		}
		owners := c.claims.owners()
		for id := range c.catalog(t) {
			if o := owners[id]; !contains(want, o) {
				return false, fmt.Sprintf("target %s (%s) owned by %q", id, c.instance(id), o)
			}
		}
		st := c.rebalancerStatus(t)
		if st.Leader != "rebalancer" || st.Pending+st.Queued > 0 {
			return false, fmt.Sprintf("rebalancer leader=%q pending=%d queued=%d", st.Leader, st.Pending, st.Queued)
		}
		if quiet := time.Since(c.claims.lastChange()); quiet < 2*rebalanceEvery {
			return false, "claims changed " + quiet.Round(time.Millisecond).String() + " ago"
		}
		return true, ""
	})
	c.waitScraping(t, time.Now(), 2*interval+10*time.Second)
	t.Logf("settled on %v after %s", want, time.Since(start).Round(time.Millisecond))
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
