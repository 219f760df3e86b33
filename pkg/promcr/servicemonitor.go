package promcr

import (
	"errors"
	"fmt"
	"strconv"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// serviceMonitor generates one job per endpoint, named
// serviceMonitor/<namespace>/<name>/<endpoint index>.
func (g *generator) serviceMonitor(m *monitoringv1.ServiceMonitor) ([]yaml.MapSlice, error) {
	if _, err := metav1.LabelSelectorAsSelector(&m.Spec.Selector); err != nil {
		return nil, invalidf("selector: %w", err)
	}
	sc, err := g.class(m.Spec.ScrapeClassName)
	if err != nil {
		return nil, err
	}
	role := g.cfg.ServiceDiscoveryRole
	if m.Spec.ServiceDiscoveryRole != nil {
		switch *m.Spec.ServiceDiscoveryRole {
		case monitoringv1.EndpointsRole:
			role = "endpoints"
		case monitoringv1.EndpointSliceRole:
			role = "endpointslice"
		default:
			return nil, invalidf("serviceDiscoveryRole %q is neither Endpoints nor EndpointSlice", *m.Spec.ServiceDiscoveryRole)
		}
	}
	roleSel, byRole, err := roleSelectors(m.Spec.SelectorMechanism, m.Spec.Selector, role, "service")
	if err != nil {
		return nil, err
	}
	s := store{ns: m.Namespace, g: g.secrets}
	return endpointJobs("endpoints", m.Spec.Endpoints, func(i int, ep monitoringv1.Endpoint) (yaml.MapSlice, error) {
		return g.serviceMonitorEndpoint(m, ep, i, s, sc, role, roleSel, byRole)
	})
}

func (g *generator) serviceMonitorEndpoint(m *monitoringv1.ServiceMonitor, ep monitoringv1.Endpoint, i int, s store,
	sc *ScrapeClass, role string, roleSel []yaml.MapSlice, byRole bool,
) (yaml.MapSlice, error) {
	if g.cfg.DenyFileAccess {
		//nolint:staticcheck // bearerTokenFile is deprecated but still honoured.
		if ep.BearerTokenFile != "" {
			return nil, &skipError{CauseFileAccess, errors.New("bearerTokenFile reads a file on the scraper, denied by deny_file_access")}
		}
		if t := ep.TLSConfig; t != nil && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "") {
			return nil, &skipError{CauseFileAccess, errors.New("tlsConfig reads files on the scraper, denied by deny_file_access")}
		}
	}
	if err := ep.HTTPConfigWithProxyAndTLSFiles.Validate(); err != nil {
		return nil, invalidf("%w", err)
	}

	cfg := yaml.MapSlice{item("job_name", fmt.Sprintf("serviceMonitor/%s/%s/%d", m.Namespace, m.Name, i))}
	cfg = g.addHonorLabels(cfg, ep.HonorLabels)
	cfg = g.addHonorTimestamps(cfg, ep.HonorTimestamps)
	cfg = addOptional(cfg, "track_timestamps_staleness", ep.TrackTimestampsStaleness)
	cfg = append(cfg, g.k8sSD(m.Spec.NamespaceSelector, m.Namespace, role, mergeAttachMetadata(m.Spec.AttachMetadata, sc), roleSel))

	var err error
	if cfg, err = addEndpointScrape(cfg, ep.Interval, ep.ScrapeTimeout, ep.Path, ep.Params, ep.Scheme); err != nil {
		return nil, err
	}
	t, err := s.fileTLS(ep.TLSConfig)
	if err != nil {
		return nil, err
	}
	if cfg, err = s.addClient(cfg, &ep.HTTPConfigWithoutTLS, ep.ProxyConfig, t, sc); err != nil {
		return nil, err
	}
	//nolint:staticcheck // bearerTokenFile is deprecated but still honoured.
	if ep.BearerTokenFile != "" {
		cfg = append(cfg, item("bearer_token_file", ep.BearerTokenFile))
	}

	rel := initRelabelings()
	if !byRole {
		rel = append(rel, selectorRelabelings("__meta_kubernetes_service_", m.Spec.Selector)...)
	}
	switch {
	case ep.Port != "":
		src := "__meta_kubernetes_endpoint_port_name"
		if role == "endpointslice" {
			src = "__meta_kubernetes_endpointslice_port_name"
		}
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{src}), item("regex", ep.Port)})
	case ep.TargetPort != nil && ep.TargetPort.StrVal != "":
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{"__meta_kubernetes_pod_container_port_name"}), item("regex", ep.TargetPort.String())})
	case ep.TargetPort != nil && ep.TargetPort.IntVal != 0:
		rel = append(rel, yaml.MapSlice{item("action", "keep"), item("source_labels", []string{"__meta_kubernetes_pod_container_port_number"}), item("regex", strconv.Itoa(ep.TargetPort.IntValue()))})
	}
	target := []string{"__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"}
	if role == "endpointslice" {
		target = []string{"__meta_kubernetes_endpointslice_address_target_kind", "__meta_kubernetes_endpointslice_address_target_name"}
	}
	rel = append(rel,
		yaml.MapSlice{item("source_labels", target), item("separator", ";"), item("regex", "Node;(.*)"), item("replacement", "${1}"), item("target_label", "node")},
		yaml.MapSlice{item("source_labels", target), item("separator", ";"), item("regex", "Pod;(.*)"), item("replacement", "${1}"), item("target_label", "pod")},
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_namespace"}), item("target_label", "namespace")},
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_service_name"}), item("target_label", "service")},
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_pod_name"}), item("target_label", "pod")},
		yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_pod_container_name"}), item("target_label", "container")},
	)
	if ep.FilterRunning == nil || *ep.FilterRunning {
		rel = append(rel, runningFilter())
	}
	rel = append(rel, copyLabels("__meta_kubernetes_service_label_", m.Spec.TargetLabels)...)
	rel = append(rel, copyLabels("__meta_kubernetes_pod_label_", append(append([]string(nil), m.Spec.PodTargetLabels...), g.cfg.PodTargetLabels...))...)
	// The job is the service's name unless jobLabel names a service label
	// that has a value.
	rel = append(rel, yaml.MapSlice{item("source_labels", []string{"__meta_kubernetes_service_name"}), item("target_label", "job"), item("replacement", "${1}")})
	if m.Spec.JobLabel != "" {
		rel = append(rel, yaml.MapSlice{
			item("source_labels", []string{"__meta_kubernetes_service_label_" + sanitizeLabelName(m.Spec.JobLabel)}),
			item("target_label", "job"), item("regex", "(.+)"), item("replacement", "${1}"),
		})
	}
	rel = append(rel, endpointLabel(&ep.Port, ep.TargetPort)...)
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
