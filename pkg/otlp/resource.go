package otlp

import (
	"net"
	"regexp"
	"strconv"
	"strings"

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
			// The meta labels are in the discovered labels when the target
			// came through Prometheus SD in this process, or among the
			// target's own labels when they were carried along.
			discovered := t.DiscoveredLabels(labels.NewBuilder(labels.EmptyLabels()))
			addDiscoveryAttributes(attrs, func(name string) string {
				if v := t.GetValue(name); v != "" {
					return v
				}
				return discovered.Get(name)
			})
		}
	}
	return r
}

// discoveryAttributes map service-discovery meta labels to resource
// attributes: Kubernetes to the k8s.* semantic conventions (as the
// Collector's receiver and k8sattributes processor add them), Nomad, which
// has no semantic conventions, to host.id and nomad.*. In this order.
var discoveryAttributes = []struct{ label, attr string }{
	{"__meta_kubernetes_namespace", "k8s.namespace.name"},
	{"__meta_kubernetes_pod_name", "k8s.pod.name"},
	{"__meta_kubernetes_pod_uid", "k8s.pod.uid"},
	{"__meta_kubernetes_pod_container_name", "k8s.container.name"},
	{"__meta_kubernetes_pod_node_name", "k8s.node.name"},
	{"__meta_kubernetes_node_name", "k8s.node.name"},
	{"__meta_kubernetes_endpoint_node_name", "k8s.node.name"},
	{"__meta_kubernetes_endpointslice_endpoint_node_name", "k8s.node.name"},
	{"__meta_nomad_node_id", "host.id"},
	{"__meta_nomad_namespace", "nomad.namespace"},
	{"__meta_nomad_dc", "nomad.datacenter"},
	{"__meta_nomad_service", "nomad.service.name"},
	{"__meta_nomad_service_id", "nomad.service.id"},
}

var (
	// A ReplicaSet of a Deployment is named <deployment>-<pod-template-hash>,
	// a Job of a CronJob <cronjob>-<scheduled time in minutes>; the
	// k8sattributes processor derives the owners the same way.
	replicaSetName = regexp.MustCompile(`^(.+)-[0-9a-z]{5,10}$`)
	cronJobName    = regexp.MustCompile(`^(.+)-[0-9]{7,11}$`)
)

func addDiscoveryAttributes(attrs pcommon.Map, get func(string) string) {
	for _, m := range discoveryAttributes {
		if v := get(m.label); v != "" {
			if _, ok := attrs.Get(m.attr); !ok {
				attrs.PutStr(m.attr, v)
			}
		}
	}
	if id := get("__meta_kubernetes_pod_container_id"); id != "" {
		// <runtime>://<id>
		if _, after, ok := strings.Cut(id, "://"); ok {
			id = after
		}
		attrs.PutStr("container.id", id)
	}
	name := get("__meta_kubernetes_pod_controller_name")
	if name == "" {
		return
	}
	switch get("__meta_kubernetes_pod_controller_kind") {
	case "ReplicaSet":
		attrs.PutStr("k8s.replicaset.name", name)
		if m := replicaSetName.FindStringSubmatch(name); m != nil {
			attrs.PutStr("k8s.deployment.name", m[1])
		}
	case "DaemonSet":
		attrs.PutStr("k8s.daemonset.name", name)
	case "StatefulSet":
		attrs.PutStr("k8s.statefulset.name", name)
	case "Job":
		attrs.PutStr("k8s.job.name", name)
		if m := cronJobName.FindStringSubmatch(name); m != nil {
			attrs.PutStr("k8s.cronjob.name", m[1])
		}
	case "CronJob":
		attrs.PutStr("k8s.cronjob.name", name)
	}
}
