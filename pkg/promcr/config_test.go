package promcr

import (
	"flag"
	"strings"
	"testing"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/allot-dev/allot/pkg/configfile"
)

func defaultConfig(t *testing.T, args ...string) Config {
	t.Helper()
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.RegisterFlags(fs)
	require.NoError(t, fs.Parse(args))
	return c
}

func TestFlags(t *testing.T) {
	c := defaultConfig(t)
	require.False(t, c.Enabled)
	require.Equal(t, model.Duration(30*time.Second), c.ScrapeInterval)
	require.Equal(t, model.Duration(10*time.Second), c.ScrapeTimeout)
	require.Equal(t, "endpoints", c.ServiceDiscoveryRole)
	require.Equal(t, time.Minute, c.RefreshInterval)
	require.Nil(t, c.ServiceMonitorSelector)
	require.Nil(t, c.EnforcedSampleLimit)

	c = defaultConfig(t,
		"--prometheus-cr.enabled",
		"--prometheus-cr.service-monitor-selector=team=a,tier in (x,y)",
		"--prometheus-cr.namespace-selector=monitoring",
		"--prometheus-cr.scrape-interval=1m",
		"--prometheus-cr.enforced-sample-limit=5000",
		"--prometheus-cr.enforced-target-limit=0",
		"--prometheus-cr.override-honor-labels",
	)
	require.True(t, c.Enabled)
	require.Equal(t, map[string]string{"team": "a"}, c.ServiceMonitorSelector.MatchLabels)
	require.Equal(t, []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"x", "y"}}},
		c.ServiceMonitorSelector.MatchExpressions)
	require.Len(t, c.NamespaceSelector.MatchExpressions, 1)
	require.Equal(t, "monitoring", c.NamespaceSelector.MatchExpressions[0].Key)
	require.Equal(t, metav1.LabelSelectorOpExists, c.NamespaceSelector.MatchExpressions[0].Operator)
	require.Equal(t, model.Duration(time.Minute), c.ScrapeInterval)
	require.Equal(t, uint64(5000), *c.EnforcedSampleLimit)
	require.Nil(t, c.EnforcedTargetLimit)
	require.True(t, c.OverrideHonorLabels)
	require.NoError(t, c.Validate())

	var bad Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	bad.RegisterFlags(fs)
	require.Error(t, fs.Parse([]string{"--prometheus-cr.pod-monitor-selector=a in b"}))
	require.Error(t, fs.Parse([]string{"--prometheus-cr.enforced-label-limit=-1"}))
}

// TestFileSection decodes the section through pkg/configfile, as the
// binary does: file values override flag defaults, absent ones keep them.
func TestFileSection(t *testing.T) {
	file := `
scrape_configs: []
allot:
  prometheus_cr:
    enabled: true
    service_monitor_selector:
      matchLabels: {prometheus: main}
      matchExpressions:
      - {key: tier, operator: NotIn, values: [test]}
    namespace_selector: {}
    scrape_timeout: 5s
    enforced_label_limit: 30
    scrape_classes:
    - name: tls
      default: true
      tls_config: {ca_file: /ca.crt}
      relabel_configs:
      - {source_labels: [a], target_label: b}
`
	f, err := configfile.Parse([]byte(file), nil)
	require.NoError(t, err)
	c := defaultConfig(t, "--prometheus-cr.scrape-interval=20s")
	ok, err := f.Allot("prometheus_cr", &c)
	require.NoError(t, err)
	require.True(t, ok)
	require.True(t, c.Enabled)
	require.Equal(t, map[string]string{"prometheus": "main"}, c.ServiceMonitorSelector.MatchLabels)
	require.Len(t, c.ServiceMonitorSelector.MatchExpressions, 1)
	require.Equal(t, &metav1.LabelSelector{}, c.NamespaceSelector, "an empty selector is kept (it selects all)")
	require.Nil(t, c.PodMonitorSelector)
	require.Equal(t, model.Duration(20*time.Second), c.ScrapeInterval, "the flag value stays when the file does not set it")
	require.Equal(t, model.Duration(5*time.Second), c.ScrapeTimeout)
	require.Equal(t, uint64(30), *c.EnforcedLabelLimit)
	require.Equal(t, "/ca.crt", c.ScrapeClasses[0].TLSConfig.CAFile)
	require.Equal(t, "b", c.ScrapeClasses[0].RelabelConfigs[0].TargetLabel)
	require.NoError(t, c.Validate())

	// Marshalled and decoded again, it is the same.
	b, err := yaml.Marshal(c)
	require.NoError(t, err)
	var again Config
	require.NoError(t, yaml.Unmarshal(b, &again))
	require.Equal(t, c.ServiceMonitorSelector, again.ServiceMonitorSelector)
	require.Equal(t, c.NamespaceSelector, again.NamespaceSelector)
	require.Equal(t, c.ScrapeTimeout, again.ScrapeTimeout)
	require.Equal(t, c.EnforcedLabelLimit, again.EnforcedLabelLimit)
}

func TestFileSectionErrors(t *testing.T) {
	for _, tc := range []struct {
		name, section, want string
	}{
		// Lines are counted from the section's first line, which
		// configfile names.
		{"unknown field", "enabled: true\n    scrape_intervall: 1m", "(line 5): yaml: unmarshal errors:\n  line 2: field scrape_intervall not found"},
		{"unknown field in a scrape class", "scrape_classes:\n    - name: x\n      tls: {}", "line 3: field tls not found"},
		{"unknown field in a selector", "probe_selector:\n      matchLabel: {a: b}", `unknown field "matchLabel"`},
		{"bad duration", "scrape_timeout: soon", "soon"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := configfile.Parse([]byte("scrape_configs: []\nallot:\n  other: 1\n  prometheus_cr:\n    "+tc.section+"\n"), nil)
			require.NoError(t, err)
			c := defaultConfig(t)
			_, err = f.Allot("prometheus_cr", &c)
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := defaultConfig(t, "--prometheus-cr.enabled")
		return c
	}
	require.NoError(t, valid().Validate())
	require.NoError(t, Config{}.Validate(), "a disabled config is valid")
	require.NoError(t, Config{Enabled: true}.Validate(), "zero durations stand for the defaults")

	for _, tc := range []struct {
		name   string
		modify func(*Config)
		want   string
	}{
		{"timeout over interval", func(c *Config) { c.ScrapeTimeout = model.Duration(time.Minute) }, "greater than scrape_interval"},
		{"bad selector", func(c *Config) {
			c.ProbeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}
		}, "probe_selector"},
		{"bad namespace label", func(c *Config) { c.EnforcedNamespaceLabel = "\xff" }, "enforced_namespace_label"},
		{"bad body size", func(c *Config) { c.EnforcedBodySizeLimit = "lots" }, "enforced_body_size_limit"},
		{"bad role", func(c *Config) { c.ServiceDiscoveryRole = "pods" }, "service_discovery_role"},
		{"unnamed class", func(c *Config) { c.ScrapeClasses = []ScrapeClass{{}} }, "name is empty"},
		{"duplicate class", func(c *Config) { c.ScrapeClasses = []ScrapeClass{{Name: "a"}, {Name: "a"}} }, "used twice"},
		{"two defaults", func(c *Config) {
			c.ScrapeClasses = []ScrapeClass{{Name: "a", Default: true}, {Name: "b", Default: true}}
		}, "more than one default"},
		{"secret manager refs", func(c *Config) {
			c.ScrapeClasses = []ScrapeClass{{Name: "a", TLSConfig: &commoncfg.TLSConfig{CARef: "vault"}}}
		}, "not supported"},
		{"bad fallback protocol", func(c *Config) {
			c.ScrapeClasses = []ScrapeClass{{Name: "a", FallbackScrapeProtocol: "text/html"}}
		}, "fallback_scrape_protocol"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.modify(&c)
			require.ErrorContains(t, c.Validate(), tc.want)
		})
	}
}
