package promcr

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/alecthomas/units"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The pieces of a job that every kind shares, written as Prometheus
// Operator writes them (pkg/prometheus/promcfg.go), so that a job reads the
// same here as in a Prometheus the operator configures.

var invalidLabelCharRE = regexp.MustCompile(`[^a-zA-Z0-9_]`)

func sanitizeLabelName(name string) string {
	return invalidLabelCharRE.ReplaceAllString(name, "_")
}

// initRelabelings keeps the job name a target was discovered under.
func initRelabelings() []any {
	return []any{yaml.MapSlice{
		item("source_labels", []string{"job"}),
		item("target_label", "__tmp_prometheus_job_name"),
	}}
}

// relabelings writes a CR's relabel configs; unset fields take
// Prometheus's defaults.
func relabelings(rcs []monitoringv1.RelabelConfig) []any {
	out := make([]any, 0, len(rcs))
	for _, c := range rcs {
		var m yaml.MapSlice
		if len(c.SourceLabels) > 0 {
			ls := make([]string, len(c.SourceLabels))
			for i, l := range c.SourceLabels {
				ls[i] = string(l)
			}
			m = append(m, item("source_labels", ls))
		}
		if c.Separator != nil {
			m = append(m, item("separator", *c.Separator))
		}
		if c.TargetLabel != "" {
			m = append(m, item("target_label", c.TargetLabel))
		}
		if c.Regex != "" {
			m = append(m, item("regex", c.Regex))
		}
		if c.Modulus != 0 {
			m = append(m, item("modulus", c.Modulus))
		}
		if c.Replacement != nil {
			m = append(m, item("replacement", *c.Replacement))
		}
		if c.Action != "" {
			m = append(m, item("action", strings.ToLower(c.Action)))
		}
		out = append(out, m)
	}
	return out
}

// classRelabelings are the scrape class's, already in Prometheus syntax.
func classRelabelings[T any](rcs []*T) []any {
	out := make([]any, 0, len(rcs))
	for _, rc := range rcs {
		out = append(out, rc)
	}
	return out
}

// enforceNamespace appends the enforced namespace label, last so that no
// relabeling of the CR can change it.
func (g *generator) enforceNamespace(rcs []any, ns string) []any {
	if g.cfg.EnforcedNamespaceLabel == "" {
		return rcs
	}
	return append(rcs, yaml.MapSlice{
		item("target_label", g.cfg.EnforcedNamespaceLabel),
		item("replacement", ns),
	})
}

// endRelabelings appends what every job's relabelings end with: the
// class's, the CR's, then the enforced namespace label.
func (g *generator) endRelabelings(rel []any, sc *ScrapeClass, rcs []monitoringv1.RelabelConfig, ns string) []any {
	rel = append(rel, classRelabelings(sc.RelabelConfigs)...)
	rel = append(rel, relabelings(rcs)...)
	return g.enforceNamespace(rel, ns)
}

// metricRelabelings are the class's, the CR's, then the enforced namespace
// label; nil when there are none.
func (g *generator) addMetricRelabelings(cfg yaml.MapSlice, sc *ScrapeClass, rcs []monitoringv1.RelabelConfig, ns string) yaml.MapSlice {
	all := classRelabelings(sc.MetricRelabelConfigs)
	all = append(all, relabelings(rcs)...)
	all = g.enforceNamespace(all, ns)
	if len(all) == 0 {
		return cfg
	}
	return append(cfg, item("metric_relabel_configs", all))
}

// selectorRelabelings keep the targets whose object (service, pod,
// ingress: prefix is its meta label prefix) matches sel.
func selectorRelabelings(prefix string, sel metav1.LabelSelector) []any {
	var out []any
	for _, k := range sortedKeys(sel.MatchLabels) {
		out = append(out, yaml.MapSlice{
			item("action", "keep"),
			item("source_labels", []string{prefix + "label_" + sanitizeLabelName(k), prefix + "labelpresent_" + sanitizeLabelName(k)}),
			item("regex", fmt.Sprintf("(%s);true", sel.MatchLabels[k])),
		})
	}
	for _, exp := range sel.MatchExpressions {
		switch exp.Operator {
		case metav1.LabelSelectorOpIn:
			out = append(out, yaml.MapSlice{
				item("action", "keep"),
				item("source_labels", []string{prefix + "label_" + sanitizeLabelName(exp.Key), prefix + "labelpresent_" + sanitizeLabelName(exp.Key)}),
				item("regex", fmt.Sprintf("(%s);true", strings.Join(exp.Values, "|"))),
			})
		case metav1.LabelSelectorOpNotIn:
			out = append(out, yaml.MapSlice{
				item("action", "drop"),
				item("source_labels", []string{prefix + "label_" + sanitizeLabelName(exp.Key), prefix + "labelpresent_" + sanitizeLabelName(exp.Key)}),
				item("regex", fmt.Sprintf("(%s);true", strings.Join(exp.Values, "|"))),
			})
		case metav1.LabelSelectorOpExists:
			out = append(out, yaml.MapSlice{
				item("action", "keep"),
				item("source_labels", []string{prefix + "labelpresent_" + sanitizeLabelName(exp.Key)}),
				item("regex", "true"),
			})
		case metav1.LabelSelectorOpDoesNotExist:
			out = append(out, yaml.MapSlice{
				item("action", "drop"),
				item("source_labels", []string{prefix + "labelpresent_" + sanitizeLabelName(exp.Key)}),
				item("regex", "true"),
			})
		}
	}
	return out
}

func runningFilter() yaml.MapSlice {
	return yaml.MapSlice{
		item("action", "drop"),
		item("source_labels", []string{"__meta_kubernetes_pod_phase"}),
		item("regex", "(Failed|Succeeded)"),
	}
}

// copyLabels copies object labels (service, pod) onto the target when set.
func copyLabels(prefix string, names []string) []any {
	out := make([]any, 0, len(names))
	for _, l := range names {
		out = append(out, yaml.MapSlice{
			item("source_labels", []string{prefix + sanitizeLabelName(l)}),
			item("target_label", sanitizeLabelName(l)),
			item("regex", "(.+)"),
			item("replacement", "${1}"),
		})
	}
	return out
}

func (g *generator) addHonorLabels(cfg yaml.MapSlice, honor bool) yaml.MapSlice {
	return append(cfg, item("honor_labels", honor && !g.cfg.OverrideHonorLabels))
}

func (g *generator) addHonorTimestamps(cfg yaml.MapSlice, honor *bool) yaml.MapSlice {
	if honor == nil && !g.cfg.OverrideHonorTimestamps {
		return cfg
	}
	return append(cfg, item("honor_timestamps", honor != nil && *honor && !g.cfg.OverrideHonorTimestamps))
}

func addOptional[T any](cfg yaml.MapSlice, key string, v *T) yaml.MapSlice {
	if v == nil {
		return cfg
	}
	return append(cfg, item(key, *v))
}

// limits is what every kind has of the scrape limits.
type limits struct {
	sample, target, label, labelNameLength, labelValueLength, keepDropped *int64
	bodySize                                                              *monitoringv1.ByteSize
}

// addLimits writes the CR's limits capped by the enforced ones: a CR
// without a limit gets the enforced one, a higher one is lowered to it.
func (g *generator) addLimits(cfg yaml.MapSlice, l limits) (yaml.MapSlice, error) {
	for _, x := range []struct {
		key      string
		user     *int64
		enforced *uint64
	}{
		{"sample_limit", l.sample, g.cfg.EnforcedSampleLimit},
		{"target_limit", l.target, g.cfg.EnforcedTargetLimit},
		{"label_limit", l.label, g.cfg.EnforcedLabelLimit},
		{"label_name_length_limit", l.labelNameLength, g.cfg.EnforcedLabelNameLengthLimit},
		{"label_value_length_limit", l.labelValueLength, g.cfg.EnforcedLabelValueLengthLimit},
		{"keep_dropped_targets", l.keepDropped, g.cfg.EnforcedKeepDroppedTargets},
	} {
		if x.user != nil && *x.user < 0 {
			return nil, invalidf("%s: negative limit %d", x.key, *x.user)
		}
		var user, enforced uint64
		if x.user != nil {
			user = uint64(*x.user)
		}
		if x.enforced != nil {
			enforced = *x.enforced
		}
		switch {
		case enforced == 0 && x.user != nil:
			cfg = append(cfg, item(x.key, user))
		case enforced == 0:
		case user == 0 || user > enforced:
			cfg = append(cfg, item(x.key, enforced))
		default:
			cfg = append(cfg, item(x.key, user))
		}
	}
	return g.addBodySizeLimit(cfg, l.bodySize)
}

// addBodySizeLimit writes the lower of the CR's and the enforced limit.
func (g *generator) addBodySizeLimit(cfg yaml.MapSlice, v *monitoringv1.ByteSize) (yaml.MapSlice, error) {
	if v.IsEmpty() {
		if g.bodySize > 0 {
			return append(cfg, item("body_size_limit", g.cfg.EnforcedBodySizeLimit)), nil
		}
		return cfg, nil
	}
	b, err := units.ParseBase2Bytes(string(*v))
	if err != nil {
		return nil, invalidf("bodySizeLimit %q: %w", *v, err)
	}
	if g.bodySize > 0 && b > g.bodySize {
		return append(cfg, item("body_size_limit", g.cfg.EnforcedBodySizeLimit)), nil
	}
	return append(cfg, item("body_size_limit", string(*v))), nil
}

func addNativeHistograms(cfg yaml.MapSlice, nhc monitoringv1.NativeHistogramConfig) yaml.MapSlice {
	cfg = addOptional(cfg, "scrape_native_histograms", nhc.ScrapeNativeHistograms)
	cfg = addOptional(cfg, "native_histogram_bucket_limit", nhc.NativeHistogramBucketLimit)
	if nhc.NativeHistogramMinBucketFactor != nil {
		cfg = append(cfg, item("native_histogram_min_bucket_factor", nhc.NativeHistogramMinBucketFactor.AsApproximateFloat64()))
	}
	cfg = addOptional(cfg, "always_scrape_classic_histograms", nhc.ScrapeClassicHistograms)
	cfg = addOptional(cfg, "convert_classic_histograms_to_nhcb", nhc.ConvertClassicHistogramsToNHCB)
	return cfg
}

func addScrapeProtocols(cfg yaml.MapSlice, ps []monitoringv1.ScrapeProtocol, fallback *monitoringv1.ScrapeProtocol, sc *ScrapeClass) yaml.MapSlice {
	if len(ps) > 0 {
		s := make([]string, len(ps))
		for i, p := range ps {
			s[i] = string(p)
		}
		cfg = append(cfg, item("scrape_protocols", s))
	}
	switch {
	case fallback != nil:
		cfg = append(cfg, item("fallback_scrape_protocol", string(*fallback)))
	case sc.FallbackScrapeProtocol != "":
		cfg = append(cfg, item("fallback_scrape_protocol", string(sc.FallbackScrapeProtocol)))
	}
	return cfg
}

func addDuration(cfg yaml.MapSlice, key string, d monitoringv1.Duration) (yaml.MapSlice, error) {
	if d == "" {
		return cfg, nil
	}
	if _, err := model.ParseDuration(string(d)); err != nil {
		return nil, invalidf("%s: %w", key, err)
	}
	return append(cfg, item(key, string(d))), nil
}

func addScheme(cfg yaml.MapSlice, s *monitoringv1.Scheme) (yaml.MapSlice, error) {
	if s == nil {
		return cfg, nil
	}
	switch v := s.String(); v {
	case "http", "https":
		return append(cfg, item("scheme", v)), nil
	default:
		return nil, invalidf("scheme %q is neither HTTP nor HTTPS", string(*s))
	}
}

// addEndpointScrape writes how a monitor's endpoint is scraped: interval,
// timeout, path, params and scheme.
func addEndpointScrape(cfg yaml.MapSlice, interval, timeout monitoringv1.Duration, path string, params map[string][]string, scheme *monitoringv1.Scheme) (yaml.MapSlice, error) {
	var err error
	if cfg, err = addDuration(cfg, "scrape_interval", interval); err != nil {
		return nil, err
	}
	if cfg, err = addDuration(cfg, "scrape_timeout", timeout); err != nil {
		return nil, err
	}
	if path != "" {
		cfg = append(cfg, item("metrics_path", path))
	}
	if params != nil {
		cfg = append(cfg, item("params", sortedMap(params)))
	}
	return addScheme(cfg, scheme)
}

// endpointJobs generates a monitor's job for each of its endpoints, listed
// in its spec under field; an error names the endpoint.
func endpointJobs[E any](field string, eps []E, job func(i int, ep E) (yaml.MapSlice, error)) ([]yaml.MapSlice, error) {
	docs := make([]yaml.MapSlice, 0, len(eps))
	for i, ep := range eps {
		doc, err := job(i, ep)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", field, i, err)
		}
		docs = append(docs, doc)
	}
	return docs, nil
}

// endpointLabel sets the endpoint label of a monitor's endpoint to its port
// name, else its target port, so that the series of a monitor's endpoints
// stay apart.
func endpointLabel(port *string, targetPort *intstr.IntOrString) []any {
	switch {
	case port != nil && *port != "":
		return []any{yaml.MapSlice{item("target_label", "endpoint"), item("replacement", *port)}}
	case targetPort != nil && targetPort.String() != "":
		return []any{yaml.MapSlice{item("target_label", "endpoint"), item("replacement", targetPort.String())}}
	}
	return nil
}

// mergeAttachMetadata takes the CR's attachMetadata, else the class's.
func mergeAttachMetadata(am *monitoringv1.AttachMetadata, sc *ScrapeClass) *bool {
	if am != nil {
		return new(am.Node != nil && *am.Node)
	}
	if sc.AttachMetadata != nil {
		return new(sc.AttachMetadata.Node)
	}
	return nil
}

// k8sSD writes the kubernetes_sd_configs of a monitor: its role, the
// namespaces its namespaceSelector names (its own by default, all with
// any: true, its own only with ignore_namespace_selectors).
func (g *generator) k8sSD(nsSel monitoringv1.NamespaceSelector, ns, role string, attachNode *bool, selectors []yaml.MapSlice) yaml.MapItem {
	sd := yaml.MapSlice{item("role", role)}
	var names []string
	switch {
	case g.cfg.IgnoreNamespaceSelectors:
		names = []string{ns}
	case nsSel.Any:
	case len(nsSel.MatchNames) == 0:
		names = []string{ns}
	default:
		names = nsSel.MatchNames
	}
	if len(names) > 0 {
		sd = append(sd, item("namespaces", yaml.MapSlice{item("names", names)}))
	}
	if g.cfg.KubeconfigFile != "" {
		sd = append(sd, item("kubeconfig_file", g.cfg.KubeconfigFile))
	}
	if attachNode != nil {
		sd = append(sd, item("attach_metadata", yaml.MapSlice{item("node", *attachNode)}))
	}
	if len(selectors) > 0 {
		sd = append(sd, item("selectors", selectors))
	}
	return item("kubernetes_sd_configs", []yaml.MapSlice{sd})
}

// roleSelectors implements selectorMechanism: RoleSelector, which filters
// in the API server (kubernetes_sd_config selectors) instead of by
// relabelling.
func roleSelectors(mech *monitoringv1.SelectorMechanism, sel metav1.LabelSelector, roles ...string) ([]yaml.MapSlice, bool, error) {
	if mech == nil || *mech == monitoringv1.SelectorMechanismRelabel {
		return nil, false, nil
	}
	if *mech != monitoringv1.SelectorMechanismRole {
		return nil, false, invalidf("selectorMechanism %q is neither %s nor %s", *mech, monitoringv1.SelectorMechanismRelabel, monitoringv1.SelectorMechanismRole)
	}
	s, err := metav1.LabelSelectorAsSelector(&sel)
	if err != nil {
		return nil, false, invalidf("selector: %w", err)
	}
	out := make([]yaml.MapSlice, 0, len(roles))
	for _, r := range roles {
		out = append(out, yaml.MapSlice{item("role", r), item("label", s.String())})
	}
	return out, true, nil
}
