package scraper

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"
	"github.com/prometheus/prometheus/storage"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// catalog is what the scraper needs of the catalog follower
// (*events.Follower).
type catalog interface {
	// Run follows the catalog until ctx ends, calling the handler.
	Run(ctx context.Context) error
	// SetSlots replaces the set of followed slots.
	SetSlots(slots []int)
	// Track and Untrack follow single targets whatever their slot.
	Track(ids ...string)
	Untrack(ids ...string)
	// GetTarget reads one target by id.
	GetTarget(ctx context.Context, id string) (events.Target, error)
}

// Scraper is one scraping member of the pool. Create it with New and run it
// with Run, once.
type Scraper struct {
	cfg     Config
	self    placement.Member
	started time.Time
	etcd    *clientv3.Client
	logger  *slog.Logger
	reg     prometheus.Registerer
	metrics *metrics
	gate    *gate
	mgr     *scrape.Manager
	catalog catalog

	// Channels between Run's goroutines.
	inbox   chan func()                          // state changes, run by the actor
	kick    chan struct{}                        // wakes the etcd worker
	tsets   chan map[string][]*targetgroup.Group // to the scrape manager
	configs chan appliedConfig                   // to the configurer
	done    <-chan struct{}                      // Run's ctx.Done, for the catalog handler

	// a is the actor's state; only the actor goroutine touches it.
	a actorState

	// view is the set of owned targets, for Targets() and load reports.
	viewMu  sync.RWMutex
	view    map[string]events.Target
	jobErrs map[string]string // jobs whose config was rejected, and why

	sessMu sync.Mutex
	sess   *leases.Session // the newest session, closed by Run at the end

	wg  sync.WaitGroup // every goroutine Run starts
	ran atomic.Bool

	// Test hooks.
	crashed        atomic.Bool   // see crash
	resyncInterval time.Duration // periodic re-claim of unowned targets
}

// New builds a scraper. app receives every admitted scrape batch. reg may be
// nil; the scraper wraps it with the label scraper=<ID>, so several
// scrapers can share one registry. The catalog is followed through js with
// cfg.Events.
func New(cfg Config, etcd *clientv3.Client, js jetstream.JetStream, app storage.AppendableV2, reg prometheus.Registerer, logger *slog.Logger) (*Scraper, error) {
	if etcd == nil || js == nil || app == nil {
		return nil, errors.New("scraper: etcd client, JetStream and appendable are required")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("scraper config: %w", err)
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "scraper", "scraper", cfg.ID)
	if reg != nil {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"scraper": cfg.ID}, reg)
	}
	s, err := newScraper(cfg, etcd, app, reg, logger)
	if err != nil {
		return nil, err
	}
	s.catalog = events.NewFollower(js, cfg.Events, catalogHandler{s}, reg, logger)
	return s, nil
}

// newScraper builds everything but the catalog follower.
func newScraper(cfg Config, etcd *clientv3.Client, app storage.AppendableV2, reg prometheus.Registerer, logger *slog.Logger) (*Scraper, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	s := &Scraper{
		cfg:            cfg,
		self:           placement.Member{ID: cfg.ID, Weight: cfg.Weight, Zone: cfg.Zone},
		started:        time.Now(),
		etcd:           etcd,
		logger:         logger,
		reg:            reg,
		metrics:        m,
		inbox:          make(chan func(), 256),
		kick:           make(chan struct{}, 1),
		tsets:          make(chan map[string][]*targetgroup.Group),
		configs:        make(chan appliedConfig, 1),
		view:           map[string]events.Target{},
		jobErrs:        map[string]string{},
		resyncInterval: time.Minute,
	}
	s.gate = newGate(app, m.gateDropped)
	opts := &scrape.Options{}
	if cfg.ScrapeOptions != nil {
		cfg.ScrapeOptions(opts)
	}
	opts.DiscoveryReloadInterval = model.Duration(cfg.ReloadInterval)
	// The gate finds a batch's target through the context.
	opts.PassMetadataInContext = true
	s.mgr, err = scrape.NewManager(opts, logger, nil, nil, s.gate, reg)
	if err != nil {
		m.unregister(reg)
		return nil, fmt.Errorf("scrape manager: %w", err)
	}
	s.a.init()
	return s, nil
}

// ID is the scraper's member id.
func (s *Scraper) ID() string { return s.cfg.ID }

// Run scrapes until ctx ends, then stops gracefully: it stops every scrape
// loop and revokes its lease, so that the others take its targets over at
// once. It returns nil after a graceful stop.
func (s *Scraper) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return errors.New("scraper: Run called twice")
	}
	s.done = ctx.Done()

	mgrDone := make(chan struct{})
	go func() {
		defer close(mgrDone)
		if err := s.mgr.Run(s.tsets); err != nil {
			s.logger.Error("scrape manager stopped", "err", err)
		}
	}()

	s.goFn(func() { s.actor(ctx) })
	s.goFn(func() { s.worker(ctx) })
	s.goFn(func() { s.configurer(ctx) })
	s.goFn(func() { s.watchMembers(ctx) })
	s.goFn(func() { s.watchDrains(ctx) })
	s.goFn(func() { s.sessions(ctx) })

	<-ctx.Done()
	s.logger.Info("stopping: handing targets over")
	// Hand over first: shut the gate (nothing more is forwarded, so no
	// sample can overlap with the next owner's) and revoke the lease, so
	// the others claim at once instead of after our scrape loops wound
	// down, which can take a scrape timeout.
	s.gate.setLive(nil)
	err := s.closeSession()
	s.wg.Wait()
	// A session opened while we were closing the first one.
	if cerr := s.closeSession(); err == nil {
		err = cerr
	}
	s.mgr.Stop()
	<-mgrDone
	s.mgr.UnregisterMetrics()
	s.metrics.unregister(s.reg)
	s.viewMu.Lock()
	clear(s.view)
	s.viewMu.Unlock()
	s.logger.Info("scraper stopped")
	return err
}

// closeSession revokes the current session, if any.
func (s *Scraper) closeSession() error {
	s.sessMu.Lock()
	sess := s.sess
	s.sess = nil
	s.sessMu.Unlock()
	if sess == nil {
		return nil
	}
	start := time.Now()
	if err := sess.Close(); err != nil {
		return fmt.Errorf("scraper %s: %w", s.cfg.ID, err)
	}
	s.logger.Info("lease revoked", "took", time.Since(start))
	return nil
}

// crash makes the scraper look dead to everyone else at once, as a killed
// process would: nothing more is forwarded and the lease is no longer
// renewed, but not revoked. Run still has to be cancelled (tests do that
// next); it then stops the loops without touching etcd.
func (s *Scraper) crash() {
	s.crashed.Store(true)
	s.gate.setLive(nil)
	s.sessMu.Lock()
	sess := s.sess
	s.sess = nil
	s.sessMu.Unlock()
	if sess != nil {
		sess.Orphan()
	}
}

func (s *Scraper) goFn(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// post hands f to the actor. It returns false if ctx ended first.
func (s *Scraper) post(ctx context.Context, f func()) bool {
	select {
	case s.inbox <- f:
		return true
	case <-ctx.Done():
		return false
	}
}

// call runs f on the actor and waits for it. It returns false if ctx ended
// first (f may then not have run).
func (s *Scraper) call(ctx context.Context, f func()) bool {
	done := make(chan struct{})
	if !s.post(ctx, func() { f(); close(done) }) {
		return false
	}
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// sessions keeps one live session at a time: it opens one, registers the
// member, watches claims and moves for it and reports load on it; when the
// session is lost it tells the actor, which stops everything at once, and
// opens the next one. At the end it leaves the newest session to Run.
func (s *Scraper) sessions(ctx context.Context) {
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	var gen uint64
	for ctx.Err() == nil && !s.crashed.Load() {
		sess, err := s.openSession(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("cannot open session", "err", err)
			}
			if !bo.wait(ctx) {
				return
			}
			continue
		}
		bo.reset()
		gen++
		s.metrics.sessions.Inc()
		claims := leases.NewClaims(sess, s.cfg.Keyspace, s.cfg.ID, s.cfg.ClaimBatch, s.reg)

		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		// Watch before the first claim so that no deletion between the two
		// goes unseen: Watch fixes its start revision before it returns.
		evs := claims.Watch(sctx)
		s.gate.setLive(sess)
		if !s.post(ctx, func() { s.onSessionStarted(gen, claims) }) {
			cancel()
			return
		}
		s.logger.Info("session opened", "lease", fmt.Sprintf("%x", int64(sess.Lease())), "ttl", sess.TTL())
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.forwardClaimEvents(sctx, gen, evs)
		}()
		go func() {
			defer wg.Done()
			s.reportLoad(sctx, sess)
		}()

		select {
		case <-sess.Done():
			cancel()
			wg.Wait()
			if s.crashed.Load() {
				return
			}
			s.logger.Warn("session lost; stopping every target", "err", sess.Err())
			// The gate already drops everything (it checks the session).
			// The actor stops the scrape loops and forgets the session
			// before the next one can make the gate forward again.
			s.gate.removeAll()
			if !s.call(ctx, func() { s.onSessionLost(gen) }) {
				return
			}
			// The lost lease may still live on the server (the renewals
			// failed during an etcd election, say): revoke it so its
			// claims are freed now instead of a TTL later. The gate is shut
			// and the loops have stopped, so nothing scrapes on its behalf;
			// Close gives up after one TTL if etcd stays out of reach.
			if err := sess.Close(); err != nil {
				s.logger.Debug("revoke the lost lease", "err", err)
			}
		case <-ctx.Done():
			cancel()
			wg.Wait()
			return
		}
	}
}

// openSession grants a lease and registers the member on it. The session
// outlives ctx on purpose: Run revokes it only after the scrape loops have
// stopped, so nothing is scraped without a lease and nobody waits for it.
func (s *Scraper) openSession(ctx context.Context) (*leases.Session, error) {
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, cancel)
	sess, err := leases.NewSession(sctx, s.etcd, s.cfg.Session, s.logger, s.reg)
	if err == nil {
		err = leases.Register(ctx, sess, s.cfg.Keyspace, leases.Member{
			ID:      s.cfg.ID,
			Addr:    s.cfg.Addr,
			Zone:    s.cfg.Zone,
			Weight:  s.cfg.Weight,
			Started: s.started,
			Version: s.cfg.Version,
			Kind:    leases.KindScraper,
		})
		if err != nil {
			_ = sess.Close()
		}
	}
	if !stop() || err != nil {
		// ctx ended (the session, if any, ends with it) or it failed.
		cancel()
		if err == nil {
			_ = sess.Close()
			err = ctx.Err()
		}
		return nil, err
	}
	// From here the session lives until Close or Orphan; its context is
	// released with it.
	context.AfterFunc(sess.Ctx(), cancel)
	s.sessMu.Lock()
	s.sess = sess
	s.sessMu.Unlock()
	return sess, nil
}

func (s *Scraper) forwardClaimEvents(ctx context.Context, gen uint64, evs <-chan leases.Event) {
	for ev := range evs {
		if !s.post(ctx, func() { s.onClaimEvent(ctx, gen, ev) }) {
			return
		}
	}
}

// watchMembers feeds member set changes to the actor.
func (s *Scraper) watchMembers(ctx context.Context) {
	for ms := range leases.WatchMembers(ctx, s.etcd, s.cfg.Keyspace, s.logger) {
		if !s.post(ctx, func() { s.onMembers(ctx, ms) }) {
			return
		}
	}
}

// runCatalog follows the catalog until ctx ends, restarting the follower
// if it fails.
func (s *Scraper) runCatalog(ctx context.Context) {
	bo := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	for {
		err := s.catalog.Run(ctx)
		if ctx.Err() != nil {
			return
		}
		s.logger.Warn("catalog follower stopped; restarting", "err", err)
		if !bo.wait(ctx) {
			return
		}
	}
}

// appliedConfig is a scrape config for the manager and the jobs in it.
type appliedConfig struct {
	cfg    *config.Config
	jobs   map[string]bool
	phaser *phaser // set by the configurer once cfg is applied
}

// configurer applies scrape configs off the actor: ApplyConfig restarts the
// loops of a changed job and waits for them.
func (s *Scraper) configurer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-s.configs:
			if err := s.mgr.ApplyConfig(c.cfg); err != nil {
				s.logger.Error("applying scrape config", "err", err)
			}
			// Computed where the manager computes its seed, right after
			// it, so that both see the same host name.
			p, err := newPhaser(c.cfg, "")
			if err != nil {
				s.logger.Warn("scrape phases are not aligned across scrapers; a handoff may skip or double one sample", "err", err)
			}
			c.phaser = p
			if !s.post(ctx, func() { s.onConfigApplied(c) }) {
				return
			}
		}
	}
}

// reportLoad publishes the load report every LoadInterval.
func (s *Scraper) reportLoad(ctx context.Context, sess *leases.Session) {
	t := time.NewTicker(s.cfg.LoadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := leases.PutLoad(ctx, sess, s.cfg.Keyspace, s.load(time.Now())); err != nil && ctx.Err() == nil {
			s.logger.Warn("load report failed", "err", err)
		}
	}
}

// backoff doubles a wait from min to max.
type backoff struct{ d, min, max time.Duration }

func (b *backoff) reset() { b.d = 0 }

func (b *backoff) wait(ctx context.Context) bool {
	if b.d == 0 {
		b.d = b.min
	}
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(2*b.d, b.max)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// catalogHandler receives the follower's callbacks (on the follower's
// goroutine) and hands them to the actor.
type catalogHandler struct{ s *Scraper }

func (h catalogHandler) do(f func()) {
	select {
	case h.s.inbox <- f:
	case <-h.s.done:
	}
}

func (h catalogHandler) UpsertJob(j events.Job)       { h.do(func() { h.s.onUpsertJob(j) }) }
func (h catalogHandler) DeleteJob(name string)        { h.do(func() { h.s.onDeleteJob(name) }) }
func (h catalogHandler) UpsertTarget(t events.Target) { h.do(func() { h.s.onUpsertTarget(t) }) }
func (h catalogHandler) DeleteTarget(id string)       { h.do(func() { h.s.onDeleteTarget(id) }) }
func (h catalogHandler) Synced()                      { h.do(func() { h.s.onSynced() }) }
