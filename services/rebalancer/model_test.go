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
//   - no target is unclaimed for longer than one TTL while some scraper is
//     live (running, connected, with a live session).
type modelRun struct {
	t        *testing.T
	c        *testCluster
	rng      *rand.Rand
	cli      *clientv3.Client
	scrapers []*simScraper
	mover    *leases.Session
	moves    map[string]leases.Move // started by the current mover

	unowned               map[string]time.Time // target → first seen unclaimed with a live scraper
	believers             map[string]time.Time // target → first seen believed by two
	maxUnowned, maxDouble time.Duration
	ops                   map[string]int
}

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
		ops: map[string]int{},
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
	t.Logf("%d steps, ops %v; longest unclaimed %s, longest doubly believed %s (TTL %s)",
		steps, m.ops, m.maxUnowned.Round(time.Millisecond), m.maxDouble.Round(time.Millisecond), testTTL)
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
			m.ops["crash"]++
		}
	case p < 685: // partition: keeps believing until its local deadline
		if sc := m.randomScraper(alive); sc != nil {
			sc.partition()
			m.ops["partition"]++
		}
	case p < 695: // graceful stop: claims freed at once
		if sc := m.randomScraper(alive); sc != nil {
			sc.leave()
			m.ops["leave"]++
		}
	case p < 760: // restart a stopped or partitioned scraper
		if sc := m.randomScraper(func(sc *simScraper) bool { return !sc.alive() }); sc != nil {
			sc.crash()
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
	for _, sc := range m.scrapers {
		anyAlive = anyAlive || sc.alive()
		for target := range sc.beliefs() {
			beliefs[target]++
		}
	}
	for _, target := range m.c.targets {
		_, claimed := claims[target]
		if !claimed && anyAlive {
			since, ok := m.unowned[target]
			if !ok {
				m.unowned[target] = now
				since = now
			}
			m.maxUnowned = max(m.maxUnowned, now.Sub(since))
			if now.Sub(since) > testTTL {
				t.Fatalf("target %s unclaimed for %s with a live scraper", target, now.Sub(since))
			}
		} else {
			delete(m.unowned, target)
		}
		if beliefs[target] > 1 {
			since, ok := m.believers[target]
			if !ok {
				m.believers[target] = now
				since = now
			}
			m.maxDouble = max(m.maxDouble, now.Sub(since))
			if now.Sub(since) > testTTL {
				t.Fatalf("target %s believed owned by %d scrapers for %s", target, beliefs[target], now.Sub(since))
			}
		} else {
			delete(m.believers, target)
		}
	}
}
