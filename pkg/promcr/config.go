package promcr

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/alecthomas/units"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of the flags; they are the Prometheus CR's defaults.
const (
	DefaultScrapeInterval  = model.Duration(30 * time.Second)
	DefaultScrapeTimeout   = model.Duration(10 * time.Second)
	DefaultRefreshInterval = time.Minute
)

// Config is the `allot: prometheus_cr:` section and the --prometheus-cr.*
// flags. Its fields mirror the Prometheus CR's spec fields of the same
// meaning (serviceMonitorSelector, overrideHonorLabels, enforcedSampleLimit,
// scrapeClasses, ...), in the file's snake_case.
type Config struct {
	// Enabled turns the CR discovery on.
	Enabled bool `yaml:"enabled"`

	// The selectors choose which CRs are used, by the CR's labels. Unlike
	// the Prometheus CR, where nil selects nothing, nil here selects every
	// CR of the kind: the feature is off unless enabled, and the OTel
	// Target Allocator treats an absent selector the same way.
	ServiceMonitorSelector *metav1.LabelSelector `yaml:"-"`
	PodMonitorSelector     *metav1.LabelSelector `yaml:"-"`
	ScrapeConfigSelector   *metav1.LabelSelector `yaml:"-"`
	ProbeSelector          *metav1.LabelSelector `yaml:"-"`
	// NamespaceSelector chooses the namespaces whose CRs are used, by the
	// namespace's labels; nil means all namespaces.
	NamespaceSelector *metav1.LabelSelector `yaml:"-"`
	// IgnoreNamespaceSelectors makes every monitor discover targets in its
	// own namespace only, whatever its spec.namespaceSelector says.
	IgnoreNamespaceSelectors bool `yaml:"ignore_namespace_selectors"`

	// ScrapeInterval and ScrapeTimeout apply to jobs whose CR sets none.
	ScrapeInterval model.Duration `yaml:"scrape_interval"`
	ScrapeTimeout  model.Duration `yaml:"scrape_timeout"`
	// OverrideHonorLabels forces honor_labels to false in every job;
	// OverrideHonorTimestamps forces honor_timestamps to false.
	OverrideHonorLabels     bool `yaml:"override_honor_labels"`
	OverrideHonorTimestamps bool `yaml:"override_honor_timestamps"`

	// EnforcedNamespaceLabel, when set, is added to every target and every
	// sample with the CR's namespace as value, after the CR's own relabelings
	// so that a CR cannot override it.
	EnforcedNamespaceLabel string `yaml:"enforced_namespace_label"`
	// The enforced limits cap what a CR may ask for: a CR without a limit
	// gets the enforced one, a CR with a higher one gets the enforced one.
	EnforcedSampleLimit           *uint64 `yaml:"enforced_sample_limit"`
	EnforcedTargetLimit           *uint64 `yaml:"enforced_target_limit"`
	EnforcedLabelLimit            *uint64 `yaml:"enforced_label_limit"`
	EnforcedLabelNameLengthLimit  *uint64 `yaml:"enforced_label_name_length_limit"`
	EnforcedLabelValueLengthLimit *uint64 `yaml:"enforced_label_value_length_limit"`
	EnforcedKeepDroppedTargets    *uint64 `yaml:"enforced_keep_dropped_targets"`
	// EnforcedBodySizeLimit is a size such as "10MB" (Prometheus units).
	EnforcedBodySizeLimit string `yaml:"enforced_body_size_limit"`

	// ScrapeClasses are named sets of TLS, authorization and relabelling
	// that CRs opt into with spec.scrapeClass; at most one is the default
	// for CRs that name none.
	ScrapeClasses []ScrapeClass `yaml:"scrape_classes"`

	// PodTargetLabels are pod labels copied onto the targets of every
	// ServiceMonitor and PodMonitor (the Prometheus CR's podTargetLabels).
	PodTargetLabels []string `yaml:"pod_target_labels"`
	// ServiceDiscoveryRole is the Kubernetes SD role of ServiceMonitors that
	// set none: "endpoints" (default) or "endpointslice".
	ServiceDiscoveryRole string `yaml:"service_discovery_role"`
	// DenyFileAccess skips ServiceMonitors that read files on the scraper
	// (bearerTokenFile, tlsConfig caFile/certFile/keyFile), like the
	// Prometheus CR's arbitraryFSAccessThroughSMs.deny.
	DenyFileAccess bool `yaml:"deny_file_access"`
	// KubeconfigFile goes into every generated kubernetes_sd_config, so that
	// a discoverer outside the cluster discovers through the same API server
	// it watches the CRs on. Empty means in-cluster.
	KubeconfigFile string `yaml:"kubeconfig_file"`
	// RefreshInterval is how often the configs are regenerated without a
	// CR change, to pick up rotated secrets and newly installed CRDs.
	RefreshInterval time.Duration `yaml:"refresh_interval"`

	// Global is the configuration file's global section: generated jobs
	// inherit from it what neither they nor this Config set (scrape
	// protocols, metric name validation, ...), as the file's own jobs do.
	// Nil means Prometheus's defaults.
	Global *promconfig.GlobalConfig `yaml:"-"`
}

// ScrapeClass is the Prometheus CR's scrape class in Prometheus syntax:
// tls_config and authorization as in a scrape config (files or inline
// values), relabel_configs and metric_relabel_configs as in a scrape
// config. They are merged into the jobs of the CRs that use the class the
// way Prometheus Operator merges them.
type ScrapeClass struct {
	Name    string `yaml:"name"`
	Default bool   `yaml:"default"`
	// TLSConfig is used whole by jobs without TLS settings; jobs with some
	// take only the CA, certificate and key it has and they lack.
	TLSConfig *commoncfg.TLSConfig `yaml:"tls_config"`
	// Authorization is used whole by jobs without one; jobs with a type but
	// no credentials take its credentials.
	Authorization *commoncfg.Authorization `yaml:"authorization"`
	// RelabelConfigs run before the CR's own relabelings,
	// MetricRelabelConfigs before its metricRelabelings.
	RelabelConfigs       []*relabel.Config `yaml:"relabel_configs"`
	MetricRelabelConfigs []*relabel.Config `yaml:"metric_relabel_configs"`
	// AttachMetadata applies to ServiceMonitors and PodMonitors that set none.
	AttachMetadata *AttachMetadata `yaml:"attach_metadata"`
	// FallbackScrapeProtocol applies to CRs that set none.
	FallbackScrapeProtocol promconfig.ScrapeProtocol `yaml:"fallback_scrape_protocol"`
}

// AttachMetadata is kubernetes_sd_config's attach_metadata.
type AttachMetadata struct {
	Node bool `yaml:"node"`
}

// RegisterFlags adds the --prometheus-cr.* flags with their defaults to f.
// Scrape classes are set in the file only.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.BoolVar(&c.Enabled, "prometheus-cr.enabled", false,
		"Discover targets from Prometheus Operator ServiceMonitor, PodMonitor, Probe and ScrapeConfig resources.")
	selectorFlag(f, &c.ServiceMonitorSelector, "prometheus-cr.service-monitor-selector", "ServiceMonitors")
	selectorFlag(f, &c.PodMonitorSelector, "prometheus-cr.pod-monitor-selector", "PodMonitors")
	selectorFlag(f, &c.ScrapeConfigSelector, "prometheus-cr.scrape-config-selector", "ScrapeConfigs")
	selectorFlag(f, &c.ProbeSelector, "prometheus-cr.probe-selector", "Probes")
	selectorFlag(f, &c.NamespaceSelector, "prometheus-cr.namespace-selector", "namespaces whose resources are used")
	f.BoolVar(&c.IgnoreNamespaceSelectors, "prometheus-cr.ignore-namespace-selectors", false,
		"Monitors discover targets in their own namespace only, ignoring their spec.namespaceSelector.")
	c.ScrapeInterval = DefaultScrapeInterval
	f.Var(&c.ScrapeInterval, "prometheus-cr.scrape-interval", "Scrape interval of jobs whose resource sets none.")
	c.ScrapeTimeout = DefaultScrapeTimeout
	f.Var(&c.ScrapeTimeout, "prometheus-cr.scrape-timeout", "Scrape timeout of jobs whose resource sets none.")
	f.BoolVar(&c.OverrideHonorLabels, "prometheus-cr.override-honor-labels", false, "Force honor_labels to false in every job.")
	f.BoolVar(&c.OverrideHonorTimestamps, "prometheus-cr.override-honor-timestamps", false, "Force honor_timestamps to false in every job.")
	f.StringVar(&c.EnforcedNamespaceLabel, "prometheus-cr.enforced-namespace-label", "",
		"Label set to the resource's namespace on every target and sample, after the resource's relabelings.")
	limitFlag(f, &c.EnforcedSampleLimit, "prometheus-cr.enforced-sample-limit", "samples per scrape")
	limitFlag(f, &c.EnforcedTargetLimit, "prometheus-cr.enforced-target-limit", "targets per job")
	limitFlag(f, &c.EnforcedLabelLimit, "prometheus-cr.enforced-label-limit", "labels per sample")
	limitFlag(f, &c.EnforcedLabelNameLengthLimit, "prometheus-cr.enforced-label-name-length-limit", "label name length")
	limitFlag(f, &c.EnforcedLabelValueLengthLimit, "prometheus-cr.enforced-label-value-length-limit", "label value length")
	limitFlag(f, &c.EnforcedKeepDroppedTargets, "prometheus-cr.enforced-keep-dropped-targets", "dropped targets kept per job")
	f.StringVar(&c.EnforcedBodySizeLimit, "prometheus-cr.enforced-body-size-limit", "",
		"Upper bound of the scrape body size (e.g. 10MB); empty means none.")
	f.StringVar(&c.ServiceDiscoveryRole, "prometheus-cr.service-discovery-role", "endpoints",
		"Kubernetes SD role of ServiceMonitors that set none: endpoints or endpointslice.")
	f.BoolVar(&c.DenyFileAccess, "prometheus-cr.deny-file-access", false,
		"Skip ServiceMonitors that read files on the scrapers (bearerTokenFile, TLS files).")
	f.StringVar(&c.KubeconfigFile, "prometheus-cr.kubeconfig", "",
		"Kubeconfig file for watching the resources and for the generated Kubernetes SD configs; empty means in-cluster.")
	f.DurationVar(&c.RefreshInterval, "prometheus-cr.refresh-interval", DefaultRefreshInterval,
		"How often configs are regenerated without a resource change, to pick up rotated secrets and new CRDs.")
}

func selectorFlag(f *flag.FlagSet, dst **metav1.LabelSelector, name, what string) {
	f.Func(name, "Label selector (e.g. 'team=a,tier in (x,y)') for the "+what+"; empty selects all.", func(s string) error {
		if strings.TrimSpace(s) == "" {
			*dst = nil
			return nil
		}
		sel, err := metav1.ParseToLabelSelector(s)
		if err != nil {
			return err
		}
		*dst = sel
		return nil
	})
}

func limitFlag(f *flag.FlagSet, dst **uint64, name, what string) {
	f.Func(name, "Enforced limit of "+what+"; 0 or empty means none.", func(s string) error {
		if s == "" || s == "0" {
			*dst = nil
			return nil
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return err
		}
		*dst = &v
		return nil
	})
}

// withDefaults fills the zero values a Config built in code may leave.
func (c Config) withDefaults() Config {
	if c.ScrapeInterval == 0 {
		c.ScrapeInterval = DefaultScrapeInterval
	}
	if c.ScrapeTimeout == 0 {
		c.ScrapeTimeout = min(DefaultScrapeTimeout, c.ScrapeInterval)
	}
	if c.ServiceDiscoveryRole == "" {
		c.ServiceDiscoveryRole = "endpoints"
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	}
	return c
}

// Validate checks the configuration; a disabled one is always valid. Zero
// durations stand for their defaults.
func (c Config) Validate() error {
	if !c.Enabled {
		return nil
	}
	c = c.withDefaults()
	for name, sel := range map[string]*metav1.LabelSelector{
		"service_monitor_selector": c.ServiceMonitorSelector,
		"pod_monitor_selector":     c.PodMonitorSelector,
		"scrape_config_selector":   c.ScrapeConfigSelector,
		"probe_selector":           c.ProbeSelector,
		"namespace_selector":       c.NamespaceSelector,
	} {
		if _, err := metav1.LabelSelectorAsSelector(sel); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	if c.ScrapeInterval <= 0 {
		return errors.New("scrape_interval must be positive")
	}
	if c.ScrapeTimeout <= 0 {
		return errors.New("scrape_timeout must be positive")
	}
	if c.ScrapeTimeout > c.ScrapeInterval {
		return fmt.Errorf("scrape_timeout %s greater than scrape_interval %s", c.ScrapeTimeout, c.ScrapeInterval)
	}
	if c.EnforcedNamespaceLabel != "" && !model.LabelName(c.EnforcedNamespaceLabel).IsValid() {
		return fmt.Errorf("enforced_namespace_label: invalid label name %q", c.EnforcedNamespaceLabel)
	}
	if c.EnforcedBodySizeLimit != "" {
		if _, err := units.ParseBase2Bytes(c.EnforcedBodySizeLimit); err != nil {
			return fmt.Errorf("enforced_body_size_limit: %w", err)
		}
	}
	switch c.ServiceDiscoveryRole {
	case "", "endpoints", "endpointslice":
	default:
		return fmt.Errorf("service_discovery_role: %q is neither endpoints nor endpointslice", c.ServiceDiscoveryRole)
	}
	if c.RefreshInterval < 0 {
		return errors.New("refresh_interval must not be negative")
	}
	seen := map[string]bool{}
	defaults := 0
	for i, sc := range c.ScrapeClasses {
		if err := sc.validate(); err != nil {
			return fmt.Errorf("scrape_classes[%d]: %w", i, err)
		}
		if seen[sc.Name] {
			return fmt.Errorf("scrape_classes[%d]: name %q used twice", i, sc.Name)
		}
		seen[sc.Name] = true
		if sc.Default {
			defaults++
		}
	}
	if defaults > 1 {
		return errors.New("scrape_classes: more than one default")
	}
	return nil
}

func (sc ScrapeClass) validate() error {
	if sc.Name == "" {
		return errors.New("name is empty")
	}
	if sc.TLSConfig != nil {
		if err := sc.TLSConfig.Validate(); err != nil {
			return fmt.Errorf("class %s: tls_config: %w", sc.Name, err)
		}
		if sc.TLSConfig.CARef != "" || sc.TLSConfig.CertRef != "" || sc.TLSConfig.KeyRef != "" {
			return fmt.Errorf("class %s: tls_config: ca_ref, cert_ref and key_ref are not supported", sc.Name)
		}
	}
	if sc.Authorization != nil && sc.Authorization.CredentialsRef != "" {
		return fmt.Errorf("class %s: authorization: credentials_ref is not supported", sc.Name)
	}
	for i, rc := range sc.RelabelConfigs {
		if rc == nil {
			return fmt.Errorf("class %s: relabel_configs[%d] is empty", sc.Name, i)
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			return fmt.Errorf("class %s: relabel_configs[%d]: %w", sc.Name, i, err)
		}
	}
	for i, rc := range sc.MetricRelabelConfigs {
		if rc == nil {
			return fmt.Errorf("class %s: metric_relabel_configs[%d] is empty", sc.Name, i)
		}
		if err := rc.Validate(model.UTF8Validation); err != nil {
			return fmt.Errorf("class %s: metric_relabel_configs[%d]: %w", sc.Name, i, err)
		}
	}
	if sc.FallbackScrapeProtocol != "" {
		if err := sc.FallbackScrapeProtocol.Validate(); err != nil {
			return fmt.Errorf("class %s: fallback_scrape_protocol: %w", sc.Name, err)
		}
	}
	return nil
}

// configYAML is Config as written in the file: the label selectors are
// Kubernetes objects (matchLabels, matchExpressions), decoded through JSON
// with their own field names.
type configYAML struct {
	plain                  `yaml:",inline"`
	ServiceMonitorSelector yaml.Node `yaml:"service_monitor_selector,omitempty"`
	PodMonitorSelector     yaml.Node `yaml:"pod_monitor_selector,omitempty"`
	ScrapeConfigSelector   yaml.Node `yaml:"scrape_config_selector,omitempty"`
	ProbeSelector          yaml.Node `yaml:"probe_selector,omitempty"`
	NamespaceSelector      yaml.Node `yaml:"namespace_selector,omitempty"`
}

type plain Config

// UnmarshalYAML decodes the section strictly (unknown fields are errors,
// also inside selectors and scrape classes). Fields absent from the
// section keep their values, so flag defaults stay in force.
func (c *Config) UnmarshalYAML(node *yaml.Node) error {
	// node.Decode would drop the caller's KnownFields setting, so the node
	// is re-encoded and decoded strictly, shifted to keep its line numbers.
	var buf strings.Builder
	buf.WriteString(strings.Repeat("\n", max(node.Line-1, 0)))
	enc := yaml.NewEncoder(&buf)
	if err := enc.Encode(node); err != nil {
		return err
	}
	dec := yaml.NewDecoder(strings.NewReader(buf.String()))
	dec.KnownFields(true)
	y := configYAML{plain: plain(*c)}
	if err := dec.Decode(&y); err != nil {
		return err
	}
	out := Config(y.plain)
	for _, s := range []struct {
		node *yaml.Node
		dst  **metav1.LabelSelector
	}{
		{&y.ServiceMonitorSelector, &out.ServiceMonitorSelector},
		{&y.PodMonitorSelector, &out.PodMonitorSelector},
		{&y.ScrapeConfigSelector, &out.ScrapeConfigSelector},
		{&y.ProbeSelector, &out.ProbeSelector},
		{&y.NamespaceSelector, &out.NamespaceSelector},
	} {
		if s.node.IsZero() {
			continue
		}
		sel, err := decodeSelector(s.node)
		if err != nil {
			return err
		}
		*s.dst = sel
	}
	*c = out
	return nil
}

func decodeSelector(node *yaml.Node) (*metav1.LabelSelector, error) {
	var v any
	if err := node.Decode(&v); err != nil {
		return nil, err
	}
	if v == nil {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("line %d: label selector: %w", node.Line, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var sel metav1.LabelSelector
	if err := dec.Decode(&sel); err != nil {
		return nil, fmt.Errorf("line %d: label selector: %w", node.Line, err)
	}
	return &sel, nil
}

// MarshalYAML writes the section as UnmarshalYAML reads it.
func (c Config) MarshalYAML() (any, error) {
	y := configYAML{plain: plain(c)}
	for _, s := range []struct {
		sel *metav1.LabelSelector
		dst *yaml.Node
	}{
		{c.ServiceMonitorSelector, &y.ServiceMonitorSelector},
		{c.PodMonitorSelector, &y.PodMonitorSelector},
		{c.ScrapeConfigSelector, &y.ScrapeConfigSelector},
		{c.ProbeSelector, &y.ProbeSelector},
		{c.NamespaceSelector, &y.NamespaceSelector},
	} {
		if s.sel == nil {
			continue
		}
		b, err := json.Marshal(s.sel)
		if err != nil {
			return nil, err
		}
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			return nil, err
		}
		if err := s.dst.Encode(v); err != nil {
			return nil, err
		}
	}
	return y, nil
}
