package otlp

import (
	"net"
	"strconv"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// Semantic-convention resource attribute keys.
const (
	attrServiceName       = "service.name"
	attrServiceInstanceID = "service.instance.id"
	attrServerAddress     = "server.address"
	attrServerPort        = "server.port"
	attrURLScheme         = "url.scheme"
)

// resourceKey identifies the resource of a sample: the job and instance
// labels it carries. It is the target's unless honor_labels lets the
// exposition override them (federation).
type resourceKey struct {
	job, instance string
}

// resourceFor returns the resource attributes of key, built once per target
// and key. Must hold ts.mu.
func (ts *targetState) resourceFor(key resourceKey, t *scrape.Target) pcommon.Resource {
	if r, ok := ts.resources[key]; ok {
		return r
	}
	r := buildResource(key, t, ts.opts)
	ts.resources[key] = r
	return r
}

// buildResource follows the Collector's CreateResource: service.name = job,
// service.instance.id = instance, server.address and server.port split from
// instance, url.scheme from the target. Unlike the Collector it keeps
// server.address for loopback hosts and types server.port as an int, as the
// semantic conventions say.
func buildResource(key resourceKey, t *scrape.Target, opts Options) pcommon.Resource {
	r := pcommon.NewResource()
	attrs := r.Attributes()
	attrs.PutStr(attrServiceName, key.job)
	attrs.PutStr(attrServiceInstanceID, key.instance)
	host, port, err := net.SplitHostPort(key.instance)
	if err != nil {
		host, port = key.instance, ""
	}
	if host != "" {
		attrs.PutStr(attrServerAddress, host)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err == nil {
		attrs.PutInt(attrServerPort, int64(p))
	}
	if t != nil {
		if u := t.URL(); u != nil && u.Scheme != "" {
			attrs.PutStr(attrURLScheme, u.Scheme)
		}
		if opts.KubernetesAttributes {
			addDiscoveryAttributes(attrs, t.DiscoveredLabels(labels.NewBuilder(labels.EmptyLabels())))
		}
	}
	return r
}

// addDiscoveryAttributes maps service-discovery meta labels to semantic
// convention resource attributes.
func addDiscoveryAttributes(attrs pcommon.Map, ls labels.Labels) {
	for sd, attr := range kubernetesAttributes {
		if v := ls.Get(sd); v != "" {
			attrs.PutStr(attr, v)
		}
	}
	name := ls.Get("__meta_kubernetes_pod_controller_name")
	switch ls.Get("__meta_kubernetes_pod_controller_kind") {
	case "ReplicaSet":
		attrs.PutStr("k8s.replicaset.name", name)
	case "DaemonSet":
		attrs.PutStr("k8s.daemonset.name", name)
	case "StatefulSet":
		attrs.PutStr("k8s.statefulset.name", name)
	case "Job":
		attrs.PutStr("k8s.job.name", name)
	case "CronJob":
		attrs.PutStr("k8s.cronjob.name", name)
	}
}

var kubernetesAttributes = map[string]string{
	"__meta_kubernetes_namespace":          "k8s.namespace.name",
	"__meta_kubernetes_pod_name":           "k8s.pod.name",
	"__meta_kubernetes_pod_uid":            "k8s.pod.uid",
	"__meta_kubernetes_pod_container_name": "k8s.container.name",
	"__meta_kubernetes_pod_node_name":      "k8s.node.name",
	"__meta_kubernetes_node_name":          "k8s.node.name",
	"__meta_kubernetes_endpoint_node_name": "k8s.node.name",
}
