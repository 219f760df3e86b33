package promcr

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/alecthomas/units"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	monitoringv1alpha1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1alpha1"
	promconfig "github.com/prometheus/prometheus/config"
	"go.yaml.in/yaml/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	// The SD mechanisms generated configs use; decoding a scrape config
	// needs them registered.
	_ "github.com/prometheus/prometheus/discovery/consul"
	_ "github.com/prometheus/prometheus/discovery/dns"
	_ "github.com/prometheus/prometheus/discovery/file"
	_ "github.com/prometheus/prometheus/discovery/http"
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
)

// Kinds of resources, as in Skipped.Kind and the metrics' kind label.
const (
	KindServiceMonitor = monitoringv1.ServiceMonitorsKind
	KindPodMonitor     = monitoringv1.PodMonitorsKind
	KindProbe          = monitoringv1.ProbesKind
	KindScrapeConfig   = monitoringv1alpha1.ScrapeConfigsKind
)

// Kinds lists the kinds in the order their jobs are generated.
var Kinds = []string{KindServiceMonitor, KindPodMonitor, KindProbe, KindScrapeConfig}

// Causes of a skipped resource: Skipped.Cause and the reason label of
// allot_promcr_skipped_total.
const (
	// CauseDecode: the object does not decode into the API type.
	CauseDecode = "decode"
	// CauseInvalid: the spec is invalid or yields an invalid scrape config.
	CauseInvalid = "invalid"
	// CauseSecret: a referenced Secret or ConfigMap key cannot be read.
	CauseSecret = "secret"
	// CauseScrapeClass: the resource names a scrape class that is not configured.
	CauseScrapeClass = "scrape_class"
	// CauseUnsupported: the resource uses a mechanism allot does not generate.
	CauseUnsupported = "unsupported"
	// CauseFileAccess: a ServiceMonitor reads files while deny_file_access is set.
	CauseFileAccess = "file_access"
)

// Skipped is a resource that yields no job, and why. One invalid endpoint
// skips its whole resource, as in Prometheus Operator; other resources are
// not affected.
type Skipped struct {
	Kind, Namespace, Name string
	// Reason is the full explanation, for logs and pages.
	Reason string
	// Cause is one of the Cause* constants.
	Cause string
}

// Resources are the CRs to generate from, and the namespaces' labels for
// Config.NamespaceSelector. Nil entries are ignored.
type Resources struct {
	ServiceMonitors []*monitoringv1.ServiceMonitor
	PodMonitors     []*monitoringv1.PodMonitor
	Probes          []*monitoringv1.Probe
	ScrapeConfigs   []*monitoringv1alpha1.ScrapeConfig
	// Namespaces maps a namespace's name to its labels. With a
	// NamespaceSelector, a resource whose namespace is missing here is not
	// selected.
	Namespaces map[string]map[string]string
}

// SecretGetter reads the Secret and ConfigMap keys that resources refer
// to, in the resource's namespace.
type SecretGetter interface {
	Secret(namespace, name, key string) (string, error)
	ConfigMap(namespace, name, key string) (string, error)
}

// Generate turns the selected resources into Prometheus scrape configs as
// Prometheus Operator would, one job per ServiceMonitor endpoint, per
// PodMonitor endpoint, per Probe and per ScrapeConfig. The configs are
// validated and complete (defaults filled in from cfg and cfg.Global).
// Resources that cannot be turned into a valid job are returned as skipped,
// with the reason; they never affect the others. Jobs are ordered by kind
// (Kinds), then namespace and name, then endpoint.
func Generate(cfg Config, in Resources, secrets SecretGetter) ([]*promconfig.ScrapeConfig, []Skipped) {
	r := generate(cfg, in, secrets)
	return r.configs, r.skipped
}

type result struct {
	configs []*promconfig.ScrapeConfig
	skipped []Skipped
	// valid counts the resources that yielded jobs, by kind.
	valid map[string]int
	// digest covers every job's YAML, secrets included: equal digests
	// mean equal configs.
	digest [sha256.Size]byte
}

// memo keeps each resource's generated jobs between generations; see
// generator.job. Not safe for concurrent use; a nil memo keeps nothing.
type memo struct {
	entries map[string]*memoEntry
	used    map[string]bool
}

type memoEntry struct {
	uid, resourceVersion string
	reads                []secretRead
	configs              []*promconfig.ScrapeConfig
	err                  error
	digest               [sha256.Size]byte
}

type secretRead struct {
	configMap            bool
	ns, name, key, value string
	err                  string
}

func newMemo() *memo { return &memo{entries: map[string]*memoEntry{}, used: map[string]bool{}} }

func (m *memo) get(key string, meta *metav1.ObjectMeta, secrets SecretGetter) *memoEntry {
	if m == nil || meta.ResourceVersion == "" {
		return nil
	}
	e, ok := m.entries[key]
	if !ok || e.uid != string(meta.UID) || e.resourceVersion != meta.ResourceVersion {
		return nil
	}
	for _, rd := range e.reads {
		if rd != read(secrets, rd) {
			return nil
		}
	}
	m.used[key] = true
	return e
}

func (m *memo) put(key string, e *memoEntry) {
	if m == nil || e.resourceVersion == "" {
		return
	}
	m.entries[key] = e
	m.used[key] = true
}

// sweep forgets the resources the last generation did not see.
func (m *memo) sweep() {
	if m == nil {
		return
	}
	for k := range m.entries {
		if !m.used[k] {
			delete(m.entries, k)
		}
	}
	clear(m.used)
}

// read repeats a recorded read against secrets.
func read(secrets SecretGetter, rd secretRead) secretRead {
	r := recorder{g: secrets}
	_, _ = r.record(secretRead{configMap: rd.configMap, ns: rd.ns, name: rd.name, key: rd.key})
	return r.reads[0]
}

// recorder is a SecretGetter that remembers what was read through it.
type recorder struct {
	g     SecretGetter
	reads []secretRead
}

func (r *recorder) Secret(ns, name, key string) (string, error) {
	return r.record(secretRead{ns: ns, name: name, key: key})
}

func (r *recorder) ConfigMap(ns, name, key string) (string, error) {
	return r.record(secretRead{configMap: true, ns: ns, name: name, key: key})
}

func (r *recorder) record(rd secretRead) (string, error) {
	var v string
	err := errNoSecretGetter
	switch {
	case r.g == nil:
	case rd.configMap:
		v, err = r.g.ConfigMap(rd.ns, rd.name, rd.key)
	default:
		v, err = r.g.Secret(rd.ns, rd.name, rd.key)
	}
	rd.value = v
	if err != nil {
		rd.err = err.Error()
	}
	r.reads = append(r.reads, rd)
	return v, err
}

var errNoSecretGetter = errors.New("no secret getter")

// generator holds what every resource's generation needs.
type generator struct {
	cfg          Config
	classes      map[string]*ScrapeClass
	defaultClass *ScrapeClass
	secrets      SecretGetter
	global       promconfig.GlobalConfig
	bodySize     units.Base2Bytes
	nsSelector   labels.Selector // nil: every namespace
}

func newGenerator(cfg Config, secrets SecretGetter) (*generator, error) {
	cfg = cfg.withDefaults()
	g := &generator{cfg: cfg, secrets: secrets, classes: map[string]*ScrapeClass{}}
	for i := range cfg.ScrapeClasses {
		sc := &cfg.ScrapeClasses[i]
		g.classes[sc.Name] = sc
		if sc.Default {
			g.defaultClass = sc
		}
	}
	g.global = promconfig.DefaultGlobalConfig
	if cfg.Global != nil {
		g.global = *cfg.Global
	}
	g.global.ScrapeInterval = cfg.ScrapeInterval
	g.global.ScrapeTimeout = cfg.ScrapeTimeout
	if cfg.EnforcedBodySizeLimit != "" {
		b, err := units.ParseBase2Bytes(cfg.EnforcedBodySizeLimit)
		if err != nil {
			return nil, fmt.Errorf("enforced_body_size_limit: %w", err)
		}
		g.bodySize = b
	}
	if cfg.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(cfg.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("namespace_selector: %w", err)
		}
		g.nsSelector = sel
	}
	return g, nil
}

func generate(cfg Config, in Resources, secrets SecretGetter) result {
	return generateWith(cfg, in, secrets, nil)
}

// generateWith generates, reusing from m (if not nil) the jobs of the
// resources that did not change since m was filled, and refilling m.
func generateWith(cfg Config, in Resources, secrets SecretGetter, m *memo) result {
	r := result{valid: map[string]int{}}
	h := sha256.New()
	g, gerr := newGenerator(cfg, secrets)

	type item struct {
		kind string
		meta *metav1.ObjectMeta
		gen  func() ([]yaml.MapSlice, error)
	}
	var items []item
	for _, o := range in.ServiceMonitors {
		if o != nil {
			items = append(items, item{KindServiceMonitor, &o.ObjectMeta, func() ([]yaml.MapSlice, error) { return g.serviceMonitor(o) }})
		}
	}
	for _, o := range in.PodMonitors {
		if o != nil {
			items = append(items, item{KindPodMonitor, &o.ObjectMeta, func() ([]yaml.MapSlice, error) { return g.podMonitor(o) }})
		}
	}
	for _, o := range in.Probes {
		if o != nil {
			items = append(items, item{KindProbe, &o.ObjectMeta, func() ([]yaml.MapSlice, error) { return g.probe(o) }})
		}
	}
	for _, o := range in.ScrapeConfigs {
		if o != nil {
			items = append(items, item{KindScrapeConfig, &o.ObjectMeta, func() ([]yaml.MapSlice, error) { return g.scrapeConfig(o) }})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := slices.Index(Kinds, a.kind) - slices.Index(Kinds, b.kind); c != 0 {
			return c
		}
		if c := strings.Compare(a.meta.Namespace, b.meta.Namespace); c != 0 {
			return c
		}
		return strings.Compare(a.meta.Name, b.meta.Name)
	})

	selectors := map[string]labels.Selector{}
	selectorErrs := map[string]error{}
	for kind, sel := range map[string]*metav1.LabelSelector{
		KindServiceMonitor: cfg.ServiceMonitorSelector,
		KindPodMonitor:     cfg.PodMonitorSelector,
		KindProbe:          cfg.ProbeSelector,
		KindScrapeConfig:   cfg.ScrapeConfigSelector,
	} {
		if sel == nil {
			selectors[kind] = labels.Everything()
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			selectorErrs[kind] = err
			continue
		}
		selectors[kind] = s
	}

	skip := func(it item, err error) {
		r.skipped = append(r.skipped, Skipped{Kind: it.kind, Namespace: it.meta.Namespace, Name: it.meta.Name, Reason: err.Error(), Cause: causeOf(err)})
	}
	for _, it := range items {
		if gerr != nil {
			skip(it, invalidf("allot configuration: %w", gerr))
			continue
		}
		if err := selectorErrs[it.kind]; err != nil {
			skip(it, invalidf("allot configuration: %s selector: %w", it.kind, err))
			continue
		}
		if !selectors[it.kind].Matches(labels.Set(it.meta.Labels)) || !g.namespaceSelected(it.meta.Namespace, in.Namespaces) {
			continue
		}
		e := g.job(it.kind, it.meta, it.gen, m)
		if e.err != nil {
			skip(it, e.err)
			continue
		}
		r.valid[it.kind]++
		r.configs = append(r.configs, e.configs...)
		h.Write(e.digest[:])
	}
	copy(r.digest[:], h.Sum(nil))
	m.sweep()
	return r
}

// job generates the jobs of one resource, or reuses what m holds for it:
// an entry is reused when the resource's version is the same and every
// Secret and ConfigMap key it read still reads the same. Turning jobs into
// Prometheus configs (a YAML round trip through Prometheus's own loader)
// is what costs; memoising it keeps a regeneration after a single change
// cheap however many resources there are.
func (g *generator) job(kind string, meta *metav1.ObjectMeta, gen func() ([]yaml.MapSlice, error), m *memo) *memoEntry {
	key := kind + "/" + meta.Namespace + "/" + meta.Name
	if e := m.get(key, meta, g.secrets); e != nil {
		return e
	}
	rec := &recorder{g: g.secrets}
	saved := g.secrets
	g.secrets = rec
	docs, err := gen()
	g.secrets = saved
	e := &memoEntry{uid: string(meta.UID), resourceVersion: meta.ResourceVersion, reads: rec.reads}
	if err != nil {
		e.err = err
		m.put(key, e)
		return e
	}
	h := sha256.New()
	for _, doc := range docs {
		sc, b, ferr := g.finish(doc)
		if ferr != nil {
			e.err = fmt.Errorf("job %v: %w", doc[0].Value, ferr)
			e.configs = nil
			break
		}
		e.configs = append(e.configs, sc)
		h.Write(b)
		h.Write([]byte{0})
	}
	copy(e.digest[:], h.Sum(nil))
	m.put(key, e)
	return e
}

func (g *generator) namespaceSelected(ns string, namespaces map[string]map[string]string) bool {
	if g.nsSelector == nil {
		return true
	}
	lbls, ok := namespaces[ns]
	if !ok {
		return false
	}
	return g.nsSelector.Matches(labels.Set(lbls))
}

// finish turns a generated job into a scrape config the way Prometheus
// loads one: decoded strictly (defaults, SD configs, HTTP client checks),
// then validated against the global settings, which fills in the interval,
// timeout and the rest.
func (g *generator) finish(doc yaml.MapSlice) (*promconfig.ScrapeConfig, []byte, error) {
	b, err := yaml.Marshal(doc)
	if err != nil {
		return nil, nil, invalidf("marshal job: %w", err)
	}
	var sc promconfig.ScrapeConfig
	if err := yaml.UnmarshalStrict(b, &sc); err != nil {
		return nil, nil, invalidf("%w", err)
	}
	if err := sc.Validate(g.global); err != nil {
		return nil, nil, invalidf("%w", err)
	}
	return &sc, b, nil
}

// class returns the scrape class a resource uses: the named one, else the
// default one, else none (an empty class).
func (g *generator) class(name *string) (*ScrapeClass, error) {
	if name != nil && *name != "" {
		sc, ok := g.classes[*name]
		if !ok {
			return nil, &skipError{CauseScrapeClass, fmt.Errorf("scrapeClass %q is not configured", *name)}
		}
		return sc, nil
	}
	if g.defaultClass != nil {
		return g.defaultClass, nil
	}
	return &ScrapeClass{}, nil
}

// skipError carries the cause of a skip through wrapping.
type skipError struct {
	cause string
	err   error
}

func (e *skipError) Error() string { return e.err.Error() }
func (e *skipError) Unwrap() error { return e.err }

func invalidf(format string, a ...any) error {
	return &skipError{CauseInvalid, fmt.Errorf(format, a...)}
}

func causeOf(err error) string {
	var se *skipError
	if errors.As(err, &se) {
		return se.cause
	}
	return CauseInvalid
}
