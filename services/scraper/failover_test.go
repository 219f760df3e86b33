package scraper

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/leases"
)

// TestFailover takes scrapers away in every way one can go (killed,
// stopped, moved from, cut off from etcd) and checks how fast and how
// cleanly the others take over. Leases have a 2s TTL.
func TestFailover(t *testing.T) {
	f := newFixture(t)
	// The catalog is there before the scrapers, as after a restart of the
	// whole pool: scrapers that start together must not each claim
	// everything as the only member they know of.
	targets := f.putTargets("", 60)
	all := ids(targets)
	a, b, c := f.start("a", testTTL), f.start("b", testTTL), f.start("c", testTTL)
	f.waitMembers("a", "b", "c")
	waitScraped(t, f.sink, all, 2)
	for _, r := range []*running{a, b, c} {
		n := len(r.owned())
		t.Logf("scraper %s owns %d of %d targets after start", r.s.ID(), n, len(all))
		// First choice for a third of the slots: 20 ± 3.7 expected.
		require.GreaterOrEqual(t, n, 5, "scraper %s", r.s.ID())
	}

	// takeover waits until every target in victims is claimed by one of
	// heirs and has a sample from it committed after since; it returns the
	// slowest of each.
	takeover := func(t *testing.T, victims []string, since time.Time, heirs ...string) (claimed, sampled time.Duration) {
		t.Helper()
		require.Eventually(t, func() bool {
			cs := f.claims()
			for _, id := range victims {
				if !slices.Contains(heirs, cs[id]) {
					return false
				}
			}
			claimed = time.Since(since)
			return true
		}, 20*time.Second, 20*time.Millisecond, "claims taken over by %v", heirs)
		require.Eventually(t, func() bool {
			sampled = 0
			for _, id := range victims {
				b, ok := firstAfter(f.sink, id, since, heirs...)
				if !ok {
					return false
				}
				sampled = max(sampled, b.at.Sub(since))
			}
			return true
		}, 20*time.Second, 20*time.Millisecond, "samples from %v", heirs)
		return claimed, sampled
	}

	t.Run("killed scraper: taken over within TTL + 1s", func(t *testing.T) {
		victims := slices.Collect(maps.Keys(a.owned()))
		require.NotEmpty(t, victims)
		failoversBefore := b.counter("allot_failovers_total") + c.counter("allot_failovers_total")
		a.s.crash()
		killed := time.Now()
		a.stop()
		claimed, sampled := takeover(t, victims, killed, "b", "c")
		t.Logf("killed scraper (%d targets, TTL %s): all claimed by others after %s, all scraped by others after %s",
			len(victims), testTTL, claimed.Round(time.Millisecond), sampled.Round(time.Millisecond))
		require.LessOrEqual(t, claimed, testTTL+time.Second, "claims")
		// After the claim a target is scraped at its next slot in the interval.
		require.LessOrEqual(t, sampled, testTTL+time.Second+testInterval, "samples")
		for _, bt := range f.sink.snapshot() {
			require.False(t, bt.scraper == "a" && bt.at.After(killed.Add(250*time.Millisecond)),
				"killed scraper forwarded a batch %s after it died", bt.at.Sub(killed))
		}
		require.Equal(t, float64(len(victims)), b.counter("allot_failovers_total")+c.counter("allot_failovers_total")-failoversBefore)
	})

	t.Run("restarted scraper rejoins and gets work", func(t *testing.T) {
		a = f.start("a", testTTL)
		f.waitMembers("a", "b", "c")
		restarted := time.Now()
		fresh := ids(f.putTargets("r", 30))
		require.Eventually(t, func() bool {
			cs := f.claims()
			for _, id := range fresh {
				if cs[id] == "" {
					return false
				}
			}
			return true
		}, 20*time.Second, 20*time.Millisecond, "new targets claimed")
		var mine []string
		for id, owner := range f.claims() {
			if owner == "a" && slices.Contains(fresh, id) {
				mine = append(mine, id)
			}
		}
		t.Logf("restarted scraper claimed %d of %d new targets", len(mine), len(fresh))
		require.NotEmpty(t, mine, "the restarted scraper is first choice for a third of the slots")
		require.Eventually(t, func() bool {
			for _, id := range mine {
				if _, ok := firstAfter(f.sink, id, restarted, "a"); !ok {
					return false
				}
			}
			return true
		}, 20*time.Second, 20*time.Millisecond, "restarted scraper scrapes its targets")
		all = append(all, fresh...)
	})

	t.Run("graceful stop: taken over within 1s", func(t *testing.T) {
		victims := slices.Collect(maps.Keys(b.owned()))
		require.NotEmpty(t, victims)
		stopping := time.Now()
		b.stop()
		stopped := time.Now()
		claimed, sampled := takeover(t, victims, stopping, "a", "c")
		t.Logf("stopped scraper (%d targets): stop took %s, all claimed by others after %s, all scraped by others after %s",
			len(victims), stopped.Sub(stopping).Round(time.Millisecond), claimed.Round(time.Millisecond), sampled.Round(time.Millisecond))
		// The bound the issue sets, with or without -race: revoking frees
		// every claim in one revision, and the heirs claim within tens of
		// milliseconds even under the race detector.
		require.LessOrEqual(t, claimed, time.Second, "claims")
		// After the claim a target is scraped at its next slot in the interval.
		require.LessOrEqual(t, sampled, time.Second+testInterval, "samples")
		for _, bt := range f.sink.snapshot() {
			require.False(t, bt.scraper == "b" && bt.at.After(stopped), "stopped scraper forwarded a batch after Run returned")
		}
	})

	t.Run("move: no gap, at most one duplicate, no staleness markers", func(t *testing.T) {
		ctx := context.Background()
		var id string
		for owned := range c.owned() {
			id = owned
			break
		}
		require.NotEmpty(t, id)
		cs, _, err := leases.ListClaims(ctx, f.cli, f.ks)
		require.NoError(t, err)
		rebalancer, err := leases.NewSession(ctx, f.cli, leases.SessionConfig{TTL: testTTL}, nil, nil)
		require.NoError(t, err)
		defer func() { _ = rebalancer.Close() }()

		moved := time.Now()
		require.NoError(t, leases.StartMove(ctx, rebalancer, f.ks, leases.Move{
			Target: id, From: "c", To: "a", Epoch: cs[id].Epoch, Deadline: moved.Add(10 * time.Second), Reason: "test",
		}))
		require.Eventually(t, func() bool {
			_, mine := a.owned()[id]
			return f.claims()[id] == "a" && mine && !c.s.scraping(testJob, id)
		}, 20*time.Second, 20*time.Millisecond, "move done")
		t.Logf("move: done after %s", time.Since(moved).Round(time.Millisecond))
		require.Equal(t, 1.0, a.movesIn("done"))
		moves, err := leases.ListMoves(ctx, f.cli, f.ks)
		require.NoError(t, err)
		require.Empty(t, moves)

		// Let both sides settle, then look at the series across the move.
		require.Eventually(t, func() bool {
			_, ok := firstAfter(f.sink, id, time.Now().Add(-100*time.Millisecond), "a")
			return ok
		}, 10*time.Second, 20*time.Millisecond)
		observe(3 * testInterval) // when end-of-run staleness markers would come
		var fromC, fromA []int64
		for _, bt := range f.sink.target(id) {
			if !bt.at.After(moved) {
				continue // earlier owners, before the move
			}
			require.False(t, bt.stale, "staleness marker from %s for a moved target", bt.scraper)
			switch bt.scraper {
			case "c":
				fromC = append(fromC, bt.ts)
			case "a":
				fromA = append(fromA, bt.ts)
			}
		}
		require.NotEmpty(t, fromA)
		// The source may not have scraped between the move's start and its
		// end; then its last sample is the last before the move.
		if len(fromC) == 0 {
			for _, bt := range f.sink.target(id) {
				if bt.scraper == "c" && !bt.stale {
					fromC = append(fromC, bt.ts)
				}
			}
		}
		require.NotEmpty(t, fromC)
		lastC, firstA := slices.Max(fromC), slices.Min(fromA)
		dup := 0
		for _, ts := range fromA {
			if ts <= lastC {
				dup++
			}
		}
		gap := time.Duration(firstA-lastC) * time.Millisecond
		t.Logf("move: last sample from source to first from destination: %s, overlapping samples: %d", gap, dup)
		require.LessOrEqual(t, dup, 1, "duplicates")
		require.Less(t, gap, 3*testInterval/2, "gap")
	})

	t.Run("move that cannot happen: destination drops what it prepared", func(t *testing.T) {
		ctx := context.Background()
		var id string
		for owned := range c.owned() {
			id = owned
			break
		}
		require.NotEmpty(t, id)
		// A move planned against an epoch the claim no longer has, as a
		// rebalancer working from stale data would write it.
		start := time.Now()
		v, err := json.Marshal(leases.Move{Target: id, From: "c", To: "a", Epoch: 1, Deadline: time.Now().Add(5 * time.Second).UTC()})
		require.NoError(t, err)
		_, err = f.cli.Put(ctx, f.ks.Move(id), string(v))
		require.NoError(t, err)
		defer func() { _ = leases.AbortMove(ctx, f.cli, f.ks, id) }()
		// a prepares (starts the loop, forwards nothing), fails to take
		// over and stops again.
		require.Eventually(t, func() bool {
			return a.movesIn("failed") == 1
		}, 10*time.Second, 10*time.Millisecond, "destination tried")
		require.Eventually(t, func() bool { return !a.s.scraping(testJob, id) }, 10*time.Second, 10*time.Millisecond, "destination gives up")
		require.Equal(t, "c", f.claims()[id])
		_, stillMine := c.owned()[id]
		require.True(t, stillMine)
		for _, bt := range f.sink.target(id) {
			require.False(t, bt.scraper == "a" && bt.at.After(start), "destination forwarded a target it does not own")
		}
	})

	t.Run("lost session: stop forwarding, others take over, rejoin", func(t *testing.T) {
		ctx := context.Background()
		victims := slices.Collect(maps.Keys(a.owned()))
		require.NotEmpty(t, victims)
		resp, err := f.cli.Get(ctx, f.ks.Member("a"))
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
		sessionsBefore := a.counter("allot_scraper_sessions_total")
		// The lease vanishes under a: its claims go at once, and a finds
		// out at its next renewal.
		_, err = f.cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		require.NoError(t, err)
		revoked := time.Now()
		claimed, _ := takeover(t, victims, revoked, "c", "a")
		t.Logf("revoked lease: others claimed within %s", claimed.Round(time.Millisecond))
		require.Eventually(t, func() bool {
			return a.counter("allot_scraper_sessions_total") > sessionsBefore
		}, 20*time.Second, 20*time.Millisecond, "a new session")
		// Whenever a notices, it forwards nothing past its local deadline,
		// which no renewal extended after the revoke (TTL - TTL/5).
		cs := f.claims()
		for _, bt := range f.sink.snapshot() {
			if bt.scraper == "a" && cs[bt.target] != "a" {
				require.False(t, bt.at.After(revoked.Add(testTTL-testTTL/5+100*time.Millisecond)),
					"batch of a lost target %s after the revoke", bt.at.Sub(revoked))
			}
		}
		f.waitMembers("a", "c")
	})
}
