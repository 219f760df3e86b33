package promcr

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"strconv"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// probe generates the job probe/<namespace>/<name>: the prober is scraped
// once per probed target, which it gets as the target URL parameter.
func (g *generator) probe(m *monitoringv1.Probe) ([]yaml.MapSlice, error) {
	sc, err := g.class(m.Spec.ScrapeClassName)
	if err != nil {
		return nil, err
	}
	if err := m.Spec.Targets.Validate(); err != nil {
		return nil, invalidf("targets: %w", err)
	}
	if err := validateProberURL(m.Spec.ProberSpec.URL); err != nil {
		return nil, invalidf("prober url %q must be hostname or hostname:port: %w", m.Spec.ProberSpec.URL, err)
	}
	s := store{ns: m.Namespace, g: g.secrets}

	cfg := yaml.MapSlice{item("job_name", fmt.Sprintf("probe/%s/%s", m.Namespace, m.Name))}
	cfg = g.addHonorTimestamps(cfg, new(true))
	path := m.Spec.ProberSpec.Path
	if path == "" {
		path = "/probe" // the CRD's default
	}
	cfg = append(cfg, item("metrics_path", path))
	if cfg, err = addDuration(cfg, "scrape_interval", m.Spec.Interval); err != nil {
		return nil, err
	}
	if cfg, err = addDuration(cfg, "scrape_timeout", m.Spec.ScrapeTimeout); err != nil {
		return nil, err
	}
	if cfg, err = addScheme(cfg, m.Spec.ProberSpec.Scheme); err != nil {
		return nil, err
	}
	var params yaml.MapSlice
	if m.Spec.Module != "" {
		params = append(params, item("module", []string{m.Spec.Module}))
	}
	for _, p := range m.Spec.Params {
		if m.Spec.Module != "" && p.Name == "module" {
			continue
		}
		params = append(params, item(p.Name, p.Values))
	}
	if len(params) > 0 {
		cfg = append(cfg, item("params", params))
	}
	// A Probe has no bodySizeLimit of its own.
	if cfg, err = g.addLimits(cfg, limits{
		sample: m.Spec.SampleLimit, target: m.Spec.TargetLimit, label: m.Spec.LabelLimit,
		labelNameLength: m.Spec.LabelNameLengthLimit, labelValueLength: m.Spec.LabelValueLengthLimit,
		keepDropped: m.Spec.KeepDroppedTargets,
	}); err != nil {
		return nil, err
	}
	cfg = addNativeHistograms(cfg, m.Spec.NativeHistogramConfig)
	cfg = addScrapeProtocols(cfg, m.Spec.ScrapeProtocols, m.Spec.FallbackScrapeProtocol, sc)
	cfg = addOptional(cfg, "extra_scrape_metrics", m.Spec.ExtraScrapeMetrics)
	t, err := s.jobTLS(m.Spec.TLSConfig)
	if err != nil {
		return nil, err
	}
	// The spec's own authorization field hides its HTTPConfig's, which
	// decoding therefore never fills.
	hc := m.Spec.HTTPConfigWithoutTLS
	hc.Authorization = m.Spec.Authorization
	if cfg, err = s.addClient(cfg, &hc, m.Spec.ProberSpec.ProxyConfig, t, sc); err != nil {
		return nil, err
	}

	rel := initRelabelings()
	if m.Spec.JobName != "" {
		rel = append(rel, yaml.MapSlice{item("target_label", "job"), item("replacement", m.Spec.JobName)})
	}

	// A static config wins over an ingress, as the CRD documents.
	switch {
	case m.Spec.Targets.StaticConfig != nil:
		st := m.Spec.Targets.StaticConfig
		for _, k := range sortedKeys(st.Labels) {
			if !model.LabelName(k).IsValid() {
				return nil, invalidf("targets.staticConfig.labels: invalid label %q", k)
			}
		}
		lbls := maps.Clone(st.Labels)
		if lbls == nil {
			lbls = map[string]string{}
		}
		if _, ok := lbls["namespace"]; !ok {
			lbls["namespace"] = m.Namespace
		}
		cfg = append(cfg, item("static_configs", []yaml.MapSlice{{item("targets", st.Targets), item("labels", sortedMap(lbls))}}))
		rel = append(rel,
			yaml.MapSlice{item("source_labels", []string{"__address__"}), item("target_label", "__param_target")},
			yaml.MapSlice{item("source_labels", []string{"__param_target"}), item("target_label", "instance")},
			yaml.MapSlice{item("target_label", "__address__"), item("replacement", m.Spec.ProberSpec.URL)},
		)
		rel = g.endRelabelings(rel, sc, st.RelabelConfigs, m.Namespace)
	case m.Spec.Targets.Ingress != nil:
		ing := m.Spec.Targets.Ingress
		if _, err := metav1.LabelSelectorAsSelector(&ing.Selector); err != nil {
			return nil, invalidf("targets.ingress.selector: %w", err)
		}
		rel = append(rel, selectorRelabelings("__meta_kubernetes_ingress_", ing.Selector)...)
		cfg = append(cfg, g.k8sSD(ing.NamespaceSelector, m.Namespace, "ingress", nil, nil))
		rel = append(rel,
			yaml.MapSlice{
				item("source_labels", []string{"__meta_kubernetes_ingress_scheme", "__address__", "__meta_kubernetes_ingress_path"}),
				item("separator", ";"), item("regex", "(.+);(.+);(.+)"), item("target_label", "__param_target"),
				item("replacement", "${1}://${2}${3}"), item("action", "replace"),
			},
			yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_namespace"}), item("target_label", "namespace")},
			yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_ingress_name"}), item("target_label", "ingress")},
			yaml.MapSlice{
				item("source_labels", []string{"__address__"}), item("separator", ";"), item("regex", "(.*)"),
				item("target_label", "__tmp_ingress_address"), item("replacement", "$1"), item("action", "replace"),
			},
			yaml.MapSlice{item("source_labels", []string{"__param_target"}), item("target_label", "instance")},
			yaml.MapSlice{item("target_label", "__address__"), item("replacement", m.Spec.ProberSpec.URL)},
		)
		rel = g.endRelabelings(rel, sc, ing.RelabelConfigs, m.Namespace)
	}
	cfg = append(cfg, item("relabel_configs", rel))
	cfg = g.addMetricRelabelings(cfg, sc, m.Spec.MetricRelabelConfigs, m.Namespace)
	return []yaml.MapSlice{cfg}, nil
}

var hostnameRE = regexp.MustCompile(`^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$`)

// validateProberURL accepts a host (DNS name or IP) with an optional port.
func validateProberURL(u string) error {
	host, port, err := net.SplitHostPort(u)
	if err != nil {
		host, port = u, ""
	}
	if net.ParseIP(host) == nil && !hostnameRE.MatchString(host) {
		return fmt.Errorf("invalid host %q", host)
	}
	if port != "" {
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return fmt.Errorf("invalid port %q", port)
		}
	}
	return nil
}
