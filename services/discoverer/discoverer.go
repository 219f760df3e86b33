package discoverer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.yaml.in/yaml/v2"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// Config configures a [Discoverer].
type Config struct {
	// ID names this discoverer in the election. Empty means host name and
	// process id.
	ID string
	// Keyspace is where the election lives (Keyspace.Election("discoverer")).
	Keyspace leases.Keyspace
	// Events names the buckets the leader publishes to.
	Events events.Config
	// ElectionTTL is the TTL of the election lease: how long a dead
	// leader blocks its standby. Zero means 5s; it is rounded up to whole
	// seconds (etcd lease TTLs are seconds).
	ElectionTTL time.Duration
	// SyncTimeout bounds how long, after the first config is applied, a
	// leader waits for service discovery to report before it compares the
	// buckets with its catalog; until then a target missing from the
	// catalog may just not be discovered yet, and deleting it would stop
	// its scrapes. It also bounds how long a provider replaced on reload
	// keeps its targets while its successor has not reported. Zero means
	// 30s.
	SyncTimeout time.Duration
}

const (
	// DefaultElectionTTL is the election lease TTL when Config.ElectionTTL is zero.
	DefaultElectionTTL = 5 * time.Second
	// DefaultSyncTimeout is Config.SyncTimeout when it is zero.
	DefaultSyncTimeout = 30 * time.Second
	// settleQuiet is how long discovery must have been quiet, once every
	// provider has reported, for the catalog to count as complete: many
	// SDs send their initial targets in several updates (one per file,
	// one per Kubernetes object).
	settleQuiet = 500 * time.Millisecond
)

// RegisterFlags registers the discoverer's own flags. Keyspace and Events
// are shared with other roles and registered by the caller.
func (c *Config) RegisterFlags(f *flag.FlagSet) {
	f.StringVar(&c.ID, "discoverer.id", "", "Name of this discoverer in the leader election (default: host name and pid).")
	f.DurationVar(&c.ElectionTTL, "discoverer.election-ttl", DefaultElectionTTL, "Lease TTL of the discoverer election: how long a dead leader delays its standby.")
	f.DurationVar(&c.SyncTimeout, "discoverer.sync-timeout", DefaultSyncTimeout, "After start, how long a leader waits for service discovery to report before reconciling the catalog.")
}

// Validate reports a config that cannot work.
func (c Config) Validate() error {
	if c.ElectionTTL < 0 {
		return fmt.Errorf("discoverer: election TTL %s is negative", c.ElectionTTL)
	}
	if c.SyncTimeout < 0 {
		return fmt.Errorf("discoverer: sync timeout %s is negative", c.SyncTimeout)
	}
	return nil
}

func (c Config) syncTimeout() time.Duration {
	if c.SyncTimeout == 0 {
		return DefaultSyncTimeout
	}
	return c.SyncTimeout
}

func (c Config) electionTTLSeconds() int {
	ttl := c.ElectionTTL
	if ttl == 0 {
		ttl = DefaultElectionTTL
	}
	s := int((ttl + time.Second - 1) / time.Second)
	return max(s, 1)
}

// publisher is what the discoverer needs of the catalog: *events.Publisher.
// Every method is idempotent: putting a value the bucket already holds or
// deleting a missing key is harmless, which is what makes "publish the
// current state of whatever changed" safe to retry.
type publisher interface {
	PutJob(ctx context.Context, j events.Job) error
	DeleteJob(ctx context.Context, name string) error
	PutTargets(ctx context.Context, ts []events.Target) error
	DeleteTargets(ctx context.Context, ids []string) error
	Snapshot(ctx context.Context) (events.Snapshot, error)
}

// Discoverer runs Prometheus service discovery and relabelling for the
// scrape configs and, while it is the leader, publishes the catalog.
type Discoverer struct {
	cfg    Config
	etcd   *clientv3.Client
	js     jetstream.JetStream
	reg    prometheus.Registerer
	logger *slog.Logger
	m      *metrics

	cat *catalog
	tap *tap

	mgr       *discovery.Manager
	mgrCancel context.CancelFunc

	// newPublisher makes the publisher on first leadership; NATS may be
	// down, so it is retried like any publish.
	newPublisher func(ctx context.Context) (publisher, error)
	pub          publisher // owned by the publish loop

	applyMu sync.Mutex // serialises ApplyConfig
	// current is the config the catalog holds: the last one ApplyConfig
	// applied, for the /config page.
	current atomic.Pointer[config.Config]
	// publishTrigger coalesces change notifications: one slot.
	publishTrigger chan struct{}

	running atomic.Bool
	stopped atomic.Bool
	applied atomic.Bool
	// firstApplied and lastChange (unix nanoseconds) tell whether
	// discovery has settled; see settled.
	firstApplied atomic.Int64
	lastChange   atomic.Int64
	leader       atomic.Bool
	published    atomic.Bool // this leadership term has published its reconciliation
}

// New builds a discoverer. It registers its metrics and the SD metrics on
// reg (nil: not exported), so it is built once per registry. Discovery
// starts with the first ApplyConfig, campaigning and publishing with Run;
// everything stops when Run returns, so a discoverer that was configured
// must be run.
//
// New sets github.com/prometheus/common/config.MarshalSecretValue for the
// whole process: see the package documentation.
func New(cfg Config, etcd *clientv3.Client, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (*Discoverer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if etcd == nil {
		return nil, errors.New("discoverer: no etcd client")
	}
	if js == nil {
		return nil, errors.New("discoverer: no JetStream context")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "discoverer")
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	setMarshalSecrets()

	// discovery metrics cannot be registered on a nil registerer.
	sdReg := reg
	if sdReg == nil {
		sdReg = prometheus.NewRegistry()
	}
	sdMetrics, err := discovery.CreateAndRegisterSDMetrics(sdReg)
	if err != nil {
		return nil, fmt.Errorf("discoverer: %w", err)
	}
	// The Manager's ctx is ours, not Run's: ApplyConfig may start
	// providers before Run. Run cancels it when it returns. No short
	// Updatert: updates do not go through the Manager (see tap), which
	// only ever sends empty target sets.
	mctx, mcancel := context.WithCancel(context.Background())
	mgr := discovery.NewManager(mctx, logger, sdReg, sdMetrics, discovery.Name("allot"))
	if mgr == nil {
		mcancel()
		return nil, errors.New("discoverer: cannot create discovery manager (metrics already registered?)")
	}
	d := &Discoverer{
		cfg:            cfg,
		etcd:           etcd,
		js:             js,
		reg:            reg,
		logger:         logger,
		m:              newMetrics(reg),
		cat:            newCatalog(),
		tap:            newTap(),
		mgr:            mgr,
		mgrCancel:      mcancel,
		publishTrigger: make(chan struct{}, 1),
	}
	d.newPublisher = func(ctx context.Context) (publisher, error) {
		return events.NewPublisher(ctx, js, cfg.Events, reg, logger)
	}
	return d, nil
}

// ApplyConfig makes c the running config, diffing it against the last one
// as Prometheus does: a job whose SD configs are unchanged keeps its
// providers (and their targets), a job whose relabelling changed is
// relabelled from the groups already discovered, a removed job and its
// targets are deleted from the catalog.
//
// c must come from config.Load or config.LoadFile. An error before anything
// is applied leaves the previous config running. SD configs that cannot be
// started (a bad client setting) do not stop the rest: as in Prometheus the
// config is applied and those jobs run without them, and the error names
// each of them.
func (d *Discoverer) ApplyConfig(c *config.Config) error {
	err := d.applyConfig(c)
	if err != nil {
		d.m.reloadSuccessful.Set(0)
		return err
	}
	d.m.reloadSuccessful.Set(1)
	d.m.reloadSuccessTime.SetToCurrentTime()
	return nil
}

func (d *Discoverer) applyConfig(c *config.Config) error {
	if c == nil {
		return errors.New("apply config: no config")
	}
	if d.stopped.Load() {
		return errors.New("apply config: discoverer stopped")
	}
	scfgs, err := c.GetScrapeConfigs()
	if err != nil {
		return fmt.Errorf("apply config: %w", err)
	}
	specs := make(map[string]jobSpec, len(scfgs))
	sd := make(map[string]discovery.Configs, len(scfgs))
	for _, sc := range scfgs {
		if _, dup := specs[sc.JobName]; dup {
			return fmt.Errorf("apply config: job %q: defined twice", sc.JobName)
		}
		y, err := jobYAML(sc)
		if err != nil {
			return fmt.Errorf("apply config: job %q: %w", sc.JobName, err)
		}
		specs[sc.JobName] = jobSpec{cfg: sc, event: events.NewJob(sc.JobName, y)}
		wrapped := make(discovery.Configs, 0, len(sc.ServiceDiscoveryConfigs))
		for _, c := range sc.ServiceDiscoveryConfigs {
			wrapped = append(wrapped, tapConfig{job: sc.JobName, inner: c, tap: d.tap})
		}
		sd[sc.JobName] = wrapped
	}

	d.applyMu.Lock()
	defer d.applyMu.Unlock()
	// Jobs first: updates from new providers must find their job, and
	// late updates from providers about to stop must find theirs gone.
	touched := d.cat.setJobs(specs)
	// From here on the catalog's jobs are c's, whatever service discovery
	// makes of its SD configs below.
	d.current.Store(c)
	d.tap.takeFailures()
	if err := d.mgr.ApplyConfig(sd); err != nil {
		return fmt.Errorf("apply config: service discovery: %w", err)
	}
	failures := d.tap.takeFailures()
	d.m.failedSDConfigs.Set(float64(len(failures)))
	d.updateJobMetrics(touched)
	now := time.Now().UnixNano()
	d.lastChange.Store(now)
	d.firstApplied.CompareAndSwap(0, now)
	d.applied.Store(true)
	d.kickPublish()
	d.logger.Info("config applied", "jobs", len(specs), "failed_sd_configs", len(failures))
	if len(failures) > 0 {
		return fmt.Errorf("apply config: %d service discovery config(s) could not start, their jobs run without them: %w",
			len(failures), errors.Join(failures...))
	}
	return nil
}

var marshalSecretsOnce sync.Once

// setMarshalSecrets makes marshalled configs carry their secrets: scrapers
// need a job's real credentials (basic auth passwords, bearer tokens) and
// get them only through the published YAML. Process-wide; see the package
// documentation.
func setMarshalSecrets() {
	marshalSecretsOnce.Do(func() { commoncfg.MarshalSecretValue = true })
}

// jobYAML is the scrape config as scrapers get it: without SD configs (they
// do not discover; and their credentials stay here) and without
// relabel_configs (already applied here, so scrapers must not apply them
// again). Everything else, metric_relabel_configs included, is kept.
func jobYAML(sc *config.ScrapeConfig) (string, error) {
	c := *sc
	c.ServiceDiscoveryConfigs = nil
	c.RelabelConfigs = nil
	b, err := yaml.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("marshal scrape config: %w", err)
	}
	return string(b), nil
}

// Run runs discovery, applies target group updates, campaigns for
// leadership and, while leader, publishes. Followers do all of it but
// publish, so they can take over at once. Run returns nil when ctx ends,
// after resigning if it was the leader and stopping every SD provider.
// The discoverer cannot be run again.
func (d *Discoverer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("discoverer: already running")
	}
	defer d.stopped.Store(true)
	defer d.mgrCancel()
	stopMgr := context.AfterFunc(ctx, d.mgrCancel)
	defer stopMgr()

	var wg sync.WaitGroup
	wg.Go(func() { _ = d.mgr.Run() })
	// The Manager keeps no targets (see tap), but its sender retries
	// forever until someone takes its (empty) updates.
	wg.Go(func() {
		for range d.mgr.SyncCh() {
		}
	})
	wg.Go(func() { d.applyLoop(ctx) })
	wg.Go(func() { d.electLoop(ctx) })
	wg.Wait()
	return nil
}

// applyLoop applies what the providers report, a batch per wake-up.
//
// The end of a provider whose job has a new provider that has not
// reported yet (an SD config changed on reload) waits, up to the sync
// timeout, for it: the targets they share then stay published instead of
// being deleted and put again.
func (d *Discoverer) applyLoop(ctx context.Context) {
	var deferred []update
	for {
		var retry <-chan time.Time
		if len(deferred) > 0 {
			retry = time.After(100 * time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return
		case <-d.tap.trigger:
		case <-retry:
		}
		ups := append(deferred, d.tap.take()...)
		deferred = nil
		now := time.Now()
		ready := ups[:0:0]
		for _, u := range ups {
			if u.ended && d.tap.awaitingJob(u.job, now, d.cfg.syncTimeout()) {
				deferred = append(deferred, u)
				continue
			}
			ready = append(ready, u)
		}
		if len(ready) == 0 {
			continue
		}
		start := time.Now()
		touched := d.cat.apply(ready)
		d.tap.applied(ready)
		d.m.applyDuration.Observe(time.Since(start).Seconds())
		d.lastChange.Store(time.Now().UnixNano())
		d.updateJobMetrics(touched)
		d.kickPublish()
	}
}

// settled reports whether the catalog can be taken as complete, so that a
// target missing from it may be deleted from the bucket: a config is
// applied, and either the sync timeout has passed since the first one, or
// every provider has reported and discovery has been quiet a moment.
// A standby that takes over has long settled; a restarted discoverer waits.
func (d *Discoverer) settled(now time.Time) bool {
	if !d.applied.Load() {
		return false
	}
	timeout := d.cfg.syncTimeout()
	if now.Sub(time.Unix(0, d.firstApplied.Load())) >= timeout {
		return true
	}
	if d.tap.awaitingAny(now, timeout) {
		return false
	}
	return now.Sub(time.Unix(0, d.lastChange.Load())) >= settleQuiet
}

func (d *Discoverer) kickPublish() {
	select {
	case d.publishTrigger <- struct{}{}:
	default:
	}
}

func (d *Discoverer) updateJobMetrics(jobs []string) {
	seen := make(map[string]struct{}, len(jobs))
	for _, name := range jobs {
		if _, ok := seen[name]; ok {
			continue
		}
		seen[name] = struct{}{}
		active, dropped, ok := d.cat.counts(name)
		if !ok {
			d.m.targets.DeleteLabelValues(name, "active")
			d.m.targets.DeleteLabelValues(name, "dropped")
			continue
		}
		d.m.targets.WithLabelValues(name, "active").Set(float64(active))
		d.m.targets.WithLabelValues(name, "dropped").Set(float64(dropped))
	}
}

// Config returns the config that is running: the last one ApplyConfig
// applied (also when some of its SD configs could not start), or nil
// before the first. It is shared: callers must not modify it.
func (d *Discoverer) Config() *config.Config { return d.current.Load() }

// IsLeader reports whether this discoverer currently holds the election.
func (d *Discoverer) IsLeader() bool { return d.leader.Load() }

// Ready reports whether a config has been applied and, if this discoverer
// is the leader, whether it has reconciled the buckets with it.
func (d *Discoverer) Ready() bool {
	return d.applied.Load() && (!d.leader.Load() || d.published.Load())
}

// TargetInfo is a target that is published.
type TargetInfo struct {
	ID  string
	Job string
	// Labels are the final labels, __ labels included (__meta_* excepted).
	Labels map[string]string
	// DiscoveredLabels are the labels before relabelling.
	DiscoveredLabels map[string]string
}

// DroppedTarget is a discovered target that is not published.
type DroppedTarget struct {
	Job              string
	DiscoveredLabels map[string]string
	// Reason says why: the relabel_configs rule that dropped it
	// (`relabel_configs[2] (action keep, source_labels [__meta_x], regex
	// "foo") dropped it`), or what scrape.PopulateLabels found wrong (no
	// address, a bad scrape interval...) and the rule that caused it.
	Reason string
}

// Targets lists the active and dropped targets, by job; a target found by
// several groups is listed once. It copies the whole catalog: for the
// debugging pages, not for anything on a hot path.
func (d *Discoverer) Targets() (active []TargetInfo, dropped []DroppedTarget) {
	return d.cat.list()
}
