package component

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestFailover: three scrapers own 90 targets; one is cut off from etcd
// without revoking its lease (its client is closed, as in a partition or a
// crash). The others scrape its targets again within the lease TTL plus a
// second (plus the interval to the next scheduled scrape), and it stops
// exporting before they start: no target is exported by two scrapers for
// an interval or more.
func TestFailover(t *testing.T) {
	c := newCluster(t)
	ids := c.putTargets("t-", 90)
	ms := c.startOwners(ids, "a", "b", "c")
	a, b, v := ms[0], ms[1], ms[2]
	var victims []string
	for id, owner := range c.owners() {
		if owner == "c" {
			victims = append(victims, id)
		}
	}
	slices.Sort(victims)
	// First choice for a third of the slots: 30 ± 5 expected.
	require.GreaterOrEqual(t, len(victims), 10)
	failovers := a.metric("allot_failovers_total") + b.metric("allot_failovers_total")

	cut := time.Now()
	v.cutOff()

	var claimed time.Duration
	waitFor(t, eventually, func() (bool, string) {
		own := c.owners()
		left := 0
		for _, id := range victims {
			if own[id] != "a" && own[id] != "b" {
				left++
			}
		}
		claimed = time.Since(cut)
		return left == 0, fmt.Sprintf("%d of %d targets of c not yet claimed by a or b", left, len(victims))
	})
	// The first sample an heir scraped, per victim: when it ran.
	firstHeir := map[string]time.Time{}
	var sampled time.Duration
	waitFor(t, eventually, func() (bool, string) {
		sampled = 0
		for _, id := range victims {
			es := c.ledger.since(c.instance(id), cut, "a", "b")
			if len(es) == 0 {
				return false, fmt.Sprintf("target %s not yet scraped by a or b", c.instance(id))
			}
			first := es[0].ts
			for _, e := range es {
				first = minTime(first, e.ts)
			}
			firstHeir[id] = first
			sampled = max(sampled, first.Sub(cut))
		}
		return true, ""
	})
	t.Logf("cut-off scraper (%d targets, TTL %s): all claimed by the others after %s, all scraped by them after %s",
		len(victims), ttl, claimed.Round(time.Millisecond), sampled.Round(time.Millisecond))
	require.LessOrEqual(t, claimed, ttl+time.Second, "claims taken over")
	require.LessOrEqual(t, sampled, ttl+time.Second+interval, "scraped again")

	// Let the heirs run a few intervals, then look at what c did.
	c.waitScraped(victims, 3, cut.Add(ttl+time.Second))
	var lastExport time.Time
	worst := -time.Hour
	for _, id := range victims {
		inst := c.instance(id)
		var last time.Time
		for _, e := range c.ledger.of(inst) {
			require.False(t, e.stale, "target %s: staleness marker from %s", inst, e.scraper)
			if e.scraper != "c" {
				continue
			}
			last = maxTime(last, e.ts)
			lastExport = maxTime(lastExport, e.at)
		}
		require.False(t, last.IsZero(), "target %s: never exported by c", inst)
		// Overlap between c's last scrape and the heir's first.
		worst = max(worst, last.Sub(firstHeir[id]))
	}
	t.Logf("c's last export %s after the cut; c's last scrape to the heirs' first: %s at the closest",
		lastExport.Sub(cut).Round(time.Millisecond), (-worst).Round(time.Millisecond))
	// Fencing: c gives up its targets at its local deadline, before the
	// server can expire its lease, whatever happens to its client.
	require.Less(t, lastExport.Sub(cut), ttl, "c exported after its lease could have expired")
	require.Less(t, worst, interval, "a target was scraped by c and an heir at once")
	requireOneScraperAtATime(t, c, ids)

	// Each victim is owned by exactly one heir, which counted the failover.
	after := c.owners()
	for id, owner := range after {
		require.Contains(t, []string{"a", "b"}, owner, "target %s", id)
	}
	requireOwnersAgree(t, after, a, b)
	require.Equal(t, float64(len(victims)), a.metric("allot_failovers_total")+b.metric("allot_failovers_total")-failovers)
}
