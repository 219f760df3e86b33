package component

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/internal/testcluster"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/services/rebalancer"
)

// crashLoss is the most scrapes a target may miss when its scraper
// crashes: its last scrape was up to an interval before the crash, the
// lease expires up to a TTL after it, the heir claims within a second of
// that (etcd looks for expired leases twice a second) and scrapes at the
// target's next slot, up to an interval later.
const crashLoss = int((ttl+time.Second+2*interval)/interval) - 1

// TestCrashSpreadsTargets: four scrapers share 240 targets; one crashes
// (no revoke). Its targets go to the other three in about equal parts (each
// is the next choice of a third of its slots), not all to one, within the
// lease TTL plus a second, and nobody else's targets move.
func TestCrashSpreadsTargets(t *testing.T) {
	c := newCluster(t)
	ids := c.putTargets("t-", 240)
	ms := c.startOwners(ids, "a", "b", "c", "d")
	before := c.owners()
	var victims []string
	for _, id := range ids {
		if before[id] == "d" {
			victims = append(victims, id)
		}
	}
	// A quarter of the slots are d's first choice: 60 ± 6.7 expected.
	require.GreaterOrEqual(t, len(victims), 35, "d owns %d targets", len(victims))
	mon := c.monitorOwnership(ids, ms...)

	mon.crashed("d")
	crashed := time.Now()
	ms[3].crash()

	heirs := map[string]int{}
	var claimed time.Duration
	waitFor(t, eventually, func() (bool, string) {
		own := c.owners()
		clear(heirs)
		left := 0
		for _, id := range victims {
			switch o := own[id]; o {
			case "a", "b", "c":
				heirs[o]++
			default:
				left++
			}
		}
		claimed = time.Since(crashed)
		return left == 0, fmt.Sprintf("%d of d's %d targets not yet claimed by the others", left, len(victims))
	})
	waitFor(t, eventually, func() (bool, string) {
		for _, id := range victims {
			if len(c.ledger.since(c.instance(id), crashed, "a", "b", "c")) == 0 {
				return false, fmt.Sprintf("target %s not yet scraped by an heir", c.instance(id))
			}
		}
		return true, ""
	})
	sampled := time.Since(crashed)
	after := c.owners()
	fair := float64(len(victims)) / 3
	t.Logf("crashed scraper (%d targets, TTL %s): all claimed after %s, all scraped by an heir after %s; heirs %v (fair share %.1f each)",
		len(victims), ttl, claimed.Round(time.Millisecond), sampled.Round(time.Millisecond), heirs, fair)
	require.LessOrEqual(t, claimed, ttl+time.Second, "claims taken over")
	// Spread, not dumped: every survivor inherits, each about a third. The
	// bounds are 3.5 standard deviations of a fair split of 60 targets
	// (each is a random slot's next choice), so the test does not flake.
	require.Len(t, heirs, 3, "heirs %v", heirs)
	for h, n := range heirs {
		require.GreaterOrEqual(t, float64(n), 0.35*fair, "heir %s got %d of %d", h, n, len(victims))
		require.LessOrEqual(t, float64(n), 1.65*fair, "heir %s got %d of %d", h, n, len(victims))
	}
	sessions := map[string]float64{}
	for _, m := range ms[:3] {
		sessions[m.s.ID()] = m.metric("allot_scraper_sessions_total")
	}
	for _, id := range ids {
		if before[id] != "d" {
			require.Equal(t, before[id], after[id], "target %s of a live scraper changed hands (sessions opened: %v)", id, sessions)
		}
	}
	requireOwnersAgree(t, after, ms[:3]...)
	mon.check(t, ttl+time.Second, ttl)
	requireOneScraperAtATime(t, c, ids)
}

// TestCrashDuringMoves: scraper a owns 36 targets, b and c join empty, and
// the rebalancer moves targets from a to both, several at once. In the
// middle of the plan one scraper crashes (no revoke): a destination of
// pending moves, or their source. Afterwards the state is consistent: every
// target has exactly one owner among the survivors, which scrapes it; no
// move is left in etcd or pending in the rebalancer, which has balanced the
// survivors. At the sink, a target the crashed scraper owned misses at
// most crashLoss scrapes; every other target has at most one missing or
// duplicated sample.
func TestCrashDuringMoves(t *testing.T) {
	for _, tc := range []struct {
		name   string
		victim string
		// inFlight says whether the pending moves involve the victim.
		inFlight func(leases.Move) bool
	}{
		{name: "destination crashes", victim: "b", inFlight: func(m leases.Move) bool { return m.To == "b" }},
		{name: "source crashes", victim: "a", inFlight: func(m leases.Move) bool { return m.From == "a" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			ids := c.putTargets("t-", 36)
			ms := map[string]*member{"a": c.startOwners(ids, "a")[0]}
			ms["b"], ms["c"] = c.startScraper("b"), c.startScraper("c")
			c.waitMembers("a", "b", "c")
			hist := c.watchClaims()
			mon := c.monitorOwnership(ids, slices.Collect(maps.Values(ms))...)
			start := time.Now()
			// Several moves at once, slowly enough to catch some in flight.
			// A move takes about 100 ms. A move that cannot complete because
			// its source crashed and the destination claimed the target anew
			// is found stale at the next evaluation; the short timeout only
			// bounds it should that check fail (the default is 10 s).
			rb := c.startRebalancerWith(rebalancer.Config{ID: "r", MovesPerSecond: 10, MaxConcurrentMoves: 4, MoveTimeout: 3 * time.Second})

			var involved int
			waitFor(t, eventually, func() (bool, string) {
				done := len(hist.completedMoves(t))
				involved = 0
				for _, m := range hist.pending(t) {
					if tc.inFlight(m) {
						involved++
					}
				}
				return done >= 3 && involved >= 2, fmt.Sprintf("%d moves completed, %d pending that involve %s", done, involved, tc.victim)
			})
			mon.crashed(tc.victim)
			crashed := time.Now()
			ms[tc.victim].crash()
			delete(ms, tc.victim)
			survivors := slices.Sorted(maps.Keys(ms))
			t.Logf("crashed %s with %d moves completed and %d of its moves pending", tc.victim, len(hist.completedMoves(t)), involved)

			st := waitSettled(t, c, rb.r, func(st rebalancer.Status, own map[string]string) (bool, string) {
				n := 0
				for _, id := range ids {
					if slices.Contains(survivors, own[id]) {
						n++
					}
				}
				return n == len(ids) && st.BalanceRatio <= balanced,
					fmt.Sprintf("%d of %d targets owned by %v, balance %.3f", n, len(ids), survivors, st.BalanceRatio)
			})
			settled := time.Since(crashed)
			rb.stop()
			moves, err := leases.ListMoves(context.Background(), c.cli, c.ks)
			require.NoError(t, err)
			require.Empty(t, moves, "moves left in etcd")
			after := c.owners()
			require.Len(t, after, len(ids))
			requireOwnersAgree(t, after, slices.Collect(maps.Values(ms))...)
			outcomes := map[string]int{}
			for _, m := range st.Moves {
				outcomes[m.Outcome]++
			}
			t.Logf("settled %s after the crash: owners %v; moves by outcome %v",
				settled.Round(time.Millisecond), ownerCounts(after), outcomes)

			// Which targets the crash hit: the victim's at the crash, and
			// any it took over in a transaction still in flight then.
			hit := map[string]bool{}
			for id, o := range hist.ownersAt(t, crashed) {
				hit[id] = o == tc.victim
			}
			for _, ch := range hist.Changes(t) {
				if ch.Kind == testcluster.ClaimPut && ch.Owner == tc.victim && ch.At.After(crashed) {
					hit[ch.Target] = true
				}
			}
			mon.check(t, ttl+time.Second, ttl)
			checkContinuity(t, c, ids, start.Add(-3*interval), func(id string) bool { return hit[id] })
		})
	}
}

// checkContinuity waits until every target in ids has been scraped three
// more times, then checks its `up` and counter series over [from, now] at
// the sink: no staleness marker and at most one duplicated sample; at most
// crashLoss missing samples if crashed(id) (its scraper crashed), and at
// most one anomaly (missing or duplicated) otherwise. It also checks that
// no two scrapers exported a target at once.
func checkContinuity(t *testing.T, c *cluster, ids []string, from time.Time, crashed func(id string) bool) {
	t.Helper()
	c.waitScraped(ids, 3, time.Now())
	to := time.Now()
	var hit, missed, worstHit, others, worstOther int
	for _, id := range ids {
		inst := c.instance(id)
		for _, prefix := range []string{"up{", "requests_total{"} {
			ss := c.sink.Find(prefix, fmt.Sprintf("service.instance.id=%q", inst))
			require.Len(t, ss, 1, "%s series of %s", prefix, inst)
			ct := analyse(c.sink.Samples(ss[0]), from, to)
			require.Zero(t, ct.stale, "%s%s}: staleness markers", prefix, inst)
			require.LessOrEqual(t, ct.duplicated, 1, "%s%s}: %s", prefix, inst, ct)
			if crashed(id) {
				require.LessOrEqual(t, ct.missing, crashLoss, "%s%s}, owned by the crashed scraper: %s", prefix, inst, ct)
				missed += ct.missing
				worstHit = max(worstHit, ct.missing)
				if prefix == "up{" {
					hit++
				}
				continue
			}
			require.LessOrEqual(t, ct.anomalies(), 1, "%s%s}: %s", prefix, inst, ct)
			others += ct.anomalies()
			worstOther = max(worstOther, ct.anomalies())
		}
	}
	t.Logf("sink: %d targets hit by the crash missed %d samples (at most %d a series, bound %d); the other %d had %d anomalies (at most %d a series)",
		hit, missed, worstHit, crashLoss, len(ids)-hit, others, worstOther)
	requireOneScraperAtATime(t, c, ids)
}

func ownerCounts(own map[string]string) map[string]int {
	out := map[string]int{}
	for _, o := range own {
		out[o]++
	}
	return out
}
