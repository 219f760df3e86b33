package scraper

import (
	"context"
	"errors"
	"time"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// Sessions, claim and move events: losing everything at once, and moving
// single targets in and out.

func (s *Scraper) onSessionStarted(gen uint64, claims *leases.Claims) {
	s.a.gen = gen
	s.a.claims = claims
	s.resync()
}

// onSessionLost stops every target at once and forgets all pending claim
// work: the lease (and every claim on it) is gone or about to be.
func (s *Scraper) onSessionLost(gen uint64) {
	a := &s.a
	if gen != a.gen {
		return
	}
	a.gen, a.claims = 0, nil
	s.gate.removeAll()
	for _, st := range a.active {
		if st.phase == phaseOwned {
			s.metrics.lost.WithLabelValues("session").Inc()
		}
		s.deactivate(st, false)
	}
	for _, st := range a.targets {
		st.phase = phaseIdle
		st.checking = false
		st.failover = false
		st.recheck, st.recheckPrev = false, ""
		s.untrack(st)
	}
	a.claimQ, a.releaseQ, a.checkQ, a.grace = nil, nil, nil, nil
	a.graceTimer.Stop()
	a.owned = 0
	s.viewMu.Lock()
	clear(s.view)
	s.viewMu.Unlock()
	// Stop the loops now, not after coalescing with whatever comes next.
	a.dirty, a.dirtySince = true, time.Time{}
}

// onClaimEvent handles a claim deletion or a move seen by session gen's
// watch; ctx ends with that session.
func (s *Scraper) onClaimEvent(ctx context.Context, gen uint64, ev leases.Event) {
	a := &s.a
	if gen != a.gen {
		return
	}
	switch ev.Type {
	case leases.Resync:
		s.resync()
		for _, st := range a.active {
			if st.phase == phaseOwned {
				s.queueCheck(st, checkOwned)
			}
		}
	case leases.ClaimDeleted:
		prev := ev.PrevOwner
		if prev == s.cfg.ID {
			prev = "" // our own earlier session's claim: rank as usual
		}
		st, ok := a.targets[ev.Target]
		if !ok {
			s.adopt(ctx, gen, ev.Target, prev)
			return
		}
		switch st.phase {
		case phaseOwned:
			if ev.PrevOwner == s.cfg.ID {
				// Ours, or an older claim of ours deleted before we claimed
				// again; the claim itself says which.
				s.queueCheck(st, checkOwned)
			}
		case phaseIdle:
			s.afterDeletion(st, prev)
		case phaseClaiming:
			st.recheck, st.recheckPrev = true, prev
			st.failover = st.failover || prev != ""
		case phaseGrace:
			if a.rank != nil && a.rank.ofWithout(st, prev) == 0 {
				st.failover = prev != ""
				s.queueClaim(st)
			}
		}
	case leases.MoveStarted:
		m := ev.Move
		if m.To != s.cfg.ID || a.movesIn[m.Target] {
			return
		}
		if st, ok := a.targets[m.Target]; ok && (st.phase == phaseOwned || st.phase == phasePreparing) {
			return
		}
		a.movesIn[m.Target] = true
		claims := a.claims
		s.goFn(func() { s.moveIn(ctx, gen, claims, m) })
	case leases.MoveEnded:
		if st, ok := a.targets[ev.Target]; ok && st.phase == phaseOwned && ev.Move.From == s.cfg.ID {
			s.queueCheck(st, checkOwned)
		}
	}
}

// prepare starts scraping a target that is being moved to us, without
// forwarding anything yet.
func (s *Scraper) prepare(gen uint64, t events.Target) bool {
	a := &s.a
	if gen != a.gen {
		return false
	}
	st, ok := a.targets[t.ID]
	if !ok {
		st = &target{t: t, slot: events.SlotOf(t.ID), tg: targetGroup(t)}
		a.targets[t.ID] = st
	}
	if st.phase != phaseIdle && st.phase != phaseGrace {
		return false
	}
	st.phase = phasePreparing
	s.gate.set(t.ID, gatePreparing)
	a.active[t.ID] = st
	delete(a.noStale, t.ID)
	s.track(st)
	s.markDirty()
	return true
}

func (s *Scraper) onTakeOver(gen uint64, m leases.Move, c leases.Claim, err error) {
	a := &s.a
	delete(a.movesIn, m.Target)
	if gen != a.gen {
		return
	}
	st, ok := a.targets[m.Target]
	if !ok || st.phase != phasePreparing {
		if err == nil {
			a.releaseQ = append(a.releaseQ, c)
		}
		return
	}
	if err != nil {
		s.metrics.movesIn.WithLabelValues("failed").Inc()
		s.logger.Info("move to us did not happen", "target", m.Target, "from", m.From, "err", err)
		s.gate.remove(m.Target)
		s.deactivate(st, false)
		st.phase = phaseIdle
		s.untrack(st)
		// A deletion of the target's claim while we prepared was not acted
		// on (the source crashed, say): if nobody owns it now and we rank
		// first, it must not wait for another scraper's grace period.
		s.queueCheck(st, checkMoveFailed)
		return
	}
	s.own(st, c)
	s.metrics.movesIn.WithLabelValues("done").Inc()
	s.logger.Info("target moved to us", "target", m.Target, "from", m.From, "epoch", c.Epoch)
}

// moveIn is the destination side of a move: fetch the target, start its
// scrape loop, and take the claim over once the loop runs, so that the
// first scrape after the hand-over is ours.
// ctx ends with the session.
func (s *Scraper) moveIn(sessCtx context.Context, gen uint64, claims *leases.Claims, m leases.Move) {
	// The move's deadline bounds the preparation and the takeover, not
	// the report of how it went: that goes to the actor under the
	// session's context, or the target would stay preparing for good.
	ctx := sessCtx
	if !m.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(sessCtx, m.Deadline)
		defer cancel()
	}
	fail := func(err error) {
		s.post(sessCtx, func() { s.onTakeOver(gen, m, leases.Claim{}, err) })
	}
	t, err := s.catalog.GetTarget(ctx, m.Target)
	if err != nil {
		fail(err)
		return
	}
	var ok bool
	if !s.call(ctx, func() { ok = s.prepare(gen, t) }) {
		return
	}
	if !ok {
		fail(leases.ErrNotOwner)
		return
	}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !s.scraping(t.Job, t.ID) {
		select {
		case <-ctx.Done():
			fail(ctx.Err())
			return
		case <-tick.C:
		}
	}
	c, err := claims.TakeOver(ctx, m)
	if err != nil && !errors.Is(err, leases.ErrNotOwner) && sessCtx.Err() == nil {
		// The deadline or the connection cut the answer off, not the
		// takeover itself: it may have been applied. Ask the claim.
		if cur, ok, gerr := claims.Owner(sessCtx, m.Target); gerr == nil && ok && cur.Owner == s.cfg.ID && cur.Lease == claims.Session().Lease() {
			c, err = cur, nil
		}
	}
	s.post(sessCtx, func() { s.onTakeOver(gen, m, c, err) })
}

// scraping says whether the scrape manager runs a loop for target id.
func (s *Scraper) scraping(job, id string) bool {
	for _, t := range s.mgr.TargetsActive()[job] {
		if t.GetValue(targetIDLabel) == id {
			return true
		}
	}
	return false
}

// adopt claims a target this scraper does not know whose claim was just
// deleted, if it is now first choice for it. In a small pool the scraper
// follows the whole catalog but keeps only targets it ranks first or second
// for, and the follower sends nothing again when only the ranking changes
// (a member left, a scraper was drained): the new first choice of such a
// target learns of it only here, when its owner goes. The target is fetched
// by id and followed by id until the ranking covers its slot.
func (s *Scraper) adopt(ctx context.Context, gen uint64, id, prev string) {
	a := &s.a
	if !a.ready || a.rank == nil || a.adopting[id] || a.rank.rankWithout(events.SlotOf(id), prev) != 0 {
		return
	}
	a.adopting[id] = true
	s.goFn(func() {
		t, err := s.catalog.GetTarget(ctx, id)
		s.post(ctx, func() { s.onAdopt(gen, id, t, prev, err) })
	})
}

func (s *Scraper) onAdopt(gen uint64, id string, t events.Target, prev string, err error) {
	a := &s.a
	delete(a.adopting, id)
	if gen != a.gen {
		return
	}
	if err != nil {
		// Deleted from the catalog meanwhile, or NATS is out of reach: the
		// periodic resync finds it if it still exists.
		s.logger.Debug("cannot adopt target", "target", id, "err", err)
		return
	}
	st, ok := a.targets[id]
	if !ok {
		st = &target{t: t, slot: events.SlotOf(id), tg: targetGroup(t)}
		a.targets[id] = st
		s.track(st)
	}
	if st.phase == phaseIdle {
		s.logger.Debug("adopting target of a departed owner", "target", id, "prev_owner", prev)
		s.afterDeletion(st, prev)
	}
	if st.phase == phaseIdle {
		s.untrack(st) // not ours to claim after all
	}
}
