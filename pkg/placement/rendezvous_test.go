package placement

import (
	"fmt"
	"math"
	"testing"
)

func members(n int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("scraper-%d", i), Weight: 1}
	}
	return ms
}

func TestPreferredSpreadsEvenly(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []Member
		keys    int
	}{
		{"3 equal", members(3), 30000},
		{"10 equal", members(10), 100000},
		{"weighted 1:2:1", []Member{{ID: "a", Weight: 1}, {ID: "b", Weight: 2}, {ID: "c", Weight: 1}}, 40000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counts := make([]int, len(tc.members))
			var total float64
			for _, m := range tc.members {
				total += m.Weight
			}
			for k := 0; k < tc.keys; k++ {
				counts[Preferred(HashString(fmt.Sprint(k)), tc.members)]++
			}
			for i, m := range tc.members {
				want := float64(tc.keys) * m.Weight / total
				if dev := math.Abs(float64(counts[i])-want) / want; dev > 0.05 {
					t.Errorf("member %s got %d keys, want about %.0f (off by %.1f%%)", m.ID, counts[i], want, dev*100)
				}
			}
		})
	}
}

func TestPreferredMovesOnlyToNewMember(t *testing.T) {
	before, after := members(10), members(11)
	const keys = 50000
	moved := 0
	for k := 0; k < keys; k++ {
		key := HashString(fmt.Sprint(k))
		b, a := Preferred(key, before), Preferred(key, after)
		if b != a {
			moved++
			if after[a].ID != "scraper-10" {
				t.Fatalf("key %d moved from %s to %s, not to the new member", k, before[b].ID, after[a].ID)
			}
		}
	}
	if frac := float64(moved) / keys; frac > 1.1/11 {
		t.Errorf("moved %.3f of keys, want <= %.3f", frac, 1.1/11)
	}
}

func TestRankStartsWithPreferred(t *testing.T) {
	ms := members(7)
	for k := 0; k < 1000; k++ {
		key := HashString(fmt.Sprint(k))
		r := Rank(key, ms, 3)
		if len(r) != 3 || r[0] != Preferred(key, ms) {
			t.Fatalf("key %d: Rank=%v, Preferred=%d", k, r, Preferred(key, ms))
		}
	}
	if got := Rank(1, ms, 0); got != nil {
		t.Errorf("Rank with k=0 = %v, want nil", got)
	}
	if got := Preferred(1, nil); got != -1 {
		t.Errorf("Preferred with no members = %d, want -1", got)
	}
}
