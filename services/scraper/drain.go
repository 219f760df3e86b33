package scraper

import (
	"context"
	"maps"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// Draining: a scraper marked for draining (`allot drain`) is having its
// targets moved off by the rebalancer, which moves none onto it. So that
// failover does not hand it targets the rebalancer must then move off again,
// every scraper ranks slots as if drained members were not there: a drained
// scraper is nobody's first or second choice, its own included, and claims
// only what a move gives it (none). Its own targets stay tracked by id
// until they are moved.

// watchDrains feeds drain mark changes to the actor.
func (s *Scraper) watchDrains(ctx context.Context) {
	for drained := range leases.WatchDrains(ctx, s.etcd, s.cfg.Keyspace, s.logger) {
		if !s.post(ctx, func() { s.onDrains(ctx, drained) }) {
			return
		}
	}
}

// onDrains ranks the slots again over the last member set with the new
// drained set, and acts on the new ranking as on a member set change:
// slots where we became first choice are claimed, and the followed slots
// follow. Until the first member set arrives there is nothing to rank; that
// one is ranked with the drained set kept here. The member set settles for
// slotsSettle before anything is claimed, which leaves the drain watch's
// first listing, started with the member watch, time to arrive.
func (s *Scraper) onDrains(ctx context.Context, drained map[string]bool) {
	a := &s.a
	if maps.Equal(a.drained, drained) {
		return
	}
	if drained[s.cfg.ID] != a.drained[s.cfg.ID] {
		s.logger.Info("drain mark changed; a drained scraper claims nothing new", "drained", drained[s.cfg.ID])
	}
	a.drained = drained
	if a.rank == nil {
		return
	}
	// Targets of slots this scraper now ranks for but did not keep are
	// adopted when their owner goes (adopt).
	s.onMembers(ctx, a.members)
}

// undrained is ms without the drained members, or all of ms if every one is
// drained: with nobody else to take them, the targets are better scraped by
// a drained scraper than by none.
func undrained(ms []placement.Member, drained map[string]bool) []placement.Member {
	if len(drained) == 0 {
		return ms
	}
	out := make([]placement.Member, 0, len(ms))
	for _, m := range ms {
		if !drained[m.ID] {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		return ms
	}
	return out
}
