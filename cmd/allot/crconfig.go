package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"

	"github.com/allot-dev/allot/pkg/configfile"
	"github.com/allot-dev/allot/pkg/promcr"
	"github.com/allot-dev/allot/services/discoverer"
)

// crOptions are the --prometheus-cr.* flags and the allot.prometheus_cr
// section.
type crOptions struct {
	cfg promcr.Config
}

func (o *crOptions) register(fs *flag.FlagSet) { o.cfg.RegisterFlags(fs) }

// scrapeConfigs is what the discoverer runs: the file's scrape_configs plus
// those generated from Prometheus Operator resources. Either side changes on
// its own (a reload, a CR change); every change applies the union.
type scrapeConfigs struct {
	d *discoverer.Discoverer

	mu   sync.Mutex
	file *config.Config
	cr   []*config.ScrapeConfig
}

func (s *scrapeConfigs) apply() error {
	merged := *s.file
	merged.ScrapeConfigs = append(append([]*config.ScrapeConfig(nil), s.file.ScrapeConfigs...), s.cr...)
	return s.d.ApplyConfig(&merged)
}

// setFile applies a new config file.
func (s *scrapeConfigs) setFile(c *config.Config) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.file = c
	return s.apply()
}

// setCR applies new CR-generated jobs. A job name that the file already
// uses is dropped with a log line: the file wins.
func (s *scrapeConfigs) setCR(jobs []*config.ScrapeConfig, logger *slog.Logger) {
	s.mu.Lock()
	defer s.mu.Unlock()
	taken := map[string]bool{}
	for _, j := range s.file.ScrapeConfigs {
		taken[j.JobName] = true
	}
	s.cr = s.cr[:0]
	for _, j := range jobs {
		if taken[j.JobName] {
			logger.Warn("a Prometheus Operator job has the name of a job in the config file; the file's wins", "job", j.JobName)
			continue
		}
		s.cr = append(s.cr, j)
	}
	if err := s.apply(); err != nil {
		logger.Error("apply Prometheus Operator jobs", "err", err)
	}
}

// startCR runs the Prometheus Operator resource watcher when enabled,
// feeding its jobs into sc.
func (o *crOptions) start(g *group, file *configfile.File, sc *scrapeConfigs, reg prometheus.Registerer, logger *slog.Logger) error {
	if _, err := file.Allot("prometheus_cr", &o.cfg); err != nil {
		return err
	}
	if !o.cfg.Enabled {
		return nil
	}
	if file != nil && file.Prometheus != nil {
		// Generated jobs inherit the file's global settings (intervals,
		// limits), as jobs in the file do.
		o.cfg.Global = &file.Prometheus.GlobalConfig
	}
	if err := o.cfg.Validate(); err != nil {
		return fmt.Errorf("prometheus_cr: %w", err)
	}
	client, dyn, err := promcr.NewClients(o.cfg.KubeconfigFile)
	if err != nil {
		return fmt.Errorf("prometheus_cr: %w", err)
	}
	w := promcr.NewWatcher(o.cfg, client, dyn, logger.With("component", "promcr"), reg)
	g.Go("prometheus-cr watcher", func(ctx context.Context) error {
		return w.Run(ctx, func(jobs []*config.ScrapeConfig) { sc.setCR(jobs, logger) })
	})
	logger.Info("watching Prometheus Operator resources")
	return nil
}
