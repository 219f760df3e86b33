package otlp

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/agent"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// benchExposition is a node-exporter-like scrape: 1000 counter and 1000
// gauge series, 10 histograms and 5 summaries with 10 label sets each,
// 3650 samples in all.
func benchExposition() []byte {
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

const benchSamples = 3650

func discard() Consumer {
	return ConsumerFunc(func(context.Context, pmetric.Metrics) error { return nil })
}

// discardEncoded takes scrapes encoded and drops them.
type discardEncoded struct{}

func (discardEncoded) AcceptsEncoded() bool                                  { return true }
func (discardEncoded) ConsumeEncoded(context.Context, []byte, int) error     { return nil }
func (discardEncoded) ConsumeMetrics(context.Context, pmetric.Metrics) error { return nil }

// BenchmarkConvert measures the conversion alone: the Append calls of one
// parsed scrape and its Commit, per op one scrape; into pdata (a plain
// Consumer) and encoded (an EncodedConsumer).
func BenchmarkConvert(b *testing.B) {
	for _, c := range []struct {
		name string
		next Consumer
	}{{"pdata", discard()}, {"encoded", discardEncoded{}}} {
		b.Run(c.name, func(b *testing.B) { benchConvert(b, c.next) })
	}
}

func benchConvert(b *testing.B, next Consumer) {
	calls, err := parseBody(benchExposition(), "text/plain; version=0.0.4", 1_700_000_000_000)
	if err != nil || len(calls) != benchSamples {
		b.Fatalf("parse: %d calls, %v", len(calls), err)
	}
	app := NewAppendable(next, Options{}, nil, nil)
	ctx := scrape.ContextWithTarget(context.Background(), testTarget())
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	// The scrape loop passes back the series reference of the last scrape.
	refs := make([]storage.SeriesRef, len(calls))
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		a := app.AppenderV2(ctx)
		for j := range calls {
			c := &calls[j]
			ref, err := a.Append(refs[j], c.ls, c.st, c.t+int64(i), c.v, c.h, c.fh, c.opts)
			if err != nil {
				b.Fatal(err)
			}
			refs[j] = ref
		}
		if err := a.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	cpu := cpuTime() - cpu0
	runtime.ReadMemStats(&ms1)
	samples := float64(b.N * len(calls))
	b.ReportMetric(float64(cpu.Nanoseconds())/samples, "cpu-ns/sample")
	b.ReportMetric(samples/b.Elapsed().Seconds(), "samples/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/samples, "ns/sample")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/samples, "allocs/sample")
}

// BenchmarkEncodeOTLP measures OTLP protobuf encoding (and gzip, as the
// HTTP exporter sends it) of one converted scrape.
func BenchmarkEncodeOTLP(b *testing.B) {
	md := convertedScrape(b)
	for _, gz := range []bool{false, true} {
		b.Run(fmt.Sprintf("gzip=%v", gz), func(b *testing.B) {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
			b.ReportAllocs()
			var size int
			for b.Loop() {
				raw, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
				if err != nil {
					b.Fatal(err)
				}
				size = len(raw)
				if gz {
					buf.Reset()
					zw.Reset(&buf)
					_, _ = zw.Write(raw)
					_ = zw.Close()
					size = buf.Len()
				}
			}
			b.ReportMetric(float64(b.N*benchSamples)/b.Elapsed().Seconds(), "samples/s")
			b.ReportMetric(float64(size)/benchSamples, "bytes/sample")
		})
	}
}

func convertedScrape(b *testing.B) pmetric.Metrics {
	calls, err := parseBody(benchExposition(), "text/plain; version=0.0.4", 1_700_000_000_000)
	if err != nil {
		b.Fatal(err)
	}
	var md pmetric.Metrics
	app := NewAppendable(ConsumerFunc(func(_ context.Context, m pmetric.Metrics) error {
		md = m
		return nil
	}), Options{}, nil, nil)
	if err := appendCalls(app, calls); err != nil {
		b.Fatal(err)
	}
	return md
}

// countingAppendable wraps an AppendableV2 and counts committed samples;
// both sides of BenchmarkScrapePath go through it.
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

// nopAppendable is the no-op storage Prometheus's own scrape loop appends
// to in the comparison: it only hands out series references.
type nopAppendable struct{}

func (nopAppendable) AppenderV2(context.Context) storage.AppenderV2 { return nopAppender{} }

type nopAppender struct{}

func (nopAppender) Append(ref storage.SeriesRef, ls labels.Labels, _, _ int64, _ float64, _ *histogram.Histogram, _ *histogram.FloatHistogram, _ storage.AppendV2Options) (storage.SeriesRef, error) {
	if ref == 0 {
		ref = storage.SeriesRef(ls.Hash())
	}
	return ref, nil
}
func (nopAppender) Commit() error   { return nil }
func (nopAppender) Rollback() error { return nil }

// encodingConsumer encodes every scrape as the OTLP/HTTP exporter would
// (protobuf, and gzip unless noGzip: --otlp.compression=none) and drops
// it. Scrape loops call it concurrently. It takes encoded scrapes (then only
// gzip is left to do) unless pdataOnly; an encoded scrape is copied first,
// as the exporter's queue copies it (req is the appender's, see
// EncodedConsumer), into a buffer that is reused as the exporter's pooled
// ones are.
type encodingConsumer struct {
	pool      sync.Pool // *encoder
	pdataOnly bool
	noGzip    bool
}

type encoder struct {
	raw []byte // the copy of an encoded scrape
	buf bytes.Buffer
	zw  *gzip.Writer
}

func (e *encodingConsumer) AcceptsEncoded() bool { return !e.pdataOnly }

func (e *encodingConsumer) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	raw, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalProto()
	if err != nil {
		return err
	}
	return e.gzip(raw)
}

func (e *encodingConsumer) ConsumeEncoded(_ context.Context, req []byte, _ int) error {
	enc := e.encoder()
	defer e.pool.Put(enc)
	enc.raw = append(enc.raw[:0], req...)
	return e.gzipWith(enc, enc.raw)
}

func (e *encodingConsumer) gzip(raw []byte) error {
	enc := e.encoder()
	defer e.pool.Put(enc)
	return e.gzipWith(enc, raw)
}

func (e *encodingConsumer) encoder() *encoder {
	enc, _ := e.pool.Get().(*encoder)
	if enc == nil {
		enc = &encoder{}
		enc.zw, _ = gzip.NewWriterLevel(&enc.buf, gzip.BestSpeed)
	}
	return enc
}

func (e *encodingConsumer) gzipWith(enc *encoder, raw []byte) error {
	if e.noGzip {
		return nil
	}
	enc.buf.Reset()
	enc.zw.Reset(&enc.buf)
	_, _ = enc.zw.Write(raw)
	return enc.zw.Close()
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// scrapePathOnly runs one side of BenchmarkScrapePath, to profile it alone.
var scrapePathOnly = flag.String("scrapepath.only", "", "BenchmarkScrapePath: run only this side (prom, prom+opts, allot, allot-nogzip, allot-pdata)")

// BenchmarkScrapePath compares, in one run, the whole path a scrape takes
// in allot (Prometheus's scrape loop → otlp.Appendable → OTLP protobuf,
// with and without gzip) with Prometheus's own scrape loop appending to a
// no-op storage. Both scrape the same target over HTTP with a real
// scrape.Manager; an op is one scrape of 3650 samples per side. The cost is
// process CPU time per sample (so the load of other processes does not
// count); throughput-ratio is Prometheus's CPU per sample over allot's,
// i.e. allot's throughput as a fraction of Prometheus's. gzip is reported
// apart because it is the exporter's (--otlp.compression), and the
// Prometheus side sends nothing. Run with -benchtime=Nx.
func BenchmarkScrapePath(b *testing.B) {
	body := benchExposition()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write(body)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()

	run := func(app storage.AppendableV2, allotOptions bool, scrapes int) (time.Duration, int64) {
		counting := &countingAppendable{next: app}
		cfg, err := config.Load(`
scrape_configs:
- job_name: bench
  scrape_interval: 20ms
  scrape_timeout: 20ms
`, nil)
		if err != nil {
			b.Fatal(err)
		}
		opts := &scrape.Options{DiscoveryReloadInterval: model.Duration(time.Millisecond)}
		if allotOptions {
			// Prometheus's defaults on the other side: what allot needs
			// (metadata with every sample, start timestamps) is its cost.
			ScrapeOptions(opts)
		}
		mgr, err := scrape.NewManager(opts, nil, nil, nil, counting, prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		if err := mgr.ApplyConfig(cfg); err != nil {
			b.Fatal(err)
		}
		ch := make(chan map[string][]*targetgroup.Group, 1)
		// Four targets (distinct by a label) scrape in parallel.
		var targets []model.LabelSet
		for i := range 4 {
			targets = append(targets, model.LabelSet{model.AddressLabel: model.LabelValue(addr), "shard": model.LabelValue(fmt.Sprint(i))})
		}
		ch <- map[string][]*targetgroup.Group{"bench": {{Source: "bench", Targets: targets}}}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = mgr.Run(ch)
		}()
		defer func() {
			mgr.Stop()
			<-done
		}()
		wait := func(commits int64) {
			for counting.commits.Load() < commits {
				time.Sleep(time.Millisecond)
			}
		}
		wait(8) // warm up: caches filled, every target scraped twice
		c0, s0, n0 := cpuTime(), counting.samples.Load(), counting.commits.Load()
		wait(n0 + int64(scrapes))
		return cpuTime() - c0, counting.samples.Load() - s0
	}

	sides := []struct {
		name     string
		app      storage.AppendableV2
		allotOpt bool
		cpu      time.Duration
		n        int64
	}{
		{name: "prom", app: nopAppendable{}},
		// The no-op storage with the scrape options allot needs splits
		// allot's cost into those options and the conversion.
		{name: "prom+opts", app: nopAppendable{}, allotOpt: true},
		{name: "allot", app: NewAppendable(&encodingConsumer{}, Options{}, nil, nil), allotOpt: true},
		{name: "allot-nogzip", app: NewAppendable(&encodingConsumer{noGzip: true}, Options{}, nil, nil), allotOpt: true},
		// The pdata path (a Consumer that does not take encoded scrapes),
		// as allot was before the encoder.
		{name: "allot-pdata", app: NewAppendable(&encodingConsumer{pdataOnly: true}, Options{}, nil, nil), allotOpt: true},
		// Prometheus as it runs: in agent mode (scrape → WAL, the
		// storage remote write reads from: the peer that scrapes and
		// ships) and as a server (scrape → TSDB head and WAL).
		{name: "prom-agent", app: benchAgent(b)},
		{name: "prom-tsdb", app: benchTSDB(b)},
	}
	b.ResetTimer()
	// Two rounds each, alternating, so drift in machine load hits all.
	for range 2 {
		for i := range sides {
			s := &sides[i]
			if *scrapePathOnly != "" && *scrapePathOnly != s.name {
				continue
			}
			c, n := run(s.app, s.allotOpt, b.N)
			s.cpu, s.n = s.cpu+c, s.n+n
		}
	}
	b.StopTimer()
	perSample := map[string]float64{}
	for _, s := range sides {
		if s.n > 0 {
			perSample[s.name] = float64(s.cpu.Nanoseconds()) / float64(s.n)
			b.ReportMetric(perSample[s.name], s.name+"-cpu-ns/sample")
		}
	}
	for _, r := range []struct{ base, side, metric string }{
		{"prom", "allot", "throughput-ratio"},
		{"prom", "allot-nogzip", "nogzip-throughput-ratio"},
		{"prom", "allot-pdata", "pdata-throughput-ratio"},
		{"prom-agent", "allot", "vs-agent-throughput-ratio"},
		{"prom-tsdb", "allot", "vs-tsdb-throughput-ratio"},
	} {
		base, ok1 := perSample[r.base]
		v, ok2 := perSample[r.side]
		if ok1 && ok2 {
			b.ReportMetric(base/v, r.metric)
		}
	}
}

// benchAgent opens Prometheus's agent-mode storage (a WAL that remote write
// reads from) in a temporary directory.
func benchAgent(b *testing.B) storage.AppendableV2 {
	db, err := agent.Open(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil, b.TempDir(), agent.DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return db
}

// benchTSDB opens a Prometheus TSDB (head and WAL) in a temporary directory.
func benchTSDB(b *testing.B) storage.AppendableV2 {
	db, err := tsdb.Open(b.TempDir(), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), tsdb.DefaultOptions(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	return db
}
