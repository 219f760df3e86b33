package otlp

import (
	"context"
	"hash/fnv"
	"log/slog"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// DefaultScopeName is the instrumentation scope of converted metrics unless
// Options.ScopeName says otherwise.
const DefaultScopeName = "github.com/allot-dev/allot"

// Consumer receives the metrics of one committed scrape of one target. It has
// the shape of the Collector's consumer.Metrics. ConsumeMetrics is called from
// the scrape loop's goroutine, so it should hand the data off quickly (an
// exporter's queue); an error fails the scrape's Commit. The Consumer owns md
// after the call.
type Consumer interface {
	ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error
}

// EncodedConsumer is a Consumer that also takes scrapes already encoded as
// OTLP protobuf, which is how the Appendable hands them over when
// AcceptsEncoded is true: the encoding path builds no pdata and saves the
// consumer marshalling it. What it sends decodes to exactly the
// pmetric.Metrics ConsumeMetrics would have got.
type EncodedConsumer interface {
	Consumer
	// AcceptsEncoded reports whether ConsumeEncoded is the cheaper way in;
	// it is asked once, by NewAppendable.
	AcceptsEncoded() bool
	// ConsumeEncoded takes one committed scrape as the protobuf encoding of
	// an ExportMetricsServiceRequest (the same bytes as a MetricsData):
	// resource_metrics fields only, so the encodings of several scrapes
	// concatenate into one request. points is its number of data points.
	// Called like ConsumeMetrics.
	//
	// req belongs to the caller, as p does in io.Writer.Write: the consumer
	// must not modify it, nor retain it or any part of it after returning,
	// and copies what it queues. The appender writes the next scrape into
	// the same memory, so that an encoded scrape allocates nothing; a
	// consumer that kept req would send another scrape's bytes (and race
	// with the scrape loop).
	ConsumeEncoded(ctx context.Context, req []byte, points int) error
}

// ConsumerFunc adapts a function to a Consumer.
type ConsumerFunc func(ctx context.Context, md pmetric.Metrics) error

// ConsumeMetrics calls f.
func (f ConsumerFunc) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	return f(ctx, md)
}

// Options configure the conversion.
type Options struct {
	// ScopeName and ScopeVersion name the instrumentation scope of every
	// metric. Defaults: DefaultScopeName and the main module's build version.
	ScopeName, ScopeVersion string
	// KubernetesAttributes maps the Kubernetes and Nomad service-discovery meta
	// labels (__meta_kubernetes_*, __meta_nomad_*) of a target to OpenTelemetry
	// semantic-convention resource attributes, as the k8sattributes processor
	// would add them.
	KubernetesAttributes bool
	// StateTTL drops the per-target state (start timestamps) of a target
	// whose last scrape is older than this, in case Forget is never called.
	// Default 1h; it must exceed the longest scrape interval.
	StateTTL time.Duration
}

// ScrapeOptions sets the scrape manager options the conversion depends on:
// metadata with every sample, the target in the appender's context, and
// start (created) timestamps parsed from the exposition.
func ScrapeOptions(o *scrape.Options) {
	o.AppendMetadata = true
	o.PassMetadataInContext = true
	o.ParseST = true
}

// Appendable implements storage.AppendableV2. The scrape manager calls
// AppenderV2 once per scrape with the target in the context; Commit converts
// everything appended in that scrape into one pmetric.Metrics and hands it to
// the Consumer, Rollback drops it. Per-series state (start timestamps, reset
// detection) is kept per target until Forget or Options.StateTTL.
type Appendable struct {
	next Consumer
	enc  EncodedConsumer // next, if it takes encoded scrapes
	opts Options
	// scopeEnc is the encoded default instrumentation scope.
	scopeEnc []byte
	logger   *slog.Logger
	metrics  *appendableMetrics

	mu        sync.Mutex
	targets   map[uint64]*targetState
	byTarget  map[*scrape.Target]*targetState
	lastSweep time.Time
}

var _ storage.AppendableV2 = (*Appendable)(nil)

// NewAppendable returns an Appendable that hands every committed scrape to
// next. reg and logger may be nil.
func NewAppendable(next Consumer, opts Options, reg prometheus.Registerer, logger *slog.Logger) *Appendable {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.ScopeName == "" {
		opts.ScopeName = DefaultScopeName
	}
	if opts.ScopeVersion == "" {
		opts.ScopeVersion = buildVersion()
	}
	if opts.StateTTL <= 0 {
		opts.StateTTL = time.Hour
	}
	var enc EncodedConsumer
	if e, ok := next.(EncodedConsumer); ok && e.AcceptsEncoded() {
		enc = e
	}
	return &Appendable{
		next:      next,
		enc:       enc,
		scopeEnc:  encodeScope(opts.ScopeName, opts.ScopeVersion),
		opts:      opts,
		logger:    logger,
		metrics:   newAppendableMetrics(reg),
		targets:   make(map[uint64]*targetState),
		byTarget:  make(map[*scrape.Target]*targetState),
		lastSweep: time.Now(),
	}
}

// AppenderV2 returns the appender of one scrape. ctx should carry the target
// (scrape.ContextWithTarget; the scrape manager does so when
// PassMetadataInContext is set). Without it, the resource is built from each
// sample's job and instance labels and no start-time state is shared between
// scrapes.
func (a *Appendable) AppenderV2(ctx context.Context) storage.AppenderV2 {
	t, _ := scrape.TargetFromContext(ctx)
	return newAppender(ctx, a, a.state(t))
}

// Forget drops the state of the target with this TargetHash: it left this
// scraper. A later scrape of it starts afresh (start time = first point).
func (a *Appendable) Forget(targetHash uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ts, ok := a.targets[targetHash]; ok {
		a.dropLocked(targetHash, ts)
	}
}

// ForgetTarget is Forget(TargetHash(t)).
func (a *Appendable) ForgetTarget(t *scrape.Target) {
	a.Forget(TargetHash(t))
}

// TargetHash identifies a target's conversion state: FNV-1a 64 over the hash
// of the target's public labels (those without the "__" prefix, i.e. job,
// instance and target labels) and its scrape URL (scheme, address, metrics
// path and params). This is Prometheus's own target identity except that
// scrape.Target's hash, which is not exported, covers the reserved labels too.
func TargetHash(t *scrape.Target) uint64 {
	if t == nil {
		return 0
	}
	b := labels.NewScratchBuilder(8)
	t.LabelsRange(func(l labels.Label) { b.Add(l.Name, l.Value) })
	b.Sort()
	h := fnv.New64a()
	var buf [20]byte
	_, _ = h.Write(strconv.AppendUint(buf[:0], b.Labels().Hash(), 16))
	_, _ = h.Write([]byte(t.URL().String()))
	return h.Sum64()
}

// state returns the state of target t, creating it. A nil target gets a
// fresh state that is not kept.
func (a *Appendable) state(t *scrape.Target) *targetState {
	if t == nil {
		return newTargetState(0, nil, a.opts)
	}
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if now.Sub(a.lastSweep) > a.opts.StateTTL/4 {
		a.sweepLocked(now)
	}
	ts, ok := a.byTarget[t]
	if !ok {
		key := TargetHash(t)
		ts, ok = a.targets[key]
		if !ok {
			ts = newTargetState(key, t, a.opts)
			a.targets[key] = ts
			a.metrics.targets.Set(float64(len(a.targets)))
		}
		// A reload replaces a target's *scrape.Target; the old one's loop
		// is stopping, so only the newest pointer is indexed (an old one
		// finds the state again by its hash).
		for _, old := range ts.targets {
			delete(a.byTarget, old)
		}
		a.byTarget[t] = ts
		ts.targets = append(ts.targets[:0], t)
	}
	ts.lastUsed = now
	return ts
}

func (a *Appendable) sweepLocked(now time.Time) {
	a.lastSweep = now
	for key, ts := range a.targets {
		if now.Sub(ts.lastUsed) > a.opts.StateTTL {
			a.dropLocked(key, ts)
		}
	}
}

func (a *Appendable) dropLocked(key uint64, ts *targetState) {
	delete(a.targets, key)
	for _, t := range ts.targets {
		delete(a.byTarget, t)
	}
	ts.forget()
	a.metrics.targets.Set(float64(len(a.targets)))
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
