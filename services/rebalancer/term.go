package rebalancer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/time/rate"

	"github.com/allot-dev/allot/pkg/leases"
)

const (
	// coalesce is how long the leader waits after a member or drain change
	// before evaluating, so that a burst of changes (a rolling restart,
	// many drains) costs one evaluation.
	coalesce = 200 * time.Millisecond
	// maxOps bounds the etcd calls for moves (start, abort, resolve) that
	// run at once. They run outside the loop so that a slow etcd (a
	// loaded disk makes every write an fsync away) delays moves but never
	// the loop's view of the watches.
	maxOps = 16
)

// term is one leadership term. Its state is owned by the run loop's
// goroutine: etcd calls for moves run in helper goroutines that hand their
// results back to the loop as functions to run (results).
type term struct {
	r      *Rebalancer
	cfg    Config
	s      *leases.Session
	cli    *clientv3.Client
	ks     leases.Keyspace
	logger *slog.Logger
	lim    *rate.Limiter
	// electionKey is this leader's key in the election, created at
	// electionRev.
	electionKey string
	electionRev int64

	members     map[string]leases.Member
	haveMembers bool
	drains      map[string]bool
	// claims mirrors claims/ (list, then watch), by target; claimsRev is
	// the revision the watch has delivered up to.
	claims    map[string]leases.Claim
	claimsRev int64
	// ownedCount is the number of claims per owner, kept with claims.
	ownedCount map[string]int

	pending map[string]*pendingMove // started or starting, not yet finished; by target
	queue   []queuedMove            // planned, not yet started
	evalAt  time.Time               // zero: no evaluation scheduled
	// evaluating: the load reports are being read for an evaluation.
	evaluating bool
	loads      map[string]leases.Load // as last read
	// loadWatch follows load/ for the term, so that an evaluation reads
	// only the chunks that changed since the last one, not every chunk.
	loadWatch *leases.LoadWatch

	ops     sync.WaitGroup
	sem     chan struct{}
	results chan func()
}

func newTerm(r *Rebalancer, s *leases.Session, electionKey string, electionRev int64) *term {
	burst := max(1, int(math.Ceil(r.cfg.MovesPerSecond)))
	return &term{
		r:      r,
		cfg:    r.cfg,
		s:      s,
		cli:    r.etcd,
		ks:     r.cfg.Keyspace,
		logger: r.logger.With("lease", fmt.Sprintf("%x", int64(s.Lease()))),
		lim:    rate.NewLimiter(rate.Limit(r.cfg.MovesPerSecond), burst),

		electionKey: electionKey,
		electionRev: electionRev,
		drains:      map[string]bool{},
		claims:      map[string]leases.Claim{},
		ownedCount:  map[string]int{},
		pending:     map[string]*pendingMove{},
		sem:         make(chan struct{}, maxOps),
		results:     make(chan func()),
	}
}

// run leads until ctx ends (nil) or a watch cannot be restarted (error).
func (t *term) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer t.abandon()
	defer t.ops.Wait()
	defer cancel()

	// The load watch lives as long as the term; it is started first so
	// that its listing runs while the term lists the rest.
	t.loadWatch = leases.WatchLoads(ctx, t.cli, t.ks, t.logger, t.r.reg)
	defer func() {
		cancel()
		<-t.loadWatch.Done()
	}()

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
	// Leadership ends with the election key. It is on our lease, so it
	// normally goes with the session; deleted by hand, it would leave two
	// leaders. From the key's creation on, so no deletion is missed.
	elected := t.cli.Watch(clientv3.WithRequireLeader(ctx), t.electionKey,
		clientv3.WithRev(t.electionRev+1), clientv3.WithFilterPut())

	tick := time.NewTicker(t.cfg.Interval)
	defer tick.Stop()
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()

	for {
		wake.Reset(t.step(ctx))
		select {
		case <-ctx.Done():
			return nil
		case f := <-t.results:
			f()
		case resp, ok := <-elected:
			if err := watchErr(resp, ok); err != nil {
				t.logger.Warn("election key watch failed; restarting", "err", err)
				gone, rev, err := t.electionKeyGone(ctx)
				if err != nil || gone {
					return errors.Join(errDeposed, err)
				}
				elected = t.cli.Watch(clientv3.WithRequireLeader(ctx), t.electionKey,
					clientv3.WithRev(rev+1), clientv3.WithFilterPut())
				continue
			}
			if len(resp.Events) > 0 {
				return errDeposed
			}
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
				if ev.Type == clientv3.EventTypePut {
					t.drains[id] = true
				} else {
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

// errDeposed ends a term whose election key was deleted.
var errDeposed = errors.New("rebalancer: election key deleted; stepping down")

// electionKeyGone reads whether the election key is still this term's, and
// the revision read at.
func (t *term) electionKeyGone(ctx context.Context) (bool, int64, error) {
	resp, err := t.cli.Get(ctx, t.electionKey, clientv3.WithKeysOnly())
	if err != nil {
		return false, 0, fmt.Errorf("read election key: %w", err)
	}
	gone := len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != t.electionRev
	return gone, resp.Header.Revision, nil
}

// step does whatever is due (an evaluation, aborting expired moves,
// starting queued moves) and says how long to sleep at most.
func (t *term) step(ctx context.Context) time.Duration {
	now := time.Now()
	next := t.cfg.Interval
	if !t.evalAt.IsZero() && t.haveMembers && !t.evaluating {
		if d := t.evalAt.Sub(now); d > 0 {
			next = min(next, d)
		} else {
			t.evalAt = time.Time{}
			t.startEvaluation(ctx)
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

// do runs an etcd call outside the loop, at most maxOps at once; the
// function it returns is then run by the loop. Nothing is run if the term
// ends first.
func (t *term) do(ctx context.Context, call func() func()) {
	t.ops.Go(func() {
		select {
		case t.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		f := call()
		<-t.sem
		select {
		case t.results <- f:
		case <-ctx.Done():
		}
	})
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

func (t *term) publishCounts() {
	t.r.metrics.pending.Set(float64(len(t.pending)))
	t.r.mu.Lock()
	t.r.status.Pending, t.r.status.Queued = len(t.pending), len(t.queue)
	t.r.mu.Unlock()
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
	clear(t.ownedCount)
	for _, cl := range claims {
		t.ownedCount[cl.Owner]++
	}
	return t.cli.Watch(clientv3.WithRequireLeader(ctx), t.ks.Claims(), clientv3.WithPrefix(),
		clientv3.WithRev(rev+1)), nil
}

func (t *term) applyClaims(evs []*clientv3.Event) {
	for _, ev := range evs {
		t.claimsRev = max(t.claimsRev, ev.Kv.ModRevision)
		target := strings.TrimPrefix(string(ev.Kv.Key), t.ks.Claims())
		if cur, ok := t.claims[target]; ok && cur.Epoch > ev.Kv.ModRevision {
			continue // finish already applied a newer state
		}
		if ev.Type == clientv3.EventTypeDelete {
			t.removeClaim(target)
			continue
		}
		t.putClaim(target, ev.Kv)
	}
}

func (t *term) putClaim(target string, kv *mvccpb.KeyValue) {
	var v leases.ClaimValue
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		t.logger.Warn("skipping undecodable claim", "target", target, "err", err)
		t.removeClaim(target)
		return
	}
	t.removeClaim(target)
	t.claims[target] = leases.Claim{Target: target, Owner: v.Owner, Epoch: kv.ModRevision, Lease: clientv3.LeaseID(kv.Lease)}
	t.ownedCount[v.Owner]++
}

func (t *term) removeClaim(target string) {
	cl, ok := t.claims[target]
	if !ok {
		return
	}
	delete(t.claims, target)
	if t.ownedCount[cl.Owner]--; t.ownedCount[cl.Owner] <= 0 {
		delete(t.ownedCount, cl.Owner)
	}
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
