package rebalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// coalesce is how long the leader waits after a member or drain change
// before evaluating, so that a burst of changes (a rolling restart, many
// drains) costs one evaluation.
const coalesce = 200 * time.Millisecond

// term is one leadership term. Its state is owned by the run loop's
// goroutine; nothing else touches it.
type term struct {
	r      *Rebalancer
	cfg    Config
	s      *leases.Session
	cli    *clientv3.Client
	ks     leases.Keyspace
	logger *slog.Logger
	lim    *rate.Limiter

	members     map[string]leases.Member
	haveMembers bool
	drains      map[string]bool
	// claims mirrors claims/ (list, then watch), by target; claimsRev is
	// the revision the watch has delivered up to.
	claims    map[string]leases.Claim
	claimsRev int64

	pending map[string]*pendingMove // started, not yet seen to end; by target
	queue   []queuedMove            // planned, not yet started
	evalAt  time.Time               // zero: no evaluation scheduled
}

// pendingMove is a move this term started or adopted.
type pendingMove struct {
	m       leases.Move
	started time.Time
	// abortedAs is the outcome to record if the move ends without a
	// takeover: set when this term aborts it.
	abortedAs string
	// retryAbort is set when aborting failed and must be tried again.
	retryAbort bool
}

type queuedMove struct {
	placement.Move
	epoch int64
}

func newTerm(r *Rebalancer, s *leases.Session) *term {
	burst := max(1, int(math.Ceil(r.cfg.MovesPerSecond)))
	return &term{
		r:       r,
		cfg:     r.cfg,
		s:       s,
		cli:     r.etcd,
		ks:      r.cfg.Keyspace,
		logger:  r.logger.With("lease", fmt.Sprintf("%x", int64(s.Lease()))),
		lim:     rate.NewLimiter(rate.Limit(r.cfg.MovesPerSecond), burst),
		drains:  map[string]bool{},
		claims:  map[string]leases.Claim{},
		pending: map[string]*pendingMove{},
	}
}

// run leads until ctx ends (nil) or a watch cannot be restarted (error).
func (t *term) run(ctx context.Context) error {
	defer t.abandon()
	// Follow moves/ first, so no end of an adopted move falls between the
	// listing and the watch.
	moves, err := t.watchMoves(ctx)
	if err != nil {
		return err
	}
	claims, err := t.listClaims(ctx)
	if err != nil {
		return err
	}
	drains, err := t.watchDrains(ctx)
	if err != nil {
		return err
	}
	if err := t.reconcileMoves(ctx); err != nil {
		return err
	}
	membersCh := leases.WatchMembers(ctx, t.cli, t.ks, t.logger)

	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()

	for {
		next := t.step(ctx)
		wake.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case ms, ok := <-membersCh:
			if !ok {
				return nil // ctx ended
			}
			t.setMembers(ms)
		case resp, ok := <-moves:
			if err := watchErr(resp, ok); err != nil {
				t.logger.Warn("move watch failed; restarting", "err", err)
				if moves, err = t.watchMoves(ctx); err != nil {
					return err
				}
				if err := t.reconcileMoves(ctx); err != nil {
					return err
				}
				continue
			}
			for _, ev := range resp.Events {
				if ev.Type == clientv3.EventTypeDelete {
					t.moveEnded(ctx, strings.TrimPrefix(string(ev.Kv.Key), t.ks.Moves()), ev.Kv.ModRevision)
				}
			}
		case resp, ok := <-claims:
			if err := watchErr(resp, ok); err != nil {
				t.logger.Warn("claim watch failed; listing again", "err", err)
				if claims, err = t.listClaims(ctx); err != nil {
					return err
				}
				continue
			}
			t.applyClaims(resp.Events)
		case resp, ok := <-drains:
			if err := watchErr(resp, ok); err != nil {
				t.logger.Warn("drain watch failed; restarting", "err", err)
				if drains, err = t.watchDrains(ctx); err != nil {
					return err
				}
				continue
			}
			for _, ev := range resp.Events {
				id := strings.TrimPrefix(string(ev.Kv.Key), DrainPrefix(t.ks))
				t.drains[id] = ev.Type == clientv3.EventTypePut
				if !t.drains[id] {
					delete(t.drains, id)
				}
			}
			t.dropQueue("drains changed")
			t.schedule(coalesce)
		case <-tick.C:
			t.schedule(0)
		case <-wake.C:
		}
	}
}

// step does whatever is due (an evaluation, aborting expired moves,
// starting queued moves) and says how long to sleep at most.
func (t *term) step(ctx context.Context) time.Duration {
	now := time.Now()
	next := t.cfg.Interval
	if !t.evalAt.IsZero() {
		if !now.Before(t.evalAt) && t.haveMembers {
			t.evalAt = time.Time{}
			t.evaluate(ctx)
		} else if t.haveMembers {
			next = min(next, t.evalAt.Sub(now))
		}
	}
	if d := t.abortExpired(ctx); d > 0 {
		next = min(next, d)
	}
	if d := t.startQueued(ctx); d > 0 {
		next = min(next, d)
	}
	t.publishCounts()
	return max(next, time.Millisecond)
}

// schedule asks for an evaluation after d, unless one is due sooner.
func (t *term) schedule(d time.Duration) {
	at := time.Now().Add(d)
	if t.evalAt.IsZero() || at.Before(t.evalAt) {
		t.evalAt = at
	}
}

func (t *term) setMembers(ms []leases.Member) {
	t.members = make(map[string]leases.Member, len(ms))
	for _, m := range ms {
		t.members[m.ID] = m
	}
	t.haveMembers = true
	// A plan made for another member set would move targets to scrapers
	// that left or past ones that joined; make a fresh one.
	t.dropQueue("members changed")
	t.schedule(coalesce)
}

func (t *term) dropQueue(why string) {
	if len(t.queue) > 0 {
		t.logger.Debug("dropping queued moves", "moves", len(t.queue), "why", why)
		t.queue = nil
	}
}

// ---- watches -------------------------------------------------------------

func watchErr(resp clientv3.WatchResponse, ok bool) error {
	if !ok {
		return errors.New("watch channel closed")
	}
	if resp.CompactRevision != 0 {
		return fmt.Errorf("watch compacted at revision %d", resp.CompactRevision)
	}
	return resp.Err()
}

// watchMoves watches move deletions from the current revision on.
func (t *term) watchMoves(ctx context.Context) (clientv3.WatchChan, error) {
	resp, err := t.cli.Get(ctx, t.ks.Moves(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, fmt.Errorf("read revision: %w", err)
	}
	return t.cli.Watch(clientv3.WithRequireLeader(ctx), t.ks.Moves(), clientv3.WithPrefix(),
		clientv3.WithFilterPut(), clientv3.WithRev(resp.Header.Revision+1)), nil
}

// listClaims (re)reads every claim and watches claims/ from there.
func (t *term) listClaims(ctx context.Context) (clientv3.WatchChan, error) {
	claims, rev, err := leases.ListClaims(ctx, t.cli, t.ks)
	if err != nil {
		return nil, err
	}
	t.claims, t.claimsRev = claims, rev
	return t.cli.Watch(clientv3.WithRequireLeader(ctx), t.ks.Claims(), clientv3.WithPrefix(),
		clientv3.WithRev(rev+1)), nil
}

func (t *term) applyClaims(evs []*clientv3.Event) {
	for _, ev := range evs {
		t.claimsRev = max(t.claimsRev, ev.Kv.ModRevision)
		target := strings.TrimPrefix(string(ev.Kv.Key), t.ks.Claims())
		if cur, ok := t.claims[target]; ok && cur.Epoch > ev.Kv.ModRevision {
			continue // moveEnded already applied a newer state
		}
		if ev.Type == clientv3.EventTypeDelete {
			delete(t.claims, target)
			continue
		}
		t.putClaim(target, ev.Kv)
	}
}

func (t *term) putClaim(target string, kv *mvccpb.KeyValue) {
	var v leases.ClaimValue
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		t.logger.Warn("skipping undecodable claim", "target", target, "err", err)
		delete(t.claims, target)
		return
	}
	t.claims[target] = leases.Claim{Target: target, Owner: v.Owner, Epoch: kv.ModRevision, Lease: clientv3.LeaseID(kv.Lease)}
}

// watchDrains reads the drain marks and watches them from there.
func (t *term) watchDrains(ctx context.Context) (clientv3.WatchChan, error) {
	prefix := DrainPrefix(t.ks)
	resp, err := t.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list drains: %w", err)
	}
	clear(t.drains)
	for _, kv := range resp.Kvs {
		t.drains[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	t.schedule(0)
	return t.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(),
		clientv3.WithRev(resp.Header.Revision+1)), nil
}

// ---- moves ---------------------------------------------------------------

// reconcileMoves lists moves/: pending moves no longer there have ended
// (while no watch saw it), and moves there that this term did not start are
// adopted: tracked to their end and aborted at their deadline.
func (t *term) reconcileMoves(ctx context.Context) error {
	list, err := leases.ListMoves(ctx, t.cli, t.ks)
	if err != nil {
		return err
	}
	present := make(map[string]bool, len(list))
	for _, m := range list {
		present[m.Target] = true
		if _, ok := t.pending[m.Target]; ok {
			continue
		}
		t.logger.Info("adopting move left by a previous leader", "target", m.Target, "from", m.From, "to", m.To, "deadline", m.Deadline)
		t.pending[m.Target] = &pendingMove{m: m, started: time.Now()}
	}
	for target := range t.pending {
		if !present[target] {
			t.moveEnded(ctx, target, 0)
		}
	}
	return nil
}

// moveEnded resolves a pending move whose key was deleted at revision rev
// (0: unknown). It was completed if and only if the claim was rewritten in
// the same revision: only the destination's takeover transaction writes the
// claim and deletes the move together.
func (t *term) moveEnded(ctx context.Context, target string, rev int64) {
	p, ok := t.pending[target]
	if !ok {
		return
	}
	delete(t.pending, target)
	outcome := p.abortedAs
	if outcome == "" {
		outcome = OutcomeVanished
	}
	if done, kv := t.tookOver(ctx, p.m, rev); done {
		outcome = OutcomeCompleted
		// The claim watch is a separate stream and may not have delivered
		// the takeover yet; a plan made now must not see the old owner.
		if kv != nil && kv.ModRevision > t.claimsRev {
			t.putClaim(target, kv)
		}
	}
	t.r.record(MoveRecord{
		Time: p.started, Target: target, From: p.m.From, To: p.m.To, Reason: p.m.Reason,
		Duration: time.Since(p.started), Outcome: outcome,
	})
	if len(t.pending) == 0 && len(t.queue) == 0 {
		// The plan is done: look again at once rather than at the next tick.
		t.schedule(0)
	}
}

// tookOver says whether move m, whose key was deleted at rev (0: unknown),
// was completed, and returns the claim as the takeover wrote it.
func (t *term) tookOver(ctx context.Context, m leases.Move, rev int64) (bool, *mvccpb.KeyValue) {
	key := t.ks.Claim(m.Target)
	if rev > 0 {
		resp, err := t.cli.Get(ctx, key, clientv3.WithRev(rev))
		if err == nil {
			if len(resp.Kvs) == 1 && resp.Kvs[0].ModRevision == rev {
				return true, resp.Kvs[0]
			}
			return false, nil
		}
	}
	// Revision unknown or compacted: judge by the current claim.
	resp, err := t.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 {
		return false, nil
	}
	var v leases.ClaimValue
	if json.Unmarshal(resp.Kvs[0].Value, &v) != nil {
		return false, nil
	}
	return v.Owner == m.To && resp.Kvs[0].ModRevision > m.Epoch, nil
}

// abort deletes a pending move's key; the move's end is then seen on the
// watch. A takeover that wins the race is still recorded as completed.
func (t *term) abort(ctx context.Context, p *pendingMove, outcome string) {
	if p.abortedAs == "" {
		p.abortedAs = outcome
	}
	if err := leases.AbortMove(ctx, t.cli, t.ks, p.m.Target); err != nil {
		t.logger.Warn("abort move", "target", p.m.Target, "err", err)
		p.retryAbort = true
		return
	}
	p.retryAbort = false
	t.logger.Info("move aborted", "target", p.m.Target, "from", p.m.From, "to", p.m.To, "why", outcome)
}

// abortExpired aborts pending moves past their deadline (and retries failed
// aborts) and returns the time until the next deadline (0: none).
func (t *term) abortExpired(ctx context.Context) time.Duration {
	now := time.Now()
	var next time.Duration
	for _, p := range t.pending {
		switch {
		case p.retryAbort:
			t.abort(ctx, p, p.abortedAs)
		case p.abortedAs != "":
		case !now.Before(p.m.Deadline):
			t.abort(ctx, p, OutcomeTimeout)
		default:
			if d := p.m.Deadline.Sub(now); next == 0 || d < next {
				next = d
			}
		}
	}
	if next == 0 && len(t.pending) > 0 {
		next = time.Second // failed aborts
	}
	return next
}

// abortStale aborts pending moves that can no longer complete: the claim
// changed hands or vanished, or the destination left or is draining.
// Waiting for their deadline would only hold the plan up.
func (t *term) abortStale(ctx context.Context) {
	for target, p := range t.pending {
		if p.abortedAs != "" {
			continue
		}
		c, ok := t.claims[target]
		_, destLive := t.members[p.m.To]
		if !ok || c.Epoch != p.m.Epoch || !destLive || t.drains[p.m.To] {
			// If the claim changed because the takeover just happened, the
			// watch on moves/ has not told us yet; aborting is then a no-op
			// and the move is still recorded as completed.
			t.abort(ctx, p, OutcomeStale)
		}
	}
}

// startQueued starts queued moves within the rate and concurrency limits
// and returns how long until the rate limit allows the next (0: nothing
// waits on the rate).
func (t *term) startQueued(ctx context.Context) time.Duration {
	for len(t.queue) > 0 && len(t.pending) < t.cfg.MaxConcurrentMoves {
		q := t.queue[0]
		if !t.startable(q) {
			t.queue = t.queue[1:]
			continue
		}
		res := t.lim.Reserve()
		if d := res.Delay(); d > 0 {
			res.Cancel()
			return d
		}
		t.queue = t.queue[1:]
		now := time.Now()
		m := leases.Move{
			Target: q.Target, From: q.From, To: q.To, Epoch: q.epoch,
			Deadline: now.Add(t.cfg.MoveTimeout), Reason: fmt.Sprint(q.Reason),
		}
		err := leases.StartMove(ctx, t.s, t.ks, m)
		switch {
		case err == nil:
			t.pending[m.Target] = &pendingMove{m: m, started: now}
		case errors.Is(err, leases.ErrNotOwner), errors.Is(err, leases.ErrMoveInProgress):
			t.logger.Debug("move refused", "target", m.Target, "err", err)
			t.r.record(MoveRecord{Time: now, Target: m.Target, From: m.From, To: m.To, Reason: m.Reason, Outcome: OutcomeRejected})
		default:
			t.r.record(MoveRecord{Time: now, Target: m.Target, From: m.From, To: m.To, Reason: m.Reason, Outcome: OutcomeFailed})
			t.logger.Warn("start move", "target", m.Target, "err", err)
			if t.s.Err() != nil || ctx.Err() != nil {
				t.queue = nil
				return 0
			}
		}
	}
	return 0
}

// startable re-checks a queued move against the current view: the planned
// epoch still holds and both ends are live, non-draining (for the
// destination) members.
func (t *term) startable(q queuedMove) bool {
	c, ok := t.claims[q.Target]
	if !ok || c.Epoch != q.epoch || c.Owner != q.From {
		return false
	}
	if _, ok := t.pending[q.Target]; ok {
		return false
	}
	_, src := t.members[q.From]
	_, dst := t.members[q.To]
	return src && dst && !t.drains[q.To]
}

// abandon ends the term: pending moves die with the lease (Run revokes it),
// so they are recorded as abandoned.
func (t *term) abandon() {
	for target, p := range t.pending {
		t.r.record(MoveRecord{
			Time: p.started, Target: target, From: p.m.From, To: p.m.To, Reason: p.m.Reason,
			Duration: time.Since(p.started), Outcome: OutcomeAbandoned,
		})
	}
	clear(t.pending)
	t.queue = nil
}

func (t *term) publishCounts() {
	t.r.metrics.pending.Set(float64(len(t.pending)))
	t.r.mu.Lock()
	t.r.status.Pending, t.r.status.Queued = len(t.pending), len(t.queue)
	t.r.mu.Unlock()
}

// ---- evaluation ----------------------------------------------------------

// evaluate measures the cluster, publishes the measurement and, if the last
// plan is finished and the cluster is out of balance or a scraper drains,
// plans the next moves.
func (t *term) evaluate(ctx context.Context) {
	t.r.metrics.evaluations.Inc()
	t.forgetDrains(ctx)
	t.abortStale(ctx)

	loads, err := leases.ListLoads(ctx, t.cli, t.ks)
	if err != nil {
		t.logger.Warn("list loads", "err", err)
		loads = nil // balance by what is known: counts
	}
	c, owned := t.cluster(loads)
	stats := placement.Measure(c)
	recommended := placement.Recommend(c, t.cfg.SeriesPerScraper)
	t.r.metrics.balanceRatio.Set(stats.Ratio)
	t.r.metrics.balanceRatioByCount.Set(stats.ByCountRatio)
	t.r.metrics.recommended.Set(float64(recommended))
	t.publishStatus(c, loads, stats, recommended)

	if len(t.pending) > 0 || len(t.queue) > 0 {
		return // hysteresis: never plan over an unfinished plan
	}
	draining := false
	for id := range t.drains {
		if owned[id] > 0 {
			draining = true
		}
	}
	if !draining && !t.outOfBalance(c) {
		return
	}
	start := time.Now()
	moves := placement.Plan(c, t.memberDrains(), placement.PlanConfig{
		Tolerance:  t.cfg.Tolerance,
		Hysteresis: t.cfg.Hysteresis,
		MaxMoves:   t.planSize(),
	})
	t.r.metrics.plans.Inc()
	t.logger.Info("planned moves", "moves", len(moves), "balance_ratio", stats.Ratio,
		"draining", draining, "plan_time", time.Since(start))
	for _, m := range moves {
		if m.From == "" {
			continue // an orphan: the scrapers claim those themselves
		}
		t.queue = append(t.queue, queuedMove{Move: m, epoch: t.claims[m.Target].Epoch})
	}
}

// outOfBalance says whether the busiest member is above mean×(1+Tolerance)
// or the least busy below mean×(1−Tolerance), per unit of weight, among
// the members not draining. The lower bound is what gives a new scraper
// load when the cluster is large: with 100 equal scrapers one more makes
// the busiest only 1% above the new mean, but the new one is 100% below.
func (t *term) outOfBalance(c placement.Cluster) bool {
	load := make(map[string]float64, len(c.Members))
	for _, tg := range c.Targets {
		load[tg.Owner] += tg.Series
	}
	var total, wsum float64
	hi, lo := math.Inf(-1), math.Inf(1)
	for _, m := range c.Members {
		if t.drains[m.ID] {
			continue
		}
		w := m.Weight
		if w <= 0 {
			w = 1
		}
		wsum += w
		total += load[m.ID]
		hi, lo = max(hi, load[m.ID]/w), min(lo, load[m.ID]/w)
	}
	if wsum == 0 || total == 0 {
		return false
	}
	mean := total / wsum
	return hi > mean*(1+t.cfg.Tolerance) || lo < mean*(1-t.cfg.Tolerance)
}

// planSize bounds one plan: enough to keep the rate limit busy for one
// interval, and at least one full set of concurrent moves. The next plan
// comes once it has finished, from a fresh view.
func (t *term) planSize() int {
	return max(t.cfg.MaxConcurrentMoves, int(math.Ceil(t.cfg.MovesPerSecond*t.cfg.Interval.Seconds())))
}

func (t *term) memberDrains() map[string]bool {
	out := make(map[string]bool, len(t.drains))
	for id := range t.drains {
		if _, ok := t.members[id]; ok {
			out[id] = true
		}
	}
	return out
}

// forgetDrains deletes the marks of drained scrapers that left.
func (t *term) forgetDrains(ctx context.Context) {
	for id := range t.drains {
		if _, ok := t.members[id]; ok {
			continue
		}
		gone, err := forgetDrain(ctx, t.cli, t.ks, id)
		if err != nil {
			t.logger.Warn("forget drain", "scraper", id, "err", err)
			continue
		}
		if gone {
			t.logger.Info("drained scraper left; drain mark removed", "scraper", id)
			delete(t.drains, id)
		}
	}
}

// cluster builds placement's view: live members, the targets they own by
// claim with their series, and the targets in motion. Targets whose owner
// is not a live member are left out: their lease is about to expire and the
// scrapers will claim them again. It also returns targets owned per member.
func (t *term) cluster(loads map[string]leases.Load) (placement.Cluster, map[string]int) {
	ids := sortedKeys(t.members)
	c := placement.Cluster{
		Members: make([]placement.Member, 0, len(ids)),
		Targets: make([]placement.Target, 0, len(t.claims)),
		Moving:  make(map[string]bool, len(t.pending)+len(t.queue)),
	}
	for _, id := range ids {
		m := t.members[id]
		c.Members = append(c.Members, placement.Member{ID: m.ID, Weight: m.Weight, Zone: m.Zone})
	}
	series := newSeriesLookup(loads)
	owned := make(map[string]int, len(ids))
	for _, target := range sortedKeys(t.claims) {
		cl := t.claims[target]
		if _, ok := t.members[cl.Owner]; !ok {
			continue
		}
		owned[cl.Owner]++
		c.Targets = append(c.Targets, placement.Target{
			ID: target, Key: placement.HashString(target), Series: series.of(target, cl.Owner), Owner: cl.Owner,
		})
	}
	for target := range t.pending {
		c.Moving[target] = true
	}
	for _, q := range t.queue {
		c.Moving[q.Target] = true
	}
	return c, owned
}

func (t *term) publishStatus(c placement.Cluster, loads map[string]leases.Load, stats placement.Stats, recommended int) {
	per := make(map[string]*ScraperStatus, len(c.Members))
	scrapers := make([]ScraperStatus, 0, len(c.Members))
	for _, id := range sortedKeys(t.members) {
		st := scraperStatus(t.members[id], t.drains[id])
		if l, ok := loads[id]; ok {
			st.Load = loadStatus(l)
		}
		scrapers = append(scrapers, st)
	}
	for i := range scrapers {
		per[scrapers[i].ID] = &scrapers[i]
	}
	for _, tg := range c.Targets {
		if st := per[tg.Owner]; st != nil {
			st.Targets++
			st.Series += tg.Series
		}
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Updated = time.Now()
	r.status.Scrapers = scrapers
	r.status.Targets = len(c.Targets)
	r.status.BalanceRatio = stats.Ratio
	r.status.ByCountRatio = stats.ByCountRatio
	r.status.Recommended = recommended
	r.status.Draining = sortedKeys(t.drains)
}

// seriesLookup finds a target's series in the load reports: the owner's
// report first, then any other (a target that just moved is still in its
// old owner's last report). A target in no report counts as the mean of
// those known, or 1 when none is known, so that the cluster is balanced by
// target count until reports arrive, and a target not yet reported by its
// new owner does not look lighter than it is.
type seriesLookup struct {
	loads    map[string]leases.Load
	any      map[string]float64
	fallback float64
}

func newSeriesLookup(loads map[string]leases.Load) seriesLookup {
	s := seriesLookup{loads: loads, any: map[string]float64{}, fallback: 1}
	var sum float64
	for _, id := range sortedKeys(loads) {
		for target, tl := range loads[id].PerTarget {
			if _, seen := s.any[target]; tl.Series > 0 && !seen {
				s.any[target] = float64(tl.Series)
				sum += float64(tl.Series)
			}
		}
	}
	if len(s.any) > 0 {
		s.fallback = sum / float64(len(s.any))
	}
	return s
}

func (s seriesLookup) of(target, owner string) float64 {
	if tl, ok := s.loads[owner].PerTarget[target]; ok && tl.Series > 0 {
		return float64(tl.Series)
	}
	if v, ok := s.any[target]; ok {
		return v
	}
	return s.fallback
}
