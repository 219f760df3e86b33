// Package promcr turns Prometheus Operator resources (ServiceMonitor,
// PodMonitor, Probe from monitoring.coreos.com/v1 and ScrapeConfig from
// v1alpha1) into Prometheus scrape configs, the way Prometheus Operator
// writes them for a Prometheus, and watches the resources so that the
// discoverer gets fresh configs within about 100 ms of a change.
//
// [Generate] is the pure part: resources, the namespaces' labels and a
// [SecretGetter] in, validated *config.ScrapeConfig out, one job per
// ServiceMonitor or PodMonitor endpoint (serviceMonitor/<ns>/<name>/<i>,
// podMonitor/<ns>/<name>/<i>), per Probe (probe/<ns>/<name>) and per
// ScrapeConfig (scrapeConfig/<ns>/<name>). The relabelling (keep by the
// monitor's selector, port by name or number, namespace/service/pod/
// container/endpoint labels, job from jobLabel), the Kubernetes SD configs
// and the HTTP settings follow Prometheus Operator's pkg/prometheus
// (promcfg.go and resource_selector.go), which does not build with the
// Prometheus allot uses (docs/prometheus-cr.md says why); TestOperatorParity
// holds the output to the operator's own golden files. Secrets and ConfigMaps are read
// through the SecretGetter and written inline (tls_config ca, cert and key;
// credentials; passwords), so scrapers need no files. A resource that
// cannot become a valid job is returned as [Skipped], with its reason; it
// never affects the others.
//
// [Watcher] watches the resources through client-go's dynamic client
// (informers, converted into the operator's API types) and the namespaces
// when a namespace selector is set, reads secrets with GETs, and calls back
// with the generated configs when they change. [Config] carries the
// Prometheus CR's global settings (default interval and timeout, honor
// overrides, enforced namespace label and limits, scrape classes).
//
// See docs/prometheus-cr.md for configuration and the RBAC it needs.
package promcr
