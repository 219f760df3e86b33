package scraper

import (
	"fmt"
	"slices"
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
