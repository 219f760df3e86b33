package rebalancer

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/allot-dev/allot/pkg/leases"
)

// testTTL is the lease TTL of every session in these tests: short, but
// long enough that a -race run on a busy machine keeps its leases.
const testTTL = 3 * time.Second

// testCluster is an embedded etcd and the target catalog the simulated
// scrapers share.
type testCluster struct {
	t       *testing.T
	etcd    *embedded.Etcd
	ks      leases.Keyspace
	targets []string
	series  map[string]int64
}

func newTestCluster(t *testing.T, targets int, seed uint64) *testCluster {
	t.Helper()
	e, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: t.TempDir()}, nil)
	require.NoError(t, err)
	t.Cleanup(e.Close)
	c := &testCluster{t: t, etcd: e, ks: leases.NewKeyspace("/test/"), series: map[string]int64{}}
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := range targets {
		id := fmt.Sprintf("%016x", rng.Uint64())
		_ = i
		c.targets = append(c.targets, id)
		// Skewed but not so much that one target alone breaks the balance.
		c.series[id] = 50 + int64(rng.ExpFloat64()*50)
	}
	return c
}

func (c *testCluster) client() *clientv3.Client {
	c.t.Helper()
	cli, err := c.etcd.Client()
	require.NoError(c.t, err)
	c.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// claims reads every claim from etcd.
func (c *testCluster) claims(ctx context.Context, cli *clientv3.Client) map[string]leases.Claim {
	c.t.Helper()
	cl, _, err := leases.ListClaims(ctx, cli, c.ks)
	require.NoError(c.t, err)
	return cl
}

// simConfig says how a simulated scraper behaves.
type simConfig struct {
	// AutoClaim: claim any unowned catalog target (on deletion events and
	// in a periodic sweep), as a real scraper does for failover.
	AutoClaim bool
	// NeverTakeOver: ignore moves to this scraper.
	NeverTakeOver bool
	// MaxPrepare: take over after a random delay up to this long (the
	// destination's preparation).
	MaxPrepare time.Duration
	// MaxEventDelay delays the handling of each watch event by a random
	// time up to this long (a slow scraper).
	MaxEventDelay time.Duration
	// LoadEvery is how often the load report is put; zero means 500ms.
	LoadEvery time.Duration
	Seed      uint64
}

// simScraper is the scraper's side of the claim protocol without scraping:
// a session, a member entry, claims, load reports, and the destination's
// and source's reactions to moves. owned is what it believes it owns,
// updated from its own writes and from the watch, and cleared when the
// session ends (where a real scraper stops every scrape loop).
type simScraper struct {
	c   *testCluster
	id  string
	cfg simConfig
	cli *clientv3.Client

	s      *leases.Session
	claims *leases.Claims
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	owned map[string]leases.Claim
	rng   *rand.Rand
	dead  bool // stopped
	cut   bool // partitioned from etcd
}

// startScraper starts a simulated scraper on its own etcd client.
func (c *testCluster) startScraper(id string, cfg simConfig) *simScraper {
	c.t.Helper()
	sc := &simScraper{c: c, id: id, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 7))}
	require.NoError(c.t, sc.start())
	c.t.Cleanup(sc.crash)
	return sc
}

func (sc *simScraper) start() error {
	cli, err := sc.c.etcd.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := leases.NewSession(ctx, cli, leases.SessionConfig{TTL: testTTL}, nil, nil)
	if err != nil {
		cancel()
		_ = cli.Close()
		return err
	}
	if err := leases.Register(ctx, s, sc.c.ks, leases.Member{ID: sc.id, Addr: sc.id + ":9000", Weight: 1, Started: time.Now()}); err != nil {
		cancel()
		s.Orphan()
		_ = cli.Close()
		return err
	}
	sc.mu.Lock()
	sc.cli, sc.s, sc.cancel, sc.dead, sc.cut = cli, s, cancel, false, false
	sc.claims = leases.NewClaims(s, sc.c.ks, sc.id, 0, nil)
	sc.owned = map[string]leases.Claim{}
	sc.mu.Unlock()

	events := sc.claims.Watch(ctx)
	sc.wg.Add(3)
	go func() { defer sc.wg.Done(); sc.follow(ctx, events) }()
	go func() { defer sc.wg.Done(); sc.report(ctx) }()
	go func() {
		defer sc.wg.Done()
		// The local deadline: a real scraper stops everything here.
		select {
		case <-s.Done():
			sc.mu.Lock()
			clear(sc.owned)
			cut := sc.cut
			sc.mu.Unlock()
			if !cut && ctx.Err() == nil {
				sc.c.t.Logf("scraper %s lost its session: %v", sc.id, s.Err())
			}
		case <-ctx.Done():
		}
	}()
	if sc.cfg.AutoClaim {
		sc.wg.Add(1)
		go func() { defer sc.wg.Done(); sc.sweep(ctx) }()
	}
	return nil
}

// claim claims targets and records those won.
func (sc *simScraper) claim(ctx context.Context, targets []string) error {
	won, err := sc.claims.Claim(ctx, targets)
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.s.Err() == nil {
		for _, cl := range won {
			sc.owned[cl.Target] = cl
		}
	}
	return err
}

// release gives up target (it stops believing first, as a real scraper
// stops the scrape loop before releasing).
func (sc *simScraper) release(ctx context.Context, target string) error {
	sc.mu.Lock()
	cl, ok := sc.owned[target]
	delete(sc.owned, target)
	sc.mu.Unlock()
	if !ok {
		return nil
	}
	_, err := sc.claims.Release(ctx, []leases.Claim{cl})
	return err
}

func (sc *simScraper) follow(ctx context.Context, events <-chan leases.Event) {
	for ev := range events {
		if sc.cfg.MaxEventDelay > 0 && sc.concerns(ev) {
			sc.mu.Lock()
			d := time.Duration(sc.rng.Int64N(int64(sc.cfg.MaxEventDelay)))
			sc.mu.Unlock()
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				continue
			case <-t.C:
			}
		}
		switch ev.Type {
		case leases.MoveStarted:
			if ev.Move.To == sc.id && !sc.cfg.NeverTakeOver {
				sc.wg.Add(1)
				go func() { defer sc.wg.Done(); sc.takeOver(ctx, ev.Move) }()
			}
		case leases.MoveEnded:
			sc.recheck(ctx, ev.Target)
		case leases.ClaimDeleted:
			sc.mu.Lock()
			if cl, ok := sc.owned[ev.Target]; ok && cl.Epoch < ev.Revision {
				delete(sc.owned, ev.Target)
			}
			sc.mu.Unlock()
			if sc.cfg.AutoClaim && sc.inCatalog(ev.Target) {
				_ = sc.claim(ctx, []string{ev.Target})
			}
		case leases.Resync:
			for _, target := range sc.ownedTargets() {
				sc.recheck(ctx, target)
			}
		}
	}
}

// concerns says whether ev is about this scraper: a move to it, or the end
// of a move or the deletion of a claim it believes it owns.
func (sc *simScraper) concerns(ev leases.Event) bool {
	if ev.Type == leases.MoveStarted {
		return ev.Move.To == sc.id
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	_, owned := sc.owned[ev.Target]
	return owned || ev.Type == leases.Resync
}

// takeOver prepares for a while, then completes the move.
func (sc *simScraper) takeOver(ctx context.Context, m leases.Move) {
	if sc.cfg.MaxPrepare > 0 {
		sc.mu.Lock()
		d := time.Duration(sc.rng.Int64N(int64(sc.cfg.MaxPrepare)))
		sc.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	cl, err := sc.claims.TakeOver(ctx, m)
	if os.Getenv("ALLOT_TEST_LOG") != "" {
		sc.c.t.Logf("%s %s takeover %s: %v", time.Now().Format("15:04:05.000"), sc.id, m.Target, err)
	}
	if err != nil {
		return // aborted, vanished, or the claim changed: the source keeps it
	}
	sc.mu.Lock()
	if sc.s.Err() == nil {
		sc.owned[cl.Target] = cl
	}
	sc.mu.Unlock()
}

// recheck drops target if the claim is no longer the one believed in: the
// source's reaction to the end of a move.
func (sc *simScraper) recheck(ctx context.Context, target string) {
	sc.mu.Lock()
	mine, ok := sc.owned[target]
	sc.mu.Unlock()
	if !ok {
		return
	}
	cur, exists, err := sc.claims.Owner(ctx, target)
	if err != nil {
		return
	}
	if !exists || cur.Epoch != mine.Epoch {
		sc.mu.Lock()
		if cl, ok := sc.owned[target]; ok && cl.Epoch == mine.Epoch {
			delete(sc.owned, target)
		}
		sc.mu.Unlock()
	}
}

// sweep claims unowned catalog targets periodically, for deletions that
// happened while nobody watched.
func (sc *simScraper) sweep(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		cl, _, err := leases.ListClaims(ctx, sc.cli, sc.c.ks)
		if err == nil {
			var free []string
			for _, t := range sc.c.targets {
				if _, ok := cl[t]; !ok {
					free = append(free, t)
				}
			}
			if len(free) > 0 {
				_ = sc.claim(ctx, free)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// report puts the load report: the series of every target believed owned.
func (sc *simScraper) report(ctx context.Context) {
	every := sc.cfg.LoadEvery
	if every == 0 {
		every = 500 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		l := leases.Load{Scraper: sc.id, PerTarget: map[string]leases.TargetLoad{}}
		for _, t := range sc.ownedTargets() {
			n := sc.c.series[t]
			l.PerTarget[t] = leases.TargetLoad{Series: n}
			l.Series += n
			l.Targets++
		}
		if err := leases.PutLoad(ctx, sc.s, sc.c.ks, l); err != nil && errors.Is(err, leases.ErrLeaseLost) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (sc *simScraper) inCatalog(target string) bool {
	_, ok := sc.c.series[target]
	return ok
}

func (sc *simScraper) ownedTargets() []string {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	out := make([]string, 0, len(sc.owned))
	for t := range sc.owned {
		out = append(out, t)
	}
	return out
}

// beliefs is a copy of what the scraper believes it owns.
func (sc *simScraper) beliefs() map[string]leases.Claim {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.dead {
		return nil
	}
	return maps.Clone(sc.owned)
}

// stop ends the scraper's goroutines, then ends its session with end
// (Close to revoke, Orphan to let the lease expire as in a crash).
func (sc *simScraper) stop(end func(*leases.Session)) {
	sc.mu.Lock()
	if sc.dead {
		sc.mu.Unlock()
		return
	}
	sc.dead = true
	clear(sc.owned)
	s, cli, cancel := sc.s, sc.cli, sc.cancel
	sc.mu.Unlock()
	cancel()
	sc.wg.Wait()
	end(s)
	_ = cli.Close()
}

// crash stops without revoking: the claims stay until the lease expires.
func (sc *simScraper) crash() { sc.stop((*leases.Session).Orphan) }

// leave stops gracefully: revoking frees the claims at once.
func (sc *simScraper) leave() { sc.stop(func(s *leases.Session) { _ = s.Close() }) }

// partition cuts the scraper off etcd without stopping it: it keeps
// believing in its claims until its session's local deadline passes.
func (sc *simScraper) partition() {
	sc.mu.Lock()
	cli := sc.cli
	sc.cut = true
	sc.mu.Unlock()
	_ = cli.Close()
}

// alive says whether the scraper runs, reaches etcd and has a live
// session: whether it can claim.
func (sc *simScraper) alive() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return !sc.dead && !sc.cut && sc.s.Err() == nil
}

// isDead says whether the scraper was stopped.
func (sc *simScraper) isDead() bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.dead
}

// checkConsistent asserts that every catalog target is claimed by one of
// owners, that its owner believes in exactly that claim, and that nobody
// else believes it owns it.
func checkConsistent(claims map[string]leases.Claim, targets []string, scrapers ...*simScraper) error {
	beliefs := map[string]map[string]leases.Claim{}
	for _, sc := range scrapers {
		beliefs[sc.id] = sc.beliefs()
	}
	for _, t := range targets {
		cl, ok := claims[t]
		if !ok {
			return fmt.Errorf("target %s is not claimed", t)
		}
		b, ok := beliefs[cl.Owner]
		if !ok {
			return fmt.Errorf("target %s is claimed by %s, not a live scraper", t, cl.Owner)
		}
		if got, ok := b[t]; !ok || got.Epoch != cl.Epoch {
			return fmt.Errorf("target %s: claimed by %s at epoch %d, which believes %v", t, cl.Owner, cl.Epoch, got)
		}
		for id, b := range beliefs {
			if _, ok := b[t]; ok && id != cl.Owner {
				return fmt.Errorf("target %s: %s believes it owns it, the claim says %s", t, id, cl.Owner)
			}
		}
	}
	return nil
}
