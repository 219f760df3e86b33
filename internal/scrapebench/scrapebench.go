// Package scrapebench runs Prometheus's scrape manager against an HTTP
// target in the benchmark's own process and measures the process CPU time
// each scraped sample costs, whatever storage the scrape loop appends to.
// The benchmarks that compare allot's scrape path with Prometheus's
// (pkg/otlp BenchmarkScrapePath, pkg/export BenchmarkScrapeAndShip) share
// it, so both sides of every comparison are driven the same way.
package scrapebench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
)

// Samples is the number of samples in Exposition.
const Samples = 3650

// Exposition is a node-exporter-like scrape: 1000 counter and 1000 gauge
// series, 10 histograms and 5 summaries with 10 label sets each, Samples
// samples in all.
func Exposition() []byte {
	var b bytes.Buffer
	for f := range 50 {
		fmt.Fprintf(&b, "# HELP node_counter_%d_total A counter.\n# TYPE node_counter_%d_total counter\n", f, f)
		for s := range 20 {
			fmt.Fprintf(&b, "node_counter_%d_total{cpu=\"%d\",mode=\"user\"} %d\n", f, s, 1000*f+s)
		}
	}
	for f := range 50 {
		fmt.Fprintf(&b, "# HELP node_gauge_%d_bytes A gauge.\n# TYPE node_gauge_%d_bytes gauge\n", f, f)
		for s := range 20 {
			fmt.Fprintf(&b, "node_gauge_%d_bytes{device=\"sd%d\",fstype=\"ext4\"} %g\n", f, s, float64(f*s)*1.5)
		}
	}
	bounds := []string{"0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"}
	for f := range 10 {
		fmt.Fprintf(&b, "# HELP http_%d_duration_seconds A histogram.\n# TYPE http_%d_duration_seconds histogram\n", f, f)
		for s := range 10 {
			for i, le := range bounds {
				fmt.Fprintf(&b, "http_%d_duration_seconds_bucket{handler=\"/h%d\",method=\"GET\",le=\"%s\"} %d\n", f, s, le, 10*(i+1))
			}
			fmt.Fprintf(&b, "http_%d_duration_seconds_sum{handler=\"/h%d\",method=\"GET\"} 42.5\n", f, s)
			fmt.Fprintf(&b, "http_%d_duration_seconds_count{handler=\"/h%d\",method=\"GET\"} 120\n", f, s)
		}
	}
	for f := range 5 {
		fmt.Fprintf(&b, "# HELP rpc_%d_seconds A summary.\n# TYPE rpc_%d_seconds summary\n", f, f)
		for s := range 10 {
			for _, q := range []string{"0.5", "0.9", "0.99"} {
				fmt.Fprintf(&b, "rpc_%d_seconds{service=\"s%d\",quantile=\"%s\"} 0.1\n", f, s, q)
			}
			fmt.Fprintf(&b, "rpc_%d_seconds_sum{service=\"s%d\"} 12\n", f, s)
			fmt.Fprintf(&b, "rpc_%d_seconds_count{service=\"s%d\"} 30\n", f, s)
		}
	}
	return b.Bytes()
}

// CPUTime is the CPU time (user and system) the process has used.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Target serves Exposition over HTTP on loopback until the benchmark ends;
// it returns the target's address.
func Target(b testing.TB) string {
	body := Exposition()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(body)
	}))
	b.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// Targets is the number of targets Run scrapes in parallel (distinct by a
// label, all at the same address).
const Targets = 4

// Sender is a storage that sends what it takes asynchronously (remote
// write, an exporter queue), as far as Run needs to know: how much it has
// taken and how much of that it has sent, in any one unit.
type Sender struct {
	Taken, Sent func() float64
}

// Config is how Run scrapes.
type Config struct {
	// ScrapeOptions sets the scrape manager's options (nil: Prometheus's
	// defaults).
	ScrapeOptions func(*scrape.Options)
	// Interval is the scrape interval and timeout (default 20ms: as fast
	// as the loops go). A storage that sends must be given one it keeps
	// up with.
	Interval time.Duration
	// Sender, if set, is the storage's sending, which the measurement
	// includes: it starts once the storage has sent what the warm-up
	// scraped, and ends when it has sent everything. What the warm-up's
	// last scrapes left unsent when it starts (a batch at most, at an
	// interval the sender keeps up with) is measured but not counted.
	Sender *Sender
}

// Run scrapes addr with a real scrape.Manager appending to app until
// scrapes scrapes have been committed after a warm-up. It returns the
// process CPU time of the measurement and the samples committed in it.
func Run(b testing.TB, addr string, app storage.AppendableV2, c Config, scrapes int) (time.Duration, int64) {
	counting := &countingAppendable{next: app}
	if c.Interval == 0 {
		c.Interval = 20 * time.Millisecond
	}
	cfg, err := config.Load(fmt.Sprintf(`
scrape_configs:
- job_name: bench
  scrape_interval: %[1]s
  scrape_timeout: %[1]s
`, model.Duration(c.Interval)), nil)
	if err != nil {
		b.Fatal(err)
	}
	o := &scrape.Options{DiscoveryReloadInterval: model.Duration(time.Millisecond)}
	if c.ScrapeOptions != nil {
		c.ScrapeOptions(o)
	}
	mgr, err := scrape.NewManager(o, nil, nil, nil, counting, prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	if err := mgr.ApplyConfig(cfg); err != nil {
		b.Fatal(err)
	}
	ch := make(chan map[string][]*targetgroup.Group, 1)
	var targets []model.LabelSet
	for i := range Targets {
		targets = append(targets, model.LabelSet{model.AddressLabel: model.LabelValue(addr), "shard": model.LabelValue(fmt.Sprint(i))})
	}
	ch <- map[string][]*targetgroup.Group{"bench": {{Source: "bench", Targets: targets}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = mgr.Run(ch)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			mgr.Stop()
			<-done
		}
	}
	defer stop()
	// The waits poll with a growing pause: a Sender's figures come from
	// gathering a registry, which costs CPU that is measured too.
	waitFor := func(cond func() bool) {
		for pause := time.Millisecond; !cond(); pause = min(2*pause, 50*time.Millisecond) {
			time.Sleep(pause)
		}
	}
	caughtUp := func() {
		if c.Sender != nil {
			taken := c.Sender.Taken()
			waitFor(func() bool { return c.Sender.Sent() >= taken })
		}
	}
	// Warm up: caches filled, every target scraped twice.
	waitFor(func() bool { return counting.commits.Load() >= 2*Targets })
	caughtUp()
	// What earlier runs left is garbage by now; it is not this run's to
	// collect.
	runtime.GC()
	c0, s0, n0 := CPUTime(), counting.samples.Load(), counting.commits.Load()
	waitFor(func() bool { return counting.commits.Load() >= n0+int64(scrapes) })
	// The scrape loops stop (and append their end-of-run staleness
	// markers, counted too) before the storage is asked to settle, so
	// that the wait costs no scrapes that are not counted.
	stop()
	caughtUp()
	return CPUTime() - c0, counting.samples.Load() - s0
}

// Side is one storage that Compare scrapes into.
type Side struct {
	Name string
	// Open makes the side's storage for one run (so that no run's state
	// outlives it), how Run scrapes it, and what ends it after the run
	// (nil: nothing).
	Open func() (storage.AppendableV2, Config, func())
}

// Compare runs every side for scrapes scrapes of addr, in two rounds that
// alternate the sides, so that drift in machine load hits all, as the
// benchmark's timed part. It reports each side's process CPU time per
// sample as "<name>-cpu-ns/sample" and returns those figures by name (none
// for a side that committed no samples).
func Compare(b *testing.B, addr string, sides []Side, scrapes int) map[string]float64 {
	cpu := make([]time.Duration, len(sides))
	n := make([]int64, len(sides))
	b.ResetTimer()
	for range 2 {
		for i, s := range sides {
			app, cfg, closeSide := s.Open()
			c, k := Run(b, addr, app, cfg, scrapes)
			if closeSide != nil {
				closeSide()
			}
			cpu[i] += c
			n[i] += k
		}
	}
	b.StopTimer()
	perSample := map[string]float64{}
	for i, s := range sides {
		if n[i] > 0 {
			perSample[s.Name] = float64(cpu[i].Nanoseconds()) / float64(n[i])
			b.ReportMetric(perSample[s.Name], s.Name+"-cpu-ns/sample")
		}
	}
	return perSample
}

// ReportRatio reports perSample[base] / perSample[side] (side's throughput
// as a fraction of base's) as metric, if Compare measured both.
func ReportRatio(b *testing.B, perSample map[string]float64, base, side, metric string) {
	bv, ok1 := perSample[base]
	sv, ok2 := perSample[side]
	if ok1 && ok2 {
		b.ReportMetric(bv/sv, metric)
	}
}

// countingAppendable counts committed samples and scrapes.
type countingAppendable struct {
	next    storage.AppendableV2
	samples atomic.Int64
	commits atomic.Int64
}

func (c *countingAppendable) AppenderV2(ctx context.Context) storage.AppenderV2 {
	return &countingAppender{AppenderV2: c.next.AppenderV2(ctx), c: c}
}

type countingAppender struct {
	storage.AppenderV2
	c *countingAppendable
	n int64
}

func (a *countingAppender) Append(ref storage.SeriesRef, ls labels.Labels, st, t int64, v float64, h *histogram.Histogram, fh *histogram.FloatHistogram, opts storage.AppendV2Options) (storage.SeriesRef, error) {
	a.n++
	return a.AppenderV2.Append(ref, ls, st, t, v, h, fh, opts)
}

func (a *countingAppender) Commit() error {
	err := a.AppenderV2.Commit()
	if err == nil {
		a.c.samples.Add(a.n)
		a.c.commits.Add(1)
	}
	return err
}

// Nop is a storage that keeps nothing: Prometheus's scrape loop alone.
type Nop struct{}

// AppenderV2 implements storage.AppendableV2.
func (Nop) AppenderV2(context.Context) storage.AppenderV2 { return nopAppender{} }

type nopAppender struct{}

func (nopAppender) Append(ref storage.SeriesRef, ls labels.Labels, _, _ int64, _ float64, _ *histogram.Histogram, _ *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	if ref == 0 {
		ref = storage.SeriesRef(ls.Hash())
	}
	return ref, nil
}
func (nopAppender) Commit() error   { return nil }
func (nopAppender) Rollback() error { return nil }
