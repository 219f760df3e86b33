package main

import (
	"context"
	"errors"
	"flag"
	"os"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/web"
	"github.com/allot-dev/allot/services/discoverer"
	"github.com/allot-dev/allot/services/rebalancer"
	"github.com/allot-dev/allot/services/scraper"
)

// roleOptions are the flags every networked role shares.
type roleOptions struct {
	log      logOptions
	cluster  clusterOptions
	listen   string
	external string
	dataDir  string
}

func (o *roleOptions) register(fs *flag.FlagSet) {
	o.log.register(fs)
	o.cluster.register(fs)
	fs.StringVar(&o.listen, "web.listen-address", ":8080", "Address to serve the status pages, API and metrics on.")
	fs.StringVar(&o.external, "web.external-address", "", "host:port others reach this process's HTTP server at (default: hostname and the listen port).")
	fs.StringVar(&o.dataDir, "data.dir", "data", "Directory for local state (export queues).")
}

// placementOptions are the placement flags the scrapers and the rebalancer
// must agree on, so one flag sets both (in `allot all` too).
type placementOptions struct {
	zoneAware bool
}

func (o *placementOptions) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.zoneAware, "placement.zone-aware", false,
		"Keep each target on the scrapers of its zone (the target's --scraper.zone-label, the scrapers' --scraper.zone) when its zone has one. Set it alike on scrapers and rebalancers.")
}

func discovererFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		o     roleOptions
		cfg   configOptions
		evCfg events.Config
		dCfg  discoverer.Config
		cr    crOptions
		ta    taOptions
		tlsO  tlsOptions
	)
	o.register(fs)
	cfg.register(fs)
	evCfg.RegisterFlags(fs)
	dCfg.RegisterFlags(fs)
	cr.register(fs)
	ta.register(fs)
	tlsO.register(fs)
	return func(ctx context.Context, _ []string) error {
		logger, err := o.log.logger()
		if err != nil {
			return err
		}
		// A bad certificate pair fails at once, not after etcd and NATS
		// are reached.
		tlsCfg, err := tlsO.config()
		if err != nil {
			return err
		}
		if cfg.file == "" {
			return errors.New("--config.file is required: the discoverer needs scrape_configs")
		}
		file, err := loadConfig(cfg.file, logger)
		if err != nil {
			return err
		}
		srv, err := newServer(o.listen)
		if err != nil {
			return err
		}
		srv.serveTLS(tlsCfg)
		conn, err := connect(ctx, &o.cluster, "allot-discoverer", logger)
		if err != nil {
			return err
		}
		defer conn.Close()
		g := newGroup(ctx)
		ks := o.cluster.keyspace()
		dCfg.Keyspace, dCfg.Events = ks, evCfg
		d, err := startDiscoverer(g, srv, dCfg, &cr, cfg.file, conn.etcd, conn.js, file, logger)
		if err != nil {
			return err
		}
		if err := ta.start(g, srv, file, ks, evCfg, conn.etcd, conn.js, logger); err != nil {
			return err
		}
		src := remoteScrapers(d, conn.etcd, ks)
		mountTargets(srv, src)
		mountPages(g, srv, src, d, file, nil, conn.etcd, ks)
		g.Go("http", func(ctx context.Context) error { return srv.serve(ctx, logger) })
		return g.Wait()
	}
}

func scraperFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		o       roleOptions
		cfg     configOptions
		expOpts exporterOptions
		session leases.SessionConfig
		evCfg   events.Config
		scCfg   scraper.Config
		place   placementOptions
	)
	o.register(fs)
	cfg.register(fs)
	expOpts.register(fs)
	session.RegisterFlags(fs)
	evCfg.RegisterFlags(fs)
	scCfg.RegisterFlags(fs)
	place.register(fs)
	return func(ctx context.Context, _ []string) error {
		logger, err := o.log.logger()
		if err != nil {
			return err
		}
		if err := session.Validate(); err != nil {
			return err
		}
		var file *configfile.File
		if cfg.file != "" {
			if file, err = loadConfig(cfg.file, logger); err != nil {
				return err
			}
		}
		srv, err := newServer(o.listen)
		if err != nil {
			return err
		}
		exp, err := expOpts.start(fs, file, srv, logger)
		if err != nil {
			return err
		}
		defer stopExporters(exp, logger)
		conn, err := connect(ctx, &o.cluster, "allot-scraper", logger)
		if err != nil {
			return err
		}
		defer conn.Close()
		g := newGroup(ctx)
		scCfg.Addr = advertise(srv.Addr(), o.external)
		scCfg.Keyspace, scCfg.Session, scCfg.Events = o.cluster.keyspace(), session, evCfg
		scCfg.ZoneAware = place.zoneAware
		s, err := startScraper(g, scCfg, conn.etcd, conn.js, exp, srv.reg, logger)
		if err != nil {
			return err
		}
		mountTargets(srv, web.TargetSourceFunc(func(context.Context) (web.Targets, error) { return scraperTargets(s), nil }))
		g.Go("http", func(ctx context.Context) error { return srv.serve(ctx, logger) })
		return g.Wait()
	}
}

func rebalancerFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var (
		o       roleOptions
		session leases.SessionConfig
		rbCfg   rebalancer.Config
		place   placementOptions
		id      string
	)
	o.register(fs)
	session.RegisterFlags(fs)
	rbCfg.RegisterFlags(fs)
	place.register(fs)
	fs.StringVar(&id, "rebalancer.id", "", "Identity in the leader election (default: hostname).")
	return func(ctx context.Context, _ []string) error {
		logger, err := o.log.logger()
		if err != nil {
			return err
		}
		if id == "" {
			id = hostnameOr("rebalancer")
		}
		srv, err := newServer(o.listen)
		if err != nil {
			return err
		}
		cli, err := connectEtcd(ctx, &o.cluster, logger)
		if err != nil {
			return err
		}
		defer cli.Close()
		g := newGroup(ctx)
		rbCfg.ID, rbCfg.Keyspace, rbCfg.Session = id, o.cluster.keyspace(), session
		rbCfg.ZoneAware = place.zoneAware
		r, err := startRebalancer(g, srv, rbCfg, cli, logger)
		if err != nil {
			return err
		}
		mountPages(g, srv, web.TargetSourceFunc(func(context.Context) (web.Targets, error) { return web.Targets{}, nil }), nil, nil, r, cli, rbCfg.Keyspace)
		g.Go("http", func(ctx context.Context) error { return srv.serve(ctx, logger) })
		return g.Wait()
	}
}

func hostnameOr(def string) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return def
	}
	return h
}
