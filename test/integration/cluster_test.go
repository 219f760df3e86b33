//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
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

	// interval is the scrape interval. The lease TTL is shorter than it, so a
	// crashed scraper's targets are scraped again within one interval: at most
	// one sample missing per target.
	interval = 5 * time.Second
	leaseTTL = 3 * time.Second
	targets  = 30
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
type cluster struct {
	t       *testing.T
	control *tc.DockerNetwork
	data    *tc.DockerNetwork

	mu         sync.Mutex
	etcd       []*tc.DockerContainer
	nats       *tc.DockerContainer
	sink       *tc.DockerContainer
	discoverer *tc.DockerContainer
	scrapers   map[string]*tc.DockerContainer
	sinkURL    string
	discURL    string
}

const allotConfig = `global:
  scrape_interval: 5s
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
	// testcontainers would otherwise guess the default gateway as the
	// Docker host and send the tests' requests there.
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		t.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	}
	ctx := t.Context()
	c := &cluster{t: t, scrapers: map[string]*tc.DockerContainer{}}
	var err error
	if c.control, err = network.New(ctx); err != nil {
		t.Fatalf("control network: %v", err)
	}
	t.Cleanup(func() { _ = c.control.Remove(context.Background()) })
	if c.data, err = network.New(ctx); err != nil {
		t.Fatalf("data network: %v", err)
	}
	t.Cleanup(func() { _ = c.data.Remove(context.Background()) })

	// etcd: three members started together (none is ready before quorum).
	var initial []string
	for i := 1; i <= 3; i++ {
		initial = append(initial, fmt.Sprintf("etcd%d=http://etcd%d:2380", i, i))
	}
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("etcd%d", i)
		c.etcd = append(c.etcd, c.run(name, image("ETCD_IMAGE", etcdImage), []*tc.DockerNetwork{c.control}, []string{"2379/tcp"},
			tc.WithCmd("/usr/local/bin/etcd", "--name", name, "--data-dir", "/var/lib/etcd/data",
				"--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://"+name+":2379",
				"--listen-peer-urls", "http://0.0.0.0:2380", "--initial-advertise-peer-urls", "http://"+name+":2380",
				"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
				"--initial-cluster-token", "allot-it", "--heartbeat-interval", "100", "--election-timeout", "1000")))
	}
	c.waitEtcdHealthy(90 * time.Second)
	c.nats = c.run("nats", image("NATS_IMAGE", natsImage), []*tc.DockerNetwork{c.data}, []string{"4222/tcp"},
		tc.WithCmd("-js", "-sd", "/tmp/js", "-p", "4222"),
		// Scratch has no shell for an in-container port check and 4222 is not
		// published, so readiness is the server's own log line.
		tc.WithWaitStrategy(wait.ForLog("Server is ready").WithStartupTimeout(30*time.Second)))
	c.run("demo", allotImage, []*tc.DockerNetwork{c.data}, []string{"9100/tcp"},
		tc.WithCmd("demo", "--demo.targets", fmt.Sprint(targets), "--demo.advertise", "demo:9100", "--web.listen-address", ":9100"))
	c.sink = c.run("sink", allotImage, []*tc.DockerNetwork{c.data}, []string{"4318/tcp"},
		tc.WithCmd("sink", "--web.listen-address", ":4318"),
		tc.WithWaitStrategy(wait.ForHTTP("/-/healthy").WithPort("4318/tcp").WithStartupTimeout(30*time.Second)))
	c.sinkURL = c.endpoint(c.sink, "4318/tcp")

	c.discoverer = c.run("discoverer", allotImage, []*tc.DockerNetwork{c.control, c.data}, []string{"8080/tcp"},
		tc.WithCmd(append([]string{"discoverer", "--config.file", "/etc/allot/allot.yml"}, c.clusterFlags()...)...),
		tc.WithFiles(
			tc.ContainerFile{Reader: strings.NewReader(allotConfig), ContainerFilePath: "/etc/allot/allot.yml", FileMode: 0o644},
			tc.ContainerFile{Reader: strings.NewReader("[]"), ContainerFilePath: "/etc/allot/extra.json", FileMode: 0o666},
		),
		tc.WithWaitStrategy(wait.ForHTTP("/-/ready").WithPort("8080/tcp").WithStartupTimeout(90*time.Second)))
	c.discURL = c.endpoint(c.discoverer, "8080/tcp")
	c.run("rebalancer", allotImage, []*tc.DockerNetwork{c.control}, []string{"8080/tcp"},
		tc.WithCmd(append([]string{"rebalancer", "--rebalancer.interval", "2s"}, c.clusterFlags()...)...))
	for i := 1; i <= scrapers; i++ {
		c.addScraper(fmt.Sprintf("scraper-%d", i))
	}
	return c
}

// waitEtcdHealthy waits until every member answers etcdctl endpoint health,
// run inside the member itself (the images have no shell, but etcdctl).
func (c *cluster) waitEtcdHealthy(timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, "etcd cluster healthy", func() bool {
		for _, m := range c.etcd {
			code, _, err := m.Exec(c.t.Context(), []string{"/usr/local/bin/etcdctl", "--endpoints=http://127.0.0.1:2379",
				"--command-timeout=2s", "endpoint", "health"})
			if err != nil || code != 0 {
				return false
			}
		}
		return true
	})
}

func (c *cluster) clusterFlags() []string {
	return []string{
		"--etcd.endpoints", "http://etcd1:2379,http://etcd2:2379,http://etcd3:2379",
		"--nats.url", "nats://nats:4222",
		"--lease.ttl", leaseTTL.String(),
		"--startup.timeout", "90s",
		"--log.level", "debug",
	}
}

func (c *cluster) addScraper(id string) *tc.DockerContainer {
	c.t.Helper()
	s := c.run(id, allotImage, []*tc.DockerNetwork{c.control, c.data}, []string{"8080/tcp"},
		tc.WithCmd(append([]string{"scraper", "--scraper.id", id, "--otlp.endpoint", "http://sink:4318",
			"--web.external-address", id + ":8080"}, c.clusterFlags()...)...),
		tc.WithWaitStrategy(wait.ForHTTP("/-/healthy").WithPort("8080/tcp").WithStartupTimeout(90*time.Second)))
	c.mu.Lock()
	c.scrapers[id] = s
	c.mu.Unlock()
	return s
}

// run starts a container named name (also its alias on every network). Its
// ports are published on loopback only: nothing of the cluster is reachable
// from outside this machine, and the tests never talk to anything but
// 127.0.0.1 and the private networks.
func (c *cluster) run(name, img string, nets []*tc.DockerNetwork, ports []string, opts ...tc.ContainerCustomizer) *tc.DockerContainer {
	c.t.Helper()
	for _, n := range nets {
		opts = append(opts, network.WithNetwork([]string{name}, n))
	}
	opts = append(opts,
		tc.WithName(fmt.Sprintf("allot-it-%s-%d", name, time.Now().UnixNano()%1e6)),
		// Without exposed ports testcontainers publishes every port the image
		// EXPOSEs, on all interfaces.
		tc.WithExposedPorts(ports...),
		tc.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.PortBindings = mobynet.PortMap{}
			for _, p := range ports {
				hc.PortBindings[mobynet.MustParsePort(p)] = []mobynet.PortBinding{{HostIP: netip.MustParseAddr("127.0.0.1")}}
			}
		}),
	)
	ctr, err := tc.Run(c.t.Context(), img, opts...)
	if ctr != nil {
		c.t.Cleanup(func() {
			if c.t.Failed() {
				c.dumpLogs(name, ctr)
			}
			_ = ctr.Terminate(context.Background())
		})
	}
	if err != nil {
		c.t.Fatalf("start %s (%s): %v", name, img, err)
	}
	return ctr
}

func (c *cluster) dumpLogs(name string, ctr *tc.DockerContainer) {
	rc, err := ctr.Logs(context.Background())
	if err != nil {
		return
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	c.t.Logf("--- last logs of %s ---\n%s", name, strings.Join(lines, "\n"))
}

func (c *cluster) endpoint(ctr *tc.DockerContainer, port string) string {
	c.t.Helper()
	ep, err := ctr.PortEndpoint(c.t.Context(), port, "http")
	if err != nil {
		c.t.Fatalf("endpoint %s: %v", port, err)
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

// samples returns, per series matching match, the sample timestamps (ms).
func (c *cluster) samples(match string) map[string][]int64 {
	c.t.Helper()
	resp, err := http.Get(c.sinkURL + "/api/v1/samples?match=" + url.QueryEscape(match))
	if err != nil {
		c.t.Fatalf("sink: %v", err)
	}
	defer resp.Body.Close()
	var raw map[string][][3]any
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		c.t.Fatalf("sink samples: %v", err)
	}
	out := make(map[string][]int64, len(raw))
	for k, rows := range raw {
		ts := make([]int64, 0, len(rows))
		for _, r := range rows {
			if stale, _ := r[2].(bool); stale {
				continue
			}
			ts = append(ts, int64(r[0].(float64)))
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		out[k] = ts
	}
	return out
}

// upSeries returns the `up` timestamps of every demo target.
func (c *cluster) upSeries() map[string][]int64 {
	all := c.samples("up{")
	out := map[string][]int64{}
	for k, v := range all {
		if strings.Contains(k, `service.name="demo"`) {
			out[k] = v
		}
	}
	return out
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		select {
		case <-t.Context().Done():
			t.Fatalf("cancelled waiting for %s", what)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// waitScraping waits until every demo target has a sample newer than since.
func (c *cluster) waitScraping(since time.Time, timeout time.Duration) {
	c.t.Helper()
	waitFor(c.t, timeout, fmt.Sprintf("all %d targets scraped after %s", targets, since.Format("15:04:05")), func() bool {
		up := c.upSeries()
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

// handoff counts, per series in the window [from, to], missing samples
// (gaps beyond one interval, in intervals) and duplicates (two samples less
// than half an interval apart, which only two scrapers produce).
type handoff struct {
	missing, duplicated map[string]int
}

func analyse(series map[string][]int64, from, to time.Time) handoff {
	h := handoff{missing: map[string]int{}, duplicated: map[string]int{}}
	iv := interval.Milliseconds()
	for k, ts := range series {
		var in []int64
		for _, x := range ts {
			if x >= from.UnixMilli() && x <= to.UnixMilli() {
				in = append(in, x)
			}
		}
		for i := 1; i < len(in); i++ {
			d := in[i] - in[i-1]
			switch {
			case d < iv/2:
				h.duplicated[k]++
			case d > iv+iv/2:
				// A gap of g intervals means g-1 samples missing.
				h.missing[k] += int((d + iv/2) / iv) - 1
			}
		}
	}
	return h
}

func (h handoff) check(t *testing.T, what string, maxMissing, maxDup int) {
	t.Helper()
	bad := 0
	for k, n := range h.missing {
		if n > maxMissing {
			bad++
			t.Errorf("%s: %s missed %d samples (allowed %d)", what, k, n, maxMissing)
		}
	}
	for k, n := range h.duplicated {
		if n > maxDup {
			bad++
			t.Errorf("%s: %s got %d duplicated samples (allowed %d)", what, k, n, maxDup)
		}
	}
	if bad == 0 {
		t.Logf("%s: no series beyond %d missing / %d duplicated (missing in %d series, duplicated in %d)", what, maxMissing, maxDup, len(h.missing), len(h.duplicated))
	}
}
