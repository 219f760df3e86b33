package component

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/services/rebalancer"
)

// balanced is the rebalancer's default tolerance: a plan is made only when
// the busiest scraper is above mean × balanced.
const balanced = 1 + rebalancer.DefaultTolerance

// TestRebalanceHandoff: scraper a owns all 60 targets, b joins empty, and
// the rebalancer moves about half of them to b. Every moved target's
// series continue at the sink with at most one missing or duplicated
// sample, and no staleness marker.
func TestRebalanceHandoff(t *testing.T) {
	c := newCluster(t)
	ids := c.putTargets("t-", 60)
	a := c.startOwners(ids, "a")[0]
	b := c.startScraper("b")
	c.waitMembers("a", "b")
	before := c.owners()
	require.Equal(t, 60, count(before, "a"), "a owns everything before the rebalancer starts")

	started := time.Now()
	r, stop := c.startRebalancer("r")
	st := waitSettled(t, c, r, func(st rebalancer.Status, own map[string]string) (bool, string) {
		nb := count(own, "b")
		return st.BalanceRatio <= balanced && nb > 0, fmt.Sprintf("b owns %d of 60, balance %.3f", nb, st.BalanceRatio)
	})
	stop()
	after := c.owners()
	hs := handoffs(t, before, after, r.Status().Moves)
	t.Logf("rebalance: %d of 60 targets moved a→b in %s (balance %.3f)",
		len(hs), lastEnd(hs).Sub(started).Round(time.Millisecond), st.BalanceRatio)
	require.InDelta(t, 30, len(hs), 2, "about half the targets move")
	for _, h := range hs {
		require.Equal(t, "a", h.from, "target %s", h.id)
		require.Equal(t, "b", h.to, "target %s", h.id)
	}
	checkHandoffs(t, c, hs, ids)
	requireOwnersAgree(t, after, a, b)
}

// TestDrainHandoff: one of three scrapers is drained; all its targets end
// on the other two, spread evenly, each with at most one missing or
// duplicated sample and no staleness marker.
func TestDrainHandoff(t *testing.T) {
	c := newCluster(t)
	ids := c.putTargets("t-", 60)
	ms := c.startOwners(ids, "a", "b", "c")
	a, b, d := ms[0], ms[1], ms[2]

	// The rebalancer first evens out what the scrapers claimed by
	// preference; the drain starts from a balanced, quiet pool.
	r, stop := c.startRebalancer("r")
	waitSettled(t, c, r, func(st rebalancer.Status, own map[string]string) (bool, string) {
		return st.BalanceRatio <= balanced, fmt.Sprintf("balance %.3f, owners a %d b %d c %d",
			st.BalanceRatio, count(own, "a"), count(own, "b"), count(own, "c"))
	})
	before := c.owners()
	drained := count(before, "c")
	require.Positive(t, drained)
	movesBefore := len(r.Status().Moves)

	start := time.Now()
	require.NoError(t, r.Drain(context.Background(), "c"))
	waitSettled(t, c, r, func(st rebalancer.Status, own map[string]string) (bool, string) {
		na, nb, nc := count(own, "a"), count(own, "b"), count(own, "c")
		// Even: neither takes more than its share plus the tolerance.
		return nc == 0 && float64(max(na, nb)) <= balanced*30, fmt.Sprintf("owners a %d b %d c %d", na, nb, nc)
	})
	moves := r.Status().Moves
	stop()
	after := c.owners()
	hs := handoffs(t, before, after, moves[:len(moves)-movesBefore])
	t.Logf("drain: %d targets moved off c in %s; owners now a %d, b %d",
		len(hs), lastEnd(hs).Sub(start).Round(time.Millisecond), count(after, "a"), count(after, "b"))
	require.Len(t, hs, drained, "exactly the drained scraper's targets move")
	for _, h := range hs {
		require.Equal(t, "c", h.from, "target %s", h.id)
		require.Contains(t, []string{"a", "b"}, h.to, "target %s", h.id)
	}
	checkHandoffs(t, c, hs, ids)
	requireOwnersAgree(t, after, a, b, d)
	require.Empty(t, d.owned(), "the drained scraper scrapes nothing")
}

// handoff is one completed move of a target.
type handoff struct {
	id, from, to string
	start, end   time.Time
}

// handoffs pairs the owner changes between before and after with the
// rebalancer's records of completed moves: each change must be exactly one
// completed move, and each completed move a change.
func handoffs(t *testing.T, before, after map[string]string, moves []rebalancer.MoveRecord) []handoff {
	t.Helper()
	rec := map[string]rebalancer.MoveRecord{}
	for _, m := range moves {
		if m.Outcome != rebalancer.OutcomeCompleted {
			continue
		}
		require.NotContains(t, rec, m.Target, "target %s moved twice", m.Target)
		rec[m.Target] = m
	}
	var out []handoff
	for _, id := range slices.Sorted(maps.Keys(before)) {
		to, ok := after[id]
		require.True(t, ok, "target %s unowned after the moves", id)
		if to == before[id] {
			require.NotContains(t, rec, id, "target %s moved and back", id)
			continue
		}
		m, ok := rec[id]
		require.True(t, ok, "target %s changed owner %s→%s without a completed move", id, before[id], to)
		require.Equal(t, before[id], m.From, "target %s", id)
		require.Equal(t, to, m.To, "target %s", id)
		out = append(out, handoff{id: id, from: m.From, to: m.To, start: m.Time, end: m.Time.Add(m.Duration)})
		delete(rec, id)
	}
	require.Empty(t, rec, "completed moves that changed no owner")
	return out
}

func lastEnd(hs []handoff) time.Time {
	var t time.Time
	for _, h := range hs {
		if h.end.After(t) {
			t = h.end
		}
	}
	return t
}

// waitSettled waits until the rebalancer leads, has no move pending or
// queued, has evaluated the pool again after its last finished move (so
// that it has seen the result and planned nothing more), and done holds.
func waitSettled(t *testing.T, c *cluster, r *rebalancer.Rebalancer, done func(rebalancer.Status, map[string]string) (bool, string)) rebalancer.Status {
	t.Helper()
	var st rebalancer.Status
	waitFor(t, eventually, func() (bool, string) {
		st = r.Status()
		var last time.Time
		for _, m := range st.Moves {
			if end := m.Time.Add(m.Duration); end.After(last) {
				last = end
			}
		}
		ok, why := done(st, c.owners())
		idle := st.IsLeader && st.Pending == 0 && st.Queued == 0 && st.Updated.After(last.Add(interval))
		return ok && idle, fmt.Sprintf("leader %v, %d pending, %d queued, evaluated %s, last move %s; %s",
			st.IsLeader, st.Pending, st.Queued, st.Updated.Format(time.StampMilli), last.Format(time.StampMilli), why)
	})
	return st
}

// checkHandoffs waits until every moved target has been scraped a few
// times by its new owner (past the moment end-of-run staleness markers
// would come), then checks the `up` and counter series of every moved
// target around its move: at most one missing or duplicated sample, no
// staleness marker, samples from both sides. Targets that did not move
// serve as a control and must have no staleness marker either.
func checkHandoffs(t *testing.T, c *cluster, hs []handoff, all []string) {
	t.Helper()
	require.NotEmpty(t, hs)
	waitFor(t, eventually, func() (bool, string) {
		behind := 0
		for _, h := range hs {
			if len(c.ledger.since(c.instance(h.id), h.end, h.to)) < 4 {
				behind++
			}
		}
		return behind == 0, fmt.Sprintf("%d of %d moved targets not yet scraped 4 times by their new owner", behind, len(hs))
	})
	to := time.Now()
	from := to
	moved := map[string]bool{}
	var anomalies, worst, dups, missing int
	var durations []time.Duration
	for _, h := range hs {
		moved[h.id] = true
		inst := c.instance(h.id)
		win := h.start.Add(-3 * interval)
		from = minTime(from, win)
		durations = append(durations, h.end.Sub(h.start))
		for _, prefix := range []string{"up{", "requests_total{"} {
			ss := c.sink.Find(prefix, fmt.Sprintf("service.instance.id=%q", inst))
			require.Len(t, ss, 1, "%s series of %s", prefix, inst)
			ct := analyse(c.sink.Samples(ss[0]), win, to)
			require.Zero(t, ct.stale, "%s%s moved %s→%s: staleness markers", prefix, inst, h.from, h.to)
			require.LessOrEqual(t, ct.anomalies(), 1, "%s%s} moved %s→%s (move %s–%s): %s",
				prefix, inst, h.from, h.to, h.start.Format(time.StampMilli), h.end.Format(time.StampMilli), ct)
			anomalies += ct.anomalies()
			worst = max(worst, ct.anomalies())
			dups += ct.duplicated
			missing += ct.missing
		}
		// Both sides contributed: the source up to the move, the
		// destination after it.
		var src, dst int
		for _, e := range c.ledger.of(inst) {
			switch {
			case e.scraper == h.from && !e.ts.Before(win) && !e.ts.After(h.end):
				src++
			case e.scraper == h.to && e.ts.After(h.start):
				dst++
			}
		}
		require.Positive(t, src, "target %s: no sample from the source %s before the move", inst, h.from)
		require.Positive(t, dst, "target %s: no sample from the destination %s after the move", inst, h.to)
	}
	requireOneScraperAtATime(t, c, all)

	var control continuity
	for _, id := range all {
		if moved[id] {
			continue
		}
		ss := c.sink.Find("up{", fmt.Sprintf("service.instance.id=%q", c.instance(id)))
		require.Len(t, ss, 1)
		ct := analyse(c.sink.Samples(ss[0]), from, to)
		require.Zero(t, ct.stale, "target %s did not move but has staleness markers", id)
		control.missing += ct.missing
		control.duplicated += ct.duplicated
	}
	slices.Sort(durations)
	t.Logf("%d handoffs (move took %s median, %s max): %d series anomalies in all (%d missing, %d duplicated), at most %d per series; "+
		"unmoved targets over the same window: %d missing, %d duplicated",
		len(hs), durations[len(durations)/2].Round(time.Millisecond), durations[len(durations)-1].Round(time.Millisecond),
		anomalies, missing, dups, worst, control.missing, control.duplicated)
}

// requireOneScraperAtATime checks, for every target in ids, that no two
// scrapers scraped it at once for more than one interval. Each sample
// stands for the interval after it; one duplicated scrape in a handoff
// makes the two scrapers share one interval, give or take jitter, and a
// second would make it two.
func requireOneScraperAtATime(t *testing.T, c *cluster, ids []string) {
	t.Helper()
	for _, id := range ids {
		inst := c.instance(id)
		by := map[string][]time.Time{}
		for _, e := range c.ledger.of(inst) {
			if !e.stale {
				by[e.scraper] = append(by[e.scraper], e.ts)
			}
		}
		for x, xs := range by {
			for y, ys := range by {
				if x >= y {
					continue
				}
				shared := sharedTime(xs, ys)
				require.Less(t, shared, 3*interval/2, "target %s scraped by %s and %s at once for %s", inst, x, y, shared)
			}
		}
	}
}

// sharedTime is how long the scrapes xs and ys cover together, each scrape
// covering the interval after it.
func sharedTime(xs, ys []time.Time) time.Duration {
	a, b := cover(xs), cover(ys)
	var shared time.Duration
	for i, j := 0, 0; i < len(a) && j < len(b); {
		lo, hi := maxTime(a[i][0], b[j][0]), minTime(a[i][1], b[j][1])
		if hi.After(lo) {
			shared += hi.Sub(lo)
		}
		if a[i][1].Before(b[j][1]) {
			i++
		} else {
			j++
		}
	}
	return shared
}

// cover merges [t, t+interval) for every t into sorted disjoint spans.
func cover(ts []time.Time) [][2]time.Time {
	ts = slices.Clone(ts)
	slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
	var out [][2]time.Time
	for _, t := range ts {
		end := t.Add(interval)
		if n := len(out); n > 0 && !t.After(out[n-1][1]) {
			out[n-1][1] = maxTime(out[n-1][1], end)
			continue
		}
		out = append(out, [2]time.Time{t, end})
	}
	return out
}

// requireOwnersAgree checks that the scrapers' own views match the claims:
// each claimed target is owned by exactly its claimant.
func requireOwnersAgree(t *testing.T, claims map[string]string, ms ...*member) {
	t.Helper()
	waitFor(t, eventually, func() (bool, string) {
		seen := map[string]string{}
		for _, m := range ms {
			for _, id := range m.owned() {
				if prev, dup := seen[id]; dup {
					return false, fmt.Sprintf("target %s owned by %s and %s", id, prev, m.s.ID())
				}
				seen[id] = m.s.ID()
			}
		}
		for id, owner := range claims {
			if seen[id] != owner {
				return false, fmt.Sprintf("target %s claimed by %s, owned by %q", id, owner, seen[id])
			}
		}
		return len(seen) == len(claims), fmt.Sprintf("%d owned, %d claimed", len(seen), len(claims))
	})
}

func count(owners map[string]string, id string) int {
	n := 0
	for _, o := range owners {
		if o == id {
			n++
		}
	}
	return n
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
