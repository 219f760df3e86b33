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
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v2"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/export"
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

// allotSections are the sections allot reads under `allot:` in the file.
var allotSections = []string{"exporters", "prometheus_cr", "target_allocator"}

// loadConfig loads and checks --config.file.
func loadConfig(path string, logger *slog.Logger) (*configfile.File, error) {
	f, err := configfile.Load(path, logger)
	if err != nil {
		return nil, err
	}
	if err := f.CheckSections(allotSections...); err != nil {
		return nil, err
	}
	return f, nil
}

// configOptions is --config.file.
type configOptions struct {
	file string
}

func (o *configOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "config.file", "", "allot configuration file: a Prometheus configuration (global, scrape_configs) with an optional allot: section.")
}

// exporterOptions build the exporters the scrapers hand their metrics to,
// from the flags and the config file's allot.exporters section.
type exporterOptions struct {
	cfg export.Config
}

func (o *exporterOptions) register(fs *flag.FlagSet) { o.cfg.RegisterFlags(fs) }

// configured reports whether any exporter is asked for, by flag, the
// OTLP environment variables or the config file.
func (o *exporterOptions) configured(fs *flag.FlagSet, file *configfile.File) bool {
	for _, name := range []string{"otlp.endpoint", "remote-write.url"} {
		if f := fs.Lookup(name); f != nil && f.Value.String() != "" {
			return true
		}
	}
	if f := fs.Lookup("export.prometheus"); f != nil && f.Value.String() == "true" {
		return true
	}
	if os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") != "" {
		return true
	}
	_, ok, _ := file.AllotRaw("exporters")
	return ok
}

// build decodes allot.exporters over the flag defaults (unknown fields are
// rejected), re-applies the flags given on the command line so that a flag
// wins over the file, validates, and starts the exporters.
func (o *exporterOptions) build(fs *flag.FlagSet, file *configfile.File, reg prometheus.Registerer, logger *slog.Logger) (*export.Set, error) {
	raw, ok, err := file.AllotRaw("exporters")
	if err != nil {
		return nil, err
	}
	if ok {
		explicit := map[string]string{}
		fs.Visit(func(f *flag.Flag) {
			// Repeatable flags live apart from the file's fields and keep
			// their values; setting them again would repeat them.
			if !strings.HasSuffix(f.Name, ".header") {
				explicit[f.Name] = f.Value.String()
			}
		})
		if err := yaml.UnmarshalStrict(raw, &o.cfg); err != nil {
			return nil, fmt.Errorf("%s: allot.exporters: %w", file.Path, err)
		}
		for name, v := range explicit {
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("--%s: %w", name, err)
			}
		}
	}
	if err := o.cfg.Validate(); err != nil {
		return nil, err
	}
	return export.New(o.cfg, reg, logger.With("component", "export"))
}

// connections are a process's clients of the cluster: etcd, and NATS with
// its JetStream context.
type connections struct {
	etcd *clientv3.Client
	nc   *nats.Conn
	js   jetstream.JetStream
}

// connect dials etcd, then NATS as name, each waiting up to
// --startup.timeout for its server.
func connect(ctx context.Context, o *clusterOptions, name string, logger *slog.Logger) (*connections, error) {
	cli, err := connectEtcd(ctx, o, logger)
	if err != nil {
		return nil, err
	}
	nc, js, err := connectNATS(ctx, o, name, logger)
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	return &connections{etcd: cli, nc: nc, js: js}, nil
}

// Close closes NATS, then etcd.
func (c *connections) Close() {
	c.nc.Close()
	_ = c.etcd.Close()
}

// start builds the exporters and serves the pull endpoint, if enabled, at
// /metrics/scraped. Stop them with stopExporters.
func (o *exporterOptions) start(fs *flag.FlagSet, file *configfile.File, srv *server, logger *slog.Logger) (*export.Set, error) {
	exp, err := o.build(fs, file, srv.reg, logger)
	if err != nil {
		return nil, err
	}
	if h := exp.PrometheusHandler(); h != nil {
		srv.mux.Handle("/metrics/scraped", h)
	}
	return exp, nil
}

// stopExporters flushes what the exporters still hold, giving up after 10s
// so that a dead backend cannot hold up the exit; what is left is lost
// unless the queue is on disk, so say so.
func stopExporters(exp *export.Set, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := exp.Shutdown(ctx); err != nil {
		logger.Warn("exporters stopped before sending everything they held", "err", err)
	}
}

// startDiscoverer builds a discoverer with the file's config (and, if
// enabled, the jobs from Prometheus Operator resources), runs it in g, and
// wires config reloads (SIGHUP and POST /-/reload).
func startDiscoverer(g *group, srv *server, cfg discoverer.Config, cr *crOptions, cfgFile string, cli *clientv3.Client, js jetstream.JetStream, file *configfile.File, logger *slog.Logger) (*discoverer.Discoverer, error) {
	d, err := discoverer.New(cfg, cli, js, srv.reg, logger)
	if err != nil {
		return nil, fmt.Errorf("discoverer: %w", err)
	}
	sc := &scrapeConfigs{d: d}
	if err := sc.setFile(file.Prometheus); err != nil {
		return nil, fmt.Errorf("apply config: %w", err)
	}
	g.Go("discoverer", d.Run)
	srv.addReady("discoverer", d.Ready)
	if err := cr.start(g, file, sc, srv.reg, logger); err != nil {
		return nil, err
	}
	if cfgFile == "" {
		return d, nil
	}
	reload := func() error {
		f, err := loadConfig(cfgFile, logger)
		if err != nil {
			logger.Error("config reload rejected; the last good config keeps running", "err", err)
			return err
		}
		if err := sc.setFile(f.Prometheus); err != nil {
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
func startScraper(g *group, cfg scraper.Config, cli *clientv3.Client, js jetstream.JetStream, exp otlp.Consumer, reg prometheus.Registerer, logger *slog.Logger) (*scraper.Scraper, error) {
	app := otlp.NewAppendable(exp, otlp.Options{ScopeVersion: version}, reg, logger.With("component", "otlp"))
	// Without these the scrape engine passes neither the target nor the
	// metadata to the appender, and every metric would become a gauge.
	cfg.ScrapeOptions = otlp.ScrapeOptions
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
	g.Go("rebalancer", r.Run)
	return r, nil
}
