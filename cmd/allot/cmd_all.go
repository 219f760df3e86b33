package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/demo"
	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/sink"
	"github.com/allot-dev/allot/pkg/web"
	"github.com/allot-dev/allot/services/discoverer"
	"github.com/allot-dev/allot/services/rebalancer"
	"github.com/allot-dev/allot/services/scraper"
)

// demoConfig scrapes the built-in demo targets through HTTP SD, as a user's
// own config would scrape theirs.
const demoConfig = `global:
  scrape_interval: 5s
  scrape_timeout: 4s
scrape_configs:
- job_name: demo
  http_sd_configs:
  - url: http://%s/sd
    refresh_interval: 10s
`

func allFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		logOpts     logOptions
		cfgOpts     configOptions
		expOpts     exporterOptions
		session     leases.SessionConfig
		evCfg       events.Config
		scCfg       scraper.Config
		rbCfg       rebalancer.Config
		dCfg        discoverer.Config
		crOpts      crOptions
		taOpts      taOptions
		place       placementOptions
		listen      string
		dataDir     string
		etcdListen  string
		natsListen  string
		nScrapers   int
		demoTargets int
		prefix      string
	)
	logOpts.register(fs)
	cfgOpts.register(fs)
	expOpts.register(fs)
	session.RegisterFlags(fs)
	evCfg.RegisterFlags(fs)
	scCfg.RegisterFlags(fs)
	rbCfg.RegisterFlags(fs)
	dCfg.RegisterFlags(fs)
	crOpts.register(fs)
	taOpts.register(fs)
	place.register(fs)
	fs.StringVar(&listen, "web.listen-address", ":8080", "Address to serve the status pages, API and metrics on.")
	fs.StringVar(&dataDir, "data.dir", "data", "Directory for the embedded etcd and NATS data (and export queues).")
	fs.StringVar(&etcdListen, "etcd.listen-address", "127.0.0.1:0", "Client address of the embedded etcd; port 0 picks a free port.")
	fs.StringVar(&natsListen, "nats.listen-address", "127.0.0.1:0", "Client address of the embedded NATS; port 0 picks a free port.")
	fs.IntVar(&nScrapers, "scrapers", 3, "Number of in-process scrapers.")
	fs.IntVar(&demoTargets, "demo.targets", 30, "Demo targets to serve and scrape when no --config.file is given.")
	fs.StringVar(&prefix, "etcd.prefix", "/allot/", "Key prefix of allot's keyspace in etcd.")

	return func(ctx context.Context, _ []string) error {
		logger, err := logOpts.logger()
		if err != nil {
			return err
		}
		if nScrapers < 0 {
			return fmt.Errorf("--scrapers=%d: must be 0 or more", nScrapers)
		}
		if demoTargets < 0 {
			return fmt.Errorf("--demo.targets=%d: must be 0 or more", demoTargets)
		}
		if err := session.Validate(); err != nil {
			return err
		}
		srv, err := newServer(listen)
		if err != nil {
			return err
		}
		g := newGroup(ctx)

		// The config: the user's file, or one that scrapes the demo targets.
		var file *configfile.File
		if cfgOpts.file != "" {
			if file, err = loadConfig(cfgOpts.file, logger); err != nil {
				return err
			}
		} else {
			set := demo.NewSet(demoTargets)
			set.Warm(3)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return fmt.Errorf("demo targets: %w", err)
			}
			dsrv := &http.Server{Handler: set.Handler(), ReadHeaderTimeout: 5 * time.Second}
			g.Go("demo targets", func(ctx context.Context) error {
				go func() { <-ctx.Done(); dsrv.Close() }()
				if err := dsrv.Serve(ln); err != http.ErrServerClosed {
					return err
				}
				return nil
			})
			if file, err = configfile.Parse(fmt.Appendf(nil, demoConfig, ln.Addr()), logger); err != nil {
				return fmt.Errorf("demo config: %w", err)
			}
			logger.Info("serving demo targets", "targets", demoTargets, "sd", "http://"+ln.Addr().String()+"/sd")
		}

		// Embedded etcd and NATS, reachable on loopback by extra processes.
		etcd, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: filepath.Join(dataDir, "etcd"), ClientAddr: etcdListen}, logger)
		if err != nil {
			return err
		}
		defer etcd.Close()
		nsrv, err := embedded.StartNATS(embedded.NATSConfig{Dir: filepath.Join(dataDir, "nats"), Addr: natsListen}, logger)
		if err != nil {
			return err
		}
		defer nsrv.Close()
		cluster := clusterOptions{etcdEndpoints: etcd.Endpoint(), etcdPrefix: prefix, natsURL: nsrv.URL(), startupTimeout: 30 * time.Second}
		conn, err := connect(ctx, &cluster, "allot-all", logger)
		if err != nil {
			return err
		}
		defer conn.Close()

		// Without an exporter configured, samples go to an in-process sink
		// shown at /sink/, so the whole path is real from the first run.
		// A scraper joining from another process needs an exporter too:
		// the join command names the same one.
		joinExport := " <the exporter flags given here>"
		if !expOpts.configured(fs, file) {
			snk := sink.New(1000)
			srv.mux.Handle("/sink/", http.StripPrefix("/sink", snk.Handler()))
			sinkURL := "http://" + loopback(srv.Addr()) + "/sink"
			if err := fs.Set("otlp.endpoint", sinkURL); err != nil {
				return err
			}
			joinExport = " --otlp.endpoint=" + sinkURL
		} else if f := fs.Lookup("otlp.endpoint"); f != nil && f.Value.String() != "" {
			joinExport = " --otlp.endpoint=" + f.Value.String()
		} else if cfgOpts.file != "" {
			joinExport = " --config.file=" + cfgOpts.file // its allot.exporters
		}
		exp, err := expOpts.start(fs, file, srv, logger)
		if err != nil {
			return err
		}
		// On the way out, stopped after the scrapers (which feed them) and
		// before the HTTP server (which may serve the sink they flush to).
		stopExp := sync.OnceFunc(func() { stopExporters(exp, logger) })
		defer stopExp()

		ks := cluster.keyspace()
		if dCfg.ID == "" {
			dCfg.ID = "discoverer-0"
		}
		dCfg.Keyspace, dCfg.Events = ks, evCfg
		d, err := startDiscoverer(g, srv, dCfg, &crOpts, cfgOpts.file, conn.etcd, conn.js, file, logger)
		if err != nil {
			return err
		}
		var scrapers []*scraper.Scraper
		for i := 0; i < nScrapers; i++ {
			c := scCfg
			c.ID = fmt.Sprintf("scraper-%d", i)
			c.Addr = loopback(srv.Addr())
			c.Keyspace, c.Session, c.Events = ks, session, evCfg
			c.ZoneAware = place.zoneAware
			reg := prometheus.WrapRegistererWith(prometheus.Labels{"member": c.ID}, srv.reg)
			s, err := startScraper(g, c, conn.etcd, conn.js, exp, reg, logger)
			if err != nil {
				return err
			}
			scrapers = append(scrapers, s)
		}
		rb := rbCfg
		rb.ID, rb.Keyspace, rb.Session = "rebalancer-0", ks, session
		rb.ZoneAware = place.zoneAware
		rbal, err := startRebalancer(g, srv, rb, conn.etcd, logger)
		if err != nil {
			return err
		}
		if err := taOpts.start(g, srv, file, ks, evCfg, conn.etcd, conn.js, logger); err != nil {
			return err
		}

		src := localScrapers(d, scrapers, conn.etcd, ks, loopback(srv.Addr()))
		mountTargets(srv, src)
		mountPages(g, srv, src, d, file, rbal, conn.etcd, ks)
		stopHTTP := serveUntilStopped(g, srv, logger)

		fmt.Fprintf(os.Stderr, `
allot is running: %d scrapers, discoverer, rebalancer
  status page     http://%s/targets
  targets API     http://%s/api/v1/targets
  sink            http://%s/sink/
  embedded etcd   %s
  embedded NATS   %s
Join more scrapers with:
  allot scraper --etcd.endpoints=%s --nats.url=%s --web.listen-address=127.0.0.1:0%s

`, nScrapers, loopback(srv.Addr()), loopback(srv.Addr()), loopback(srv.Addr()), etcd.Endpoint(), nsrv.URL(), etcd.Endpoint(), nsrv.URL(), joinExport)
		err = g.Wait()
		// The scrapers have stopped: flush what the exporters hold while
		// the sink is still served, then stop serving.
		stopExp()
		return errors.Join(err, stopHTTP())
	}
}

// serveUntilStopped serves srv until the returned function is called, and
// not merely until g stops: in allot all the built-in sink the exporters
// send to is served on srv, and the exporters flush after g has stopped the
// scrapers. Stopping the server with g made a shutdown that caught the
// exporters holding samples (most, with a few dozen targets) wait out their
// 10 s flush timeout against a closed port and lose those samples. A server
// that fails still stops g. The returned function stops the
// server and returns its error if g has not already reported it.
func serveUntilStopped(g *group, srv *server, logger *slog.Logger) func() error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(g.ctx))
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx, logger) }()
	var failed atomic.Bool
	g.Go("http", func(gctx context.Context) error {
		select {
		case err := <-done:
			failed.Store(true)
			done <- err // for the stop function
			return err
		case <-gctx.Done():
			return nil
		}
	})
	return func() error {
		cancel()
		err := <-done
		if failed.Load() {
			return nil // g.Wait returned it
		}
		return err
	}
}

// loopback rewrites a wildcard listen address to one a browser can open.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// mountTargets serves the targets API and page from src.
func mountTargets(srv *server, src web.TargetSource) {
	srv.mux.Handle("/api/v1/targets", web.TargetsAPI(src))
	srv.mux.Handle("/targets", web.TargetsPage(src))
	srv.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "/targets", http.StatusFound)
	})
}
