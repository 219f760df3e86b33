package promcr

import (
	"fmt"
	"strconv"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// podMonitor generates one job per podMetricsEndpoint, named
// podMonitor/<namespace>/<name>/<endpoint index>.
func (g *generator) podMonitor(m *monitoringv1.PodMonitor) ([]yaml.MapSlice, error) {
	if _, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector); err != nil {
		return nil, invalidf("selector: %w", err)
	}
	sc, err := g.class(m.Spec.ScrapeClassName)
	if err != nil {
		return nil, err
	}
	roleSel, byRole, err := roleSelectors(m.Spec.SelectorMechanism, m.Spec.Selector, "pod")
	if err != nil {
		return nil, err
	}
	s := store{ns: m.Namespace, g: g.secrets}
	docs := make([]yaml.MapSlice, 0, len(m.Spec.PodMetricsEndpoints))
	for i, ep := range m.Spec.PodMetricsEndpoints {
		doc, err := g.podMonitorEndpoint(m, ep, i, s, sc, roleSel, byRole)
		if err != nil {
			return nil, fmt.Errorf("podMetricsEndpoints[%d]: %w", i, err)
		}
		docs = append(docs, doc)
	}
	return docs, nil
}

func (g *generator) podMonitorEndpoint(m *monitoringv1.PodMonitor, ep monitoringv1.PodMetricsEndpoint, i int, s store,
	sc *ScrapeClass, roleSel []yaml.MapSlice, byRole bool,
) (yaml.MapSlice, error) {
	if err := ep.HTTPConfigWithProxy.Validate(); err != nil {
		return nil, invalidf("%w", err)
	}
	cfg := yaml.MapSlice{item("job_name", fmt.Sprintf("podMonitor/%s/%s/%d", m.Namespace, m.Name, i))}
	cfg = g.addHonorLabels(cfg, ep.HonorLabels)
	cfg = g.addHonorTimestamps(cfg, ep.HonorTimestamps)
	cfg = addOptional(cfg, "track_timestamps_staleness", ep.TrackTimestampsStaleness)
	cfg = append(cfg, g.k8sSD(m.Spec.NamespaceSelector, m.Namespace, "pod", mergeAttachMetadata(m.Spec.AttachMetadata, sc), roleSel))

	var err error
	if cfg, err = addDuration(cfg, "scrape_interval", ep.Interval); err != nil {
		return nil, err
	}
	if cfg, err = addDuration(cfg, "scrape_timeout", ep.ScrapeTimeout); err != nil {
		return nil, err
	}
	if ep.Path != "" {
		cfg = append(cfg, item("metrics_path", ep.Path))
	}
	if ep.Params != nil {
		cfg = append(cfg, item("params", sortedMap(ep.Params)))
	}
	if cfg, err = addScheme(cfg, ep.Scheme); err != nil {
		return nil, err
	}
	if cfg, err = g.addHTTPConfig(cfg, s, &ep.HTTPConfig, sc); err != nil {
		return nil, err
	}
	//nolint:staticcheck // bearerTokenSecret is deprecated but still honoured.
	if ep.BearerTokenSecret != nil && ep.BearerTokenSecret.Name != "" {
		tok, err := s.secret(*ep.BearerTokenSecret)
		if err != nil {
			return nil, fmt.Errorf("bearerTokenSecret: %w", err)
		}
		cfg = append(cfg, item("bearer_token", tok))
	}
	if cfg, err = s.addBasicAuth(cfg, ep.BasicAuth); err != nil {
		return nil, err
	}
	if cfg, err = s.addOAuth2(cfg, ep.OAuth2); err != nil {
		return nil, err
	}
	if cfg, err = s.addProxy(cfg, ep.ProxyConfig); err != nil {
		return nil, err
	}
	a, err := s.safeAuthz(ep.Authorization)
	if err != nil {
		return nil, err
	}
	cfg = addAuthz(cfg, mergeAuthz(a, sc))

	rel := initRelabelings()
	if ep.FilterRunning == nil || *ep.FilterRunning {
		rel = append(rel, runningFilter())
	}
	if !byRole {
		rel = append(rel, selectorRelabelings("__meta_kubernetes_pod_", m.Spec.Selector)...)
	}
	//nolint:staticcheck // targetPort is deprecated but still honoured.
	switch {
	case ep.Port != nil && *ep.Port != "":
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{"__meta_kubernetes_pod_container_port_name"}), item("regex", *ep.Port)})
	case ep.PortNumber != nil && *ep.PortNumber != 0:
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{"__meta_kubernetes_pod_container_port_number"}), item("regex", strconv.Itoa(int(*ep.PortNumber)))})
	case ep.TargetPort != nil && ep.TargetPort.StrVal != "":
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{"__meta_kubernetes_pod_container_port_name"}), item("regex", ep.TargetPort.String())})
	case ep.TargetPort != nil && ep.TargetPort.IntVal != 0:
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{"__meta_kubernetes_pod_container_port_number"}), item("regex", strconv.Itoa(ep.TargetPort.IntValue()))})
	}
	rel = append(rel,
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_namespace"}), item("target_label", "namespace")},
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_pod_container_name"}), item("target_label", "container")},
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_pod_name"}), item("target_label", "pod")},
	)
	rel = append(rel, copyLabels("__meta_kubernetes_pod_label_", append(append([]string(nil), m.Spec.PodTargetLabels...), g.cfg.PodTargetLabels...))...)
	// The job is <namespace>/<name> unless jobLabel names a pod label that
	// has a value.
	rel = append(rel, yaml.MapSlice{item("target_label", "job"), item("replacement", m.Namespace+"/"+m.Name)})
	if m.Spec.JobLabel != "" {
		rel = append(rel, yaml.MapSlice{
			item("source_labels", []string{"__meta_kubernetes_pod_label_" + sanitizeLabelName(m.Spec.JobLabel)}),
			item("target_label", "job"), item("regex", "(.+)"), item("replacement", "${1}"),
		})
	}
	switch {
	case ep.Port != nil && *ep.Port != "":
		rel = append(rel, yaml.MapSlice{item("target_label", "endpoint"), item("replacement", *ep.Port)})
	case ep.TargetPort != nil && ep.TargetPort.String() != "":
		rel = append(rel, yaml.MapSlice{item("target_label", "endpoint"), item("replacement", ep.TargetPort.String())})
	}
	rel = append(rel, classRelabelings(sc.RelabelConfigs)...)
	rel = append(rel, relabelings(ep.RelabelConfigs)...)
	rel = g.enforceNamespace(rel, m.Namespace)
	cfg = append(cfg, item("relabel_configs", rel))

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
	if cfg, err = g.addBodySizeLimit(cfg, m.Spec.BodySizeLimit); err != nil {
		return nil, err
	}
	cfg = g.addMetricRelabelings(cfg, sc, ep.MetricRelabelConfigs, m.Namespace)
	return cfg, nil
}

// addHTTPConfig writes follow_redirects, enable_http2 and the TLS
// configuration merged with the scrape class.
func (g *generator) addHTTPConfig(cfg yaml.MapSlice, s store, hc *monitoringv1.HTTPConfig, sc *ScrapeClass) (yaml.MapSlice, error) {
	cfg = addOptional(cfg, "follow_redirects", hc.FollowRedirects)
	cfg = addOptional(cfg, "enable_http2", hc.EnableHTTP2)
	t, err := s.safeTLS(hc.TLSConfig)
	if err != nil {
		return nil, err
	}
	if t.isZero() {
		t = nil
	}
	return addTLS(cfg, mergeTLS(t, sc)), nil
}
