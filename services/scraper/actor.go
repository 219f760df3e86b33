package scraper

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/scrape"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// phase is where a known target stands for this scraper.
type phase uint8

const (
	// phaseIdle: known, not ours (someone else owns it, or it is not ours
	// to claim).
	phaseIdle phase = iota
	// phaseGrace: unowned as far as we know; we are second choice and wait
	// ClaimGrace before claiming.
	phaseGrace
	// phaseClaiming: queued for, or in, a claim transaction.
	phaseClaiming
	// phaseOwned: claimed; scraped and forwarded.
	phaseOwned
	// phasePreparing: a move to us is under way; scraped, not forwarded.
	phasePreparing
)

// targetForgetter is a sink that keeps per-target state (otlp.Appendable)
// and can drop it when a target leaves this scraper for another.
type targetForgetter interface {
	ForgetTarget(*scrape.Target)
}

// A change of the followed slots is applied once the member set has not
// changed for slotsSettle, and at most slotsMaxDelay after the first change.
const (
	slotsSettle   = 500 * time.Millisecond
	slotsMaxDelay = 3 * time.Second
)

// followAllAbove: a scraper that ranks for more slots than this (a pool
// of five or fewer) follows the whole catalog and ignores the rest itself.
// NATS checks a consumer's filter subjects pairwise, so creating one with
// 680 slot filters (3 scrapers) takes ~0.7 s of CPU (seconds on a busy
// machine, on every member change) against ~3 ms for an unfiltered one, and
// reading 1.5 times the share costs less than that.
const followAllAbove = 3 * events.Slots / 8

var allSlots = func() []int {
	out := make([]int, events.Slots)
	for i := range out {
		out[i] = i
	}
	return out
}()

// maxFlushDelay bounds how long target changes wait to be coalesced before
// the scrape manager gets them.
const maxFlushDelay = 50 * time.Millisecond

type target struct {
	t        events.Target
	slot     int
	phase    phase
	claim    leases.Claim       // phaseOwned
	tg       *targetgroup.Group // what the scrape manager gets
	graceSeq uint64             // identifies the current grace wait
	failover bool               // the claim attempt follows another owner's loss
	tracked  bool               // followed by id (its slot is not followed)
	checking bool               // an owner check is queued or running
	// recheck: the claim was deleted while our claim was in flight, so a
	// failed attempt may have lost to a claim that is gone now.
	recheck     bool
	recheckPrev string
}

type graceItem struct {
	id  string
	seq uint64
	due time.Time
}

// checkReason says why the owner of a target is read.
type checkReason uint8

const (
	// checkOwned: we own it, but its claim was deleted or a move of it
	// ended; is it still ours?
	checkOwned checkReason = iota
	// checkClaim: a claim transaction failed without an answer; did it
	// land?
	checkClaim
)

type ownerCheck struct {
	id     string
	reason checkReason
}

// actorState is everything the actor goroutine owns.
type actorState struct {
	rank    *ranking
	targets map[string]*target
	active  map[string]*target // phaseOwned and phasePreparing: in the scrape manager
	owned   int

	jobs        map[string]events.Job
	badJobs     map[string]string // job -> hash that failed to load
	appliedJobs map[string]bool   // jobs the scrape manager has a config for
	jobsDirty   bool

	gen    uint64         // current session generation, 0 if none
	claims *leases.Claims // current session's claims, nil if none

	claimQ   []string
	releaseQ []leases.Claim
	checkQ   []ownerCheck
	movesIn  map[string]bool

	grace      []graceItem
	graceSeq   uint64
	graceTimer *time.Timer

	noStale    map[string]struct{} // leaving without end-of-run staleness markers
	dirty      bool
	dirtySince time.Time

	trackOps []trackOp // Track/Untrack calls not yet made, in order

	followerStarted bool
	synced          bool
	slotsTimer      *time.Timer
	slotsSince      time.Time // first member change not yet applied to the slots
}

type trackOp struct {
	add bool
	ids []string
}

func (a *actorState) init() {
	a.targets = map[string]*target{}
	a.active = map[string]*target{}
	a.jobs = map[string]events.Job{}
	a.badJobs = map[string]string{}
	a.appliedJobs = map[string]bool{}
	a.movesIn = map[string]bool{}
	a.noStale = map[string]struct{}{}
}

// actor runs every state change, one at a time.
func (s *Scraper) actor(ctx context.Context) {
	a := &s.a
	a.graceTimer = time.NewTimer(time.Hour)
	a.graceTimer.Stop()
	defer a.graceTimer.Stop()
	a.slotsTimer = time.NewTimer(time.Hour)
	a.slotsTimer.Stop()
	defer a.slotsTimer.Stop()
	resync := time.NewTicker(s.resyncInterval)
	defer resync.Stop()
	housekeeping := time.NewTicker(time.Second)
	defer housekeeping.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-s.inbox:
			f()
		case now := <-a.graceTimer.C:
			s.onGrace(now)
		case <-a.slotsTimer.C:
			s.applySlots()
		case <-resync.C:
			s.resync()
		case now := <-housekeeping.C:
			s.gate.expire(now)
		}
		if a.dirty && (len(s.inbox) == 0 || time.Since(a.dirtySince) > maxFlushDelay) {
			s.flush(ctx)
		}
		s.flushTracking()
		if a.claims != nil && (len(a.claimQ) > 0 || len(a.releaseQ) > 0 || len(a.checkQ) > 0) {
			select {
			case s.kick <- struct{}{}:
			default:
			}
		}
	}
}

func (s *Scraper) markDirty() {
	if !s.a.dirty {
		s.a.dirty = true
		s.a.dirtySince = time.Now()
	}
}

// flush hands the scrape manager the current target sets (and a new
// config if jobs changed). Targets leaving without staleness markers get
// them switched off first, while their loops are still in the pools.
func (s *Scraper) flush(ctx context.Context) {
	a := &s.a
	a.dirty = false
	if a.jobsDirty {
		a.jobsDirty = false
		s.reconfigure()
	}
	if len(a.noStale) > 0 {
		forget, _ := s.gate.next.(targetForgetter)
		for job, ts := range s.mgr.TargetsActive() {
			var off []*scrape.Target
			for _, t := range ts {
				if _, ok := a.noStale[t.GetValue(targetIDLabel)]; ok {
					off = append(off, t)
				}
			}
			s.mgr.DisableEndOfRunStalenessMarkers(job, off)
			if forget != nil {
				for _, t := range off {
					forget.ForgetTarget(t)
				}
			}
		}
		clear(a.noStale)
	}
	// Every job with a pool gets an entry, possibly empty: the manager only
	// syncs the pools named in the map.
	sets := make(map[string][]*targetgroup.Group, len(a.appliedJobs))
	for job := range a.appliedJobs {
		sets[job] = nil
	}
	for _, st := range a.active {
		if a.appliedJobs[st.t.Job] {
			sets[st.t.Job] = append(sets[st.t.Job], st.tg)
		}
	}
	select {
	case s.tsets <- sets:
	case <-ctx.Done():
	}
	s.metrics.targets.Set(float64(a.owned))
	s.metrics.catalog.Set(float64(len(a.targets)))
}

// reconfigure builds the scrape config from the known jobs and hands it to
// the configurer, replacing one not yet applied.
func (s *Scraper) reconfigure() {
	a := &s.a
	cfg, bad := loadScrapeConfigs(a.jobs, s.logger)
	for name, err := range bad {
		if h := a.jobs[name].Hash; a.badJobs[name] != h {
			a.badJobs[name] = h
			s.metrics.badJobs.Inc()
			s.logger.Error("job config rejected; its targets are not scraped", "job", name, "err", err)
		}
	}
	for name := range a.badJobs {
		if _, ok := bad[name]; !ok {
			delete(a.badJobs, name)
		}
	}
	errs := make(map[string]string, len(bad))
	for name, err := range bad {
		errs[name] = err.Error()
	}
	s.viewMu.Lock()
	s.jobErrs = errs
	s.viewMu.Unlock()
	jobs := make(map[string]bool, len(cfg.ScrapeConfigs))
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
	}
	select {
	case <-s.configs:
	default:
	}
	s.configs <- appliedConfig{cfg: cfg, jobs: jobs}
}

func (s *Scraper) onConfigApplied(jobs map[string]bool) {
	s.a.appliedJobs = jobs
	s.markDirty()
}

// --- membership ---

func (s *Scraper) onMembers(ctx context.Context, ms []leases.Member) {
	a := &s.a
	old := a.rank
	a.rank = newRanking(s.self, ms)
	left := old != nil && old.lost(a.rank)
	for _, st := range a.targets {
		if st.phase != phaseIdle && st.phase != phaseGrace {
			continue
		}
		// A member left (or weighs less): slots where we became first
		// choice are ours to claim now, whatever a grace wait said.
		if r := a.rank.rank(st.slot); r == 0 && (old == nil || old.rank(st.slot) != 0 || st.phase == phaseGrace) {
			st.failover = left
			s.queueClaim(st)
		}
	}
	if !a.followerStarted {
		a.followerStarted = true
		s.applySlots()
		s.goFn(func() { s.runCatalog(ctx) })
		return
	}
	// Every change of the followed slots restarts the follower's watch of
	// them, so a burst of member changes (a rolling restart, a flapping
	// member) is applied once it settles. Failover does not wait for it:
	// the second choice of every slot already follows it.
	now := time.Now()
	if a.slotsSince.IsZero() {
		a.slotsSince = now
	}
	a.slotsTimer.Reset(min(slotsSettle, max(slotsMaxDelay-now.Sub(a.slotsSince), 0)))
}

// applySlots makes the follower follow the slots the current ranking says,
// and forgets targets of slots no longer followed.
func (s *Scraper) applySlots() {
	a := &s.a
	a.slotsSince = time.Time{}
	a.slotsTimer.Stop()
	slots := a.rank.followed()
	// Owned targets stay followed whatever their slot: track them before
	// the slots go.
	for _, st := range a.active {
		s.track(st)
	}
	s.flushTracking()
	if len(slots) > followAllAbove {
		s.catalog.SetSlots(allSlots)
	} else {
		s.catalog.SetSlots(slots)
	}
	s.metrics.slots.Set(float64(len(slots)))
	for _, st := range a.targets {
		s.forgetIfUnfollowed(st)
	}
	s.metrics.catalog.Set(float64(len(a.targets)))
}

// --- catalog ---

func (s *Scraper) onUpsertJob(j events.Job) {
	if old, ok := s.a.jobs[j.Name]; ok && old.Hash == j.Hash && old.Config == j.Config {
		return
	}
	s.a.jobs[j.Name] = j
	s.a.jobsDirty = true
	s.markDirty()
}

func (s *Scraper) onDeleteJob(name string) {
	if _, ok := s.a.jobs[name]; !ok {
		return
	}
	delete(s.a.jobs, name)
	s.a.jobsDirty = true
	s.markDirty()
}

func (s *Scraper) onSynced() {
	if !s.a.synced {
		s.a.synced = true
		s.logger.Info("catalog synced", "targets", len(s.a.targets), "jobs", len(s.a.jobs))
	}
}

func (s *Scraper) onUpsertTarget(t events.Target) {
	a := &s.a
	if st, ok := a.targets[t.ID]; ok {
		relabel := st.t.Job != t.Job || !maps.Equal(st.t.Labels, t.Labels)
		st.t = t
		if relabel {
			st.tg = targetGroup(t)
			if _, ok := a.active[t.ID]; ok {
				s.markDirty()
			}
			if st.phase == phaseOwned {
				s.setView(t)
			}
		}
		return
	}
	st := &target{t: t, slot: events.SlotOf(t.ID), tg: targetGroup(t)}
	if a.rank != nil && a.rank.rank(st.slot) == notRanked {
		return // followed only because the whole catalog is (followAllAbove)
	}
	a.targets[t.ID] = st
	s.consider(st, "")
}

func (s *Scraper) onDeleteTarget(id string) {
	a := &s.a
	st, ok := a.targets[id]
	if !ok {
		return
	}
	delete(a.targets, id)
	switch st.phase {
	case phaseOwned:
		// Gone from discovery: stop with end-of-run staleness markers, and
		// let those (only those) through for a while.
		s.gate.retire(id, time.Now().Add(retireFor(st.t)))
		s.deactivate(st, true)
		a.releaseQ = append(a.releaseQ, st.claim)
		s.metrics.released.Inc()
	case phasePreparing:
		s.gate.remove(id)
		s.deactivate(st, false)
	}
	s.untrack(st)
	st.phase = phaseIdle
}

// retireFor is how long end-of-run staleness markers of t may still come:
// Prometheus writes them a little over two intervals after the loop stops.
func retireFor(t events.Target) time.Duration {
	iv := time.Minute
	if d, err := model.ParseDuration(t.Labels[model.ScrapeIntervalLabel]); err == nil && d > 0 {
		iv = time.Duration(d)
	}
	return 3*iv + 5*time.Second
}

// --- claiming ---

// consider decides what to do about a target nobody is known to own:
// claim it now if we are the slot's first choice, after the grace period
// if second. exclude is a member to rank without (a failed owner).
func (s *Scraper) consider(st *target, exclude string) {
	a := &s.a
	if a.claims == nil || a.rank == nil || st.phase != phaseIdle {
		return
	}
	switch a.rank.rankWithout(st.slot, exclude) {
	case 0:
		s.queueClaim(st)
	case 1:
		s.queueGrace(st)
	}
}

func (s *Scraper) queueClaim(st *target) {
	if s.a.claims == nil {
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

// --- sessions ---

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
}

// --- claim and move events ---

// ctx ends with the session.
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
		st, ok := a.targets[ev.Target]
		if !ok {
			return
		}
		prev := ev.PrevOwner
		if prev == s.cfg.ID {
			prev = "" // our own earlier session's claim: rank as usual
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
			if a.rank != nil && a.rank.rankWithout(st.slot, prev) == 0 {
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
func (s *Scraper) moveIn(ctx context.Context, gen uint64, claims *leases.Claims, m leases.Move) {
	if !m.Deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, m.Deadline)
		defer cancel()
	}
	fail := func(err error) {
		s.post(ctx, func() { s.onTakeOver(gen, m, leases.Claim{}, err) })
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
	s.post(ctx, func() { s.onTakeOver(gen, m, c, err) })
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
