package promcr

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	"github.com/prometheus/client_golang/prometheus"
	promconfig "github.com/prometheus/prometheus/config"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// The resources the Watcher lists and watches.
var (
	ServiceMonitorsResource = schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"}
	PodMonitorsResource     = schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "podmonitors"}
	ProbesResource          = schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1", Resource: "probes"}
	ScrapeConfigsResource   = schema.GroupVersionResource{Group: "monitoring.coreos.com", Version: "v1alpha1", Resource: "scrapeconfigs"}
)

// Timing of the Watcher's loop.
const (
	// coalesceDelay is how long a change waits for the ones that follow it
	// (a kubectl apply of many resources) before configs are generated.
	coalesceDelay = 100 * time.Millisecond
	// retryDelay is the wait after the API failed to answer discovery or a
	// secret read.
	retryDelay = 5 * time.Second
	// readTimeout bounds the secret and configmap reads of one generation.
	readTimeout = 30 * time.Second
)

type kindInfo struct {
	kind     string
	gvr      schema.GroupVersionResource
	selector func(*Config) *metav1.LabelSelector
}

var watchedKinds = []kindInfo{
	{KindServiceMonitor, ServiceMonitorsResource, func(c *Config) *metav1.LabelSelector { return c.ServiceMonitorSelector }},
	{KindPodMonitor, PodMonitorsResource, func(c *Config) *metav1.LabelSelector { return c.PodMonitorSelector }},
	{KindProbe, ProbesResource, func(c *Config) *metav1.LabelSelector { return c.ProbeSelector }},
	{KindScrapeConfig, ScrapeConfigsResource, func(c *Config) *metav1.LabelSelector { return c.ScrapeConfigSelector }},
}

// Watcher watches the Prometheus Operator resources (and, with a namespace
// selector, the namespaces) through informers and hands fresh scrape
// configs to a callback when they change, within about 100 ms of the
// change that caused it (changes in quick succession are coalesced).
// Secrets and ConfigMaps are read with GETs at each generation; a periodic
// regeneration (Config.RefreshInterval) picks up rotated ones and CRDs
// installed after start. A resource whose CRD is not installed is not
// watched.
type Watcher struct {
	cfg      Config
	client   kubernetes.Interface
	dyn      dynamic.Interface
	logger   *slog.Logger
	m        *metrics
	coalesce time.Duration
	retry    time.Duration

	// selectors of the kinds and of namespaces, to tell which undecodable
	// objects are ours to report.
	selectors map[string]labels.Selector
	nsSel     labels.Selector

	mu      sync.Mutex
	skipped []Skipped
}

// NewWatcher returns a watcher; Run starts it. A nil logger discards, a
// nil registerer registers nothing.
func NewWatcher(cfg Config, client kubernetes.Interface, dyn dynamic.Interface, logger *slog.Logger, reg prometheus.Registerer) *Watcher {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.withDefaults()
	w := &Watcher{
		cfg: cfg, client: client, dyn: dyn,
		logger:    logger.With("component", "promcr"),
		m:         newMetrics(reg),
		coalesce:  coalesceDelay,
		retry:     retryDelay,
		selectors: map[string]labels.Selector{},
	}
	for _, k := range watchedKinds {
		w.selectors[k.kind] = selectorOrNothing(k.selector(&w.cfg))
	}
	if cfg.NamespaceSelector != nil {
		w.nsSel = selectorOrNothing(cfg.NamespaceSelector)
	}
	return w
}

// selectorOrNothing converts a selector; nil selects everything, an
// invalid one nothing (Generate reports it on each resource).
func selectorOrNothing(ls *metav1.LabelSelector) labels.Selector {
	if ls == nil {
		return labels.Everything()
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return labels.Nothing()
	}
	return s
}

// Skipped returns the resources the last generation skipped.
func (w *Watcher) Skipped() []Skipped {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.skipped)
}

// runState is what Run's loop keeps; only Run's goroutine touches it.
type runState struct {
	informers  map[string]cache.SharedIndexInformer
	nsInformer cache.SharedIndexInformer
	missing    map[string]bool // kinds whose CRD was not found, logged once
	decoded    map[types.UID]decoded
	memo       *memo
	// secrets keeps the Secrets and ConfigMaps read between generations
	// until the next refresh, so that a change does not read them all
	// again; failed reads are retried at every generation.
	secrets   *APISecrets
	rereadAll bool
	reported  map[string]string // kind/namespace/name → reason last logged
	digest    [32]byte
	applied   bool
}

type decoded struct {
	resourceVersion string
	obj             any
	err             error
}

// Run watches until ctx ends and returns nil then, after its informers
// have stopped. onChange is called from Run's goroutine: once when the
// informers have synced (even with no jobs), then whenever the generated
// configs change. If the Kubernetes API fails to answer a secret read,
// that generation is dropped and retried, so a flaky API never removes
// jobs. Run must be called once.
func (w *Watcher) Run(ctx context.Context, onChange func([]*promconfig.ScrapeConfig)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	trigger := make(chan struct{}, 1)
	kick := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	st := &runState{
		informers: map[string]cache.SharedIndexInformer{},
		missing:   map[string]bool{},
		decoded:   map[types.UID]decoded{},
		memo:      newMemo(),
		reported:  map[string]string{},
	}
	if w.nsSel != nil {
		st.nsInformer = newInformer(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				return w.client.CoreV1().Namespaces().List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				return w.client.CoreV1().Namespaces().Watch(ctx, o)
			},
		}, w.client, &corev1.Namespace{}, "namespaces")
		if err := st.nsInformer.SetTransform(stripNamespace); err != nil {
			return fmt.Errorf("namespace informer: %w", err)
		}
		if _, err := st.nsInformer.AddEventHandler(handler(kick)); err != nil {
			return fmt.Errorf("namespace informer: %w", err)
		}
		wg.Go(func() { st.nsInformer.RunWithContext(ctx) })
	}

	timer := time.NewTimer(0)
	defer timer.Stop()
	deadline := time.Now()
	armed := true
	arm := func(d time.Duration) {
		timer.Reset(d)
		deadline, armed = time.Now().Add(d), true
	}
	discovered, recheck := false, false
	refresh := time.NewTicker(w.cfg.RefreshInterval)
	defer refresh.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-trigger:
			if !armed || time.Until(deadline) > w.coalesce {
				arm(w.coalesce)
			}
		case <-refresh.C:
			recheck, st.rereadAll = true, true
			if !armed {
				arm(0)
			}
		case <-timer.C:
			armed = false
			if !discovered || (recheck && len(st.missing) > 0) {
				recheck = false
				if err := w.startInformers(ctx, &wg, st, kick); err != nil {
					w.logger.Warn("cannot list the monitoring.coreos.com resources the API server offers; retrying", "err", err)
					if !discovered {
						arm(w.retry)
						continue
					}
				}
				discovered = true
			}
			if !st.synced() {
				arm(w.coalesce)
				continue
			}
			if !w.update(ctx, st, onChange) {
				arm(w.retry)
			}
		}
	}
}

// startInformers starts an informer for every kind the API server offers
// and that is not watched yet.
func (w *Watcher) startInformers(ctx context.Context, wg *sync.WaitGroup, st *runState, kick func()) error {
	offered := map[schema.GroupVersionResource]bool{}
	for _, gv := range []string{"monitoring.coreos.com/v1", "monitoring.coreos.com/v1alpha1"} {
		list, err := serverResources(ctx, w.client.Discovery(), gv)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("discover %s: %w", gv, err)
		}
		g, _ := schema.ParseGroupVersion(gv)
		for _, r := range list.APIResources {
			offered[g.WithResource(r.Name)] = true
		}
	}
	for _, k := range watchedKinds {
		if _, ok := st.informers[k.kind]; ok {
			continue
		}
		if !offered[k.gvr] {
			if !st.missing[k.kind] {
				w.logger.Warn("CRD not installed; not watching it (checked again every refresh interval)", "kind", k.kind, "resource", k.gvr.String())
			}
			st.missing[k.kind] = true
			continue
		}
		delete(st.missing, k.kind)
		// Selecting in the API server is an optimisation only: Generate
		// applies the selector again.
		var labelSelector string
		if sel := k.selector(&w.cfg); sel != nil {
			if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
				labelSelector = s.String()
			}
		}
		res := w.dyn.Resource(k.gvr)
		inf := newInformer(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
				o.LabelSelector = labelSelector
				return res.List(ctx, o)
			},
			WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
				o.LabelSelector = labelSelector
				return res.Watch(ctx, o)
			},
		}, w.dyn, &unstructured.Unstructured{}, k.gvr.String())
		if err := inf.SetTransform(stripObject); err != nil {
			return fmt.Errorf("%s informer: %w", k.kind, err)
		}
		if _, err := inf.AddEventHandler(handler(kick)); err != nil {
			return fmt.Errorf("%s informer: %w", k.kind, err)
		}
		st.informers[k.kind] = inf
		wg.Go(func() { inf.RunWithContext(ctx) })
		w.logger.Info("watching resources", "kind", k.kind, "resource", k.gvr.String())
	}
	return nil
}

// newInformer is what client-go's informer factories build, without
// importing them: they pull in every API group's informers and listers.
func newInformer(lw *cache.ListWatch, client any, obj runtime.Object, what string) cache.SharedIndexInformer {
	return cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, client), obj,
		cache.SharedIndexInformerOptions{ObjectDescription: what})
}

// serverResources asks with ctx when the discovery client can.
func serverResources(ctx context.Context, d discovery.DiscoveryInterface, gv string) (*metav1.APIResourceList, error) {
	if dc, ok := d.(discovery.ServerResourcesInterfaceWithContext); ok {
		return dc.ServerResourcesForGroupVersionWithContext(ctx, gv)
	}
	return d.ServerResourcesForGroupVersion(gv)
}

func (st *runState) synced() bool {
	if st.nsInformer != nil && !st.nsInformer.HasSynced() {
		return false
	}
	for _, inf := range st.informers {
		if !inf.HasSynced() {
			return false
		}
	}
	return true
}

func handler(kick func()) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { kick() },
		UpdateFunc: func(any, any) { kick() },
		DeleteFunc: func(any) { kick() },
	}
}

// stripObject drops what generation never reads and can be large.
func stripObject(obj any) (any, error) {
	if u, ok := obj.(*unstructured.Unstructured); ok {
		u.SetManagedFields(nil)
		if a := u.GetAnnotations(); len(a) > 0 {
			delete(a, corev1.LastAppliedConfigAnnotation)
			u.SetAnnotations(a)
		}
		delete(u.Object, "status")
	}
	return obj, nil
}

// stripNamespace keeps a namespace's name and labels only.
func stripNamespace(obj any) (any, error) {
	if ns, ok := obj.(*corev1.Namespace); ok {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels,
		}}, nil
	}
	return obj, nil
}

// update generates and, if the configs changed, hands them on. It reports
// false when the generation was dropped because the API failed to answer.
func (w *Watcher) update(ctx context.Context, st *runState, onChange func([]*promconfig.ScrapeConfig)) bool {
	in, undecodable := w.snapshot(st)
	rctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	if st.secrets == nil || st.rereadAll {
		st.secrets, st.rereadAll = NewAPISecrets(rctx, w.client), false
	} else {
		st.secrets.renew(rctx)
	}
	r := generateWith(w.cfg, in, st.secrets, st.memo)
	if err := st.secrets.Transient(); err != nil {
		if ctx.Err() == nil {
			w.m.failures.Inc()
			w.logger.Warn("Kubernetes API failed to answer a secret or configmap read; keeping the previous scrape configs", "err", err)
		}
		return false
	}
	skipped := append(r.skipped, undecodable...)
	w.report(st, r.valid, skipped)
	if st.applied && r.digest == st.digest {
		return true
	}
	st.applied, st.digest = true, r.digest
	w.m.jobs.Set(float64(len(r.configs)))
	w.m.updates.Inc()
	w.logger.Info("scrape configs generated", "jobs", len(r.configs), "skipped", len(skipped))
	onChange(r.configs)
	return true
}

// snapshot decodes the informers' objects into the API types (each object
// version once) and lists the namespaces' labels. Objects that do not
// decode are returned as skipped if they would have been selected.
func (w *Watcher) snapshot(st *runState) (Resources, []Skipped) {
	var in Resources
	var bad []Skipped
	if st.nsInformer != nil {
		in.Namespaces = map[string]map[string]string{}
		for _, o := range st.nsInformer.GetStore().List() {
			if ns, ok := o.(*corev1.Namespace); ok {
				in.Namespaces[ns.Name] = ns.Labels
			}
		}
	}
	seen := map[types.UID]bool{}
	for _, k := range watchedKinds {
		inf, ok := st.informers[k.kind]
		if !ok {
			continue
		}
		for _, o := range inf.GetStore().List() {
			u, ok := o.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			seen[u.GetUID()] = true
			d, ok := st.decoded[u.GetUID()]
			if !ok || d.resourceVersion != u.GetResourceVersion() || u.GetUID() == "" {
				d = decoded{resourceVersion: u.GetResourceVersion()}
				d.obj, d.err = decode(k.kind, u)
				st.decoded[u.GetUID()] = d
			}
			if d.err != nil {
				if w.wanted(k.kind, u, in.Namespaces) {
					bad = append(bad, Skipped{Kind: k.kind, Namespace: u.GetNamespace(), Name: u.GetName(),
						Reason: "decode: " + d.err.Error(), Cause: CauseDecode})
				}
				continue
			}
			switch obj := d.obj.(type) {
			case *monitoringv1.ServiceMonitor:
				in.ServiceMonitors = append(in.ServiceMonitors, obj)
			case *monitoringv1.PodMonitor:
				in.PodMonitors = append(in.PodMonitors, obj)
			case *monitoringv1.Probe:
				in.Probes = append(in.Probes, obj)
			case *monitoringv1alpha1.ScrapeConfig:
				in.ScrapeConfigs = append(in.ScrapeConfigs, obj)
			}
		}
	}
	for uid := range st.decoded {
		if !seen[uid] {
			delete(st.decoded, uid)
		}
	}
	return in, bad
}

func (w *Watcher) wanted(kind string, u *unstructured.Unstructured, namespaces map[string]map[string]string) bool {
	if !w.selectors[kind].Matches(labels.Set(u.GetLabels())) {
		return false
	}
	if w.nsSel == nil {
		return true
	}
	nsLabels, ok := namespaces[u.GetNamespace()]
	return ok && w.nsSel.Matches(labels.Set(nsLabels))
}

func decode(kind string, u *unstructured.Unstructured) (any, error) {
	switch kind {
	case KindServiceMonitor:
		return decodeAs[monitoringv1.ServiceMonitor](u)
	case KindPodMonitor:
		return decodeAs[monitoringv1.PodMonitor](u)
	case KindProbe:
		return decodeAs[monitoringv1.Probe](u)
	case KindScrapeConfig:
		return decodeAs[monitoringv1alpha1.ScrapeConfig](u)
	}
	return nil, fmt.Errorf("unknown kind %s", kind)
}

// decodeAs decodes through JSON as client-go's typed clients (and so
// Prometheus Operator) do: case-sensitive, unknown fields (a newer CRD)
// ignored, and Go's rules for fields that embedded structs repeat (a
// Probe's spec.authorization) rather than runtime.DefaultUnstructuredConverter's,
// which fills every field of that name.
func decodeAs[T any](u *unstructured.Unstructured) (*T, error) {
	b, err := u.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var out T
	if err := utiljson.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// report updates the metrics and logs the resources that became skipped
// (or changed reason) and those that no longer are.
func (w *Watcher) report(st *runState, valid map[string]int, skipped []Skipped) {
	slices.SortFunc(skipped, func(a, b Skipped) int {
		return strings.Compare(a.Kind+"/"+a.Namespace+"/"+a.Name, b.Kind+"/"+b.Namespace+"/"+b.Name)
	})
	now := make(map[string]string, len(skipped))
	count := map[string]int{}
	for _, s := range skipped {
		key := s.Kind + "/" + s.Namespace + "/" + s.Name
		now[key] = s.Reason
		count[s.Kind]++
		if st.reported[key] != s.Reason {
			w.m.skipped.WithLabelValues(s.Kind, s.Cause).Inc()
			w.logger.Warn("skipping invalid resource", "kind", s.Kind, "namespace", s.Namespace, "name", s.Name, "cause", s.Cause, "reason", s.Reason)
		}
	}
	for key := range st.reported {
		if _, ok := now[key]; !ok {
			w.logger.Info("resource no longer skipped", "resource", key)
		}
	}
	st.reported = now
	for _, k := range Kinds {
		w.m.resources.WithLabelValues(k, "valid").Set(float64(valid[k]))
		w.m.resources.WithLabelValues(k, "skipped").Set(float64(count[k]))
	}
	w.mu.Lock()
	w.skipped = skipped
	w.mu.Unlock()
}
