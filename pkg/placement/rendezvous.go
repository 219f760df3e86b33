package placement

import (
	"math"
	"sort"
)

// Member is a candidate owner.
type Member struct {
	ID string
	// Weight is the member's relative capacity; zero or less counts as 1.
	Weight float64
	// Zone is optional; see RankZones.
	Zone string
}

// Score is member m's weighted rendezvous score for key. Higher wins.
//
// It is -w/ln(u) with u uniform in (0,1) from a hash of key and member, the
// form that makes each member win a share of keys proportional to its weight.
func Score(key uint64, m Member) float64 {
	w := m.Weight
	if w <= 0 {
		w = 1
	}
	h := mix(key ^ hashString(m.ID))
	// Take the top 53 bits so u is an exact float64 in (0,1).
	u := (float64(h>>11) + 0.5) / (1 << 53)
	return -w / math.Log(u)
}

// Preferred returns the member with the highest score for key, or -1 if
// members is empty. Ties (practically impossible) go to the lower ID.
func Preferred(key uint64, members []Member) int {
	best, bestScore := -1, 0.0
	for i := range members {
		s := Score(key, members[i])
		if best < 0 || s > bestScore || (s == bestScore && members[i].ID < members[best].ID) {
			best, bestScore = i, s
		}
	}
	return best
}

// Rank returns the indexes of the first k members in order of preference for
// key (k is capped at len(members)).
func Rank(key uint64, members []Member, k int) []int {
	if k > len(members) {
		k = len(members)
	}
	if k <= 0 {
		return nil
	}
	type scored struct {
		i int
		s float64
	}
	all := make([]scored, len(members))
	for i := range members {
		all[i] = scored{i, Score(key, members[i])}
	}
	sort.Slice(all, func(a, b int) bool {
		if all[a].s != all[b].s {
			return all[a].s > all[b].s
		}
		return members[all[a].i].ID < members[all[b].i].ID
	})
	out := make([]int, k)
	for j := 0; j < k; j++ {
		out[j] = all[j].i
	}
	return out
}

// HashString is the 64-bit FNV-1a hash used for keys throughout allot, so
// that every process computes the same placement for the same input.
func HashString(s string) uint64 { return hashString(s) }

func hashString(s string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

// mix is the splitmix64 finaliser: FNV alone is too weak in its high bits
// for the key^member combination to be uniform.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
