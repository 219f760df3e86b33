package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/allot-dev/allot/internal/testcluster"
	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/promcr"
	"github.com/allot-dev/allot/services/discoverer"
)

// crLatencyBound is what the issue promises: a CR change reaches the
// scrapers within a second.
const crLatencyBound = time.Second

// TestCRChangesReachTheCatalogWithinASecond runs the path a ServiceMonitor
// change takes to a scraper, wired as the discoverer role wires it
// (crOptions.start → scrapeConfigs.setCR → Discoverer.ApplyConfig): the
// promcr Watcher on fake clientsets, a real Discoverer on embedded etcd and
// NATS whose generated kubernetes_sd_config reads the fake cluster over
// HTTP, and a catalog follower standing in for a scraper. Create, update
// and delete must each be seen by the follower within crLatencyBound.
func TestCRChangesReachTheCatalogWithinASecond(t *testing.T) {
	const (
		ns  = "default"
		job = "serviceMonitor/default/web/0"
	)
	logger := testcluster.Logger()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}

	// The cluster: a Service with two ready endpoints, which the
	// ServiceMonitor created below selects.
	client := fake.NewClientset(
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web", Labels: map[string]string{"app": "web"}},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}},
		},
		&discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: new("http"), Port: new(int32(8080))}},
			Endpoints: []discoveryv1.Endpoint{
				{Addresses: []string{"127.0.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)}},
				{Addresses: []string{"127.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: new(true)}},
			},
		},
	)
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		promcr.ServiceMonitorsResource: "ServiceMonitorList",
		promcr.PodMonitorsResource:     "PodMonitorList",
		promcr.ProbesResource:          "ProbeList",
		promcr.ScrapeConfigsResource:   "ScrapeConfigList",
	})
	disc := client.Discovery().(*fakediscovery.FakeDiscovery)
	disc.Resources = append(disc.Resources, &metav1.APIResourceList{
		GroupVersion: "monitoring.coreos.com/v1",
		APIResources: []metav1.APIResource{
			{Name: "servicemonitors", Namespaced: true},
			{Name: "podmonitors", Namespaced: true},
			{Name: "probes", Namespaced: true},
		},
	})
	kubeconfig := serveFakeAPI(t, client)

	c := testcluster.Start(t)
	jsDiscoverer, jsFollower := c.JetStream(), c.JetStream()
	// Registered after the fixtures, so it runs before they close.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	// The discoverer, fed the way crOptions.start feeds it.
	file, err := config.Load(`
scrape_configs:
  - job_name: warmup
    static_configs: [{targets: ["127.0.0.1:9"]}]
`, logger)
	require.NoError(t, err)
	d, err := discoverer.New(discoverer.Config{ID: "d1", Keyspace: leases.NewKeyspace("/test/")}, c.Client, jsDiscoverer, prometheus.NewRegistry(), logger)
	require.NoError(t, err)
	sc := &scrapeConfigs{d: d}
	require.NoError(t, sc.setFile(file))
	wg.Go(func() { assert.NoError(t, d.Run(ctx)) })

	w := promcr.NewWatcher(promcr.Config{
		Enabled:              true,
		KubeconfigFile:       kubeconfig,
		ServiceDiscoveryRole: "endpointslice",
	}, client, dyn, logger, prometheus.NewRegistry())
	watcherSynced := make(chan struct{})
	markSynced := sync.OnceFunc(func() { close(watcherSynced) })
	wg.Go(func() {
		assert.NoError(t, w.Run(ctx, func(jobs []*config.ScrapeConfig) {
			sc.setCR(jobs, logger)
			markSynced()
		}))
	})

	// The scraper's view of the catalog: every job and every slot.
	view := newCatalogView()
	f := events.NewFollower(jsFollower, events.Config{}, view, nil, logger)
	all := make([]int, events.Slots)
	for i := range all {
		all[i] = i
	}
	f.SetSlots(all)
	wg.Go(func() { assert.NoError(t, f.Run(ctx)) })

	// Warm up: the discoverer leads and publishes, and the watcher has
	// synced (its first call applied the file's job alongside no CR job).
	view.wait(t, 30*time.Second, "the warmup target", func(jobs map[string]events.Job, targets map[string]events.Target) bool {
		return len(targetsOf(targets, "warmup")) == 1
	})
	select {
	case <-watcherSynced:
	case <-time.After(30 * time.Second):
		t.Fatal("the watcher did not sync")
	}

	sms := dyn.Resource(promcr.ServiceMonitorsResource).Namespace(ns)
	sm := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "ServiceMonitor",
		"metadata":   map[string]any{"namespace": ns, "name": "web"},
		"spec": map[string]any{
			"selector":  map[string]any{"matchLabels": map[string]any{"app": "web"}},
			"endpoints": []any{map[string]any{"port": "http", "interval": "15s"}},
		},
	}}

	// Each step changes the CR and waits for the follower to hold what the
	// change implies: the job with its new config and exactly the targets
	// it yields.
	wantTargets := func(interval string, extra map[string]string) func(map[string]events.Job, map[string]events.Target) bool {
		return func(jobs map[string]events.Job, targets map[string]events.Target) bool {
			j, ok := jobs[job]
			if !ok || !strings.Contains(j.Config, "scrape_interval: "+interval) {
				return false
			}
			ts := targetsOf(targets, job)
			if len(ts) != 2 {
				return false
			}
			addrs := []string{}
			for _, tg := range ts {
				if tg.ConfigHash != j.Hash || tg.Labels["__scrape_interval__"] != interval {
					return false
				}
				for k, v := range extra {
					if tg.Labels[k] != v {
						return false
					}
				}
				addrs = append(addrs, tg.Labels["__address__"])
			}
			slices.Sort(addrs)
			return slices.Equal(addrs, []string{"127.0.0.1:8080", "127.0.0.2:8080"})
		}
	}
	steps := []struct {
		name   string
		change func() error
		want   func(map[string]events.Job, map[string]events.Target) bool
	}{
		{
			name: "create",
			change: func() error {
				_, err := sms.Create(ctx, sm, metav1.CreateOptions{})
				return err
			},
			want: wantTargets("15s", nil),
		},
		{
			name: "update interval and relabeling",
			change: func() error {
				cur, err := sms.Get(ctx, "web", metav1.GetOptions{})
				if err != nil {
					return err
				}
				if err := unstructured.SetNestedSlice(cur.Object, []any{map[string]any{
					"port": "http", "interval": "20s",
					"relabelings": []any{map[string]any{"action": "replace", "targetLabel": "team", "replacement": "a"}},
				}}, "spec", "endpoints"); err != nil {
					return err
				}
				_, err = sms.Update(ctx, cur, metav1.UpdateOptions{})
				return err
			},
			want: wantTargets("20s", map[string]string{"team": "a"}),
		},
		{
			name:   "delete",
			change: func() error { return sms.Delete(ctx, "web", metav1.DeleteOptions{}) },
			want: func(jobs map[string]events.Job, targets map[string]events.Target) bool {
				_, ok := jobs[job]
				return !ok && len(targetsOf(targets, job)) == 0 && len(targetsOf(targets, "warmup")) == 1
			},
		},
	}
	for _, s := range steps {
		start := time.Now()
		require.NoError(t, s.change(), s.name)
		view.wait(t, 20*time.Second, s.name, s.want)
		took := time.Since(start)
		t.Logf("%s → follower: %s", s.name, took)
		assert.Less(t, took, crLatencyBound, "%s reaches the catalog's followers within a second", s.name)
	}
}

// targetsOf returns the targets of job.
func targetsOf(targets map[string]events.Target, job string) []events.Target {
	var out []events.Target
	for _, t := range targets {
		if t.Job == job {
			out = append(out, t)
		}
	}
	return out
}

// catalogView is an events.Handler that keeps the catalog as delivered and
// signals every change.
type catalogView struct {
	mu      sync.Mutex
	jobs    map[string]events.Job
	targets map[string]events.Target
	changed chan struct{}
}

func newCatalogView() *catalogView {
	return &catalogView{jobs: map[string]events.Job{}, targets: map[string]events.Target{}, changed: make(chan struct{}, 1)}
}

func (v *catalogView) update(f func()) {
	v.mu.Lock()
	f()
	v.mu.Unlock()
	select {
	case v.changed <- struct{}{}:
	default:
	}
}

func (v *catalogView) UpsertJob(j events.Job)       { v.update(func() { v.jobs[j.Name] = j }) }
func (v *catalogView) DeleteJob(name string)        { v.update(func() { delete(v.jobs, name) }) }
func (v *catalogView) UpsertTarget(t events.Target) { v.update(func() { v.targets[t.ID] = t }) }
func (v *catalogView) DeleteTarget(id string)       { v.update(func() { delete(v.targets, id) }) }
func (v *catalogView) Synced()                      {}

// wait returns as soon as cond holds for the delivered catalog, checking
// after every delivery.
func (v *catalogView) wait(t *testing.T, timeout time.Duration, what string, cond func(map[string]events.Job, map[string]events.Target) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		v.mu.Lock()
		ok := cond(v.jobs, v.targets)
		jobs := slices.Sorted(func(yield func(string) bool) {
			for n := range v.jobs {
				if !yield(n) {
					return
				}
			}
		})
		n := len(v.targets)
		v.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-v.changed:
		case <-deadline:
			t.Fatalf("%s: not in the catalog within %s; jobs %v, %d targets", what, timeout, jobs, n)
		}
	}
}

// serveFakeAPI serves the list and watch calls of Prometheus's Kubernetes
// SD (roles endpointslice and endpoints) from client on a loopback
// listener, and returns a kubeconfig file pointing at it. Objects are
// served as JSON; the SD client asks for protobuf but accepts anything.
func serveFakeAPI(t *testing.T, client *fake.Clientset) string {
	t.Helper()
	type resource struct {
		list  func(ctx context.Context, ns string, o metav1.ListOptions) (runtime.Object, error)
		watch func(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error)
	}
	resources := map[string]resource{
		"services": {
			func(ctx context.Context, ns string, o metav1.ListOptions) (runtime.Object, error) {
				return client.CoreV1().Services(ns).List(ctx, o)
			},
			func(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
				return client.CoreV1().Services(ns).Watch(ctx, o)
			},
		},
		"pods": {
			func(ctx context.Context, ns string, o metav1.ListOptions) (runtime.Object, error) {
				return client.CoreV1().Pods(ns).List(ctx, o)
			},
			func(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
				return client.CoreV1().Pods(ns).Watch(ctx, o)
			},
		},
		"endpoints": {
			func(ctx context.Context, ns string, o metav1.ListOptions) (runtime.Object, error) {
				return client.CoreV1().Endpoints(ns).List(ctx, o) //nolint:staticcheck // the endpoints role reads them
			},
			func(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
				return client.CoreV1().Endpoints(ns).Watch(ctx, o) //nolint:staticcheck // the endpoints role reads them
			},
		},
		"endpointslices": {
			func(ctx context.Context, ns string, o metav1.ListOptions) (runtime.Object, error) {
				return client.DiscoveryV1().EndpointSlices(ns).List(ctx, o)
			},
			func(ctx context.Context, ns string, o metav1.ListOptions) (watch.Interface, error) {
				return client.DiscoveryV1().EndpointSlices(ns).Watch(ctx, o)
			},
		},
	}
	codec := scheme.Codecs.LegacyCodec(corev1.SchemeGroupVersion, discoveryv1.SchemeGroupVersion)
	serve := func(w http.ResponseWriter, r *http.Request) {
		res, ok := resources[r.PathValue("resource")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		ns, q := r.PathValue("ns"), r.URL.Query()
		if q.Get("watch") != "true" && q.Get("watch") != "1" {
			obj, err := res.list(r.Context(), ns, metav1.ListOptions{})
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if err := codec.Encode(obj, w); err != nil {
				t.Logf("fake API: encode list: %v", err)
			}
			return
		}
		if q.Get("sendInitialEvents") == "true" {
			// Streaming lists are not served; the client falls back to
			// list and watch, as against an API server without them.
			http.Error(w, "sendInitialEvents is not supported", http.StatusBadRequest)
			return
		}
		wi, err := res.watch(r.Context(), ns, metav1.ListOptions{})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer wi.Stop()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		for {
			select {
			case <-r.Context().Done():
				return
			case ev, ok := <-wi.ResultChan():
				if !ok {
					return
				}
				raw, err := runtime.Encode(codec, ev.Object)
				if err != nil {
					t.Logf("fake API: encode %s event: %v", ev.Type, err)
					return
				}
				if _, err := fmt.Fprintf(w, `{"type":%q,"object":%s}`+"\n", ev.Type, raw); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/namespaces/{ns}/{resource}", serve)
	mux.HandleFunc("GET /apis/discovery.k8s.io/v1/namespaces/{ns}/{resource}", serve)
	srv := httptest.NewServer(mux)
	// Close ends the SD's open watches first, so it does not wait for them.
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })

	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: %q}}]
users: [{name: fake, user: {}}]
contexts: [{name: fake, context: {cluster: fake, user: fake}}]
current-context: fake
`, srv.URL)), 0o600))
	return path
}
