package scraper

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

func members(ids ...string) []leases.Member {
	out := make([]leases.Member, len(ids))
	for i, id := range ids {
		out[i] = leases.Member{ID: id, Weight: 1, Kind: leases.KindScraper}
	}
	return out
}

func self(id string) placement.Member { return placement.Member{ID: id, Weight: 1} }

func TestRankingPartitionsSlots(t *testing.T) {
	t.Parallel()
	for _, n := range []int{1, 2, 3, 10} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var ids []string
			for i := range n {
				ids = append(ids, fmt.Sprintf("s%d", i))
			}
			live := members(ids...)
			var first, second [events.Slots]int
			followed := 0
			for _, id := range ids {
				r := newRanking(self(id), live, nil)
				followed += len(r.followed())
				for s := range events.Slots {
					switch r.rank(s) {
					case 0:
						first[s]++
					case 1:
						second[s]++
					}
				}
			}
			// Every slot has exactly one first choice, and one second
			// choice when there are two members or more.
			for s := range events.Slots {
				require.Equal(t, 1, first[s], "slot %d", s)
				require.Equal(t, min(1, n-1), second[s], "slot %d", s)
			}
			require.Equal(t, min(2, n)*events.Slots, followed)
		})
	}
}

func TestRankingAddsSelf(t *testing.T) {
	t.Parallel()
	// Before its own registration shows up, a scraper still ranks itself.
	alone := newRanking(self("a"), nil, nil)
	require.Len(t, alone.followed(), events.Slots)
	for s := range events.Slots {
		require.Equal(t, 0, alone.rank(s))
	}
	withOthers := newRanking(self("a"), members("b", "c"), nil)
	registered := newRanking(self("a"), members("a", "b", "c"), nil)
	require.Equal(t, registered.ranks, withOthers.ranks)
}

func TestRankingIgnoresCollectors(t *testing.T) {
	t.Parallel()
	live := members("a", "b")
	live = append(live, leases.Member{ID: "otel", Weight: 1, Kind: leases.KindCollector})
	require.Equal(t, newRanking(self("a"), members("a", "b"), nil).ranks, newRanking(self("a"), live, nil).ranks)
}

func TestRankWithout(t *testing.T) {
	t.Parallel()
	r := newRanking(self("a"), members("a", "b", "c", "d"), nil)
	without := newRanking(self("a"), members("a", "c", "d"), nil)
	for s := range events.Slots {
		require.Equal(t, without.rank(s), r.rankWithout(s, "b"), "slot %d", s)
		// Leaving out ourselves or a stranger changes nothing.
		require.Equal(t, r.rank(s), r.rankWithout(s, "a"))
		require.Equal(t, r.rank(s), r.rankWithout(s, "zz"))
		require.Equal(t, r.rank(s), r.rankWithout(s, ""))
	}
	require.Equal(t, notRanked, r.rank(-1))
	require.Equal(t, notRanked, r.rankWithout(events.Slots, "b"))
}

func TestRankingWeights(t *testing.T) {
	t.Parallel()
	live := []leases.Member{{ID: "big", Weight: 3}, {ID: "small", Weight: 1}}
	big := newRanking(placement.Member{ID: "big", Weight: 3}, live, nil)
	firsts := 0
	for s := range events.Slots {
		if big.rank(s) == 0 {
			firsts++
		}
	}
	// About 3/4 of the slots; rendezvous hashing over 1024 keys.
	require.InDelta(t, 0.75*events.Slots, firsts, 0.06*events.Slots)
}

func TestRankingDrained(t *testing.T) {
	t.Parallel()
	set := func(ids ...string) map[string]bool {
		out := map[string]bool{}
		for _, id := range ids {
			out[id] = true
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		live    []string
		drained map[string]bool
		without string // rankWithout this member; "" for rank
		// over is the member set every scraper must rank as if nobody were
		// drained; a scraper not in it ranks for no slot.
		over []string
	}{
		{name: "nothing drained", live: []string{"a", "b", "c"}, over: []string{"a", "b", "c"}},
		{name: "one of three", live: []string{"a", "b", "c"}, drained: set("c"), over: []string{"a", "b"}},
		{name: "two of four", live: []string{"a", "b", "c", "d"}, drained: set("b", "d"), over: []string{"a", "c"}},
		{name: "stranger's mark", live: []string{"a", "b"}, drained: set("x"), over: []string{"a", "b"}},
		{name: "drained and not yet registered", live: []string{"b", "c"}, drained: set("a"), over: []string{"b", "c"}},
		{name: "every member: rank as if none", live: []string{"a", "b"}, drained: set("a", "b"), over: []string{"a", "b"}},
		{name: "failed owner", live: []string{"a", "b", "c", "d"}, drained: set("c"), without: "b", over: []string{"a", "d"}},
		{name: "failed drained owner", live: []string{"a", "b", "c"}, drained: set("c"), without: "c", over: []string{"a", "b"}},
		{name: "failed last undrained owner", live: []string{"a", "b", "c"}, drained: set("b", "c"), without: "a", over: []string{"b", "c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			selves := tc.live
			if !slices.Contains(selves, "a") {
				selves = append(slices.Clone(selves), "a")
			}
			for _, id := range selves {
				if id == tc.without {
					continue
				}
				r := newRanking(self(id), members(tc.live...), tc.drained)
				var want *ranking
				if slices.Contains(tc.over, id) {
					want = newRanking(self(id), members(tc.over...), nil)
				}
				for s := range events.Slots {
					got := r.rank(s)
					if tc.without != "" {
						got = r.rankWithout(s, tc.without)
					}
					if want == nil {
						require.Equal(t, notRanked, got, "%s, slot %d", id, s)
					} else {
						require.Equal(t, want.rank(s), got, "%s, slot %d", id, s)
					}
				}
				if tc.without == "" && want == nil {
					require.Empty(t, r.followed(), "%s follows slots", id)
				}
			}
		})
	}
}

// zoneMembers is a member set over zones: member "<zone><n>" in each zone
// named in sizes, with that many members.
func zoneMembers(sizes map[string]int) []leases.Member {
	var out []leases.Member
	for z, n := range sizes {
		for i := range n {
			out = append(out, leases.Member{ID: fmt.Sprintf("%s%d", z, i), Zone: z, Weight: float64(1 + i%2), Kind: leases.KindScraper})
		}
	}
	return out
}

func zoneSelf(m leases.Member) placement.Member {
	return placement.Member{ID: m.ID, Weight: m.Weight, Zone: m.Zone}
}

// zoneTarget is a target of slot with zone z under DefaultZoneLabel.
func zoneTarget(slot int, z string) *target {
	t := &target{slot: slot, t: events.Target{Labels: map[string]string{}}}
	if z != "" {
		t.t.Labels[DefaultZoneLabel] = z
	}
	return t
}

var zoned = zoning{aware: true, label: DefaultZoneLabel}

// TestRankingZonesAgreeWithPlan checks the scrapers' zone-aware choices
// against placement: for every slot and target zone, exactly one scraper
// is first choice, and it is the member placement.Plan (zone-aware, keyed
// by the slot as the rebalancer keys targets) places the target on; the
// second choice is one other scraper, in the target's zone while it has
// another member there; and targets without a zone, or of a zone without
// scrapers, have RankZones' first two.
func TestRankingZonesAgreeWithPlan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		sizes   map[string]int
		drained map[string]bool
	}{
		{"three zones", map[string]int{"a": 3, "b": 2, "c": 1}, nil},
		{"one zone", map[string]int{"a": 4}, nil},
		{"a zone of one", map[string]int{"a": 1, "b": 3}, nil},
		{"members without a zone", map[string]int{"": 2, "b": 2}, nil},
		{"drained members left out", map[string]int{"a": 3, "b": 2}, map[string]bool{"a0": true, "b1": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := zoneMembers(tc.sizes)
			rankings := map[string]*ranking{}
			var undrainedMs []placement.Member
			for _, m := range live {
				rankings[m.ID] = newZoneRanking(zoneSelf(m), zoned, live, tc.drained)
				if !tc.drained[m.ID] {
					undrainedMs = append(undrainedMs, zoneSelf(m))
				}
			}
			slices.SortFunc(undrainedMs, func(a, b placement.Member) int { return strings.Compare(a.ID, b.ID) })
			zoneOf := map[string]string{}
			for _, m := range live {
				zoneOf[m.ID] = m.Zone
			}
			// "x" has no scraper; "" is no zone.
			for _, z := range []string{"a", "b", "c", "", "x"} {
				inZone := 0
				for _, m := range undrainedMs {
					if z != "" && m.Zone == z {
						inZone++
					}
				}
				for s := range events.Slots {
					st := zoneTarget(s, z)
					var first, second []string
					for id, r := range rankings {
						switch r.of(st) {
						case 0:
							first = append(first, id)
						case 1:
							second = append(second, id)
						}
						// A target is claimed only in a followed slot.
						if r.of(st) != notRanked {
							require.NotEqual(t, notRanked, r.rank(s), "%s: slot %d not followed", id, s)
						}
					}
					require.Len(t, first, 1, "zone %q slot %d", z, s)
					require.Len(t, second, min(1, len(undrainedMs)-1), "zone %q slot %d", z, s)

					// Every member carries the same load per unit of weight,
					// so that the plan places the target by preference alone
					// (not on the least busy member).
					targets := []placement.Target{{ID: "t", Key: slotKeys[s], Series: 1, Zone: z}}
					for _, m := range undrainedMs {
						targets = append(targets, placement.Target{ID: "bg-" + m.ID, Series: 1000 * m.Weight, Owner: m.ID, Zone: m.Zone})
					}
					moves := placement.Plan(placement.Cluster{Members: undrainedMs, Targets: targets}, nil, placement.PlanConfig{ZoneAware: true})
					require.Len(t, moves, 1)
					require.Equal(t, "t", moves[0].Target)
					require.Equal(t, moves[0].To, first[0], "zone %q slot %d: scrapers and plan disagree", z, s)

					switch {
					case inZone >= 2:
						require.Equal(t, z, zoneOf[second[0]], "zone %q slot %d: second choice leaves the zone", z, s)
					case inZone == 0 && len(second) == 1:
						want := placement.RankZones(slotKeys[s], undrainedMs, 2)
						require.Equal(t, []string{undrainedMs[want[0]].ID, undrainedMs[want[1]].ID}, []string{first[0], second[0]}, "zone %q slot %d", z, s)
					}
				}
			}
		})
	}
}

// TestRankingZonesSpread: targets land in their zone when it has scrapers,
// and are spread over every scraper when it has none.
func TestRankingZonesSpread(t *testing.T) {
	t.Parallel()
	live := zoneMembers(map[string]int{"a": 2, "b": 2})
	firsts := map[string]map[string]int{} // target zone → scraper → slots it is first for
	for _, m := range live {
		r := newZoneRanking(zoneSelf(m), zoned, live, nil)
		for _, z := range []string{"a", "b", "x", ""} {
			if firsts[z] == nil {
				firsts[z] = map[string]int{}
			}
			for s := range events.Slots {
				if r.of(zoneTarget(s, z)) == 0 {
					firsts[z][m.ID]++
				}
			}
		}
	}
	require.Equal(t, []string{"a0", "a1"}, slices.Sorted(maps.Keys(firsts["a"])))
	require.Equal(t, []string{"b0", "b1"}, slices.Sorted(maps.Keys(firsts["b"])))
	for _, z := range []string{"x", ""} {
		// Weights 1 and 2 in each zone: about 1/6 and 2/6 of the slots.
		for _, m := range live {
			require.InDelta(t, m.Weight/6*events.Slots, firsts[z][m.ID], 0.06*events.Slots, "zone %q, %s", z, m.ID)
		}
	}
}

// TestRankingZonesOff: without zone awareness the zones of scrapers and
// targets change nothing.
func TestRankingZonesOff(t *testing.T) {
	t.Parallel()
	live := zoneMembers(map[string]int{"a": 2, "b": 3})
	var plain []leases.Member
	for _, m := range live {
		m.Zone = ""
		plain = append(plain, m)
	}
	for _, m := range live {
		r := newZoneRanking(zoneSelf(m), zoning{label: DefaultZoneLabel}, live, nil)
		want := newRanking(placement.Member{ID: m.ID, Weight: m.Weight}, plain, nil)
		require.Equal(t, want.ranks, r.ranks)
		for s := range events.Slots {
			for _, z := range []string{"a", "b", "x"} {
				require.Equal(t, want.rank(s), r.of(zoneTarget(s, z)))
				require.Equal(t, want.rankWithout(s, "b1"), r.ofWithout(zoneTarget(s, z), "b1"))
			}
		}
	}
}

// TestRankingZonesWithout: when a member fails, a target of its zone goes
// to the zone's next member, and to the rest once the zone is empty.
func TestRankingZonesWithout(t *testing.T) {
	t.Parallel()
	live := zoneMembers(map[string]int{"a": 2, "b": 2})
	for _, m := range live {
		r := newZoneRanking(zoneSelf(m), zoned, live, nil)
		for _, gone := range []string{"a0", "b1"} {
			var rest []leases.Member
			for _, o := range live {
				if o.ID != gone {
					rest = append(rest, o)
				}
			}
			want := newZoneRanking(zoneSelf(m), zoned, rest, nil)
			for s := range events.Slots {
				for _, z := range []string{"a", "b", ""} {
					st := zoneTarget(s, z)
					if m.ID == gone {
						require.Equal(t, r.of(st), r.ofWithout(st, gone), "ourselves")
						continue
					}
					require.Equal(t, want.of(st), r.ofWithout(st, gone), "%s without %s, zone %q slot %d", m.ID, gone, z, s)
				}
				require.Equal(t, want.rank(s), r.rankWithout(s, gone))
			}
		}
	}
}
