package otlp

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/allot-dev/allot/internal/scrapebench"
	"github.com/klauspost/compress/gzip"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/tsdb"
	"github.com/prometheus/prometheus/tsdb/agent"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
)

// benchExposition is scrapebench's exposition: 3650 samples of every
// classic type.
func benchExposition() []byte { return scrapebench.Exposition() }

const benchSamples = scrapebench.Samples

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
		b.Run(c.name, func(b *testing.B) { benchConvert(b, c.next, 1) })
	}
	// Many targets in turn, as a scraper with hundreds of targets runs
	// them: each target's series table is cold (out of the CPU caches)
	// when its next scrape comes.
	b.Run("encoded-cold", func(b *testing.B) { benchConvert(b, discardEncoded{}, 64) })
}

func benchConvert(b *testing.B, next Consumer, targets int) {
	calls, err := parseBody(benchExposition(), "text/plain; version=0.0.4", 1_700_000_000_000)
	if err != nil || len(calls) != benchSamples {
		b.Fatalf("parse: %d calls, %v", len(calls), err)
	}
	app := NewAppendable(next, Options{}, nil, nil)
	ctxs := make([]context.Context, targets)
	// The scrape loop passes back the series reference of the last scrape.
	refs := make([][]storage.SeriesRef, targets)
	for i := range targets {
		ctxs[i] = scrape.ContextWithTarget(context.Background(), testTarget("shard", fmt.Sprint(i)))
		refs[i] = make([]storage.SeriesRef, len(calls))
	}
	scrapeOnce := func(i int) {
		tgt := i % targets
		a := app.AppenderV2(ctxs[tgt])
		for j := range calls {
			c := &calls[j]
			ref, err := a.Append(refs[tgt][j], c.ls, c.st, c.t+int64(i), c.v, c.h, c.fh, c.opts)
			if err != nil {
				b.Fatal(err)
			}
			refs[tgt][j] = ref
		}
		if err := a.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	// Every target's first scrape (which resolves its series) is set-up.
	for i := range targets {
		scrapeOnce(i)
	}
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := targets; b.Loop(); i++ {
		scrapeOnce(i)
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

func cpuTime() time.Duration { return scrapebench.CPUTime() }

// scrapePathOnly runs one side of BenchmarkScrapePath, to profile it alone.
var scrapePathOnly = flag.String("scrapepath.only", "", "BenchmarkScrapePath: run only this side (prom, prom+opts, allot, allot-nogzip, allot-pdata)")

// BenchmarkScrapePath compares, in one run, the whole path a scrape takes
// in allot (Prometheus's scrape loop → otlp.Appendable → OTLP protobuf,
// with and without gzip) with Prometheus's own scrape loop appending to a
// no-op storage (prom: the loop alone), to its agent-mode WAL (prom-agent)
// and to its TSDB (prom-tsdb). Every side scrapes the same target over HTTP
// with a real scrape.Manager (internal/scrapebench); an op is one scrape of
// 3650 samples per side. The cost is process CPU time per sample (so the
// load of other processes does not count); a throughput ratio is the
// Prometheus side's CPU per sample over allot's, i.e. allot's throughput as
// a fraction of Prometheus's. Nothing is sent on either side: see
// pkg/export's BenchmarkScrapeAndShip for that. Run with -benchtime=Nx.
func BenchmarkScrapePath(b *testing.B) {
	addr := scrapebench.Target(b)
	var sides []scrapebench.Side
	// side is a storage made for each run; allotOpt: with the scrape
	// options allot needs (metadata with every sample, start timestamps),
	// which are its cost; Prometheus's defaults otherwise.
	side := func(name string, allotOpt bool, open func() storage.AppendableV2) {
		if *scrapePathOnly != "" && *scrapePathOnly != name {
			return
		}
		sides = append(sides, scrapebench.Side{Name: name, Open: func() (storage.AppendableV2, scrapebench.Config, func()) {
			app := open()
			var cfg scrapebench.Config
			if allotOpt {
				cfg.ScrapeOptions = ScrapeOptions
			}
			return app, cfg, func() {
				if c, ok := app.(io.Closer); ok {
					_ = c.Close()
				}
			}
		}})
	}
	side("prom", false, func() storage.AppendableV2 { return scrapebench.Nop{} })
	// The no-op storage with the scrape options allot needs splits
	// allot's cost into those options and the conversion.
	side("prom+opts", true, func() storage.AppendableV2 { return scrapebench.Nop{} })
	side("allot", true, func() storage.AppendableV2 { return NewAppendable(&encodingConsumer{}, Options{}, nil, nil) })
	side("allot-nogzip", true, func() storage.AppendableV2 {
		return NewAppendable(&encodingConsumer{noGzip: true}, Options{}, nil, nil)
	})
	// The pdata path (a Consumer that does not take encoded scrapes), as
	// allot was before the encoder.
	side("allot-pdata", true, func() storage.AppendableV2 {
		return NewAppendable(&encodingConsumer{pdataOnly: true}, Options{}, nil, nil)
	})
	// Prometheus as it runs: in agent mode (scrape → WAL, the storage
	// remote write reads from: the peer that scrapes and ships) and as a
	// server (scrape → TSDB head and WAL).
	side("prom-agent", false, func() storage.AppendableV2 { return benchAgent(b) })
	side("prom-tsdb", false, func() storage.AppendableV2 { return benchTSDB(b) })

	perSample := scrapebench.Compare(b, addr, sides, b.N)
	for _, r := range []struct{ base, side, metric string }{
		{"prom", "allot", "throughput-ratio"},
		{"prom", "allot-nogzip", "nogzip-throughput-ratio"},
		{"prom", "allot-pdata", "pdata-throughput-ratio"},
		{"prom-agent", "allot", "vs-agent-throughput-ratio"},
		{"prom-tsdb", "allot", "vs-tsdb-throughput-ratio"},
	} {
		scrapebench.ReportRatio(b, perSample, r.base, r.side, r.metric)
	}
}

// benchAgent opens Prometheus's agent-mode storage (a WAL that remote write
// reads from) in a temporary directory.
func benchAgent(b *testing.B) *agent.DB {
	db, err := agent.Open(slog.New(slog.DiscardHandler), prometheus.NewRegistry(), nil, b.TempDir(), agent.DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	return db
}

// benchTSDB opens a Prometheus TSDB (head and WAL) in a temporary directory;
// the caller closes it.
func benchTSDB(b *testing.B) *tsdb.DB {
	db, err := tsdb.Open(b.TempDir(), slog.New(slog.DiscardHandler), prometheus.NewRegistry(), tsdb.DefaultOptions(), nil)
	if err != nil {
		b.Fatal(err)
	}
	return db
}
