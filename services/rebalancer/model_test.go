package rebalancer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// modelRun is one seeded random run of the claim/move protocol against a
// real etcd: simulated scrapers claim, release, crash (their lease then
// expires), get partitioned (they keep believing until their local
// deadline), leave, restart, and take over moves after a random
// preparation; a mover (standing in for the rebalancer leader) starts moves
// between random scrapers, aborts them, misses their deadlines, and crashes
// with moves pending. After every step the run checks, from etcd and from
// what each scraper believes it owns:
//
//   - no target is believed owned by two scrapers for longer than one TTL
//     (in etcd a target has one claim key, so two owners can only exist in
//     the scrapers' local views, which lag the watch);
//   - no target is unowned for longer than one TTL plus reclaimGrace while
//     some scraper is live (running, connected, with a live session).
//     Unowned means nobody scrapes it: no claim key, or a claim whose
//     owner is dead, partitioned or on an older session, or which its
//     owner does not believe in. A target whose owner died is unowned from
//     the moment it died, not from when its lease expired and etcd deleted
//     the claim: that TTL is exactly what the bound is about.
type modelRun struct {
	t        *testing.T
	c        *testCluster
	rng      *rand.Rand
	cli      *clientv3.Client
	scrapers []*simScraper
	mover    *leases.Session
	moves    map[string]leases.Move // started by the current mover

	// down: when each scraper session (by lease) stopped serving its
	// claims: crashed, partitioned, left, or found without a live session.
	down map[clientv3.LeaseID]time.Time
	// servedBy: the session that served each target at the last check.
	servedBy map[string]clientv3.LeaseID
	// aliveSince: since when some scraper has been live without a break
	// (wasAlive: at the last check); with none live nobody can claim, so
	// no clock runs.
	aliveSince time.Time
	wasAlive   bool
	seed       uint64

	unowned               map[string]time.Time // target → unowned since, with a live scraper
	believers             map[string]time.Time // target → first seen believed by two
	maxUnowned, maxDouble time.Duration
	worstUnowned          string // the target unowned longest, and why
	ops                   map[string]int
}

// reclaimGrace is how long after a lease could have expired a freed target
// may stay unowned: etcd's lessor looks for expired leases every 500 ms,
// the simulated scrapers claim a freed target when they see its deletion
// or at their next sweep (every 250 ms; they have no claim grace of their
// own), and the rest is scheduling slack on a busy 2-core machine under
// -race.
const reclaimGrace = time.Second

func TestClaimMoveProtocolModel(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("ALLOT_MODEL_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		require.NoError(t, err)
		seed = v
	}
	duration := 6 * time.Second
	if testing.Short() {
		duration = 3 * time.Second
	}
	t.Logf("seed %d (rerun with ALLOT_MODEL_SEED=%d)", seed, seed)
	ctx := context.Background()
	c := newTestCluster(t, 40, seed)
	m := &modelRun{
		t: t, c: c, rng: rand.New(rand.NewPCG(seed, 99)), cli: c.client(),
		moves: map[string]leases.Move{}, unowned: map[string]time.Time{}, believers: map[string]time.Time{},
		down: map[clientv3.LeaseID]time.Time{}, servedBy: map[string]clientv3.LeaseID{},
		ops: map[string]int{}, seed: seed,
	}
	for i := range 4 {
		m.scrapers = append(m.scrapers, c.startScraper(fmt.Sprintf("s%d", i), simConfig{
			Seed: seed + uint64(i), AutoClaim: true, MaxPrepare: 300 * time.Millisecond,
			MaxEventDelay: 20 * time.Millisecond, LoadEvery: time.Hour,
		}))
	}
	m.newMover(ctx)
	defer func() { m.mover.Orphan() }()

	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	end := time.Now().Add(duration)
	steps := 0
	for time.Now().Before(end) {
		<-tick.C
		m.step(ctx)
		m.check(ctx)
		steps++
	}

	// Quiesce: everyone back, no more chaos; the moves left finish or are
	// aborted at their deadline, and the views converge on etcd's.
	for _, sc := range m.scrapers {
		if !sc.alive() {
			sc.crash()
			m.died(sc)
			require.NoError(t, sc.start())
		}
	}
	waitFor(t, 15*time.Second, "converged", func() error {
		m.expireMoves(ctx)
		m.check(ctx)
		resp, err := m.cli.Get(ctx, c.ks.Moves(), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return err
		}
		if resp.Count != 0 {
			return fmt.Errorf("%d moves left", resp.Count)
		}
		return checkConsistent(c.claims(ctx, m.cli), c.targets, m.scrapers...)
	})
	t.Logf("%d steps, ops %v; longest unowned %s (%s), longest doubly believed %s (TTL %s, seed %d)",
		steps, m.ops, m.maxUnowned.Round(time.Millisecond), m.worstUnowned, m.maxDouble.Round(time.Millisecond), testTTL, seed)
}

// died notes that sc's current session stops serving its claims now,
// unless it already had. A crash is noted when sc.crash returns, not
// before: a simulated scraper stops believing at once but renews its lease
// until its goroutines have ended (a takeover may be preparing for a few
// hundred milliseconds), and the lease's TTL runs from its last renewal. A
// partition is noted before it happens: the client is closed at once.
func (m *modelRun) died(sc *simScraper) {
	sc.mu.Lock()
	lease := sc.s.Lease()
	sc.mu.Unlock()
	if _, ok := m.down[lease]; !ok {
		m.down[lease] = time.Now()
	}
}

func (m *modelRun) newMover(ctx context.Context) {
	s, err := leases.NewSession(ctx, m.cli, leases.SessionConfig{TTL: testTTL}, nil, nil)
	require.NoError(m.t, err)
	m.mover = s
	clear(m.moves)
}

func (m *modelRun) randomScraper(pred func(*simScraper) bool) *simScraper {
	var cands []*simScraper
	for _, sc := range m.scrapers {
		if pred(sc) {
			cands = append(cands, sc)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	return cands[m.rng.IntN(len(cands))]
}

// step does one random operation. Failures are rare enough (a scraper
// lives for about a hundred steps) that a scraper which failed to drop a
// belief would keep it for longer than a TTL and fail the check.
func (m *modelRun) step(ctx context.Context) {
	m.expireMoves(ctx)
	alive := func(sc *simScraper) bool { return sc.alive() }
	switch p := m.rng.IntN(1000); {
	case p < 500: // move a random target to a random other live scraper
		claims := m.c.claims(ctx, m.cli)
		target := m.c.targets[m.rng.IntN(len(m.c.targets))]
		cl, ok := claims[target]
		to := m.randomScraper(func(sc *simScraper) bool { return sc.alive() && sc.id != cl.Owner })
		if !ok || to == nil {
			return
		}
		mv := leases.Move{Target: target, From: cl.Owner, To: to.id, Epoch: cl.Epoch,
			Deadline: time.Now().Add(time.Duration(200+m.rng.IntN(800)) * time.Millisecond), Reason: "model"}
		if err := leases.StartMove(ctx, m.mover, m.c.ks, mv); err == nil {
			m.moves[target] = mv
			m.ops["move"]++
		} else {
			m.ops["move-refused"]++
		}
	case p < 580: // abort a random pending move early
		for target := range m.moves {
			require.NoError(m.t, leases.AbortMove(ctx, m.cli, m.c.ks, target))
			delete(m.moves, target)
			m.ops["abort"]++
			break
		}
	case p < 660: // a scraper releases a target
		if sc := m.randomScraper(alive); sc != nil {
			if ts := sc.ownedTargets(); len(ts) > 0 {
				_ = sc.release(ctx, ts[m.rng.IntN(len(ts))])
				m.ops["release"]++
			}
		}
	case p < 675: // crash: the lease expires after the TTL
		if sc := m.randomScraper(alive); sc != nil {
			sc.crash()
			m.died(sc)
			m.ops["crash"]++
		}
	case p < 685: // partition: keeps believing until its local deadline
		if sc := m.randomScraper(alive); sc != nil {
			m.died(sc)
			sc.partition()
			m.ops["partition"]++
		}
	case p < 695: // graceful stop: claims freed at once
		if sc := m.randomScraper(alive); sc != nil {
			sc.leave()
			m.died(sc)
			m.ops["leave"]++
		}
	case p < 760: // restart a stopped or partitioned scraper
		if sc := m.randomScraper(func(sc *simScraper) bool { return !sc.alive() }); sc != nil {
			sc.crash()
			m.died(sc)
			require.NoError(m.t, sc.start())
			m.ops["restart"]++
		}
	case p < 780: // the mover crashes with its moves pending; a new one starts
		m.mover.Orphan()
		m.newMover(ctx)
		m.ops["mover-crash"]++
	}
}

// expireMoves aborts the mover's moves past their deadline, as the
// rebalancer does.
func (m *modelRun) expireMoves(ctx context.Context) {
	now := time.Now()
	for target, mv := range m.moves {
		if now.After(mv.Deadline) {
			require.NoError(m.t, leases.AbortMove(ctx, m.cli, m.c.ks, target))
			delete(m.moves, target)
		}
	}
}

// check asserts the two invariants at this instant.
func (m *modelRun) check(ctx context.Context) {
	t := m.t
	t.Helper()
	claims := m.c.claims(ctx, m.cli)
	now := time.Now()
	anyAlive := false
	beliefs := map[string]int{}
	// serving: for each scraper id, its session's lease and its beliefs,
	// if it is live; a claim is served only by exactly that session.
	type session struct {
		lease   clientv3.LeaseID
		beliefs map[string]leases.Claim
	}
	serving := map[string]session{}
	for _, sc := range m.scrapers {
		b := sc.beliefs()
		for target := range b {
			beliefs[target]++
		}
		if !sc.alive() {
			m.died(sc) // no-op unless it lost its session by itself
			continue
		}
		anyAlive = true
		sc.mu.Lock()
		lease := sc.s.Lease()
		sc.mu.Unlock()
		serving[sc.id] = session{lease: lease, beliefs: b}
	}
	if anyAlive && !m.wasAlive {
		m.aliveSince = now
	}
	m.wasAlive = anyAlive
	for _, target := range m.c.targets {
		cl, claimed := claims[target]
		s, live := serving[cl.Owner]
		b, believed := s.beliefs[target]
		switch {
		case claimed && live && cl.Lease == s.lease && believed && b.Epoch == cl.Epoch:
			delete(m.unowned, target)
			m.servedBy[target] = cl.Lease
		case !anyAlive:
			delete(m.unowned, target)
		default:
			since, ok := m.unowned[target]
			if !ok {
				// Unowned from now, or from when its last server died
				// (but nobody could claim before a scraper was live).
				since = now
				if d, dead := m.down[m.servedBy[target]]; dead && d.Before(since) {
					since = d
				}
				if since.Before(m.aliveSince) {
					since = m.aliveSince
				}
				m.unowned[target] = since
			}
			why := func() string {
				if !claimed {
					return "no claim"
				}
				return fmt.Sprintf("claimed by %s at epoch %d on lease %x; owner live %v on lease %x, believes %v at epoch %d",
					cl.Owner, cl.Epoch, cl.Lease, live, s.lease, believed, b.Epoch)
			}
			if d := now.Sub(since); d > m.maxUnowned {
				m.maxUnowned = d
				m.worstUnowned = fmt.Sprintf("target %s: %s", target, why())
			}
			if now.Sub(since) > testTTL+reclaimGrace {
				t.Fatalf("target %s unowned for %s with a live scraper (bound: TTL %s + %s): %s; rerun with ALLOT_MODEL_SEED=%d",
					target, now.Sub(since), testTTL, reclaimGrace, why(), m.seed)
			}
		}
		if beliefs[target] > 1 {
			since, ok := m.believers[target]
			if !ok {
				m.believers[target] = now
				since = now
			}
			m.maxDouble = max(m.maxDouble, now.Sub(since))
			if now.Sub(since) > testTTL {
				t.Fatalf("target %s believed owned by %d scrapers for %s; rerun with ALLOT_MODEL_SEED=%d", target, beliefs[target], now.Sub(since), m.seed)
			}
		} else {
			delete(m.believers, target)
		}
	}
}
