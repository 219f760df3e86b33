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
	return endpointJobs("podMetricsEndpoints", m.Spec.PodMetricsEndpoints, func(i int, ep monitoringv1.PodMetricsEndpoint) (yaml.MapSlice, error) {
		return g.podMonitorEndpoint(m, ep, i, s, sc, roleSel, byRole)
	})
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
	if cfg, err = addEndpointScrape(cfg, ep.Interval, ep.ScrapeTimeout, ep.Path, ep.Params, ep.Scheme); err != nil {
		return nil, err
	}
	t, err := s.jobTLS(ep.TLSConfig)
	if err != nil {
		return nil, err
	}
	if cfg, err = s.addClient(cfg, &ep.HTTPConfigWithoutTLS, ep.ProxyConfig, t, sc); err != nil {
		return nil, err
	}

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
	rel = append(rel, endpointLabel(ep.Port, ep.TargetPort)...)
	rel = g.endRelabelings(rel, sc, ep.RelabelConfigs, m.Namespace)
	cfg = append(cfg, item("relabel_configs", rel))

	if cfg, err = g.addLimits(cfg, limits{
		sample: m.Spec.SampleLimit, target: m.Spec.TargetLimit, label: m.Spec.LabelLimit,
		labelNameLength: m.Spec.LabelNameLengthLimit, labelValueLength: m.Spec.LabelValueLengthLimit,
		keepDropped: m.Spec.KeepDroppedTargets, bodySize: m.Spec.BodySizeLimit,
	}); err != nil {
		return nil, err
	}
	cfg = addNativeHistograms(cfg, m.Spec.NativeHistogramConfig)
	cfg = addScrapeProtocols(cfg, m.Spec.ScrapeProtocols, m.Spec.FallbackScrapeProtocol, sc)
	cfg = addOptional(cfg, "extra_scrape_metrics", m.Spec.ExtraScrapeMetrics)
	cfg = g.addMetricRelabelings(cfg, sc, ep.MetricRelabelConfigs, m.Namespace)
	return cfg, nil
}
