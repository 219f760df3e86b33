package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/export"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/otlp"
	"github.com/allot-dev/allot/services/discoverer"
	"github.com/allot-dev/allot/services/rebalancer"
	"github.com/allot-dev/allot/services/scraper"
)

// group runs the process's long-lived parts. The first to fail cancels the
// others; Wait returns that first error.
type group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	err    error
}

func newGroup(ctx context.Context) *group {
	g := &group{}
	g.ctx, g.cancel = context.WithCancel(ctx)
	return g
}

func (g *group) Go(name string, fn func(ctx context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		err := fn(g.ctx)
		if err != nil && !errors.Is(err, context.Canceled) {
			g.once.Do(func() { g.err = fmt.Errorf("%s: %w", name, err) })
		}
		g.cancel()
	}()
}

func (g *group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.err
}

// configOptions is --config.file.
type configOptions struct {
	file string
}

func (o *configOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "config.file", "", "allot configuration file: a Prometheus configuration (global, scrape_configs) with an optional allot: section.")
}

// exporterOptions build the exporter the scrapers hand their metrics to.
type exporterOptions struct {
	otlpEndpoint string
}

func (o *exporterOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.otlpEndpoint, "otlp.endpoint", "", "OTLP/HTTP base URL; /v1/metrics is appended (default: $OTEL_EXPORTER_OTLP_ENDPOINT).")
}

// configured reports whether an exporter was asked for.
func (o *exporterOptions) configured() bool {
	return o.otlpEndpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != ""
}

func (o *exporterOptions) setOTLPEndpoint(u string) { o.otlpEndpoint = u }

// build builds the exporters.
func (o *exporterOptions) build(fs *flag.FlagSet, file *configfile.File, reg prometheus.Registerer, logger *slog.Logger) (export.Exporter, error) {
	if !o.configured() {
		return nil, errors.New("no exporter: set --otlp.endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	return export.NewOTLPHTTP(export.OTLPHTTPConfig{Endpoint: o.otlpEndpoint}, reg, logger.With("component", "export"))
}

// startDiscoverer builds a discoverer with the file's config, runs it in g,
// and wires config reloads (SIGHUP and POST /-/reload).
func startDiscoverer(g *group, srv *server, cfg discoverer.Config, cfgFile string, cli *clientv3.Client, js jetstream.JetStream, file *configfile.File, logger *slog.Logger) (*discoverer.Discoverer, error) {
	d, err := discoverer.New(cfg, cli, js, srv.reg, logger)
	if err != nil {
		return nil, fmt.Errorf("discoverer: %w", err)
	}
	if err := d.ApplyConfig(file.Prometheus); err != nil {
		return nil, fmt.Errorf("apply config: %w", err)
	}
	g.Go("discoverer", d.Run)
	srv.addReady("discoverer", d.Ready)
	if cfgFile == "" {
		return d, nil
	}
	reload := func() error {
		f, err := configfile.Load(cfgFile, logger)
		if err != nil {
			logger.Error("config reload rejected; the last good config keeps running", "err", err)
			return err
		}
		if err := d.ApplyConfig(f.Prometheus); err != nil {
			// The error says whether nothing was applied or the config runs
			// without the SD configs it names.
			logger.Error("config reload", "err", err)
			return err
		}
		logger.Info("config reloaded", "file", cfgFile)
		return nil
	}
	srv.mux.HandleFunc("/-/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			http.Error(w, "use POST or PUT", http.StatusMethodNotAllowed)
			return
		}
		if err := reload(); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "config reloaded")
	})
	g.Go("reloader", func(ctx context.Context) error {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-hup:
				_ = reload()
			}
		}
	})
	return d, nil
}

// startScraper builds one scraper with its own conversion state, exporting
// through exp, and runs it in g.
func startScraper(g *group, cfg scraper.Config, cli *clientv3.Client, js jetstream.JetStream, exp export.Exporter, reg prometheus.Registerer, logger *slog.Logger) (*scraper.Scraper, error) {
	app := otlp.NewAppendable(exp, otlp.Options{ScopeVersion: version}, reg, logger.With("component", "otlp"))
	s, err := scraper.New(cfg, cli, js, app, reg, logger)
	if err != nil {
		return nil, fmt.Errorf("scraper: %w", err)
	}
	logger.Info("scraper starting", "id", s.ID())
	g.Go("scraper "+s.ID(), s.Run)
	return s, nil
}

// startRebalancer builds the rebalancer, mounts its API, and runs it in g.
func startRebalancer(g *group, srv *server, cfg rebalancer.Config, cli *clientv3.Client, logger *slog.Logger) (*rebalancer.Rebalancer, error) {
	r, err := rebalancer.New(cfg, cli, srv.reg, logger)
	if err != nil {
		return nil, fmt.Errorf("rebalancer: %w", err)
	}
	h := r.Handler()
	srv.mux.Handle("/api/v1/drain", h)
	srv.mux.Handle("/api/v1/cluster", h)
	srv.mux.Handle("/cluster", h)
	g.Go("rebalancer", r.Run)
	return r, nil
}

var (
	_ = leases.Keyspace{}
	_ = events.Config{}
)
