package rebalancer

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

func TestSeriesLookup(t *testing.T) {
	loads := map[string]leases.Load{
		"a": {PerTarget: map[string]leases.TargetLoad{"t1": {Series: 10}, "t2": {Series: 30}}},
		// b's report is older: it still lists t2, which moved to a.
		"b": {PerTarget: map[string]leases.TargetLoad{"t2": {Series: 99}, "t3": {Series: 50}, "t4": {Series: 0}}},
	}
	s := newSeriesLookup(loads)
	for _, tc := range []struct {
		name, target, owner string
		want                float64
	}{
		{"owner's report", "t1", "a", 10},
		{"owner's report wins", "t2", "a", 30},
		{"other report", "t3", "a", 50},
		{"unknown: mean of reported", "t5", "a", (10 + 30 + 99 + 50) / 4.0},
		{"zero series counts as unknown", "t4", "b", (10 + 30 + 99 + 50) / 4.0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.InDelta(t, tc.want, s.of(tc.target, tc.owner), 1e-9)
		})
	}
	require.Equal(t, 1.0, newSeriesLookup(nil).of("x", "a"), "no reports: balance by count")
}

func TestOutOfBalance(t *testing.T) {
	cluster := func(per map[string]float64) ([]placement.Member, map[string]*memberLoad) {
		var ms []placement.Member
		owned := map[string]*memberLoad{}
		for _, id := range sortedKeys(per) {
			ms = append(ms, placement.Member{ID: id, Weight: 1})
			owned[id] = &memberLoad{series: per[id]}
		}
		return ms, owned
	}
	many := map[string]float64{"new": 0}
	for i := range 100 {
		many[fmt.Sprintf("s%03d", i)] = 100
	}
	for _, tc := range []struct {
		name   string
		per    map[string]float64
		drains map[string]bool
		want   bool
	}{
		{"even", map[string]float64{"a": 100, "b": 100}, nil, false},
		{"within tolerance", map[string]float64{"a": 104, "b": 100}, nil, false},
		{"busiest above", map[string]float64{"a": 120, "b": 100}, nil, true},
		{"least busy below", map[string]float64{"a": 100, "b": 100, "c": 100, "d": 90}, nil, true},
		// 100 equal scrapers and a new empty one: the busiest is only 1%
		// above the mean, the new one 100% below.
		{"new empty member among many", many, nil, true},
		{"draining member ignored", map[string]float64{"a": 100, "b": 100, "c": 0}, map[string]bool{"c": true}, false},
		{"no load", map[string]float64{"a": 0, "b": 0}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm := &term{cfg: Config{Tolerance: 0.05}, drains: tc.drains}
			ms, owned := cluster(tc.per)
			require.Equal(t, tc.want, tm.outOfBalance(ms, owned))
		})
	}
}

func TestTargetKeyMatchesCatalogSlots(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		id := fmt.Sprintf("%016x", rng.Uint64())
		slot := events.SlotOf(id)
		require.Equal(t, placement.HashString(fmt.Sprintf("slot-%d", slot)), targetKey(id), "id %s slot %d", id, slot)
	}
	for _, id := range []string{"", "not-hex", "ABCDEF0123456789", "0123456789abcdef0"} {
		require.Equal(t, placement.HashString(id), targetKey(id), "non-catalog id %q", id)
	}
}

func TestSummary(t *testing.T) {
	tm := &term{
		cfg: Config{SeriesPerScraper: 1000},
		members: map[string]leases.Member{
			"a": {ID: "a", Weight: 1}, "b": {ID: "b", Weight: 1}, "c": {ID: "c", Weight: 2}, "new": {ID: "new", Weight: 1},
		},
		// a gave 10 targets to c since the reports.
		ownedCount: map[string]int{"a": 90, "b": 100, "c": 110, "gone": 5},
	}
	loads := map[string]leases.Load{
		"a": {Targets: 100, Series: 1000}, // 10 per target
		"b": {Targets: 100, Series: 3000}, // 30 per target
		"c": {Targets: 100, Series: 2000}, // 20 per target
	}
	members, owned := tm.summary(loads)
	require.Len(t, members, 4, "live members only")
	for id, want := range map[string]memberLoad{
		"a":   {targets: 90, series: 900},
		"b":   {targets: 100, series: 3000},
		"c":   {targets: 110, series: 2200},
		"new": {targets: 0, series: 0},
	} {
		require.Equal(t, want.targets, owned[id].targets, id)
		require.InDelta(t, want.series, owned[id].series, 1e-9, id)
	}
	st, rec := tm.measure(members, owned)
	// Series per unit of weight: a 900, b 3000, c 1100, new 0; mean 6100/5.
	require.InDelta(t, 3000/(6100/5.0), st.Ratio, 1e-9)
	// Targets per unit of weight: a 90, b 100, c 55, new 0; mean 300/5.
	require.InDelta(t, 100/(300/5.0), st.ByCountRatio, 1e-9)
	require.Equal(t, 7, rec, "ceil(6100 / 1000)")

	// Without reports: 1 per target, which balances by count.
	_, owned = tm.summary(nil)
	require.InDelta(t, 90.0, owned["a"].series, 1e-9)
}

// zoneTerm is a leader's term over scrapers a1, a2 (zone a) and b1 (zone
// b), with the claims in owners (target → owner) and each target's zone in
// zones, every target carrying 100 series. Targets in unreported are left
// out of the load reports.
func zoneTerm(t *testing.T, aware bool, owners, zones map[string]string, unreported ...string) (*term, map[string]leases.Load) {
	t.Helper()
	r, err := New(Config{ZoneAware: aware}, new(clientv3.Client), nil, nil)
	require.NoError(t, err)
	tm := &term{
		r: r, cfg: r.cfg, logger: r.logger,
		members: map[string]leases.Member{
			"a1": {ID: "a1", Zone: "a", Weight: 1}, "a2": {ID: "a2", Zone: "a", Weight: 1}, "b1": {ID: "b1", Zone: "b", Weight: 1},
		},
		drains: map[string]bool{}, claims: map[string]leases.Claim{}, ownedCount: map[string]int{},
		pending: map[string]*pendingMove{},
	}
	loads := map[string]leases.Load{}
	for target, owner := range owners {
		tm.claims[target] = leases.Claim{Target: target, Owner: owner, Epoch: 1}
		tm.ownedCount[owner]++
		l := loads[owner]
		if l.PerTarget == nil {
			l = leases.Load{Scraper: owner, PerTarget: map[string]leases.TargetLoad{}}
		}
		l.Targets++
		l.Series += 100
		if !slices.Contains(unreported, target) {
			l.PerTarget[target] = leases.TargetLoad{Series: 100, SamplesPerSecond: 10, ScrapeSecondsPerSecond: 0.001, Zone: zones[target]}
		}
		loads[owner] = l
	}
	return tm, loads
}

// TestEvaluateZones: zone-aware, a balanced cluster with targets outside
// their zone is planned back into it (and then left alone); without zone
// awareness, or for targets whose zone is not known yet or has no scraper
// left, nothing moves for zones.
func TestEvaluateZones(t *testing.T) {
	// 20 targets of zone a, 10 of zone b, 10 per scraper: a2 and b1 each
	// hold 5 of the other zone's.
	owners, zones := map[string]string{}, map[string]string{}
	for i := range 30 {
		id := fmt.Sprintf("%016x", uint64(i+1)*0x9e3779b97f4a7c15)
		zones[id] = "a"
		if i >= 20 {
			zones[id] = "b"
		}
		switch {
		case i < 10:
			owners[id] = "a1"
		case i < 15 || (i >= 20 && i < 25):
			owners[id] = "b1"
		default:
			owners[id] = "a2"
		}
	}
	away := func(owners map[string]string) []string {
		var out []string
		for id, o := range owners {
			if zones[id] != o[:1] {
				out = append(out, id)
			}
		}
		slices.Sort(out)
		return out
	}
	require.Len(t, away(owners), 10)
	unknown := away(owners)[0] // in no report

	for _, tc := range []struct {
		name       string
		aware      bool
		unreported []string
		drained    string
		// wantAway: targets still outside their zone after the plan.
		wantAway []string
	}{
		{name: "zone-aware", aware: true},
		{name: "not zone-aware", aware: false, wantAway: away(owners)},
		{name: "zone not reported yet", aware: true, unreported: []string{unknown}, wantAway: []string{unknown}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tm, loads := zoneTerm(t, tc.aware, owners, zones, tc.unreported...)
			c, exact := tm.cluster(loads)
			require.False(t, tm.outOfBalance(c.Members, exact), "balanced by series")
			require.Equal(t, tc.aware, tm.reportedAway(loads))
			if tc.aware {
				require.Equal(t, 10-len(tc.unreported), tm.away(c))
			} else {
				require.Zero(t, tm.away(c))
			}
			for _, tg := range c.Targets {
				if slices.Contains(tc.unreported, tg.ID) {
					require.Empty(t, tg.Zone)
					require.Equal(t, tc.aware, c.Moving[tg.ID], "unknown zone: left where it is")
				} else {
					require.Equal(t, zones[tg.ID], tg.Zone)
				}
			}

			tm.evaluate(context.Background(), loads, true)
			after := maps.Clone(owners)
			for _, q := range tm.queue {
				require.Equal(t, placement.ReasonZone, q.Reason, "%+v", q.Move)
				require.Equal(t, owners[q.Target], q.From)
				after[q.Target] = q.To
			}
			require.ElementsMatch(t, tc.wantAway, away(after))

			// Applied, the plan is stable: planning again moves nothing.
			tm2, loads2 := zoneTerm(t, tc.aware, after, zones, tc.unreported...)
			tm2.evaluate(context.Background(), loads2, true)
			require.Empty(t, tm2.queue)
		})
	}

	t.Run("zone without a scraper left", func(t *testing.T) {
		// b1 drains: zone b has no scraper to keep its targets, and b1's
		// targets go to zone a.
		tm, loads := zoneTerm(t, true, owners, zones)
		tm.drains["b1"] = true
		tm.evaluate(context.Background(), loads, true)
		require.NotEmpty(t, tm.queue)
		for _, q := range tm.queue {
			require.NotEqual(t, "b1", q.To, "%+v", q.Move)
			if q.From == "b1" {
				require.Equal(t, placement.ReasonDrain, q.Reason)
			}
		}
	})
}
