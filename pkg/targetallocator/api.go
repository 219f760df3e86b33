package targetallocator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// API serves the OpenTelemetry Target Allocator's HTTP API over allot's
// catalog and claims, and holds a lease for every collector that polls it.
// Build it with New, start it with Run and mount Handler.
type API struct {
	cfg     Config
	etcd    *clientv3.Client
	logger  *slog.Logger
	metrics *metrics
	promReg prometheus.Registerer

	cat      *catalog
	mir      *mirror
	reg      *registry
	follower *events.Follower
	configs  *configCache
	answers  *answerCache

	members      atomic.Pointer[[]leases.Member]
	membersReady atomic.Bool

	kick chan struct{} // 1-slot: something changed, reconcile soon

	// Reconcile rounds, so that a first poll can wait for the round that
	// claims for its collector.
	requested atomic.Uint64
	roundMu   sync.Mutex
	doneSeq   uint64
	doneRev   int64
	doneCh    chan struct{}

	// runCtx is Run's context: collector sessions live as long as it.
	runMu    sync.Mutex
	runCtx   context.Context
	started  bool
	stopping bool
	wg       sync.WaitGroup // session opens and revokes in flight

	// Owned by the reconcile loop.
	unowned   map[string]time.Time // target → when first seen unowned
	attempted map[string]int64     // target → epoch of the move taken over (or refused)
}

// New builds the API. reg may be nil; logger nil discards.
func New(cfg Config, etcd *clientv3.Client, js jetstream.JetStream, reg prometheus.Registerer, logger *slog.Logger) (*API, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("target allocator config: %w", err)
	}
	if etcd == nil {
		return nil, errors.New("target allocator: no etcd client")
	}
	if js == nil {
		return nil, errors.New("target allocator: no JetStream context")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "target-allocator")
	a := &API{
		cfg:       cfg.withDefaults(),
		etcd:      etcd,
		logger:    logger,
		metrics:   newMetrics(reg),
		promReg:   reg,
		reg:       newRegistry(),
		kick:      make(chan struct{}, 1),
		doneCh:    make(chan struct{}),
		unowned:   map[string]time.Time{},
		attempted: map[string]int64{},
		answers:   newAnswerCache(),
	}
	a.cat = newCatalog(func(bool) { a.poke() })
	a.configs = newConfigCache(a.cat, logger, a.metrics)
	a.mir = newMirror(etcd, cfg.Keyspace, logger, a.poke)
	a.follower = events.NewFollower(js, cfg.Events, a.cat, reg, logger)
	all := make([]int, events.Slots)
	for i := range all {
		all[i] = i
	}
	a.follower.SetSlots(all)
	return a, nil
}

// Run follows the whole catalog, mirrors claims, moves and members, claims
// targets for the polling collectors and takes moves over for them, until
// ctx ends. It then stops renewing the collectors' leases without revoking
// them: a restarted API finds the claims where they were, and if none comes
// back they expire after CollectorTTL. Run may be called once.
func (a *API) Run(ctx context.Context) error {
	a.runMu.Lock()
	if a.started {
		a.runMu.Unlock()
		return errors.New("target allocator: Run called twice")
	}
	a.started = true
	g, gctx := errgroup.WithContext(ctx)
	a.runCtx = gctx
	a.runMu.Unlock()

	g.Go(func() error {
		if err := a.follower.Run(gctx); err != nil && gctx.Err() == nil {
			return fmt.Errorf("follow catalog: %w", err)
		}
		return nil
	})
	g.Go(func() error { a.mir.run(gctx); return nil })
	g.Go(func() error { a.watchMembers(gctx); return nil })
	g.Go(func() error { a.loop(gctx); return nil })
	err := g.Wait()

	a.runMu.Lock()
	a.stopping = true
	a.runMu.Unlock()
	a.wg.Wait()
	for _, c := range a.reg.drain() {
		c.sess.Orphan()
	}
	a.metrics.collectors.Set(0)
	return err
}

// context returns Run's context, or nil before Run.
func (a *API) context() context.Context {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	return a.runCtx
}

func (a *API) watchMembers(ctx context.Context) {
	for ms := range leases.WatchMembers(ctx, a.etcd, a.cfg.Keyspace, a.logger) {
		a.members.Store(&ms)
		a.membersReady.Store(true)
		a.poke()
	}
}

// Ready says whether the API answers: the catalog's first snapshot, the
// claims and the members have been read. Before that /scrape_configs and
// /jobs/{job}/targets answer 503 in a way the Collector treats as "no
// change" (see Handler).
func (a *API) Ready() bool {
	return a.context() != nil && a.cat.isSynced() && a.mir.isSynced() && a.membersReady.Load()
}

func (a *API) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// finishRound records that every round requested up to seq is done and
// that its claim writes reached revision rev.
func (a *API) finishRound(seq uint64, rev int64) {
	a.roundMu.Lock()
	defer a.roundMu.Unlock()
	if seq > a.doneSeq {
		a.doneSeq = seq
	}
	a.doneRev = max(a.doneRev, rev)
	close(a.doneCh)
	a.doneCh = make(chan struct{})
}

// roundDone says whether round seq is done.
func (a *API) roundDone(seq uint64) bool {
	a.roundMu.Lock()
	defer a.roundMu.Unlock()
	return a.doneSeq >= seq
}

// waitRound waits for round seq and returns the revision its writes
// reached (at least: rounds report the highest revision so far).
func (a *API) waitRound(ctx context.Context, seq uint64) (int64, error) {
	for {
		a.roundMu.Lock()
		done, rev, ch := a.doneSeq, a.doneRev, a.doneCh
		a.roundMu.Unlock()
		if done >= seq {
			return rev, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-ch:
		}
	}
}

// background runs fn in a goroutine that Run waits for, with Run's
// context; false if Run is not running.
func (a *API) background(fn func(ctx context.Context)) bool {
	a.runMu.Lock()
	defer a.runMu.Unlock()
	if a.runCtx == nil || a.stopping {
		return false
	}
	ctx := a.runCtx
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn(ctx)
	}()
	return true
}

// register opens collector id's session and member entry; it runs in its
// own goroutine, bounded by Run's context, not by the poll's.
func (a *API) register(id, addr string, reg *registration) {
	started := a.background(func(ctx context.Context) {
		c, err := a.open(ctx, id, addr)
		a.metrics.registrations(err).Inc()
		if err != nil {
			a.logger.Warn("registering collector failed", "collector", id, "err", err)
		} else {
			a.logger.Info("collector registered", "collector", id, "addr", addr, "ttl", a.cfg.CollectorTTL)
		}
		a.reg.finish(id, reg, c, err, func() uint64 { return a.requested.Add(1) })
		a.poke()
		a.metrics.collectors.Set(float64(a.countCollectors()))
	})
	if !started {
		a.reg.finish(id, reg, nil, errNotRunning, nil)
	}
}

func (a *API) countCollectors() int {
	cs, _ := a.reg.snapshot()
	return len(cs)
}

// errIDTaken means a collector_id is the ID of a live scraper.
var errIDTaken = errors.New("the ID of a live scraper")

func (a *API) open(ctx context.Context, id, addr string) (*collector, error) {
	// The member watch may not show a scraper that just started: ask etcd,
	// or a collector could take over a scraper's member entry.
	gctx, gcancel := context.WithTimeout(ctx, 10*time.Second)
	resp, err := a.etcd.Get(gctx, a.cfg.Keyspace.Member(id))
	gcancel()
	if err != nil {
		return nil, fmt.Errorf("check member %s: %w", id, err)
	}
	if len(resp.Kvs) > 0 {
		var m leases.Member
		if json.Unmarshal(resp.Kvs[0].Value, &m) == nil && m.Kind != leases.KindCollector {
			return nil, fmt.Errorf("collector_id %q: %w", id, errIDTaken)
		}
	}
	sess, err := leases.NewSession(ctx, a.etcd, leases.SessionConfig{TTL: a.cfg.CollectorTTL},
		a.logger.With("collector", id), a.promReg)
	if err != nil {
		return nil, fmt.Errorf("open lease for collector %s: %w", id, err)
	}
	now := time.Now()
	m := leases.Member{
		ID:      id,
		Addr:    addr,
		Weight:  1,
		Started: now.UTC(),
		Version: a.cfg.Version,
		Kind:    leases.KindCollector,
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := leases.Register(rctx, sess, a.cfg.Keyspace, m); err != nil {
		_ = sess.Close()
		return nil, err
	}
	c := &collector{
		id:         id,
		addr:       addr,
		registered: now,
		sess:       sess,
		claims:     leases.NewClaims(sess, a.cfg.Keyspace, id, 0, a.promReg),
		member:     m,
	}
	c.touch(now)
	return c, nil
}

// release ends the sessions of collectors whose polls stopped: revoking
// deletes their member entry and claims at once, so that the targets move
// now rather than when the lease would have expired.
func (a *API) release(idle []*collector) {
	for _, c := range idle {
		a.logger.Info("collector stopped polling; releasing its targets", "collector", c.id,
			"last_poll", c.last().Format(time.RFC3339Nano))
		revoke := func(context.Context) {
			if err := c.sess.Close(); err != nil {
				a.logger.Warn("revoking collector lease failed; it expires on its own", "collector", c.id, "err", err)
			}
		}
		if !a.background(revoke) {
			c.sess.Orphan()
		}
	}
}

func hostOf(remoteAddr string) string {
	if h, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return h
	}
	return remoteAddr
}
