package scraper

import (
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
)

func TestLoadScrapeConfigs(t *testing.T) {
	t.Parallel()
	good := events.NewJob("node", `
job_name: ignored-name
scrape_interval: 7s
scrape_timeout: 3s
metrics_path: /m
static_configs: [{targets: ["a:1"]}]
kubernetes_sd_configs: [{role: pod}]
file_sd_configs: [{files: [x.json]}]
relabel_configs:
- {action: drop, source_labels: [__address__], regex: .*}
metric_relabel_configs:
- {action: drop, source_labels: [__name__], regex: go_.*}
`)
	bad := events.NewJob("bad", "scrape_interval: 1s\nscrape_timeout: 5s\n")
	garbage := events.NewJob("garbage", "{{{")
	unknown := events.NewJob("unknown", "no_such_option: true\n")

	cfg, errs := loadScrapeConfigs(map[string]events.Job{
		"node": good, "bad": bad, "garbage": garbage, "unknown": unknown,
	}, nil)
	require.Len(t, cfg.ScrapeConfigs, 1)
	require.ElementsMatch(t, []string{"bad", "garbage", "unknown"}, keys(errs))

	sc := cfg.ScrapeConfigs[0]
	require.Equal(t, "node", sc.JobName, "job_name is the catalog's")
	require.Equal(t, model.Duration(7*time.Second), sc.ScrapeInterval)
	require.Equal(t, model.Duration(3*time.Second), sc.ScrapeTimeout)
	require.Equal(t, "/m", sc.MetricsPath)
	require.Empty(t, sc.RelabelConfigs, "the discoverer applied them already")
	require.Empty(t, sc.ServiceDiscoveryConfigs, "scrapers do not discover")
	require.Len(t, sc.MetricRelabelConfigs, 1, "metric relabelling is the scraper's job")
	// Defaults apply as in Prometheus.
	require.Equal(t, "http", sc.Scheme)
	require.True(t, sc.HonorTimestamps)
}

func TestLoadScrapeConfigsEmpty(t *testing.T) {
	t.Parallel()
	cfg, errs := loadScrapeConfigs(nil, nil)
	require.Empty(t, errs)
	require.Empty(t, cfg.ScrapeConfigs)
	scs, err := cfg.GetScrapeConfigs()
	require.NoError(t, err)
	require.Empty(t, scs)
}

func TestTargetGroup(t *testing.T) {
	t.Parallel()
	tg := events.NewTarget("node", map[string]string{"__address__": "h:1", "env": "prod"}, "x")
	g := targetGroup(tg)
	require.Equal(t, tg.ID, g.Source)
	require.Equal(t, model.LabelSet{"__address__": "h:1", "env": "prod", targetIDLabel: model.LabelValue(tg.ID)}, g.Targets[0])
	require.NotContains(t, tg.Labels, targetIDLabel, "the event is not modified")
}

func TestRetireFor(t *testing.T) {
	t.Parallel()
	require.Equal(t, 8*time.Second, retireFor(events.Target{Labels: map[string]string{"__scrape_interval__": "1s"}}))
	require.Equal(t, 3*time.Minute+5*time.Second, retireFor(events.Target{Labels: map[string]string{}}))
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
