package main

import (
	"context"
	"flag"
	"fmt"
	"github.com/prometheus/prometheus/config"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v2"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/targetallocator"
	"github.com/allot-dev/allot/pkg/web"
	"github.com/allot-dev/allot/services/discoverer"
	"github.com/allot-dev/allot/services/rebalancer"
)

// taOptions are the --target-allocator.* flags: the OTel Target
// Allocator-compatible API that unchanged OTel Collectors poll.
type taOptions struct {
	cfg targetallocator.Config
}

func (o *taOptions) register(fs *flag.FlagSet) { o.cfg.RegisterFlags(fs) }

// start serves the TA API on srv when enabled (flag or allot.target_allocator).
func (o *taOptions) start(g *group, srv *server, file *configfile.File, ks leases.Keyspace, ev events.Config, cli *clientv3.Client, js jetstream.JetStream, logger *slog.Logger) error {
	if _, err := file.Allot("target_allocator", &o.cfg); err != nil {
		return err
	}
	// The TA's own probe paths, served whether or not the API is on, so a
	// Collector's health checks work against any allot discoverer.
	srv.mux.Handle("/livez", web.Healthy())
	srv.mux.Handle("/readyz", web.Ready(srv.notReady))
	if !o.cfg.Enabled {
		return nil
	}
	o.cfg.Keyspace, o.cfg.Events, o.cfg.Version = ks, ev, version
	api, err := targetallocator.New(o.cfg, cli, js, srv.reg, logger.With("component", "target-allocator"))
	if err != nil {
		return fmt.Errorf("target allocator API: %w", err)
	}
	g.Go("target-allocator", api.Run)
	srv.addReady("target-allocator", api.Ready)
	h := api.Handler()
	srv.mux.Handle("/scrape_configs", h)
	srv.mux.Handle("/jobs", h)
	srv.mux.Handle("/jobs/", h)
	return nil
}

// mountPages serves the human pages: service discovery, effective config
// and the cluster view (from the rebalancer's status when this process runs
// one, else from etcd). d is the discoverer this process runs, if any.
func mountPages(g *group, srv *server, src web.TargetSource, d *discoverer.Discoverer, file *configfile.File, rb *rebalancer.Rebalancer, cli *clientv3.Client, ks leases.Keyspace) {
	srv.mux.Handle("/service-discovery", web.ServiceDiscoveryPage(src))
	srv.mux.Handle("/config", web.ConfigPage(effectiveConfig(d, file, rb)))
	failovers := &web.FailoverLog{}
	cs := web.ClusterSourceFunc(func(ctx context.Context) (web.Cluster, error) {
		return clusterView(ctx, rb, cli, ks, failovers)
	})
	// Without a rebalancer leader here, targets per member come from the
	// claims (collectors send no load reports) and moves from moves/.
	cs = web.WithStore(cs, targetallocator.ClusterStore{Client: cli, Keyspace: ks})
	// Failovers are members that vanished; watching the member set for that
	// is cheap, so the log is fed even when nobody looks at the page.
	g.Go("failover log", func(ctx context.Context) error {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				c, err := clusterView(ctx, rb, cli, ks, nil)
				if err == nil {
					failovers.Observe(time.Now(), c.Members)
				}
			}
		}
	})
	srv.mux.Handle("/cluster", web.ClusterPage(cs))
	srv.mux.Handle("/api/v1/cluster", web.ClusterAPI(cs))
}

// effectiveConfig is what /config shows. In a process that runs the
// discoverer d that is the scrape configuration d runs now: the last one
// applied, at start or by a reload, with the jobs generated from
// Prometheus Operator resources; followed by the file's allot: section as
// read at start, which is what runs (a reload applies scrape configs
// only). A process without a discoverer says what it runs instead of
// failing.
func effectiveConfig(d *discoverer.Discoverer, file *configfile.File, rb *rebalancer.Rebalancer) web.ConfigSource {
	return func() (web.EffectiveConfig, error) {
		var (
			c       web.EffectiveConfig
			running any // what the YAML shows before the allot: section
			applied *config.Config
		)
		if d != nil {
			applied = d.Config() // once: a reload may come in between
		}
		switch {
		case applied != nil:
			running = applied
			c.Note = "The scrape configuration the discoverer runs now (as last applied: at start, by SIGHUP or POST /-/reload, and jobs generated from Prometheus Operator resources), then the allot: section as read at start (a reload applies scrape configurations only)."
		case d != nil:
			c.Note = "The discoverer has not applied a configuration yet."
			return c, nil
		case file != nil && file.Prometheus != nil:
			running = file.Prometheus
			c.Note = "The configuration file as read at start: this process runs no discoverer, so it runs no scrape configuration of its own."
		case rb != nil:
			c.Note = "This process runs the rebalancer only: it has no scrape configuration. The discoverer's /config shows the scrape configuration the pool runs; the rebalancer's settings are its command-line flags."
			return c, nil
		default:
			c.Note = "This process runs no discoverer: it has no scrape configuration."
			return c, nil
		}
		b, err := yaml.Marshal(running)
		if err != nil {
			return c, fmt.Errorf("marshal the configuration: %w", err)
		}
		allot, err := allotSection(file)
		if err != nil {
			return c, err
		}
		c.YAML = string(b) + allot
		return c, nil
	}
}

// allotSection renders the file's allot: section as YAML (empty if it has
// none).
func allotSection(file *configfile.File) (string, error) {
	names, err := file.AllotSections()
	if err != nil || len(names) == 0 {
		return "", err
	}
	sections := make(map[string]any, len(names))
	for _, n := range names {
		raw, _, err := file.AllotRaw(n)
		if err != nil {
			return "", err
		}
		var v any
		if err := yaml.Unmarshal(raw, &v); err != nil {
			return "", fmt.Errorf("allot.%s: %w", n, err)
		}
		sections[n] = v
	}
	b, err := yaml.Marshal(map[string]any{"allot": sections})
	if err != nil {
		return "", fmt.Errorf("marshal the allot section: %w", err)
	}
	return string(b), nil
}

// clusterView builds the cluster page's data.
func clusterView(ctx context.Context, rb *rebalancer.Rebalancer, cli *clientv3.Client, ks leases.Keyspace, failovers *web.FailoverLog) (web.Cluster, error) {
	var c web.Cluster
	members, _, err := leases.ListMembers(ctx, cli, ks)
	if err != nil {
		return c, fmt.Errorf("list members: %w", err)
	}
	kind := map[string]string{}
	for _, m := range members {
		kind[m.ID] = m.Kind
	}
	if rb != nil {
		st := rb.Status()
		c.Leader, c.Updated, c.Targets = st.Leader, st.Updated, st.Targets
		c.BalanceRatio, c.ByCountRatio, c.Recommended = st.BalanceRatio, st.ByCountRatio, st.Recommended
		c.PendingMoves, c.QueuedMoves = st.Pending, st.Queued
		for _, s := range st.Scrapers {
			m := web.ClusterMember{ID: s.ID, Kind: kind[s.ID], Addr: s.Addr, Zone: s.Zone, Weight: s.Weight, Draining: s.Draining, Targets: s.Targets, Series: s.Series}
			if s.Load != nil {
				m.SamplesPerSecond, m.ScrapeSecondsPerSecond, m.LoadUpdated = s.Load.SamplesPerSecond, s.Load.ScrapeSecondsPerSecond, s.Load.Updated
			}
			c.Members = append(c.Members, m)
		}
		for _, mv := range st.Moves {
			c.Moves = append(c.Moves, web.ClusterMove{Time: mv.Time, Target: mv.Target, From: mv.From, To: mv.To, Reason: mv.Reason, Duration: mv.Duration, Outcome: mv.Outcome})
		}
	} else {
		// No rebalancer in this process: members and their load reports.
		loads, err := leases.LoadSummaries(ctx, cli, ks)
		if err != nil {
			c.Errors = append(c.Errors, "load reports: "+err.Error())
		}
		for _, m := range members {
			cm := web.ClusterMember{ID: m.ID, Kind: m.Kind, Addr: m.Addr, Zone: m.Zone, Weight: m.Weight}
			if l, ok := loads[m.ID]; ok {
				cm.Targets, cm.Series = l.Targets, float64(l.Series)
				cm.SamplesPerSecond, cm.ScrapeSecondsPerSecond, cm.LoadUpdated = l.SamplesPerSecond, l.ScrapeSecondsPerSecond, l.Updated
			}
			c.Members = append(c.Members, cm)
		}
	}
	if failovers != nil {
		c.Failovers = failovers.Recent()
	}
	return c, nil
}
