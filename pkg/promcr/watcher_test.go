package promcr

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	fakediscovery "k8s.io/client-go/discovery/fake"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// harness runs a Watcher against client-go's fake clientsets, the way
// Prometheus's own kubernetes SD tests fake the API server.
type harness struct {
	t       *testing.T
	client  *fake.Clientset
	dyn     *dynamicfake.FakeDynamicClient
	reg     *prometheus.Registry
	w       *Watcher
	updates chan []*promconfig.ScrapeConfig
	cancel  context.CancelFunc
	done    chan error
}

// newHarness starts a watcher; crds lists the CRDs the fake API server
// offers (ScrapeConfig is left out unless asked for, as in a cluster with
// an older operator).
func newHarness(t *testing.T, cfg Config, crds []schema.GroupVersionResource, objs ...runtime.Object) *harness {
	t.Helper()
	h := &harness{
		t:       t,
		client:  fake.NewClientset(objs...),
		reg:     prometheus.NewRegistry(),
		updates: make(chan []*promconfig.ScrapeConfig, 64),
		done:    make(chan error, 1),
	}
	h.dyn = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		ServiceMonitorsResource: "ServiceMonitorList",
		PodMonitorsResource:     "PodMonitorList",
		ProbesResource:          "ProbeList",
		ScrapeConfigsResource:   "ScrapeConfigList",
	})
	lists := map[string]*metav1.APIResourceList{}
	for _, gvr := range crds {
		gv := gvr.GroupVersion().String()
		if lists[gv] == nil {
			lists[gv] = &metav1.APIResourceList{GroupVersion: gv}
		}
		lists[gv].APIResources = append(lists[gv].APIResources, metav1.APIResource{Name: gvr.Resource, Namespaced: true})
	}
	disc := h.client.Discovery().(*fakediscovery.FakeDiscovery)
	for _, l := range lists {
		disc.Resources = append(disc.Resources, l)
	}
	cfg.Enabled = true
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h.w = NewWatcher(cfg, h.client, h.dyn, logger, h.reg)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() {
		h.done <- h.w.Run(ctx, func(c []*promconfig.ScrapeConfig) { h.updates <- c })
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		require.NoError(h.t, err)
	case <-time.After(20 * time.Second):
		h.t.Fatal("Run did not return after its context ended")
	}
}

// next waits for the next onChange call.
func (h *harness) next(timeout time.Duration) []*promconfig.ScrapeConfig {
	h.t.Helper()
	select {
	case c := <-h.updates:
		return c
	case <-time.After(timeout):
		h.t.Fatalf("no onChange within %s", timeout)
		return nil
	}
}

// waitJobs waits until an onChange call carries exactly want (job names).
func (h *harness) waitJobs(timeout time.Duration, want ...string) []*promconfig.ScrapeConfig {
	h.t.Helper()
	deadline := time.After(timeout)
	var last []string
	for {
		select {
		case c := <-h.updates:
			last = jobNames(c)
			if slices.Equal(last, want) {
				return c
			}
		case <-deadline:
			h.t.Fatalf("jobs %v not seen within %s; last %v", want, timeout, last)
			return nil
		}
	}
}

func jobNames(cfgs []*promconfig.ScrapeConfig) []string {
	names := []string{}
	for _, c := range cfgs {
		names = append(names, c.JobName)
	}
	return names
}

func (h *harness) create(gvr schema.GroupVersionResource, obj map[string]any) {
	h.t.Helper()
	u := &unstructured.Unstructured{Object: obj}
	_, err := h.dyn.Resource(gvr).Namespace(u.GetNamespace()).Create(context.Background(), u, metav1.CreateOptions{})
	require.NoError(h.t, err)
}

func (h *harness) delete(gvr schema.GroupVersionResource, ns, name string) {
	h.t.Helper()
	require.NoError(h.t, h.dyn.Resource(gvr).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{}))
}

func serviceMonitor(ns, name string, endpoint map[string]any) map[string]any {
	return map[string]any{
		"apiVersion": "monitoring.coreos.com/v1",
		"kind":       "ServiceMonitor",
		"metadata":   map[string]any{"namespace": ns, "name": name},
		"spec": map[string]any{
			"selector":  map[string]any{"matchLabels": map[string]any{"app": name}},
			"endpoints": []any{endpoint},
		},
	}
}

var monitoringV1 = []schema.GroupVersionResource{ServiceMonitorsResource, PodMonitorsResource, ProbesResource}

func TestWatcherCreateDelete(t *testing.T) {
	h := newHarness(t, Config{}, monitoringV1)
	require.Empty(t, h.next(20*time.Second), "the first call, after the informers synced, has no jobs")

	start := time.Now()
	h.create(ServiceMonitorsResource, serviceMonitor("default", "web", map[string]any{"port": "http"}))
	got := h.waitJobs(10*time.Second, "serviceMonitor/default/web/0")
	latency := time.Since(start)
	t.Logf("create → onChange: %s", latency)
	require.Less(t, latency, time.Second, "a new ServiceMonitor reaches onChange within a second")
	require.Equal(t, "/metrics", got[0].MetricsPath)

	start = time.Now()
	h.delete(ServiceMonitorsResource, "default", "web")
	h.waitJobs(10 * time.Second)
	t.Logf("delete → onChange: %s", time.Since(start))
	require.Less(t, time.Since(start), time.Second)

	require.Equal(t, 0.0, testutil.ToFloat64(h.w.m.resources.WithLabelValues(KindServiceMonitor, "valid")))
	require.Equal(t, 3.0, testutil.ToFloat64(h.w.m.updates), "initial, create, delete")
}

func TestWatcherSkipsInvalidAndKeepsOthers(t *testing.T) {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "auth"},
		Data:       map[string][]byte{"token": []byte("t0ken")},
	}
	h := newHarness(t, Config{}, monitoringV1, secret)
	require.Empty(t, h.next(20*time.Second))

	h.create(ServiceMonitorsResource, serviceMonitor("default", "good", map[string]any{
		"port":          "http",
		"authorization": map[string]any{"credentials": map[string]any{"name": "auth", "key": "token"}},
	}))
	got := h.waitJobs(10*time.Second, "serviceMonitor/default/good/0")
	require.Equal(t, "t0ken", string(got[0].HTTPClientConfig.Authorization.Credentials), "the credentials are read from the Secret")

	// A monitor whose secret is missing and one that does not decode are
	// skipped, counted and reported; the good one stays.
	h.create(ServiceMonitorsResource, serviceMonitor("default", "no-secret", map[string]any{
		"port":          "http",
		"authorization": map[string]any{"credentials": map[string]any{"name": "absent", "key": "token"}},
	}))
	h.create(ServiceMonitorsResource, map[string]any{
		"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
		"metadata": map[string]any{"namespace": "default", "name": "garbled"},
		"spec":     map[string]any{"endpoints": "not-a-list"},
	})
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(h.w.m.resources.WithLabelValues(KindServiceMonitor, "skipped")) == 2
	}, 10*time.Second, 10*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(h.w.m.resources.WithLabelValues(KindServiceMonitor, "valid")))
	require.Equal(t, 1.0, testutil.ToFloat64(h.w.m.skipped.WithLabelValues(KindServiceMonitor, CauseSecret)))
	require.Equal(t, 1.0, testutil.ToFloat64(h.w.m.skipped.WithLabelValues(KindServiceMonitor, CauseDecode)))
	skipped := h.w.Skipped()
	require.Len(t, skipped, 2)
	require.Equal(t, "garbled", skipped[0].Name)
	require.Equal(t, "no-secret", skipped[1].Name)
	require.Contains(t, skipped[1].Reason, `secrets "absent" not found`)
	select {
	case c := <-h.updates:
		t.Fatalf("skipped resources changed nothing, yet onChange got %v", jobNames(c))
	default:
	}

	// Creating the secret does not trigger anything by itself (secrets are
	// not watched); the next change regenerates and picks it up.
	_, err := h.client.CoreV1().Secrets("default").Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "absent"},
		Data:       map[string][]byte{"token": []byte("late")},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	h.create(PodMonitorsResource, map[string]any{
		"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
		"metadata": map[string]any{"namespace": "default", "name": "pods"},
		"spec":     map[string]any{"selector": map[string]any{}, "podMetricsEndpoints": []any{map[string]any{"port": "m"}}},
	})
	h.waitJobs(10*time.Second, "serviceMonitor/default/good/0", "serviceMonitor/default/no-secret/0", "podMonitor/default/pods/0")
	require.Len(t, h.w.Skipped(), 1)
}

func TestWatcherKeepsConfigsWhenTheAPIFails(t *testing.T) {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "auth"},
		Data:       map[string][]byte{"token": []byte("t0ken")},
	}
	other := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "other"},
		Data:       map[string][]byte{"token": []byte("0ther")},
	}
	h := newHarness(t, Config{}, monitoringV1, secret, other)
	h.w.retry = 50 * time.Millisecond
	require.Empty(t, h.next(20*time.Second))
	h.create(ServiceMonitorsResource, serviceMonitor("default", "web", map[string]any{
		"port":          "http",
		"authorization": map[string]any{"credentials": map[string]any{"name": "auth", "key": "token"}},
	}))
	h.waitJobs(10*time.Second, "serviceMonitor/default/web/0")

	// The API server fails secret reads: a change needing a Secret not
	// read yet arrives, but its generation is dropped rather than losing
	// the job, and retried.
	var failing atomic.Bool
	failing.Store(true)
	h.client.PrependReactor("get", "secrets", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failing.Load() {
			return true, nil, apierrors.NewServiceUnavailable("etcd is sulking")
		}
		return false, nil, nil
	})
	h.create(ServiceMonitorsResource, serviceMonitor("default", "api", map[string]any{
		"port":          "http",
		"authorization": map[string]any{"credentials": map[string]any{"name": "other", "key": "token"}},
	}))
	require.Eventually(t, func() bool { return testutil.ToFloat64(h.w.m.failures) >= 2 }, 10*time.Second, 10*time.Millisecond)
	select {
	case c := <-h.updates:
		t.Fatalf("a generation with failed reads was applied: %v", jobNames(c))
	default:
	}
	failing.Store(false)
	h.waitJobs(10*time.Second, "serviceMonitor/default/api/0", "serviceMonitor/default/web/0")
}

func TestWatcherPicksUpRotatedSecrets(t *testing.T) {
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "auth"},
		Data:       map[string][]byte{"token": []byte("old")},
	}
	h := newHarness(t, Config{RefreshInterval: 100 * time.Millisecond}, monitoringV1, secret)
	h.create(ServiceMonitorsResource, serviceMonitor("default", "web", map[string]any{
		"port":          "http",
		"authorization": map[string]any{"credentials": map[string]any{"name": "auth", "key": "token"}},
	}))
	got := h.waitJobs(20*time.Second, "serviceMonitor/default/web/0")
	require.Equal(t, "old", string(got[0].HTTPClientConfig.Authorization.Credentials))

	secret.Data["token"] = []byte("new")
	_, err := h.client.CoreV1().Secrets("default").Update(context.Background(), secret, metav1.UpdateOptions{})
	require.NoError(t, err)
	got = h.waitJobs(10*time.Second, "serviceMonitor/default/web/0")
	require.Equal(t, "new", string(got[0].HTTPClientConfig.Authorization.Credentials), "the refresh reads the Secret again")
}

func TestWatcherNamespaceSelector(t *testing.T) {
	ns := func(name, monitoring string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"monitoring": monitoring}}}
	}
	cfg := Config{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"monitoring": "on"}}}
	h := newHarness(t, cfg, monitoringV1, ns("a", "on"), ns("b", "off"))
	require.Empty(t, h.next(20*time.Second))
	h.create(ServiceMonitorsResource, serviceMonitor("a", "web", map[string]any{"port": "http"}))
	h.create(ServiceMonitorsResource, serviceMonitor("b", "web", map[string]any{"port": "http"}))
	h.waitJobs(10*time.Second, "serviceMonitor/a/web/0")

	// Relabelling namespace b selects its monitor.
	_, err := h.client.CoreV1().Namespaces().Update(context.Background(), ns("b", "on"), metav1.UpdateOptions{})
	require.NoError(t, err)
	h.waitJobs(10*time.Second, "serviceMonitor/a/web/0", "serviceMonitor/b/web/0")
}

func TestWatcherCoalesces(t *testing.T) {
	h := newHarness(t, Config{}, monitoringV1)
	require.Empty(t, h.next(20*time.Second))
	want := []string{}
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		h.create(ServiceMonitorsResource, serviceMonitor("default", name, map[string]any{"port": "http"}))
		want = append(want, "serviceMonitor/default/"+name+"/0")
	}
	h.waitJobs(10*time.Second, want...)
	// A burst of eight creations within the coalescing delay is one or
	// a few updates, not eight.
	require.Less(t, testutil.ToFloat64(h.w.m.updates), 1.0+8)
	t.Logf("updates for a burst of 8 creations: %v", testutil.ToFloat64(h.w.m.updates)-1)
}

func TestWatcherMissingCRDs(t *testing.T) {
	// No monitoring.coreos.com resources at all: nothing is watched, and
	// the watcher still reports (no jobs) instead of waiting forever.
	h := newHarness(t, Config{}, nil)
	require.Empty(t, h.next(20*time.Second))
}

func TestWatcherDiscoveryFailureRetries(t *testing.T) {
	h := &harness{t: t}
	client := fake.NewClientset()
	var calls atomic.Int32
	client.PrependReactor("get", "resource", func(k8stesting.Action) (bool, runtime.Object, error) {
		if calls.Add(1) <= 2 {
			return true, nil, errors.New("connection refused")
		}
		return false, nil, nil
	})
	client.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{
		GroupVersion: "monitoring.coreos.com/v1", APIResources: []metav1.APIResource{{Name: "servicemonitors"}},
	}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		ServiceMonitorsResource: "ServiceMonitorList",
	})
	w := NewWatcher(Config{Enabled: true}, client, dyn, nil, nil)
	w.retry = 20 * time.Millisecond
	h.updates, h.done = make(chan []*promconfig.ScrapeConfig, 4), make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	t.Cleanup(h.stop)
	go func() { h.done <- w.Run(ctx, func(c []*promconfig.ScrapeConfig) { h.updates <- c }) }()
	require.Empty(t, h.next(20*time.Second))
	require.GreaterOrEqual(t, calls.Load(), int32(3))
}
