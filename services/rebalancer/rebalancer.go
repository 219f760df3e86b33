package rebalancer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/allot-dev/allot/pkg/leases"
)

// electionName is the election every rebalancer candidate joins, at
// Keyspace.Election(electionName).
const electionName = "rebalancer"

// Rebalancer is one rebalancer replica. Several may run; the one elected
// leader plans and executes moves, the others stand by and take over when
// the leader's lease ends.
type Rebalancer struct {
	cfg     Config
	etcd    *clientv3.Client
	reg     prometheus.Registerer
	logger  *slog.Logger
	metrics *metrics
	moves   moveLog
	running atomic.Bool

	mu     sync.Mutex
	status Status // without Moves, which come from moves
}

// New checks cfg, fills its zero fields with the defaults and registers the
// metrics with reg (nil is fine). It starts nothing: call Run.
func New(cfg Config, etcd *clientv3.Client, reg prometheus.Registerer, logger *slog.Logger) (*Rebalancer, error) {
	if etcd == nil {
		return nil, errors.New("rebalancer: no etcd client")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rebalancer config: %w", err)
	}
	cfg.applyDefaults()
	cfg.Keyspace = leases.NewKeyspace(cfg.Keyspace.Prefix)
	if cfg.ID == "" {
		host, _ := os.Hostname()
		cfg.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r := &Rebalancer{
		cfg:     cfg,
		etcd:    etcd,
		reg:     reg,
		logger:  logger.With("component", "rebalancer", "id", cfg.ID),
		metrics: m,
	}
	r.status.ID = cfg.ID
	return r, nil
}

// Unregister removes the rebalancer's metrics from the registerer given to
// New, so that another one can be built in the same process.
func (r *Rebalancer) Unregister() { r.metrics.unregister() }

// Run campaigns for leadership and leads while elected, until ctx ends; it
// then returns nil. A replica that loses its lease (or fails to get one)
// stops leading at once and campaigns again with a new lease.
//
// Each candidacy has a lease of its own (a leases.Session) that carries the
// election key and every move the replica starts while leading. Leaving,
// for any reason, ends the lease: Run revokes it on the way out, and if the
// process dies instead, etcd expires it after the TTL. Either way the
// election key and the pending moves go together, in one revision. This is
// what makes a leader change safe without any rollback:
//
//   - A standby is elected only once the old leader's election key is gone,
//     so by then every move the old leader wrote is gone too.
//   - A move is only ever completed by the destination's takeover
//     transaction, which is guarded by the move's key still holding exactly
//     the move (and by the source's claim epoch). Once the move key is gone
//     the takeover fails and the target simply stays with its source; a
//     takeover that won before is a finished move. Either way exactly one
//     claim key exists for the target; nothing is half done.
//   - A destination that has prepared for a vanished move drops its
//     preparation when it sees the move key deleted.
//
// So a new leader starts from whatever claims exist. A leader whose
// election key is deleted by hand steps down at once (and revokes). A new
// leader still lists moves/ and adopts what it finds (keeping their
// deadlines, aborting expired ones): moves of a leader that stepped down
// but could not revoke, whose lease then lives up to one TTL longer.
func (r *Rebalancer) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("rebalancer: already running")
	}
	defer r.running.Store(false)
	defer r.setLeader(false, "")

	retry := 100 * time.Millisecond
	for {
		start := time.Now()
		err := r.candidate(ctx)
		if ctx.Err() != nil {
			return nil
		}
		r.logger.Warn("rebalancer candidacy ended; campaigning again", "err", err, "retry_in", retry)
		if time.Since(start) > r.cfg.Interval {
			retry = 100 * time.Millisecond
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		retry = min(2*retry, r.cfg.Interval)
	}
}

// candidate runs one candidacy: a new lease, a campaign, then leadership
// until the lease or ctx ends. It always ends the lease before returning.
func (r *Rebalancer) candidate(ctx context.Context) error {
	s, err := leases.NewSession(ctx, r.etcd, r.cfg.Session, r.logger, r.reg)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	// Revoking rather than resigning: it deletes the election key and every
	// pending move in one revision, so the next leader never sees our moves.
	defer func() {
		if err := s.Close(); err != nil {
			r.logger.Warn("revoke rebalancer lease", "err", err)
		}
	}()
	// Everything below stops when the session is lost, so a deposed leader
	// stops acting before the server can expire its lease (the margin).
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.Ctx(), cancel)
	defer stop()

	// concurrency.Session only lends the lease to the election here. It
	// renews the lease too, which is harmless: it stops with cctx, that is
	// as soon as the leases.Session ends. It is never Closed, which would
	// revoke behind the leases.Session's back.
	cs, err := concurrency.NewSession(r.etcd, concurrency.WithLease(s.Lease()), concurrency.WithContext(cctx))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer cs.Orphan()
	el := concurrency.NewElection(cs, r.cfg.Keyspace.Election(electionName))

	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { r.standby(cctx, el) })

	if err := el.Campaign(cctx, r.cfg.ID); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		if serr := s.Err(); serr != nil {
			return fmt.Errorf("campaign: %w", serr)
		}
		return fmt.Errorf("campaign: %w", err)
	}
	r.logger.Info("elected rebalancer leader")
	r.setLeader(true, r.cfg.ID)
	defer r.setLeader(false, "")

	err = newTerm(r, s, el.Key(), el.Rev()).run(cctx)
	if ctx.Err() != nil {
		return nil
	}
	if serr := s.Err(); serr != nil {
		return fmt.Errorf("leading: %w", serr)
	}
	return err
}

// standby follows who leads (for Status) and, while this replica is not
// the leader, refreshes the scraper list from members and load reports.
func (r *Rebalancer) standby(ctx context.Context, el *concurrency.Election) {
	obs := el.Observe(ctx)
	tick := time.NewTicker(r.cfg.Interval)
	defer tick.Stop()
	r.refreshStandby(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case resp, ok := <-obs:
			if !ok {
				return
			}
			if len(resp.Kvs) == 0 {
				continue
			}
			kv := resp.Kvs[0]
			// Observe may still deliver the leader before us after we were
			// elected: only a key at least as new as ours names the leader.
			if !r.IsLeader() || kv.CreateRevision >= el.Rev() {
				r.setLeaderID(string(kv.Value))
			}
		case <-tick.C:
			r.refreshStandby(ctx)
		}
	}
}

func (r *Rebalancer) refreshStandby(ctx context.Context) {
	if r.IsLeader() {
		return
	}
	members, _, err := leases.ListMembers(ctx, r.etcd, r.cfg.Keyspace)
	if err != nil {
		r.logger.Debug("standby: list members", "err", err)
		return
	}
	loads, err := leases.LoadSummaries(ctx, r.etcd, r.cfg.Keyspace)
	if err != nil {
		r.logger.Debug("standby: list loads", "err", err)
		return
	}
	drains, err := listDrains(ctx, r.etcd, r.cfg.Keyspace)
	if err != nil {
		r.logger.Debug("standby: list drains", "err", err)
		return
	}
	scrapers := make([]ScraperStatus, 0, len(members))
	for _, m := range members {
		st := scraperStatus(m, drains[m.ID])
		if l, ok := loads[m.ID]; ok {
			st.Load = loadStatus(l)
			st.Targets, st.Series = l.Targets, float64(l.Series)
		}
		scrapers = append(scrapers, st)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status.IsLeader {
		return
	}
	r.status.Scrapers = scrapers
	r.status.Draining = sortedKeys(drains)
}

// IsLeader says whether this replica currently leads.
func (r *Rebalancer) IsLeader() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status.IsLeader
}

// Status returns what the cluster page shows; see [Status].
func (r *Rebalancer) Status() Status {
	r.mu.Lock()
	st := r.status
	st.Scrapers = slices.Clone(st.Scrapers)
	st.Draining = slices.Clone(st.Draining)
	r.mu.Unlock()
	st.Moves = r.moves.list()
	return st
}

func (r *Rebalancer) setLeader(leader bool, id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.IsLeader = leader
	if leader {
		r.status.Leader = id
		r.metrics.leader.Set(1)
		return
	}
	r.metrics.leader.Set(0)
	r.metrics.pending.Set(0)
	r.status.Pending, r.status.Queued = 0, 0
	if r.status.Leader == r.cfg.ID {
		r.status.Leader = id
	}
}

func (r *Rebalancer) setLeaderID(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Leader = id
}

// record logs a finished move in Status and the metrics.
func (r *Rebalancer) record(rec MoveRecord) {
	r.moves.add(rec)
	r.metrics.moves.WithLabelValues(rec.Reason, rec.Outcome).Inc()
	if rec.Outcome == OutcomeCompleted {
		r.metrics.moveDuration.Observe(rec.Duration.Seconds())
	}
	r.logger.Debug("move finished", "target", rec.Target, "from", rec.From, "to", rec.To,
		"reason", rec.Reason, "outcome", rec.Outcome, "duration", rec.Duration)
}

func scraperStatus(m leases.Member, draining bool) ScraperStatus {
	return ScraperStatus{ID: m.ID, Addr: m.Addr, Zone: m.Zone, Weight: m.Weight, Draining: draining}
}

func loadStatus(l leases.Load) *LoadStatus {
	return &LoadStatus{
		Targets:                l.Targets,
		Series:                 l.Series,
		SamplesPerSecond:       l.SamplesPerSecond,
		ScrapeSecondsPerSecond: l.ScrapeSecondsPerSecond,
		Updated:                l.Updated,
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
