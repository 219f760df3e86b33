package placement

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

func TestRankerMatchesPreferred(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, tc := range []struct {
		name    string
		members []Member
	}{
		{"one", members(1)},
		{"equal", members(25)},
		{"equal weight 3", []Member{{ID: "a", Weight: 3}, {ID: "b", Weight: 3}, {ID: "c", Weight: 3}}},
		{"zero weights count as 1", []Member{{ID: "a"}, {ID: "b", Weight: 1}, {ID: "c", Weight: -2}}},
		{"weighted", []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 2.5}, {ID: "c", Weight: 0.5}, {ID: "d", Weight: 1}}},
		{"none", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rk := NewRanker(tc.members)
			for k := 0; k < 20000; k++ {
				key := r.Uint64()
				if got, want := rk.Preferred(key), Preferred(key, tc.members); got != want {
					t.Fatalf("key %x: Ranker.Preferred = %d, Preferred = %d", key, got, want)
				}
				for i := range tc.members {
					if got, want := rk.Score(key, i), Score(key, tc.members[i]); got != want {
						t.Fatalf("key %x member %d: Ranker.Score = %v, Score = %v", key, i, got, want)
					}
				}
			}
		})
	}
}

func TestRankerPreferredInIsPreferredOfSubset(t *testing.T) {
	ms := members(12)
	ms[3].Weight, ms[7].Weight = 2, 0.5
	rk := NewRanker(ms)
	among := []int32{1, 3, 4, 7, 11}
	sub := make([]Member, len(among))
	for j, i := range among {
		sub[j] = ms[i]
	}
	for k := 0; k < 5000; k++ {
		key := HashString(fmt.Sprint(k))
		if got, want := rk.preferredIn(key, among), among[Preferred(key, sub)]; got != want {
			t.Fatalf("key %d: preferredIn = %d, want %d", k, got, want)
		}
	}
}

func TestRankZones(t *testing.T) {
	ms := []Member{
		{ID: "a1", Zone: "a"}, {ID: "a2", Zone: "a"}, {ID: "a3", Zone: "a"},
		{ID: "b1", Zone: "b"}, {ID: "b2", Zone: "b"},
		{ID: "c1", Zone: "c"},
	}
	for k := 0; k < 2000; k++ {
		key := HashString(fmt.Sprint(k))
		got := RankZones(key, ms, len(ms))
		rank := Rank(key, ms, len(ms))
		if got[0] != rank[0] {
			t.Fatalf("key %d: RankZones starts with %d, Rank with %d", k, got[0], rank[0])
		}
		zones := map[string]bool{}
		for _, i := range got[:3] {
			zones[ms[i].Zone] = true
		}
		if len(zones) != 3 {
			t.Fatalf("key %d: first three %v are not in three zones", k, got[:3])
		}
		seen := map[int]bool{}
		for _, i := range got {
			seen[i] = true
		}
		if len(seen) != len(ms) {
			t.Fatalf("key %d: RankZones %v is not a permutation", k, got)
		}
	}
	if got := RankZones(1, ms, 0); got != nil {
		t.Errorf("RankZones k=0 = %v", got)
	}
	if got := RankZones(1, ms, 2); len(got) != 2 || ms[got[0]].Zone == ms[got[1]].Zone {
		t.Errorf("RankZones k=2 = %v, want two zones", got)
	}
	same := members(5)
	for k := 0; k < 100; k++ {
		key := uint64(k) * 0x9e3779b97f4a7c15
		if got, want := RankZones(key, same, 3), Rank(key, same, 3); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("one zone: RankZones = %v, Rank = %v", got, want)
		}
	}
}
