package deploy_test

import (
	"context"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/kubernetes"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/allot-dev/allot/pkg/promcr"
)

// The RBAC check derives what each component calls and compares it with
// what its ServiceAccount is granted, rule by rule: a right granted that no
// code uses fails the test, and so does a call no rule grants.
//
//   - discoverer: every kubernetes_sd_configs role (the shipped allot.yml and
//     the jobs generated from Prometheus Operator resources may use any of
//     them) plus what pkg/promcr calls, observed by running its Watcher
//     against client-go's fake clientsets;
//   - scraper: what the shipped scrape jobs present the pod's token for
//     (kubelets authorize it as a nodes subresource);
//   - rebalancer: nothing (it talks to etcd only).

// sdRoleRights is what Prometheus's Kubernetes SD lists and watches for
// each role (discovery/kubernetes/kubernetes.go, Discovery.Run: one informer
// per resource, cluster-wide or per namespace), and for attach_metadata
// node and namespace. attach_metadata deployment, job and cronjob
// (apps/replicasets, batch/jobs) are not granted: neither the shipped
// config nor pkg/promcr sets them.
var sdRoleRights = map[kubernetes.Role][]string{
	kubernetes.RoleNode:          {"/nodes"},
	kubernetes.RolePod:           {"/pods"},
	kubernetes.RoleService:       {"/services"},
	kubernetes.RoleEndpoint:      {"/endpoints", "/services", "/pods"},
	kubernetes.RoleEndpointSlice: {"discovery.k8s.io/endpointslices", "/services", "/pods"},
	kubernetes.RoleIngress:       {"networking.k8s.io/ingresses"},
}

// attachMetadataRights are the informers attach_metadata adds to the pod,
// endpoints and endpointslice roles.
var attachMetadataRights = map[string][]string{
	"node":      {"/nodes"},
	"namespace": {"/namespaces"},
}

func listWatch(resources ...string) []string {
	var out []string
	for _, r := range resources {
		out = append(out, r+":list", r+":watch")
	}
	return out
}

// discovererRights is what a discoverer calls: any SD role, attach_metadata
// node and namespace, and pkg/promcr's own calls.
func discovererRights(t *testing.T, shipped *promconfig.Config) []string {
	t.Helper()
	var out []string
	for _, res := range sdRoleRights {
		out = append(out, listWatch(res...)...)
	}
	for _, res := range attachMetadataRights {
		out = append(out, listWatch(res...)...)
	}
	// The shipped config must not need more than the roles above.
	for _, sc := range shipped.ScrapeConfigs {
		for _, sd := range sc.ServiceDiscoveryConfigs {
			k, ok := sd.(*kubernetes.SDConfig)
			if !ok {
				continue
			}
			if _, ok := sdRoleRights[k.Role]; !ok {
				t.Errorf("job %s: kubernetes_sd_configs role %q: add what it lists and watches to sdRoleRights", sc.JobName, k.Role)
			}
			if k.AttachMetadata.Deployment || k.AttachMetadata.Job || k.AttachMetadata.CronJob {
				t.Errorf("job %s: attach_metadata deployment/job/cronjob needs apps/replicasets or batch/jobs list and watch, which are not granted", sc.JobName)
			}
		}
	}
	out = append(out, promcrCalls(t)...)
	return dedupe(out)
}

// promcrCalls runs pkg/promcr's Watcher against fake clientsets with a
// namespace selector and a ServiceMonitor that takes its credentials from a
// Secret and its CA from a ConfigMap, and returns every call it made.
func promcrCalls(t *testing.T) []string {
	t.Helper()
	objs := []runtime.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"team": "a"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "auth"}, Data: map[string][]byte{"user": []byte("u"), "pass": []byte("p")}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "ca"}, Data: map[string]string{"ca.crt": "not checked here"}},
	}
	client := fake.NewClientset(objs...)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		promcr.ServiceMonitorsResource: "ServiceMonitorList",
		promcr.PodMonitorsResource:     "PodMonitorList",
		promcr.ProbesResource:          "ProbeList",
		promcr.ScrapeConfigsResource:   "ScrapeConfigList",
	})
	disc := client.Discovery().(*fakediscovery.FakeDiscovery)
	lists := map[string]*metav1.APIResourceList{}
	for _, gvr := range []schema.GroupVersionResource{promcr.ServiceMonitorsResource, promcr.PodMonitorsResource, promcr.ProbesResource, promcr.ScrapeConfigsResource} {
		gv := gvr.GroupVersion().String()
		if lists[gv] == nil {
			lists[gv] = &metav1.APIResourceList{GroupVersion: gv}
			disc.Resources = append(disc.Resources, lists[gv])
		}
		lists[gv].APIResources = append(lists[gv].APIResources, metav1.APIResource{Name: gvr.Resource, Namespaced: true})
	}
	sm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "ServiceMonitor",
		"metadata":   map[string]any{"namespace": "team-a", "name": "web"},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"endpoints": []any{map[string]any{
				"port": "http",
				"basicAuth": map[string]any{
					"username": map[string]any{"name": "auth", "key": "user"},
					"password": map[string]any{"name": "auth", "key": "pass"},
				},
				"tlsConfig": map[string]any{"ca": map[string]any{"configMap": map[string]any{"name": "ca", "key": "ca.crt"}}},
			}},
		},
	}}
	if _, err := dyn.Resource(promcr.ServiceMonitorsResource).Namespace("team-a").Create(context.Background(), sm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dyn.ClearActions()

	cfg := promcr.Config{Enabled: true, NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}
	w := promcr.NewWatcher(cfg, client, dyn, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	updates := make(chan []*promconfig.ScrapeConfig, 16)
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, func(c []*promconfig.ScrapeConfig) { updates <- c }) }()
	deadline := time.After(20 * time.Second)
wait:
	for {
		select {
		case c := <-updates:
			if len(c) == 1 && c[0].HTTPClientConfig.BasicAuth != nil && string(c[0].HTTPClientConfig.BasicAuth.Password) == "p" {
				break wait
			}
		case <-deadline:
			cancel()
			t.Fatal("pkg/promcr did not generate the ServiceMonitor's job with its Secret within 20s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range slices.Concat(client.Actions(), dyn.Actions()) {
		out = append(out, actionRight(a))
	}
	return dedupe(slices.DeleteFunc(out, func(s string) bool { return s == "" }))
}

// actionRight turns a recorded call into "group/resource:verb". API
// discovery (which the fake records as get on "resource") is granted to
// every authenticated user by the default system:discovery role.
func actionRight(a k8stesting.Action) string {
	gvr := a.GetResource()
	if gvr.Resource == "resource" && gvr.Group == "" {
		return ""
	}
	res := gvr.Resource
	if sub := a.GetSubresource(); sub != "" {
		res += "/" + sub
	}
	return gvr.Group + "/" + res + ":" + a.GetVerb()
}

// serviceAccountToken is where a pod's token is mounted.
const serviceAccountToken = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// kubeletSubresource is how the kubelet authorizes a request path with a
// SubjectAccessReview on nodes/<subresource> (kubelet server/auth.go).
func kubeletSubresource(p string) string {
	p = path.Clean("/" + p)
	for _, s := range []struct{ prefix, sub string }{
		{"/stats", "stats"}, {"/metrics", "metrics"}, {"/logs", "log"},
	} {
		if p == s.prefix || strings.HasPrefix(p, s.prefix+"/") {
			return s.sub
		}
	}
	return "proxy"
}

// scraperRights is what the scrapers need for the shipped jobs: a job that
// presents the pod's token to kubelets (role node, address unchanged) needs
// get on the nodes subresource of its path. A job that presents the token
// to anything else fails the test until its rights are worked out here.
func scraperRights(t *testing.T, shipped *promconfig.Config) []string {
	t.Helper()
	var out []string
	for _, sc := range shipped.ScrapeConfigs {
		hc := sc.HTTPClientConfig
		usesToken := hc.BearerTokenFile == serviceAccountToken ||
			(hc.Authorization != nil && hc.Authorization.CredentialsFile == serviceAccountToken)
		if !usesToken {
			continue
		}
		kubelet := len(sc.ServiceDiscoveryConfigs) > 0
		for _, sd := range sc.ServiceDiscoveryConfigs {
			k, ok := sd.(*kubernetes.SDConfig)
			kubelet = kubelet && ok && k.Role == kubernetes.RoleNode
		}
		for _, rc := range sc.RelabelConfigs {
			kubelet = kubelet && rc.TargetLabel != model.AddressLabel
		}
		if !kubelet {
			t.Errorf("job %s presents the service account token to targets other than kubelets: say here which rights that needs", sc.JobName)
			continue
		}
		out = append(out, "/nodes/"+kubeletSubresource(sc.MetricsPath)+":get")
	}
	return dedupe(out)
}

func dedupe(s []string) []string {
	sort.Strings(s)
	return slices.Compact(s)
}

// checkRBAC checks that each allot component's ServiceAccount is granted
// exactly what it uses, through ClusterRoleBindings in ns.
func checkRBAC(t *testing.T, r *rendered, ns string) {
	cm := findConfigMap(t, r, "allot-config")
	if cm == nil {
		t.Fatal("no allot-config ConfigMap")
	}
	shipped := mustParseConfig(t, "allot-config/allot.yml", cm.Data["allot.yml"])
	want := map[string][]string{
		"allot-discoverer": discovererRights(t, shipped),
		"allot-scraper":    scraperRights(t, shipped),
		"allot-rebalancer": nil,
	}

	for name, role := range r.roles {
		for _, rule := range role.Rules {
			for _, s := range slices.Concat(rule.Verbs, rule.Resources, rule.APIGroups, rule.NonResourceURLs) {
				if strings.Contains(s, "*") {
					t.Errorf("ClusterRole %s: rule %v: wildcard %q", name, rule, s)
				}
			}
		}
	}

	// Every binding binds rendered roles to rendered ServiceAccounts that
	// an allot component runs as.
	used := map[string]string{} // ServiceAccount → Deployment
	for name, wantRights := range want {
		d := r.deployments[name]
		if d == nil {
			t.Errorf("no Deployment %s", name)
			continue
		}
		sa := d.Spec.Template.Spec.ServiceAccountName
		if other, ok := used[sa]; ok {
			t.Errorf("%s and %s share ServiceAccount %s: each would get the other's rights", name, other, sa)
		}
		used[sa] = name

		got := granted(t, r, sa, ns)
		if !slices.Equal(got, wantRights) {
			t.Errorf("%s (ServiceAccount %s) is granted\n  %s\nbut its code uses\n  %s", name, sa, strings.Join(got, "\n  "), strings.Join(wantRights, "\n  "))
		}
		automount := ptrVal(d.Spec.Template.Spec.AutomountServiceAccountToken, ptrVal(r.accounts[sa].AutomountServiceAccountToken, true))
		if len(wantRights) == 0 && automount {
			t.Errorf("%s needs no Kubernetes API rights, so its pods should not mount a token (automountServiceAccountToken: false)", name)
		}
	}
	for bname, b := range r.bindings {
		if b.RoleRef.Kind != "ClusterRole" || r.roles[b.RoleRef.Name] == nil {
			t.Errorf("ClusterRoleBinding %s refers to %s %s, not a rendered ClusterRole", bname, b.RoleRef.Kind, b.RoleRef.Name)
		}
		for _, s := range b.Subjects {
			if s.Kind != "ServiceAccount" || s.Namespace != ns || r.accounts[s.Name] == nil || used[s.Name] == "" {
				t.Errorf("ClusterRoleBinding %s binds %s %s/%s, want a rendered ServiceAccount of an allot component in %s", bname, s.Kind, s.Namespace, s.Name, ns)
			}
		}
	}
	for name := range r.roles {
		bound := false
		for _, b := range r.bindings {
			bound = bound || b.RoleRef.Name == name
		}
		if !bound {
			t.Errorf("ClusterRole %s is bound to nobody", name)
		}
	}
	for name := range r.accounts {
		if used[name] == "" {
			t.Errorf("ServiceAccount %s is used by no allot component", name)
		}
	}
}

// granted is what the ClusterRoleBindings give the ServiceAccount ns/sa.
func granted(t *testing.T, r *rendered, sa, ns string) []string {
	t.Helper()
	var rules []rbacv1.PolicyRule
	for _, b := range r.bindings {
		for _, s := range b.Subjects {
			if s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == ns {
				if role := r.roles[b.RoleRef.Name]; role != nil {
					rules = append(rules, role.Rules...)
				}
			}
		}
	}
	got := ruleSet(t, rules)
	if len(got) == 0 {
		return nil
	}
	return dedupe(got)
}
