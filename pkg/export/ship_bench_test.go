package export

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/storage"
	"github.com/prometheus/prometheus/storage/remote"
	"github.com/prometheus/prometheus/tsdb/agent"

	"github.com/allot-dev/allot/internal/scrapebench"
	"github.com/allot-dev/allot/pkg/otlp"
)

// shipInterval is BenchmarkScrapeAndShip's scrape interval: one every
// side's sender keeps up with on 2 cores (4 × 3650 samples per 100 ms), so
// that none is measured with a backlog.
const shipInterval = 100 * time.Millisecond

// BenchmarkScrapeAndShip compares, in one run, what it costs to scrape a
// sample and send it to a backend: allot (scrape loop → otlp.Appendable →
// OTLP/HTTP exporter, protobuf and gzip or zstd; and → the remote write 1.0
// exporter, protobuf and snappy) and Prometheus in agent mode, the peer
// that does this job (scrape loop → WAL → remote write 1.0, protobuf and
// snappy). Every side scrapes the same target with a real scrape.Manager
// (internal/scrapebench) and sends to the same in-process receiver, which
// reads each request and throws it away; each side's measurement ends when
// its sender has delivered everything scraped. Defaults on every side
// (Prometheus's queue_config, allot's batch and queue settings), except
// that Prometheus waits at most 200ms for a batch to fill, as allot does,
// instead of 5s, which only matters for the last batch. Prometheus
// sends no metadata (send: false: its metadata watcher needs the scrape
// manager behind a readiness wrapper; it sends metadata once a minute, far
// less than allot, which sends unit and description in every request). An
// op is one scrape of 3650 samples; the figures are process CPU time per
// sample, and each ratio is Prometheus's over allot's (allot's throughput
// as a fraction of the agent's). Run with -benchtime=Nx.
func BenchmarkScrapeAndShip(b *testing.B) {
	addr := scrapebench.Target(b)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusOK)
	}))
	b.Cleanup(sink.Close)

	sides := []scrapebench.Side{
		allotSide(b, "allot-otlp", func(reg prometheus.Registerer) (Exporter, error) {
			return NewOTLPHTTP(OTLPHTTPConfig{Endpoint: sink.URL}, reg, nil)
		}),
		allotSide(b, "allot-otlp-zstd", func(reg prometheus.Registerer) (Exporter, error) {
			return NewOTLPHTTP(OTLPHTTPConfig{Endpoint: sink.URL, Compression: CompressionZstd}, reg, nil)
		}),
		allotSide(b, "allot-rw", func(reg prometheus.Registerer) (Exporter, error) {
			return NewRemoteWrite(RemoteWriteConfig{URL: sink.URL + "/api/v1/write"}, reg, nil)
		}),
		{Name: "prom-agent-rw", Open: func() (storage.AppendableV2, scrapebench.Config, func()) {
			return agentSide(b, sink.URL+"/api/v1/write")
		}},
	}
	perSample := scrapebench.Compare(b, addr, sides, b.N)
	scrapebench.ReportRatio(b, perSample, "prom-agent-rw", "allot-otlp", "otlp-vs-agent-throughput-ratio")
	scrapebench.ReportRatio(b, perSample, "prom-agent-rw", "allot-otlp-zstd", "otlp-zstd-vs-agent-throughput-ratio")
	scrapebench.ReportRatio(b, perSample, "prom-agent-rw", "allot-rw", "rw-vs-agent-throughput-ratio")
}

// allotSide is allot's scrape path into the exporter newExp makes (with
// allot's scrape options); its Sender compares the points the conversion
// produced with those the exporter sent.
func allotSide(b *testing.B, name string, newExp func(reg prometheus.Registerer) (Exporter, error)) scrapebench.Side {
	return scrapebench.Side{Name: name, Open: func() (storage.AppendableV2, scrapebench.Config, func()) {
		reg := prometheus.NewRegistry()
		exp, err := newExp(reg)
		if err != nil {
			b.Fatal(err)
		}
		app := otlp.NewAppendable(exp, otlp.Options{}, reg, nil)
		cfg := scrapebench.Config{Interval: shipInterval, ScrapeOptions: otlp.ScrapeOptions, Sender: &scrapebench.Sender{
			Taken: func() float64 { return gatherSum(b, reg, "allot_otlp_data_points_total") },
			Sent:  func() float64 { return gatherSum(b, reg, "allot_export_sent_points_total") },
		}}
		return app, cfg, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := exp.Shutdown(ctx); err != nil {
				b.Error(err)
			}
		}
	}}
}

// agentSide is Prometheus's agent-mode storage with remote write to url;
// its Sender compares the samples the WAL took with those remote write sent.
func agentSide(b *testing.B, url string) (storage.AppendableV2, scrapebench.Config, func()) {
	logger := slog.New(slog.DiscardHandler)
	reg := prometheus.NewRegistry()
	dir := b.TempDir()
	rs := remote.NewStorage(logger, reg, func() (int64, error) { return 0, nil }, dir, time.Minute, nil, false)
	cfg, err := config.Load(`
remote_write:
- url: `+url+`
  queue_config:
    batch_send_deadline: 200ms
  metadata_config:
    send: false
`, nil)
	if err != nil {
		b.Fatal(err)
	}
	db, err := agent.Open(logger, reg, rs, dir, agent.DefaultOptions())
	if err != nil {
		b.Fatal(err)
	}
	// Commits wake the WAL watcher, as Prometheus's main sets it up.
	db.SetWriteNotified(rs)
	// Remote write starts after the WAL exists (its watcher fails and
	// retries 5s later otherwise) and sends what is appended from then on.
	if err := rs.ApplyConfig(cfg); err != nil {
		b.Fatal(err)
	}
	sc := scrapebench.Config{Interval: shipInterval, Sender: &scrapebench.Sender{
		Taken: func() float64 { return gatherSum(b, reg, "prometheus_agent_samples_appended_total") },
		Sent:  func() float64 { return gatherSum(b, reg, "prometheus_remote_storage_samples_total") },
	}}
	return db, sc, func() {
		_ = db.Close()
		_ = rs.Close()
	}
}

// gatherSum is the sum of every series of the counter or gauge name in reg.
func gatherSum(b *testing.B, reg *prometheus.Registry, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
