package scraper

import (
	"fmt"
	"slices"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// slotKeys are the rendezvous keys of the catalog slots, "slot-<n>" hashed:
// every process must rank slots over the same keys.
var slotKeys = func() [events.Slots]uint64 {
	var k [events.Slots]uint64
	for s := range k {
		k[s] = placement.HashString(fmt.Sprintf("slot-%d", s))
	}
	return k
}()

// notRanked is the rank of a slot this scraper is neither first nor second
// choice for.
const notRanked = -1

// ranking is this scraper's place in the rendezvous ranking of every slot
// over a member set, plus the same with one member left out (a failed
// owner), computed on demand and cached. Drained members are in members
// but left out of the ranks (see undrained).
type ranking struct {
	self    string
	members []placement.Member
	drained map[string]bool
	ranks   [events.Slots]int8
	without map[string]*[events.Slots]int8
}

// newRanking ranks slots over live, with self added if it is missing (its
// own registration may not have been seen yet; it is live by definition),
// leaving out the members in drained (see undrained), which it keeps and
// does not modify.
func newRanking(self placement.Member, live []leases.Member, drained map[string]bool) *ranking {
	ms := make([]placement.Member, 0, len(live)+1)
	seen := false
	for _, m := range live {
		if m.Kind != "" && m.Kind != leases.KindScraper {
			continue
		}
		if m.ID == self.ID {
			seen = true
		}
		ms = append(ms, placement.Member{ID: m.ID, Weight: m.Weight, Zone: m.Zone})
	}
	if !seen {
		ms = append(ms, self)
	}
	slices.SortFunc(ms, func(a, b placement.Member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	r := &ranking{self: self.ID, members: ms, drained: drained, without: map[string]*[events.Slots]int8{}}
	r.ranks = rankSlots(self.ID, undrained(ms, drained))
	return r
}

func rankSlots(self string, ms []placement.Member) [events.Slots]int8 {
	var out [events.Slots]int8
	for s := range out {
		out[s] = notRanked
		for i, idx := range placement.Rank(slotKeys[s], ms, 2) {
			if ms[idx].ID == self {
				out[s] = int8(i)
			}
		}
	}
	return out
}

// rank is this scraper's rank for slot: 0, 1 or notRanked.
func (r *ranking) rank(slot int) int {
	if slot < 0 || slot >= events.Slots {
		return notRanked
	}
	return int(r.ranks[slot])
}

// rankWithout is the rank for slot if member id were gone. A claim deleted
// from under another owner means that owner is gone (lease expired or
// revoked) even before the member set says so.
func (r *ranking) rankWithout(slot int, id string) int {
	if id == "" || id == r.self || slot < 0 || slot >= events.Slots {
		return r.rank(slot)
	}
	ranks, ok := r.without[id]
	if !ok {
		i := slices.IndexFunc(r.members, func(m placement.Member) bool { return m.ID == id })
		if i < 0 {
			r.without[id] = nil
			return r.rank(slot)
		}
		ms := slices.Delete(slices.Clone(r.members), i, i+1)
		rs := rankSlots(r.self, undrained(ms, r.drained))
		ranks = &rs
		// Bound the cache: a mass failure names a handful of owners.
		if len(r.without) > 16 {
			clear(r.without)
		}
		r.without[id] = ranks
	}
	if ranks == nil {
		return r.rank(slot)
	}
	return int(ranks[slot])
}

// followed lists the slots this scraper is first or second choice for.
func (r *ranking) followed() []int {
	var out []int
	for s, rk := range r.ranks {
		if rk != notRanked {
			out = append(out, s)
		}
	}
	return out
}

// lost says whether a member of r is missing from next.
func (r *ranking) lost(next *ranking) bool {
	for _, m := range r.members {
		if !slices.ContainsFunc(next.members, func(n placement.Member) bool { return n.ID == m.ID }) {
			return true
		}
	}
	return false
}
