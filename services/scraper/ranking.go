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

// zoning is how targets are placed by zone: Config.ZoneAware and
// Config.ZoneLabel.
type zoning struct {
	aware bool
	label string
}

func (s *Scraper) zoning() zoning { return zoning{aware: s.cfg.ZoneAware, label: s.cfg.ZoneLabel} }

// targetZone is t's zone: the value of its zone label, "" if none.
func targetZone(t events.Target, label string) string {
	if label == "" {
		return ""
	}
	return t.Labels[label]
}

// ranking is this scraper's place in the rendezvous ranking of every slot
// over a member set, plus the same with one member left out (a failed
// owner), computed on demand and cached. Drained members are in members
// but left out of the ranks (see undrained).
//
// Without zones a target's first and second choices are those of its slot.
// Zone-aware, they are what placement.Plan does with a zone-aware config:
// a target whose zone has members goes to its slot's preferred member among
// them (then the next one of the zone, or if it has only one, the next
// outside it), and any other target to its slot's preferred member overall,
// with a second choice in another zone (placement.RankZones), so that
// losing a zone never loses both. So the rebalancer, which keys a target by
// its slot, plans the same first choice the scrapers claim by.
type ranking struct {
	self    string
	zones   zoning
	members []placement.Member
	drained map[string]bool
	ranks   *slotRanks
	without map[string]*slotRanks
}

// slotRanks is this scraper's rank (0, 1 or notRanked) for the targets of
// every slot over one member set.
type slotRanks struct {
	// any is for targets that may go anywhere: no zone, a zone without
	// members, or not zone-aware.
	any [events.Slots]int8
	// zoned is, per zone with members, for the targets of that zone; nil
	// unless zone-aware.
	zoned map[string]*[events.Slots]int8
	// best is the best of the above: whether the slot is followed.
	best [events.Slots]int8
}

// newRanking is newZoneRanking without zones.
func newRanking(self placement.Member, live []leases.Member, drained map[string]bool) *ranking {
	return newZoneRanking(self, zoning{}, live, drained)
}

// newZoneRanking ranks slots over live, with self added if it is missing
// (its own registration may not have been seen yet; it is live by
// definition), leaving out the members in drained (see undrained), which it
// keeps and does not modify.
func newZoneRanking(self placement.Member, zones zoning, live []leases.Member, drained map[string]bool) *ranking {
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
	r := &ranking{self: self.ID, zones: zones, members: ms, drained: drained, without: map[string]*slotRanks{}}
	r.ranks = rankSlots(self.ID, undrained(ms, drained), zones.aware)
	return r
}

func rankSlots(self string, ms []placement.Member, zoneAware bool) *slotRanks {
	out := &slotRanks{}
	for s := range out.any {
		out.any[s] = notRanked
	}
	me := slices.IndexFunc(ms, func(m placement.Member) bool { return m.ID == self })
	if !zoneAware {
		if me >= 0 {
			for s := range out.any {
				for i, idx := range placement.Rank(slotKeys[s], ms, 2) {
					if idx == me {
						out.any[s] = int8(i)
					}
				}
			}
		}
		out.best = out.any
		return out
	}
	out.zoned = map[string]*[events.Slots]int8{}
	for _, m := range ms {
		if m.Zone != "" && out.zoned[m.Zone] == nil {
			z := new([events.Slots]int8)
			for s := range z {
				z[s] = notRanked
			}
			out.zoned[m.Zone] = z
		}
	}
	if me >= 0 {
		for s := range out.any {
			order := placement.Rank(slotKeys[s], ms, len(ms))
			out.any[s] = rankIn(order, me, func(i int) bool { return i == order[0] }, func(i int) bool {
				return ms[i].Zone != ms[order[0]].Zone
			})
			for zone, z := range out.zoned {
				inZone := func(i int) bool { return ms[i].Zone == zone }
				z[s] = rankIn(order, me, inZone, func(i int) bool { return !inZone(i) })
			}
		}
	}
	out.best = out.any
	for _, z := range out.zoned {
		for s, r := range z {
			if r != notRanked && (out.best[s] == notRanked || r < out.best[s]) {
				out.best[s] = r
			}
		}
	}
	return out
}

// rankIn is member me's place among the first two of a choice list built
// from order (members by preference): first the members in order that
// first accepts, up to two, then those that then accepts, then the rest.
// Each member is taken once.
func rankIn(order []int, me int, first, then func(int) bool) int8 {
	var picked [2]int
	n := 0
	for _, pass := range []func(int) bool{first, then, func(int) bool { return true }} {
		for _, i := range order {
			if n == 2 {
				break
			}
			if pass(i) && !slices.Contains(picked[:n], i) {
				picked[n] = i
				n++
			}
		}
	}
	for k := range n {
		if picked[k] == me {
			return int8(k)
		}
	}
	return notRanked
}

// of is the rank of slotRanks for a target of slot in zone.
func (sr *slotRanks) of(slot int, zone string) int {
	if zone != "" && sr.zoned != nil {
		if z := sr.zoned[zone]; z != nil {
			return int(z[slot])
		}
	}
	return int(sr.any[slot])
}

// rank is this scraper's best rank for any target of slot: 0, 1 or
// notRanked. It decides what is followed; [ranking.of] decides what is
// claimed.
func (r *ranking) rank(slot int) int {
	if slot < 0 || slot >= events.Slots {
		return notRanked
	}
	return int(r.ranks.best[slot])
}

// of is this scraper's rank for target st: 0, 1 or notRanked.
func (r *ranking) of(st *target) int {
	return r.ofWithout(st, "")
}

// rankWithout is rank if member id were gone. A claim deleted from under
// another owner means that owner is gone (lease expired or revoked) even
// before the member set says so.
func (r *ranking) rankWithout(slot int, id string) int {
	if slot < 0 || slot >= events.Slots {
		return notRanked
	}
	return int(r.ranksWithout(id).best[slot])
}

// ofWithout is of if member id were gone (see rankWithout).
func (r *ranking) ofWithout(st *target, id string) int {
	if st.slot < 0 || st.slot >= events.Slots {
		return notRanked
	}
	return r.ranksWithout(id).of(st.slot, targetZone(st.t, r.zones.label))
}

// ranksWithout is the ranks over the members but id, computed once and
// cached; r.ranks if id is empty, ourselves or not a member.
func (r *ranking) ranksWithout(id string) *slotRanks {
	if id == "" || id == r.self {
		return r.ranks
	}
	ranks, ok := r.without[id]
	if !ok {
		i := slices.IndexFunc(r.members, func(m placement.Member) bool { return m.ID == id })
		if i >= 0 {
			ms := slices.Delete(slices.Clone(r.members), i, i+1)
			ranks = rankSlots(r.self, undrained(ms, r.drained), r.zones.aware)
		}
		// Bound the cache: a mass failure names a handful of owners.
		if len(r.without) > 16 {
			clear(r.without)
		}
		r.without[id] = ranks
	}
	if ranks == nil {
		return r.ranks
	}
	return ranks
}

// followed lists the slots this scraper is first or second choice for,
// for any of their targets.
func (r *ranking) followed() []int {
	var out []int
	for s, rk := range r.ranks.best {
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
