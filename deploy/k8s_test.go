package deploy_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// rendered is one overlay after `kustomize build`, every object decoded into
// its Kubernetes API type.
type rendered struct {
	namespaces   map[string]*corev1.Namespace
	accounts     map[string]*corev1.ServiceAccount
	roles        map[string]*rbacv1.ClusterRole
	bindings     map[string]*rbacv1.ClusterRoleBinding
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
}

// workload is what Deployments and StatefulSets have in common for the checks.
type workload struct {
	kind, name string
	replicas   int32
	selector   *metav1.LabelSelector
	template   corev1.PodTemplateSpec
}

func (r *rendered) workloads() []workload {
	var ws []workload
	for n, d := range r.deployments {
		ws = append(ws, workload{"Deployment", n, ptrVal(d.Spec.Replicas, 1), d.Spec.Selector, d.Spec.Template})
	}
	for n, s := range r.statefulSets {
		ws = append(ws, workload{"StatefulSet", n, ptrVal(s.Spec.Replicas, 1), s.Spec.Selector, s.Spec.Template})
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].kind+ws[i].name < ws[j].kind+ws[j].name })
	return ws
}

func ptrVal[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

func k8sScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// render runs kustomize on dir and decodes every object strictly: an unknown
// or duplicated field, or a kind outside the API types allot uses, fails.
func render(t *testing.T, dir string) *rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	resMap, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	scheme := k8sScheme(t)
	dec := kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, scheme, scheme,
		kjson.SerializerOptions{Yaml: true, Strict: true})
	r := &rendered{
		namespaces: map[string]*corev1.Namespace{}, accounts: map[string]*corev1.ServiceAccount{},
		roles: map[string]*rbacv1.ClusterRole{}, bindings: map[string]*rbacv1.ClusterRoleBinding{},
		configMaps: map[string]*corev1.ConfigMap{}, services: map[string]*corev1.Service{},
		deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{},
	}
	for _, res := range resMap.Resources() {
		y, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, gvk, err := dec.Decode(y, nil, nil)
		if err != nil {
			t.Errorf("%s %s: %v", res.GetKind(), res.GetName(), err)
			continue
		}
		m, err := metaOf(obj)
		if err != nil {
			t.Fatal(err)
		}
		id := gvk.Kind + " " + m.GetName()
		for _, msg := range validation.IsDNS1123Subdomain(m.GetName()) {
			t.Errorf("%s: name: %s", id, msg)
		}
		var dup bool
		switch o := obj.(type) {
		case *corev1.Namespace:
			dup = put(r.namespaces, o.Name, o)
		case *corev1.ServiceAccount:
			dup = put(r.accounts, o.Name, o)
		case *rbacv1.ClusterRole:
			dup = put(r.roles, o.Name, o)
		case *rbacv1.ClusterRoleBinding:
			dup = put(r.bindings, o.Name, o)
		case *corev1.ConfigMap:
			dup = put(r.configMaps, o.Name, o)
		case *corev1.Service:
			dup = put(r.services, o.Name, o)
		case *appsv1.Deployment:
			dup = put(r.deployments, o.Name, o)
		case *appsv1.StatefulSet:
			dup = put(r.statefulSets, o.Name, o)
		case *policyv1.PodDisruptionBudget:
			dup = put(r.pdbs, o.Name, o)
		default:
			t.Errorf("%s: kind not expected in allot's manifests", id)
		}
		if dup {
			t.Errorf("%s: defined twice", id)
		}
	}
	return r
}

func metaOf(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%T has no object metadata", obj)
	}
	return m, nil
}

func put[T any](m map[string]*T, k string, v *T) (dup bool) {
	_, dup = m[k]
	m[k] = v
	return dup
}

// objects lists every rendered object with its kind.
func (r *rendered) objects() map[string]metav1.Object {
	all := map[string]metav1.Object{}
	add := func(kind string, m map[string]metav1.Object) {
		for n, o := range m {
			all[kind+"/"+n] = o
		}
	}
	add("Namespace", asObjects(r.namespaces))
	add("ServiceAccount", asObjects(r.accounts))
	add("ClusterRole", asObjects(r.roles))
	add("ClusterRoleBinding", asObjects(r.bindings))
	add("ConfigMap", asObjects(r.configMaps))
	add("Service", asObjects(r.services))
	add("Deployment", asObjects(r.deployments))
	add("StatefulSet", asObjects(r.statefulSets))
	add("PodDisruptionBudget", asObjects(r.pdbs))
	return all
}

func asObjects[T any, PT interface {
	*T
	metav1.Object
}](m map[string]*T) map[string]metav1.Object {
	out := map[string]metav1.Object{}
	for k, v := range m {
		out[k] = PT(v)
	}
	return out
}

// ruleSet flattens policy rules into "group/resource:verb" and "url U:verb".
func ruleSet(t *testing.T, rules []rbacv1.PolicyRule) []string {
	t.Helper()
	var out []string
	for _, r := range rules {
		for _, v := range r.Verbs {
			for _, u := range r.NonResourceURLs {
				out = append(out, "url "+u+":"+v)
			}
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					out = append(out, g+"/"+res+":"+v)
				}
			}
			if len(r.ResourceNames) > 0 {
				t.Errorf("rule %v: resourceNames are not expected", r)
			}
		}
	}
	sort.Strings(out)
	return out
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func TestKustomizeOverlays(t *testing.T) {
	tests := []struct {
		overlay string
		// statefulSets are the in-cluster etcd and NATS, if any.
		statefulSets []string
		// endpoints wanted in the allot-endpoints ConfigMap (substrings).
		etcd, nats string
	}{
		{
			overlay:      "in-cluster",
			statefulSets: []string{"etcd", "nats"},
			etcd:         "http://etcd-0.etcd:2379,http://etcd-1.etcd:2379,http://etcd-2.etcd:2379",
			nats:         "nats://nats-0.nats:4222,nats://nats-1.nats:4222,nats://nats-2.nats:4222",
		},
		{
			overlay: "external",
			etcd:    "http://etcd-a.example.internal:2379,http://etcd-b.example.internal:2379,http://etcd-c.example.internal:2379",
			nats:    "nats://nats-a.example.internal:4222,nats://nats-b.example.internal:4222,nats://nats-c.example.internal:4222",
		},
	}
	for _, tc := range tests {
		t.Run(tc.overlay, func(t *testing.T) {
			r := render(t, filepath.Join("k8s", "overlays", tc.overlay))
			const ns = "allot"

			t.Run("namespaces", func(t *testing.T) {
				if r.namespaces[ns] == nil {
					t.Errorf("no Namespace %s", ns)
				}
				for id, o := range r.objects() {
					clusterScoped := strings.HasPrefix(id, "Namespace/") || strings.HasPrefix(id, "Cluster")
					switch {
					case clusterScoped && o.GetNamespace() != "":
						t.Errorf("%s: cluster-scoped object with namespace %q", id, o.GetNamespace())
					case !clusterScoped && o.GetNamespace() != ns:
						t.Errorf("%s: namespace %q, want %q", id, o.GetNamespace(), ns)
					}
				}
			})

			t.Run("rbac", func(t *testing.T) { checkRBAC(t, r, ns) })

			endpoints := findConfigMap(t, r, "allot-endpoints")
			t.Run("endpoints", func(t *testing.T) {
				if endpoints == nil {
					t.Fatal("no allot-endpoints ConfigMap")
				}
				if got := endpoints.Data["ETCD_ENDPOINTS"]; got != tc.etcd {
					t.Errorf("ETCD_ENDPOINTS = %q, want %q", got, tc.etcd)
				}
				if got := endpoints.Data["NATS_URL"]; got != tc.nats {
					t.Errorf("NATS_URL = %q, want %q", got, tc.nats)
				}
				if endpoints.Data["OTLP_ENDPOINT"] == "" {
					t.Error("OTLP_ENDPOINT is empty")
				}
				if n, err := strconv.Atoi(endpoints.Data["EVENTS_REPLICAS"]); err != nil || n < 1 || n > 5 {
					t.Errorf("EVENTS_REPLICAS=%q: want 1 to 5", endpoints.Data["EVENTS_REPLICAS"])
				}
			})

			t.Run("config", func(t *testing.T) {
				cm := findConfigMap(t, r, "allot-config")
				if cm == nil {
					t.Fatal("no allot-config ConfigMap")
				}
				jobs := checkAllotConfig(t, "allot-config/allot.yml", []byte(cm.Data["allot.yml"]))
				if !slices.Contains(jobs, "kubernetes-pods") {
					t.Errorf("jobs %v: want kubernetes-pods", jobs)
				}
			})

			t.Run("allot", func(t *testing.T) {
				want := map[string]int32{"allot-discoverer": 2, "allot-rebalancer": 2, "allot-scraper": 3}
				for name, replicas := range want {
					d := r.deployments[name]
					if d == nil {
						t.Errorf("no Deployment %s", name)
						continue
					}
					if got := ptrVal(d.Spec.Replicas, 1); got != replicas {
						t.Errorf("%s: replicas %d, want %d", name, got, replicas)
					}
					checkAllotPod(t, r, name, d.Spec.Template)
				}
				for name := range r.deployments {
					if _, ok := want[name]; !ok {
						t.Errorf("unexpected Deployment %s", name)
					}
				}
				sc := r.deployments["allot-scraper"]
				if sc != nil {
					checkAntiAffinity(t, "allot-scraper", sc.Spec.Template)
					ru := sc.Spec.Strategy.RollingUpdate
					if ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
						t.Error("allot-scraper: a rolling update should never take a scraper away before its successor runs (maxUnavailable 0)")
					}
				}
			})

			t.Run("workloads", func(t *testing.T) {
				for _, w := range r.workloads() {
					checkWorkload(t, r, w)
				}
			})

			t.Run("services", func(t *testing.T) { checkServices(t, r) })
			t.Run("pdbs", func(t *testing.T) { checkPDBs(t, r) })

			t.Run("statefulsets", func(t *testing.T) {
				var got []string
				for n := range r.statefulSets {
					got = append(got, n)
				}
				sort.Strings(got)
				if !slices.Equal(got, tc.statefulSets) {
					t.Fatalf("StatefulSets %v, want %v", got, tc.statefulSets)
				}
				if etcd := r.statefulSets["etcd"]; etcd != nil {
					checkEtcd(t, r, etcd, tc.etcd)
				}
				if nats := r.statefulSets["nats"]; nats != nil {
					checkNATS(t, r, nats, tc.nats)
					if got, want := endpoints.Data["EVENTS_REPLICAS"], fmt.Sprint(min(3, ptrVal(nats.Spec.Replicas, 1))); got != want {
						t.Errorf("EVENTS_REPLICAS=%s, want %s: the catalog should survive a NATS server down", got, want)
					}
				}
			})
		})
	}
}

// findConfigMap finds a generated ConfigMap by its name before the hash.
func findConfigMap(t *testing.T, r *rendered, prefix string) *corev1.ConfigMap {
	t.Helper()
	var found *corev1.ConfigMap
	for n, cm := range r.configMaps {
		if n == prefix || strings.HasPrefix(n, prefix+"-") && len(n) == len(prefix)+11 {
			if found != nil {
				t.Errorf("two ConfigMaps named %s-*", prefix)
			}
			found = cm
		}
	}
	return found
}

// checkAllotPod checks the pod template of an allot role.
func checkAllotPod(t *testing.T, r *rendered, name string, tpl corev1.PodTemplateSpec) {
	t.Helper()
	spec := tpl.Spec
	if spec.ServiceAccountName == "" || r.accounts[spec.ServiceAccountName] == nil {
		t.Errorf("%s: service account %q is not rendered", name, spec.ServiceAccountName)
	}
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: must run as non-root", name)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: %d containers, want 1", name, len(spec.Containers))
	}
	c := spec.Containers[0]
	role := strings.TrimPrefix(name, "allot-")
	if tpl.Labels["app.kubernetes.io/component"] != role {
		t.Errorf("%s: component label %q, want %q", name, tpl.Labels["app.kubernetes.io/component"], role)
	}
	if !strings.Contains(c.Image, "allot") || !strings.Contains(c.Image, ":") {
		t.Errorf("%s: image %q: want an allot image with a tag", name, c.Image)
	}
	if len(c.Command) != 0 {
		t.Errorf("%s: command %v overrides the image's entrypoint /allot; use args", name, c.Command)
	}
	checkAllotArgs(t, "Deployment "+name, c.Args)
	if len(c.Args) > 0 && c.Args[0] != role {
		t.Errorf("%s: runs `allot %s`, want `allot %s`", name, c.Args[0], role)
	}
	wantFlags := []string{"etcd.endpoints"}
	switch role {
	case "discoverer":
		wantFlags = append(wantFlags, "config.file", "nats.url")
	case "scraper":
		wantFlags = append(wantFlags, "nats.url", "otlp.endpoint")
	}
	for _, f := range wantFlags {
		if _, ok := flagValue(c.Args, f); !ok {
			t.Errorf("%s: no --%s", name, f)
		}
	}
	if cf, ok := flagValue(c.Args, "config.file"); ok {
		if !mountsConfig(r, spec, c, cf) {
			t.Errorf("%s: --config.file=%s is not in a mounted allot-config ConfigMap", name, cf)
		}
	}
	port := containerPort(c, "http")
	if port != 8080 {
		t.Errorf("%s: port http = %d, want 8080 (the default --web.listen-address)", name, port)
	}
	for probe, want := range map[string]*corev1.Probe{"/-/healthy": c.LivenessProbe, "/-/ready": c.ReadinessProbe} {
		if want == nil || want.HTTPGet == nil {
			t.Errorf("%s: no HTTP probe for %s", name, probe)
			continue
		}
		if want.HTTPGet.Path != probe || want.HTTPGet.Port != intstr.FromString("http") {
			t.Errorf("%s: probe %s:%s, want %s:http", name, want.HTTPGet.Path, want.HTTPGet.Port.String(), probe)
		}
	}
}

// mountsConfig reports whether file is inside a volume mount of a ConfigMap
// generated from allot-config that has that key.
func mountsConfig(r *rendered, spec corev1.PodSpec, c corev1.Container, file string) bool {
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name != m.Name || v.ConfigMap == nil {
				continue
			}
			cm := r.configMaps[v.ConfigMap.Name]
			if cm != nil && strings.HasPrefix(cm.Name, "allot-config") && cm.Data[rel] != "" {
				return true
			}
		}
	}
	return false
}

func containerPort(c corev1.Container, name string) int32 {
	for _, p := range c.Ports {
		if p.Name == name {
			return p.ContainerPort
		}
	}
	return 0
}

func checkAntiAffinity(t *testing.T, name string, tpl corev1.PodTemplateSpec) {
	t.Helper()
	a := tpl.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		t.Fatalf("%s: no podAntiAffinity", name)
	}
	var terms []corev1.PodAffinityTerm
	terms = append(terms, a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
	for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		terms = append(terms, w.PodAffinityTerm)
	}
	for _, term := range terms {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if term.TopologyKey == "kubernetes.io/hostname" && sel.Matches(labels.Set(tpl.Labels)) {
			return
		}
	}
	t.Errorf("%s: no anti-affinity by kubernetes.io/hostname against its own pods", name)
}

// checkWorkload checks what every Deployment and StatefulSet needs.
func checkWorkload(t *testing.T, r *rendered, w workload) {
	id := w.kind + " " + w.name
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() {
		t.Errorf("%s: selector %v: %v", id, w.selector, err)
		return
	}
	if !sel.Matches(labels.Set(w.template.Labels)) {
		t.Errorf("%s: selector %s does not match its pods %v", id, sel, w.template.Labels)
	}
	for _, o := range r.workloads() {
		if o.name != w.name && sel.Matches(labels.Set(o.template.Labels)) {
			t.Errorf("%s: selector also matches the pods of %s %s", id, o.kind, o.name)
		}
	}
	if w.replicas < 2 {
		t.Errorf("%s: %d replicas: allot's parts all run redundantly", id, w.replicas)
	}
	if pdb := pdbFor(r, w.template.Labels); pdb == nil {
		t.Errorf("%s: no PodDisruptionBudget", id)
	}
	for _, c := range w.template.Spec.Containers {
		cid := id + " container " + c.Name
		req := c.Resources.Requests
		if req.Cpu().IsZero() || req.Memory().IsZero() {
			t.Errorf("%s: cpu and memory requests are required", cid)
		}
		if c.Resources.Limits.Memory().IsZero() {
			t.Errorf("%s: no memory limit", cid)
		}
		if c.LivenessProbe == nil || c.ReadinessProbe == nil {
			t.Errorf("%s: liveness and readiness probes are required", cid)
		}
		for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
			if p != nil && p.HTTPGet != nil && p.HTTPGet.Port.Type == intstr.String && containerPort(c, p.HTTPGet.Port.StrVal) == 0 {
				t.Errorf("%s: probe on port %q, which the container does not declare", cid, p.HTTPGet.Port.StrVal)
			}
		}
		if strings.HasSuffix(c.Image, ":latest") && !strings.Contains(c.Image, "allot") {
			t.Errorf("%s: image %s is not pinned", cid, c.Image)
		}
		// Every $(VAR) in command and args must be defined, or Kubernetes
		// passes it on literally.
		defined := map[string]bool{}
		for _, e := range c.Env {
			defined[e.Name] = true
		}
		for _, ef := range c.EnvFrom {
			if ef.ConfigMapRef == nil {
				continue
			}
			cm := r.configMaps[ef.ConfigMapRef.Name]
			if cm == nil {
				t.Errorf("%s: envFrom ConfigMap %s is not rendered", cid, ef.ConfigMapRef.Name)
				continue
			}
			for k := range cm.Data {
				defined[k] = true
			}
		}
		for _, a := range slices.Concat(c.Command, c.Args) {
			for _, m := range envRef.FindAllStringSubmatch(a, -1) {
				if !defined[m[1]] {
					t.Errorf("%s: %q uses $(%s), which is not in its environment", cid, a, m[1])
				}
			}
		}
		for _, m := range c.VolumeMounts {
			if !slices.ContainsFunc(w.template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name }) &&
				!hasClaimTemplate(r, w, m.Name) {
				t.Errorf("%s: mounts volume %s, which the pod does not have", cid, m.Name)
			}
		}
	}
	for _, v := range w.template.Spec.Volumes {
		if v.ConfigMap != nil && r.configMaps[v.ConfigMap.Name] == nil {
			t.Errorf("%s: volume %s: ConfigMap %s is not rendered", id, v.Name, v.ConfigMap.Name)
		}
	}
}

func hasClaimTemplate(r *rendered, w workload, name string) bool {
	s := r.statefulSets[w.name]
	if w.kind != "StatefulSet" || s == nil {
		return false
	}
	return slices.ContainsFunc(s.Spec.VolumeClaimTemplates, func(c corev1.PersistentVolumeClaim) bool { return c.Name == name })
}

func pdbFor(r *rendered, podLabels map[string]string) *policyv1.PodDisruptionBudget {
	for _, p := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err == nil && !sel.Empty() && sel.Matches(labels.Set(podLabels)) {
			return p
		}
	}
	return nil
}

func checkServices(t *testing.T, r *rendered) {
	for name, s := range r.services {
		if len(s.Spec.Selector) == 0 {
			t.Errorf("Service %s: no selector", name)
			continue
		}
		sel := labels.SelectorFromSet(s.Spec.Selector)
		var backends []workload
		for _, w := range r.workloads() {
			if sel.Matches(labels.Set(w.template.Labels)) {
				backends = append(backends, w)
			}
		}
		if len(backends) != 1 {
			t.Errorf("Service %s: selects %d workloads, want 1", name, len(backends))
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type != intstr.String {
				continue
			}
			found := false
			for _, c := range backends[0].template.Spec.Containers {
				found = found || containerPort(c, p.TargetPort.StrVal) != 0
			}
			if !found {
				t.Errorf("Service %s: targetPort %q is not a port of %s", name, p.TargetPort.StrVal, backends[0].name)
			}
		}
	}
}

func checkPDBs(t *testing.T, r *rendered) {
	for name, p := range r.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: %v", name, err)
			continue
		}
		var matched []workload
		for _, w := range r.workloads() {
			if sel.Matches(labels.Set(w.template.Labels)) {
				matched = append(matched, w)
			}
		}
		if len(matched) != 1 {
			t.Errorf("PodDisruptionBudget %s: covers %d workloads, want 1", name, len(matched))
			continue
		}
		// A budget that allows no disruption at all blocks node drains.
		w := matched[0]
		switch {
		case p.Spec.MinAvailable != nil && p.Spec.MinAvailable.Type == intstr.Int && p.Spec.MinAvailable.IntVal >= w.replicas:
			t.Errorf("PodDisruptionBudget %s: minAvailable %d of %d replicas blocks every eviction", name, p.Spec.MinAvailable.IntVal, w.replicas)
		case p.Spec.MaxUnavailable != nil && p.Spec.MaxUnavailable.Type == intstr.Int && p.Spec.MaxUnavailable.IntVal < 1:
			t.Errorf("PodDisruptionBudget %s: maxUnavailable 0 blocks every eviction", name)
		case p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil:
			t.Errorf("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", name)
		}
	}
}

// headless returns the governing Service of a StatefulSet, which must be
// headless and publish not-ready pods (members must find each other before
// any of them is ready).
func headless(t *testing.T, r *rendered, s *appsv1.StatefulSet) {
	t.Helper()
	svc := r.services[s.Spec.ServiceName]
	if svc == nil {
		t.Fatalf("StatefulSet %s: serviceName %q is not rendered", s.Name, s.Spec.ServiceName)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: want headless with publishNotReadyAddresses", svc.Name)
	}
	if s.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet %s: members must start in parallel to form a cluster", s.Name)
	}
}

// podURLs lists scheme://<sts>-<i>.<svc>:port for every replica.
func podURLs(s *appsv1.StatefulSet, scheme string, port int, named bool) []string {
	var out []string
	for i := range ptrVal(s.Spec.Replicas, 1) {
		pod := fmt.Sprintf("%s-%d", s.Name, i)
		u := fmt.Sprintf("%s://%s.%s:%d", scheme, pod, s.Spec.ServiceName, port)
		if named {
			u = pod + "=" + u
		}
		out = append(out, u)
	}
	return out
}

func checkEtcd(t *testing.T, r *rendered, s *appsv1.StatefulSet, endpoints string) {
	headless(t, r, s)
	if ptrVal(s.Spec.Replicas, 1) != 3 {
		t.Errorf("etcd: %d members, want 3", ptrVal(s.Spec.Replicas, 1))
	}
	c := s.Spec.Template.Spec.Containers[0]
	if c.Image != etcdImage(t) {
		t.Errorf("etcd image %s, want %s", c.Image, etcdImage(t))
	}
	args := slices.Concat(c.Command, c.Args)
	if len(args) == 0 || args[0] != "/usr/local/bin/etcd" {
		t.Errorf("etcd: command %v: want /usr/local/bin/etcd first", args)
	}
	if got, want := argOf(args, "initial-cluster"), strings.Join(podURLs(s, "http", 2380, true), ","); got != want {
		t.Errorf("etcd --initial-cluster=%s, want %s", got, want)
	}
	if got, want := endpoints, strings.Join(podURLs(s, "http", 2379, false), ","); got != want {
		t.Errorf("allot's etcd endpoints %s, want every member: %s", got, want)
	}
	if argOf(args, "name") != "$(POD_NAME)" || !strings.Contains(argOf(args, "initial-advertise-peer-urls"), "$(POD_NAME)."+s.Spec.ServiceName) {
		t.Errorf("etcd: each member must name and advertise itself by its pod name")
	}
	if len(s.Spec.VolumeClaimTemplates) == 0 {
		t.Error("etcd: no volumeClaimTemplates: members would lose their data on restart")
	}
}

func checkNATS(t *testing.T, r *rendered, s *appsv1.StatefulSet, urls string) {
	headless(t, r, s)
	if ptrVal(s.Spec.Replicas, 1) != 3 {
		t.Errorf("nats: %d servers, want 3", ptrVal(s.Spec.Replicas, 1))
	}
	c := s.Spec.Template.Spec.Containers[0]
	if c.Image != natsImage(t) {
		t.Errorf("nats image %s, want %s", c.Image, natsImage(t))
	}
	if len(c.Command) != 0 {
		t.Errorf("nats: command %v replaces the image's entrypoint /nats-server", c.Command)
	}
	if !slices.Contains(c.Args, "--jetstream") && !slices.Contains(c.Args, "--js") {
		t.Error("nats: JetStream is off")
	}
	if got, want := argOf(c.Args, "routes"), strings.Join(podURLs(s, "nats", 6222, false), ","); got != want {
		t.Errorf("nats --routes=%s, want %s", got, want)
	}
	if got, want := urls, strings.Join(podURLs(s, "nats", 4222, false), ","); got != want {
		t.Errorf("allot's NATS URLs %s, want every server: %s", got, want)
	}
	if argOf(c.Args, "store_dir") == "" || len(s.Spec.VolumeClaimTemplates) == 0 {
		t.Error("nats: JetStream must store on a persistent volume")
	}
}

// argOf returns the value of --name=value in args ("" if absent).
func argOf(args []string, name string) string {
	v, _ := flagValue(args, name)
	return v
}
