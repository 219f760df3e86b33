package promcr

import (
	"fmt"
	"net/url"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	"go.yaml.in/yaml/v2"
)

// scrapeConfig generates the job scrapeConfig/<namespace>/<name>. Of the
// service discovery mechanisms a ScrapeConfig can use, static, file, HTTP,
// Kubernetes, DNS and Consul are generated; a ScrapeConfig using any other
// is skipped as unsupported.
func (g *generator) scrapeConfig(m *monitoringv1alpha1.ScrapeConfig) ([]yaml.MapSlice, error) {
	if err := unsupportedSD(&m.Spec); err != nil {
		return nil, err
	}
	sc, err := g.class(m.Spec.ScrapeClassName)
	if err != nil {
		return nil, err
	}
	s := store{ns: m.Namespace, g: g.secrets}
	spec := &m.Spec

	cfg := yaml.MapSlice{item("job_name", fmt.Sprintf("scrapeConfig/%s/%s", m.Namespace, m.Name))}
	rel := initRelabelings()
	rel = append(rel, classRelabelings(sc.RelabelConfigs)...)
	if spec.JobName != nil {
		rel = append(rel, yaml.MapSlice{item("target_label", "job"), item("action", "replace"), item("replacement", *spec.JobName)})
	}
	if spec.HonorTimestamps != nil {
		cfg = g.addHonorTimestamps(cfg, spec.HonorTimestamps)
	}
	cfg = addOptional(cfg, "track_timestamps_staleness", spec.TrackTimestampsStaleness)
	if spec.HonorLabels != nil {
		cfg = g.addHonorLabels(cfg, *spec.HonorLabels)
	}
	cfg = addOptional(cfg, "metrics_path", spec.MetricsPath)
	if len(spec.Params) > 0 {
		cfg = append(cfg, item("params", sortedMap(spec.Params)))
	}
	cfg = addOptional(cfg, "enable_compression", spec.EnableCompression)
	if spec.ScrapeInterval != nil {
		if cfg, err = addDuration(cfg, "scrape_interval", *spec.ScrapeInterval); err != nil {
			return nil, err
		}
	}
	if spec.ScrapeTimeout != nil {
		if cfg, err = addDuration(cfg, "scrape_timeout", *spec.ScrapeTimeout); err != nil {
			return nil, err
		}
	}
	cfg = addScrapeProtocols(cfg, spec.ScrapeProtocols, spec.FallbackScrapeProtocol, sc)
	cfg = addOptional(cfg, "extra_scrape_metrics", spec.ExtraScrapeMetrics)
	if cfg, err = addScheme(cfg, spec.Scheme); err != nil {
		return nil, err
	}
	t, err := s.jobTLS(spec.TLSConfig)
	if err != nil {
		return nil, err
	}
	hc := monitoringv1.HTTPConfigWithoutTLS{
		Authorization: spec.Authorization, BasicAuth: spec.BasicAuth, OAuth2: spec.OAuth2, EnableHTTP2: spec.EnableHTTP2,
	}
	if cfg, err = s.addClient(cfg, &hc, spec.ProxyConfig, t, sc); err != nil {
		return nil, err
	}
	if cfg, err = g.addLimits(cfg, limits{
		sample: spec.SampleLimit, target: spec.TargetLimit, label: spec.LabelLimit,
		labelNameLength: spec.LabelNameLengthLimit, labelValueLength: spec.LabelValueLengthLimit,
		keepDropped: spec.KeepDroppedTargets, bodySize: spec.BodySizeLimit,
	}); err != nil {
		return nil, err
	}
	cfg = addNativeHistograms(cfg, spec.NativeHistogramConfig)

	if len(spec.StaticConfigs) > 0 {
		var sds []yaml.MapSlice
		for _, c := range spec.StaticConfigs {
			targets := make([]string, len(c.Targets))
			for i, t := range c.Targets {
				targets[i] = string(t)
			}
			sds = append(sds, yaml.MapSlice{item("targets", targets), item("labels", sortedMap(c.Labels))})
		}
		cfg = append(cfg, item("static_configs", sds))
	}
	if len(spec.FileSDConfigs) > 0 {
		var sds []yaml.MapSlice
		for _, c := range spec.FileSDConfigs {
			files := make([]string, len(c.Files))
			for i, f := range c.Files {
				files[i] = string(f)
			}
			sd := yaml.MapSlice{item("files", files)}
			if c.RefreshInterval != nil {
				sd = append(sd, item("refresh_interval", string(*c.RefreshInterval)))
			}
			sds = append(sds, sd)
		}
		cfg = append(cfg, item("file_sd_configs", sds))
	}
	if len(spec.HTTPSDConfigs) > 0 {
		var sds []yaml.MapSlice
		for i, c := range spec.HTTPSDConfigs {
			if _, err := url.Parse(string(c.URL)); err != nil {
				return nil, invalidf("httpSDConfigs[%d]: %w", i, err)
			}
			sd, err := g.sdHTTPClient(s, c.BasicAuth, c.Authorization, c.OAuth2, c.ProxyConfig, c.TLSConfig, c.FollowRedirects, c.EnableHTTP2)
			if err != nil {
				return nil, fmt.Errorf("httpSDConfigs[%d]: %w", i, err)
			}
			sd = append(sd, item("url", string(c.URL)))
			if c.RefreshInterval != nil {
				sd = append(sd, item("refresh_interval", string(*c.RefreshInterval)))
			}
			sds = append(sds, sd)
		}
		cfg = append(cfg, item("http_sd_configs", sds))
	}
	if len(spec.KubernetesSDConfigs) > 0 {
		var sds []yaml.MapSlice
		for i, c := range spec.KubernetesSDConfigs {
			sd, err := g.kubernetesSD(s, c)
			if err != nil {
				return nil, fmt.Errorf("kubernetesSDConfigs[%d]: %w", i, err)
			}
			sds = append(sds, sd)
		}
		cfg = append(cfg, item("kubernetes_sd_configs", sds))
	}
	if len(spec.ConsulSDConfigs) > 0 {
		var sds []yaml.MapSlice
		for i, c := range spec.ConsulSDConfigs {
			sd, err := g.consulSD(s, c)
			if err != nil {
				return nil, fmt.Errorf("consulSDConfigs[%d]: %w", i, err)
			}
			sds = append(sds, sd)
		}
		cfg = append(cfg, item("consul_sd_configs", sds))
	}
	if len(spec.DNSSDConfigs) > 0 {
		var sds []yaml.MapSlice
		for i, c := range spec.DNSSDConfigs {
			if c.Type != nil && *c.Type != monitoringv1alpha1.DNSRecordTypeSRV && c.Port == nil {
				return nil, invalidf("dnsSDConfigs[%d]: port required for record type %q", i, *c.Type)
			}
			sd := yaml.MapSlice{item("names", c.Names)}
			if c.RefreshInterval != nil {
				sd = append(sd, item("refresh_interval", string(*c.RefreshInterval)))
			}
			if c.Type != nil {
				sd = append(sd, item("type", string(*c.Type)))
			}
			sd = addOptional(sd, "port", c.Port)
			sds = append(sds, sd)
		}
		cfg = append(cfg, item("dns_sd_configs", sds))
	}

	// Prometheus Operator adds the enforced namespace label to a
	// ScrapeConfig's targets only when it has relabelings of its own (its
	// samples always get it, through metric_relabel_configs).
	if len(spec.RelabelConfigs) > 0 {
		rel = append(rel, relabelings(spec.RelabelConfigs)...)
		rel = g.enforceNamespace(rel, m.Namespace)
	}
	cfg = append(cfg, item("relabel_configs", rel))
	cfg = g.addMetricRelabelings(cfg, sc, spec.MetricRelabelConfigs, m.Namespace)
	if spec.NameValidationScheme != nil {
		cfg = append(cfg, item("metric_name_validation_scheme", strings.ToLower(string(*spec.NameValidationScheme))))
	}
	if spec.NameEscapingScheme != nil {
		v, ok := map[monitoringv1.NameEscapingSchemeOptions]string{
			monitoringv1.AllowUTF8NameEscapingScheme:   "allow-utf-8",
			monitoringv1.UnderscoresNameEscapingScheme: "underscores",
			monitoringv1.DotsNameEscapingScheme:        "dots",
			monitoringv1.ValuesNameEscapingScheme:      "values",
		}[*spec.NameEscapingScheme]
		if !ok {
			return nil, invalidf("nameEscapingScheme %q is not supported", *spec.NameEscapingScheme)
		}
		cfg = append(cfg, item("metric_name_escaping_scheme", v))
	}
	return []yaml.MapSlice{cfg}, nil
}

// sdHTTPClient writes the HTTP client settings of an SD config, which take
// nothing from the scrape class.
func (g *generator) sdHTTPClient(s store, ba *monitoringv1.BasicAuth, az *monitoringv1.SafeAuthorization, o *monitoringv1.OAuth2,
	pc monitoringv1.ProxyConfig, tc *monitoringv1.SafeTLSConfig, followRedirects, enableHTTP2 *bool,
) (yaml.MapSlice, error) {
	t, err := s.safeTLS(tc)
	if err != nil {
		return nil, err
	}
	hc := monitoringv1.HTTPConfigWithoutTLS{
		Authorization: az, BasicAuth: ba, OAuth2: o, FollowRedirects: followRedirects, EnableHTTP2: enableHTTP2,
	}
	return s.addClient(nil, &hc, pc, t, &ScrapeClass{})
}

func (g *generator) kubernetesSD(s store, c monitoringv1alpha1.KubernetesSDConfig) (yaml.MapSlice, error) {
	role := strings.ToLower(string(c.Role))
	if c.APIServer != nil && c.Namespaces != nil && c.Namespaces.IncludeOwnNamespace != nil && *c.Namespaces.IncludeOwnNamespace {
		return nil, invalidf("cannot use apiServer and namespaces.ownNamespace simultaneously")
	}
	var sd yaml.MapSlice
	if c.APIServer != nil {
		sd = append(sd, item("api_server", *c.APIServer))
	}
	sd = append(sd, item("role", role))
	httpc, err := g.sdHTTPClient(s, c.BasicAuth, c.Authorization, c.OAuth2, c.ProxyConfig, c.TLSConfig, c.FollowRedirects, c.EnableHTTP2)
	if err != nil {
		return nil, err
	}
	sd = append(sd, httpc...)
	if c.APIServer == nil && len(httpc) == 0 && g.cfg.KubeconfigFile != "" {
		sd = append(sd, item("kubeconfig_file", g.cfg.KubeconfigFile))
	}
	if c.Namespaces != nil {
		ns := yaml.MapSlice{item("names", c.Namespaces.Names)}
		ns = addOptional(ns, "own_namespace", c.Namespaces.IncludeOwnNamespace)
		sd = append(sd, item("namespaces", ns))
	}
	if len(c.Selectors) > 0 {
		sels := make([]yaml.MapSlice, 0, len(c.Selectors))
		for _, sel := range c.Selectors {
			m := yaml.MapSlice{item("role", strings.ToLower(string(sel.Role)))}
			m = addOptional(m, "label", sel.Label)
			m = addOptional(m, "field", sel.Field)
			sels = append(sels, m)
		}
		sd = append(sd, item("selectors", sels))
	}
	if c.AttachMetadata != nil {
		switch role {
		case "pod", "endpoints", "endpointslice":
			sd = append(sd, item("attach_metadata", yaml.MapSlice{item("node", c.AttachMetadata.Node != nil && *c.AttachMetadata.Node)}))
		}
	}
	return sd, nil
}

func (g *generator) consulSD(s store, c monitoringv1alpha1.ConsulSDConfig) (yaml.MapSlice, error) {
	sd, err := g.sdHTTPClient(s, c.BasicAuth, c.Authorization, c.OAuth2, c.ProxyConfig, c.TLSConfig, c.FollowRedirects, c.EnableHttp2)
	if err != nil {
		return nil, err
	}
	sd = append(sd, item("server", c.Server))
	sd = addOptional(sd, "path_prefix", c.PathPrefix)
	if c.TokenRef != nil {
		tok, err := s.secret(*c.TokenRef)
		if err != nil {
			return nil, fmt.Errorf("tokenRef: %w", err)
		}
		sd = append(sd, item("token", tok))
	}
	sd = addOptional(sd, "datacenter", c.Datacenter)
	sd = addOptional(sd, "namespace", c.Namespace)
	sd = addOptional(sd, "partition", c.Partition)
	if c.Scheme != nil {
		sd = append(sd, item("scheme", c.Scheme.String()))
	}
	if len(c.Services) > 0 {
		sd = append(sd, item("services", c.Services))
	}
	if len(c.Tags) > 0 {
		sd = append(sd, item("tags", c.Tags))
	}
	sd = addOptional(sd, "tag_separator", c.TagSeparator)
	if len(c.NodeMeta) > 0 {
		sd = append(sd, item("node_meta", sortedMap(c.NodeMeta)))
	}
	sd = addOptional(sd, "filter", c.Filter)
	sd = addOptional(sd, "health_filter", c.HealthFilter)
	sd = addOptional(sd, "allow_stale", c.AllowStale)
	if c.RefreshInterval != nil {
		sd = append(sd, item("refresh_interval", string(*c.RefreshInterval)))
	}
	return sd, nil
}

// unsupportedSD names the SD mechanisms of a ScrapeConfig that allot does
// not generate.
func unsupportedSD(spec *monitoringv1alpha1.ScrapeConfigSpec) error {
	var names []string
	for _, x := range []struct {
		name string
		n    int
	}{
		{"ec2SDConfigs", len(spec.EC2SDConfigs)},
		{"azureSDConfigs", len(spec.AzureSDConfigs)},
		{"gceSDConfigs", len(spec.GCESDConfigs)},
		{"openstackSDConfigs", len(spec.OpenStackSDConfigs)},
		{"digitalOceanSDConfigs", len(spec.DigitalOceanSDConfigs)},
		{"kumaSDConfigs", len(spec.KumaSDConfigs)},
		{"eurekaSDConfigs", len(spec.EurekaSDConfigs)},
		{"dockerSDConfigs", len(spec.DockerSDConfigs)},
		{"linodeSDConfigs", len(spec.LinodeSDConfigs)},
		{"hetznerSDConfigs", len(spec.HetznerSDConfigs)},
		{"nomadSDConfigs", len(spec.NomadSDConfigs)},
		{"dockerSwarmSDConfigs", len(spec.DockerSwarmSDConfigs)},
		{"puppetDBSDConfigs", len(spec.PuppetDBSDConfigs)},
		{"lightSailSDConfigs", len(spec.LightSailSDConfigs)},
		{"ovhcloudSDConfigs", len(spec.OVHCloudSDConfigs)},
		{"scalewaySDConfigs", len(spec.ScalewaySDConfigs)},
		{"ionosSDConfigs", len(spec.IonosSDConfigs)},
	} {
		if x.n > 0 {
			names = append(names, x.name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	return &skipError{CauseUnsupported, fmt.Errorf("%s not supported by allot (supported: staticConfigs, fileSDConfigs, httpSDConfigs, kubernetesSDConfigs, consulSDConfigs, dnsSDConfigs)", strings.Join(names, ", "))}
}
