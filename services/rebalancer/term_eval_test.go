package rebalancer

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

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
