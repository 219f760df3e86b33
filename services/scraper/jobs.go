package scraper

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"go.yaml.in/yaml/v2"

	"github.com/allot-dev/allot/pkg/events"
)

// scrapeConfigYAML turns a catalog job into the scrape_config the scrape
// manager runs: the job's own YAML without what the discoverer already did
// (relabel_configs, static_configs and every *_sd_configs, which would also
// need SD plug-ins this binary may not link), and with job_name forced to
// the catalog's name, which is what targets refer to. Everything else
// (intervals, limits, metric_relabel_configs, auth, ...) stays.
func scrapeConfigYAML(j events.Job) (yaml.MapSlice, error) {
	var in yaml.MapSlice
	if err := yaml.Unmarshal([]byte(j.Config), &in); err != nil {
		return nil, fmt.Errorf("job %q: parse config: %w", j.Name, err)
	}
	out := make(yaml.MapSlice, 0, len(in)+1)
	out = append(out, yaml.MapItem{Key: "job_name", Value: j.Name})
	for _, it := range in {
		k, ok := it.Key.(string)
		if !ok {
			return nil, fmt.Errorf("job %q: config key %v is not a string", j.Name, it.Key)
		}
		switch {
		case k == "job_name", k == "relabel_configs", k == "static_configs", strings.HasSuffix(k, "_sd_configs"):
			continue
		}
		out = append(out, it)
	}
	return out, nil
}

// loadScrapeConfigs loads jobs as one Prometheus config, so that defaults
// and validation apply exactly as in Prometheus. A job Prometheus rejects
// is left out (and reported in bad) rather than failing the others.
func loadScrapeConfigs(jobs map[string]events.Job, logger *slog.Logger) (cfg *config.Config, bad map[string]error) {
	bad = map[string]error{}
	names := make([]string, 0, len(jobs))
	for n := range jobs {
		names = append(names, n)
	}
	slices.Sort(names)
	var good []any
	for _, n := range names {
		sc, err := scrapeConfigYAML(jobs[n])
		if err == nil {
			_, err = loadConfig([]any{sc}, logger)
		}
		if err != nil {
			bad[n] = err
			continue
		}
		good = append(good, sc)
	}
	cfg, err := loadConfig(good, logger)
	if err != nil {
		// Each job loads on its own, so only their combination can fail
		// here; run none rather than guess.
		for _, n := range names {
			if _, ok := bad[n]; !ok {
				bad[n] = err
			}
		}
		cfg, _ = loadConfig(nil, logger)
	}
	return cfg, bad
}

func loadConfig(scrapeConfigs []any, logger *slog.Logger) (*config.Config, error) {
	if scrapeConfigs == nil {
		scrapeConfigs = []any{}
	}
	b, err := yaml.Marshal(yaml.MapSlice{{Key: "scrape_configs", Value: scrapeConfigs}})
	if err != nil {
		return nil, fmt.Errorf("marshal scrape configs: %w", err)
	}
	cfg, err := config.Load(string(b), logger)
	if err != nil {
		return nil, fmt.Errorf("load scrape configs: %w", err)
	}
	return cfg, nil
}

// targetGroup is the one-target group the scrape manager gets for t: its
// final labels plus the reserved id label.
func targetGroup(t events.Target) *targetgroup.Group {
	ls := make(model.LabelSet, len(t.Labels)+1)
	for k, v := range t.Labels {
		ls[model.LabelName(k)] = model.LabelValue(v)
	}
	ls[targetIDLabel] = model.LabelValue(t.ID)
	return &targetgroup.Group{Source: t.ID, Targets: []model.LabelSet{ls}}
}
