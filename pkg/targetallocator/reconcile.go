package targetallocator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// slotKeys are the rendezvous keys of the catalog slots. They must be the
// ones services/scraper ranks slots with ("slot-<n>" hashed), so that a
// scraper and this API agree on who is preferred for a slot.
var slotKeys = func() [events.Slots]uint64 {
	var k [events.Slots]uint64
	for s := range k {
		k[s] = placement.HashString(fmt.Sprintf("slot-%d", s))
	}
	return k
}()

// loop runs reconcile rounds: Settle after a change (so that a burst of
// changes, or collectors starting together, cost one round), when a
// target's claim grace ends, and expires collectors whose polls stopped.
func (a *API) loop(ctx context.Context) {
	tick := time.NewTicker(min(max(a.cfg.CollectorTTL/10, 100*time.Millisecond), 5*time.Second))
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var due time.Time
	schedule := func(at time.Time) {
		if !due.IsZero() && !at.Before(due) {
			return
		}
		due = at
		timer.Reset(max(time.Until(at), 0))
	}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-a.kick:
			schedule(time.Now().Add(a.cfg.Settle))
		case <-timer.C:
			due = time.Time{}
			if next := a.round(ctx); !next.IsZero() {
				schedule(next)
			}
		case now := <-tick.C:
			idle, lost := a.reg.expire(now, a.cfg.CollectorTTL)
			for _, c := range lost {
				a.logger.Warn("collector lease lost; it registers again on its next poll", "collector", c.id, "err", c.sess.Err())
			}
			a.metrics.expired.Add(float64(len(idle)))
			a.metrics.lost.Add(float64(len(lost)))
			a.release(idle)
			if len(idle)+len(lost) > 0 {
				a.metrics.collectors.Set(float64(a.countCollectors()))
				a.poke()
			}
		}
	}
}

// round runs one reconcile and tells the polls waiting for it. It returns
// when the next round is due without any change (a claim grace ending).
func (a *API) round(ctx context.Context) time.Time {
	seq := a.requested.Load()
	start := time.Now()
	rev, next := a.reconcile(ctx)
	a.metrics.roundDuration.Observe(time.Since(start).Seconds())
	a.finishRound(seq, rev)
	return next
}

// work is what one round decided, computed under the read locks and
// carried out after them.
type work struct {
	claim     map[string][]string       // collector → unowned targets to claim for it
	release   map[string][]leases.Claim // collector → claims of targets that left the catalog
	takeovers []leases.Move
}

// reconcile claims unowned targets for the collectors served here, takes
// over the moves to them and releases their claims on targets that left the
// catalog. A target is claimed for collector C at once if C is the
// preferred owner of its slot over all live members (scrapers and
// collectors, as placement ranks them), and after ClaimGrace for the best
// ranked collector served here if its preferred owner is someone else who
// has not claimed it. It returns the revision its writes reached and when
// the next grace ends.
func (a *API) reconcile(ctx context.Context) (int64, time.Time) {
	if !a.cat.isSynced() || !a.mir.isSynced() || !a.membersReady.Load() {
		return 0, time.Time{}
	}
	mine, gone := a.reg.snapshot()
	if len(mine) == 0 {
		clear(a.unowned)
		return 0, time.Time{}
	}
	now := time.Now()
	watched := *a.members.Load()
	a.reRegister(ctx, now, mine, watched)

	all, ours := placementMembers(watched, mine, gone)
	allR, oursR := placement.NewRanker(all), placement.NewRanker(ours)
	var pref, best [events.Slots]string
	for s, k := range slotKeys {
		pref[s] = all[allR.Preferred(k)].ID
		best[s] = ours[oursR.Preferred(k)].ID
	}

	w, next := a.plan(now, mine, &pref, &best)
	rev := a.execute(ctx, mine, w)
	a.cat.mu.RLock()
	a.mir.forget(func(id string) bool {
		_, ok := a.cat.targets[id]
		return ok
	})
	a.cat.mu.RUnlock()
	return rev, next
}

func (a *API) plan(now time.Time, mine map[string]*collector, pref, best *[events.Slots]string) (work, time.Time) {
	w := work{claim: map[string][]string{}, release: map[string][]leases.Claim{}}
	var next time.Time
	unowned := make(map[string]time.Time, len(a.unowned))

	a.cat.mu.RLock()
	defer a.cat.mu.RUnlock()
	a.mir.mu.RLock()
	defer a.mir.mu.RUnlock()
	for id := range a.cat.targets {
		if _, ok := a.mir.claims[id]; ok {
			continue
		}
		slot := events.SlotOf(id)
		if _, ok := mine[pref[slot]]; ok {
			w.claim[pref[slot]] = append(w.claim[pref[slot]], id)
			continue
		}
		since, ok := a.unowned[id]
		if !ok {
			since = now
		}
		unowned[id] = since
		due := since.Add(a.cfg.ClaimGrace)
		if !now.Before(due) {
			w.claim[best[slot]] = append(w.claim[best[slot]], id)
		} else if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	a.unowned = unowned
	for id, cl := range a.mir.claims {
		if _, ok := mine[cl.Owner]; !ok {
			continue
		}
		if _, ok := a.cat.targets[id]; !ok {
			w.release[cl.Owner] = append(w.release[cl.Owner], cl)
		}
	}
	for id := range a.attempted {
		if _, ok := a.mir.moves[id]; !ok {
			delete(a.attempted, id)
		}
	}
	for id, mv := range a.mir.moves {
		if _, ok := mine[mv.To]; ok && a.attempted[id] != mv.Epoch {
			w.takeovers = append(w.takeovers, mv)
		}
	}
	return w, next
}

func (a *API) execute(ctx context.Context, mine map[string]*collector, w work) int64 {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var rev int64
	for id, targets := range w.claim {
		slices.Sort(targets)
		won, err := mine[id].claims.Claim(ctx, targets)
		for _, cl := range won {
			rev = max(rev, cl.Epoch)
		}
		a.metrics.claimed.Add(float64(len(won)))
		if err != nil && ctx.Err() == nil {
			a.logger.Warn("claiming for collector failed", "collector", id, "targets", len(targets), "won", len(won), "err", err)
		} else if len(won) > 0 {
			a.logger.Debug("claimed for collector", "collector", id, "targets", len(targets), "won", len(won))
		}
	}
	for _, mv := range w.takeovers {
		cl, err := mine[mv.To].claims.TakeOver(ctx, mv)
		switch {
		case err == nil:
			rev = max(rev, cl.Epoch)
			a.attempted[mv.Target] = mv.Epoch
			a.metrics.takeovers.WithLabelValues("completed").Inc()
		case errors.Is(err, leases.ErrNotOwner):
			a.attempted[mv.Target] = mv.Epoch
			a.metrics.takeovers.WithLabelValues("stale").Inc()
		default:
			// Not marked: the next round tries again.
			a.metrics.takeovers.WithLabelValues("failed").Inc()
			a.logger.Warn("taking a move over failed", "target", mv.Target, "collector", mv.To, "err", err)
		}
	}
	for id, cls := range w.release {
		released, err := mine[id].claims.Release(ctx, cls)
		a.metrics.released.Add(float64(len(released)))
		if err != nil && ctx.Err() == nil {
			a.logger.Warn("releasing claims of removed targets failed", "collector", id, "claims", len(cls), "err", err)
		}
	}
	return rev
}

// reRegister puts back the member entries of collectors served here that
// the member watch does not show: another API process serving the same
// collector may have revoked its own copy of the entry.
func (a *API) reRegister(ctx context.Context, now time.Time, mine map[string]*collector, watched []leases.Member) {
	for id, c := range mine {
		if now.Sub(c.registered) < 5*time.Second {
			continue // the watch may simply not have caught up yet
		}
		if slices.ContainsFunc(watched, func(m leases.Member) bool { return m.ID == id }) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := leases.Register(rctx, c.sess, a.cfg.Keyspace, c.member)
		cancel()
		if err != nil {
			a.logger.Warn("re-registering collector failed", "collector", id, "err", err)
		}
	}
}

// placementMembers returns the live members to rank over, all of them and
// the collectors served here, each sorted by ID. Collectors served here
// count even before the member watch shows them; collectors this process
// just let go do not count even while it still shows them.
func placementMembers(watched []leases.Member, mine map[string]*collector, gone map[string]bool) (all, ours []placement.Member) {
	seen := make(map[string]bool, len(watched)+len(mine))
	for _, m := range watched {
		if _, served := mine[m.ID]; gone[m.ID] && !served {
			continue
		}
		seen[m.ID] = true
		all = append(all, placement.Member{ID: m.ID, Weight: m.Weight, Zone: m.Zone})
	}
	for id, c := range mine {
		if !seen[id] {
			all = append(all, placement.Member{ID: id, Weight: c.member.Weight})
		}
		ours = append(ours, placement.Member{ID: id, Weight: c.member.Weight})
	}
	byID := func(a, b placement.Member) int { return strings.Compare(a.ID, b.ID) }
	slices.SortFunc(all, byID)
	slices.SortFunc(ours, byID)
	return all, ours
}
