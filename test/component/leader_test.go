package component

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/services/rebalancer"
)

// TestRebalancerLeaderKilledMidPlan: scraper a owns all 40 targets and b
// joins empty. Rebalancer r1 leads and moves targets to b a few at a time;
// r2 stands by. r1 is killed (its etcd client closed: no resignation, no
// revoke) with moves pending in etcd and more planned. Its pending moves
// either complete (the destination's takeover won before r1's lease
// expired) or vanish with the lease, leaving the target with its source;
// r2 is elected once the lease is gone and finishes the balancing.
//
// Throughout, a monitor samples the claims and the scrapers' own views: no
// target is owned by two scrapers or left unserved for more than one TTL.
// At the sink, every moved target has at most one missing or duplicated
// sample, whichever leader moved it.
func TestRebalancerLeaderKilledMidPlan(t *testing.T) {
	c := newCluster(t)
	ids := c.putTargets("t-", 40)
	a := c.startOwners(ids, "a")[0]
	b := c.startScraper("b")
	c.waitMembers("a", "b")
	hist := c.watchClaims()
	mon := c.monitorOwnership(ids, a, b)

	// r1 is slow (10 moves a second, 3 at once), so that it can be caught
	// with moves pending and queued; r2 has the defaults.
	r1 := c.startRebalancerWith(rebalancer.Config{ID: "r1", MovesPerSecond: 10, MaxConcurrentMoves: 3})
	waitFor(t, eventually, func() (bool, string) {
		return r1.r.IsLeader(), "r1 not leading yet"
	})
	r2 := c.startRebalancerWith(rebalancer.Config{ID: "r2"})
	waitFor(t, eventually, func() (bool, string) {
		st := r2.r.Status()
		return !st.IsLeader && st.Leader == "r1", fmt.Sprintf("r2: leader %q, self %v", st.Leader, st.IsLeader)
	})

	var pending map[string]leases.Move
	waitFor(t, eventually, func() (bool, string) {
		done := len(hist.completedMoves(t))
		pending = hist.pending(t)
		return done >= 3 && len(pending) >= 2, fmt.Sprintf("r1 has completed %d moves, %d pending", done, len(pending))
	})
	st := r1.r.Status()
	killed := time.Now()
	r1.kill()
	t.Logf("killed r1 with %d moves completed, %d pending in etcd, %d queued", len(hist.completedMoves(t)), len(pending), st.Queued)

	waitFor(t, eventually, func() (bool, string) {
		return r2.r.IsLeader(), fmt.Sprintf("r2 not leading (leader %q)", r2.r.Status().Leader)
	})
	elected := time.Since(killed)
	final := waitSettled(t, c, r2.r, func(st rebalancer.Status, own map[string]string) (bool, string) {
		return st.BalanceRatio <= balanced && len(own) == len(ids),
			fmt.Sprintf("a %d, b %d of %d, balance %.3f", count(own, "a"), count(own, "b"), len(ids), st.BalanceRatio)
	})
	r1.stop()
	after := c.owners()
	t.Logf("r2 elected %s after the kill (lease TTL %s); balanced at %.3f: a %d, b %d",
		elected.Round(time.Millisecond), ttl, final.BalanceRatio, count(after, "a"), count(after, "b"))
	require.LessOrEqual(t, elected, ttl+time.Second, "the standby waits for the leader's lease, no longer")

	// No move is left over, and each of r1's pending moves was either
	// finished (by its destination) or dropped (the target stayed put).
	moves, err := leases.ListMoves(context.Background(), c.cli, c.ks)
	require.NoError(t, err)
	require.Empty(t, moves, "moves left in etcd")
	hs := hist.completedMoves(t)
	moved := map[string]handoff{}
	for _, h := range hs {
		require.NotContains(t, moved, h.id, "target %s moved twice", h.id)
		moved[h.id] = h
		require.Equal(t, "a", h.from, "target %s", h.id)
		require.Equal(t, "b", h.to, "target %s", h.id)
	}
	finished := 0
	for id := range pending {
		if _, ok := moved[id]; ok {
			finished++
			continue
		}
		require.Equal(t, "a", after[id], "target %s: its move vanished, so it stays with its source", id)
	}
	t.Logf("of r1's %d pending moves, %d completed and %d vanished with its lease; %d moves in all",
		len(pending), finished, len(pending)-finished, len(hs))
	require.Equal(t, after, hist.ownersAt(t, time.Now()), "the claim history and etcd agree")
	requireOwnersAgree(t, after, a, b)

	mon.check(t, ttl, ttl)
	checkHandoffs(t, c, hs, ids)
}
