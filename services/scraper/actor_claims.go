package scraper

import (
	"errors"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
)

// Claiming: deciding what to claim and when, and what the answers mean.

// consider decides what to do about a target nobody is known to own:
// claim it now if we are its first choice, after the grace period if
// second. exclude is a member to rank without (a failed owner).
func (s *Scraper) consider(st *target, exclude string) {
	a := &s.a
	if !a.ready || a.claims == nil || st.phase != phaseIdle {
		return
	}
	switch a.rank.ofWithout(st, exclude) {
	case 0:
		s.queueClaim(st)
	case 1:
		s.queueGrace(st)
	}
}

func (s *Scraper) queueClaim(st *target) {
	if !s.a.ready || s.a.claims == nil {
		st.phase = phaseIdle
		return
	}
	st.phase = phaseClaiming
	s.a.claimQ = append(s.a.claimQ, st.t.ID)
}

func (s *Scraper) queueGrace(st *target) {
	a := &s.a
	a.graceSeq++
	st.phase = phaseGrace
	st.graceSeq = a.graceSeq
	a.grace = append(a.grace, graceItem{id: st.t.ID, seq: a.graceSeq, due: time.Now().Add(s.cfg.ClaimGrace)})
	if len(a.grace) == 1 {
		a.graceTimer.Reset(s.cfg.ClaimGrace)
	}
}

func (s *Scraper) onGrace(now time.Time) {
	a := &s.a
	n := 0
	for ; n < len(a.grace) && !a.grace[n].due.After(now); n++ {
		it := a.grace[n]
		if st, ok := a.targets[it.id]; ok && st.phase == phaseGrace && st.graceSeq == it.seq {
			s.queueClaim(st)
		}
	}
	a.grace = a.grace[n:]
	if len(a.grace) > 0 {
		a.graceTimer.Reset(max(time.Until(a.grace[0].due), 0))
	} else {
		a.grace = nil
	}
}

// resync reconsiders every unowned target: after a new session, a watch
// that lost events, and now and then in case a deletion went unseen.
func (s *Scraper) resync() {
	for _, st := range s.a.targets {
		if st.phase == phaseIdle {
			s.consider(st, "")
		}
	}
}

func (s *Scraper) onClaimed(gen uint64, ids []string, won []leases.Claim, err error) {
	a := &s.a
	if gen != a.gen {
		// Claims of a lost session die with its lease.
		return
	}
	got := make(map[string]bool, len(won))
	for _, c := range won {
		got[c.Target] = true
		st, ok := a.targets[c.Target]
		if !ok || st.phase != phaseClaiming {
			// Deleted (or moved in) while the claim was in flight.
			a.releaseQ = append(a.releaseQ, c)
			continue
		}
		s.own(st, c)
	}
	if err != nil && !errors.Is(err, leases.ErrLeaseLost) {
		s.logger.Warn("claim failed", "targets", len(ids), "won", len(won), "err", err)
	}
	for _, id := range ids {
		st, ok := a.targets[id]
		if got[id] || !ok || st.phase != phaseClaiming {
			continue
		}
		if err != nil {
			// The transaction may have landed: ask before trying again,
			// or a claim of ours could sit unscraped until the lease ends.
			s.queueCheck(st, checkClaim)
			continue
		}
		st.phase = phaseIdle // someone else owns it (or did)
		st.failover = false
		if st.recheck {
			s.afterDeletion(st, st.recheckPrev)
		} else {
			s.forgetIfUnfollowed(st)
		}
	}
}

// afterDeletion reacts to the deletion of an idle target's claim, whose
// owner was prev ("" if it was ours or unknown).
func (s *Scraper) afterDeletion(st *target, prev string) {
	st.recheck, st.recheckPrev = false, ""
	st.failover = prev != ""
	s.consider(st, prev)
	if st.phase == phaseIdle {
		st.failover = false
	}
}

// forgetIfUnfollowed drops an idle target whose slot we no longer follow
// (the follower has forgotten it too).
func (s *Scraper) forgetIfUnfollowed(st *target) {
	if (st.phase == phaseIdle || st.phase == phaseGrace) && !st.tracked && s.a.rank != nil && s.a.rank.rank(st.slot) == notRanked {
		delete(s.a.targets, st.t.ID)
	}
}

func (s *Scraper) queueCheck(st *target, why checkReason) {
	if st.checking {
		return
	}
	st.checking = true
	s.a.checkQ = append(s.a.checkQ, ownerCheck{id: st.t.ID, reason: why})
}

func (s *Scraper) onOwner(gen uint64, chk ownerCheck, c leases.Claim, found bool, err error) {
	a := &s.a
	if gen != a.gen {
		return
	}
	st, ok := a.targets[chk.id]
	if !ok {
		if err == nil && found && s.mine(c) {
			a.releaseQ = append(a.releaseQ, c)
		}
		return
	}
	st.checking = false
	if err != nil {
		s.logger.Warn("reading claim failed", "target", chk.id, "err", err)
		switch st.phase {
		case phaseOwned:
			// Keep it: the session (the gate) protects us if it is lost.
		case phaseClaiming:
			s.queueGrace(st)
		}
		return
	}
	switch st.phase {
	case phaseOwned:
		switch {
		case found && s.mine(c):
			st.claim = c
		case found:
			s.lose(st, "moved")
		default:
			s.lose(st, "deleted")
			s.consider(st, "")
		}
	case phaseClaiming:
		switch {
		case found && s.mine(c):
			s.own(st, c)
		case found:
			st.phase = phaseIdle
		default:
			st.phase = phaseIdle
			s.consider(st, "")
		}
	case phaseIdle:
		switch {
		case found && s.mine(c):
			// A takeover whose answer was lost landed after all.
			s.own(st, c)
		case !found:
			s.consider(st, "")
		}
	}
}

// mine says whether claim c is on the current session's lease.
func (s *Scraper) mine(c leases.Claim) bool {
	return s.a.claims != nil && c.Owner == s.cfg.ID && c.Lease == s.a.claims.Session().Lease()
}

// own starts forwarding (and scraping) a target we now hold a claim on.
func (s *Scraper) own(st *target, c leases.Claim) {
	a := &s.a
	if st.phase != phaseOwned {
		a.owned++
	}
	st.phase = phaseOwned
	st.claim = c
	st.recheck, st.recheckPrev = false, ""
	s.gate.set(st.t.ID, gateOwned)
	a.active[st.t.ID] = st
	delete(a.noStale, st.t.ID) // back before its loop was switched
	s.track(st)
	s.setView(st.t)
	s.markDirty()
	if st.failover {
		st.failover = false
		s.metrics.failovers.Inc()
	}
}

// lose stops a target that is no longer ours, without staleness markers:
// whoever owns it now continues its series.
func (s *Scraper) lose(st *target, reason string) {
	s.gate.remove(st.t.ID)
	s.deactivate(st, false)
	st.phase = phaseIdle
	s.untrack(st)
	s.metrics.lost.WithLabelValues(reason).Inc()
	s.logger.Info("target lost", "target", st.t.ID, "reason", reason)
}

// deactivate takes a target out of the scrape manager.
func (s *Scraper) deactivate(st *target, staleMarkers bool) {
	a := &s.a
	if _, ok := a.active[st.t.ID]; !ok {
		return
	}
	if st.phase == phaseOwned {
		a.owned--
		s.delView(st.t.ID)
	}
	delete(a.active, st.t.ID)
	if !staleMarkers {
		a.noStale[st.t.ID] = struct{}{}
	}
	s.markDirty()
}

// track follows a scraped target by id if its slot is not followed, so
// that its catalog changes (and its deletion) still reach us.
func (s *Scraper) track(st *target) {
	if st.tracked || (s.a.rank != nil && s.a.rank.rank(st.slot) != notRanked) {
		return
	}
	st.tracked = true
	s.queueTrack(true, st.t.ID)
}

func (s *Scraper) untrack(st *target) {
	if !st.tracked {
		return
	}
	st.tracked = false
	s.queueTrack(false, st.t.ID)
	if s.a.rank != nil && s.a.rank.rank(st.slot) == notRanked && st.phase != phaseOwned && st.phase != phasePreparing {
		delete(s.a.targets, st.t.ID)
	}
}

// queueTrack batches Track and Untrack calls: each call restarts follower
// watches, so a burst of ownership changes should make one.
func (s *Scraper) queueTrack(add bool, id string) {
	ops := s.a.trackOps
	if n := len(ops); n > 0 && ops[n-1].add == add {
		ops[n-1].ids = append(ops[n-1].ids, id)
		return
	}
	s.a.trackOps = append(ops, trackOp{add: add, ids: []string{id}})
}

func (s *Scraper) flushTracking() {
	for _, op := range s.a.trackOps {
		if op.add {
			s.catalog.Track(op.ids...)
		} else {
			s.catalog.Untrack(op.ids...)
		}
	}
	s.a.trackOps = nil
}
