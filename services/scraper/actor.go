package scraper

import (
	"context"
	"maps"
	"slices"
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
	t     events.Target
	slot  int
	phase phase
	claim leases.Claim       // phaseOwned
	tg    *targetgroup.Group // its labels, as the catalog has them
	// phased is tg with the phase label, for phaser generation phasedGen;
	// what the scrape manager gets. nil when tg changed.
	phased    *targetgroup.Group
	phasedGen uint64
	graceSeq  uint64 // identifies the current grace wait
	failover  bool   // the claim attempt follows another owner's loss
	tracked   bool   // followed by id (its slot is not followed)
	checking  bool   // an owner check is queued or running
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
	// checkMoveFailed: a move to us failed; is the target ours after all,
	// or nobody's?
	checkMoveFailed
)

type ownerCheck struct {
	id     string
	reason checkReason
}

// actorState is everything the actor goroutine owns.
type actorState struct {
	rank    *ranking
	members []leases.Member // the last member set, ranked again on drain changes
	drained map[string]bool // scrapers marked for draining (drain.go)
	targets map[string]*target
	active  map[string]*target // phaseOwned and phasePreparing: in the scrape manager
	owned   int

	jobs        map[string]events.Job
	badJobs     map[string]string // job -> hash that failed to load
	appliedJobs map[string]bool   // jobs the scrape manager has a config for
	phaser      *phaser           // for the applied config; nil if the host name is unknown
	phaseGen    uint64            // counts phasers, so targets know theirs is stale
	jobsDirty   bool

	gen    uint64         // current session generation, 0 if none
	claims *leases.Claims // current session's claims, nil if none

	claimQ   []string
	releaseQ []leases.Claim
	checkQ   []ownerCheck
	movesIn  map[string]bool
	adopting map[string]bool // targets fetched to be adopted (adopt)

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
	// ready: our registration has been seen and the member set was then
	// stable for slotsSettle. Until then nothing is claimed, so that
	// scrapers started together do not each claim everything as the only
	// member they know of.
	ready      bool
	readyTimer *time.Timer
	readySince time.Time
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
	a.adopting = map[string]bool{}
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
	a.readyTimer = time.NewTimer(time.Hour)
	a.readyTimer.Stop()
	defer a.readyTimer.Stop()
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
		case <-a.readyTimer.C:
			a.ready = true
			s.logger.Info("member set settled; claiming", "members", len(a.rank.members))
			s.resync()
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
			sets[st.t.Job] = append(sets[st.t.Job], s.phased(st))
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

func (s *Scraper) onConfigApplied(c appliedConfig) {
	s.a.appliedJobs = c.jobs
	s.a.phaser = c.phaser
	s.a.phaseGen++
	s.markDirty()
}

// phased is st's target group as the scrape manager gets it: with the
// phase label that makes every scraper scrape it at the same moments, so
// that a handoff neither skips nor doubles a sample. The value depends on
// the applied config and the host, so it is computed again when either
// changes; for an unchanged job it comes out the same and the scrape
// manager keeps the loop running.
func (s *Scraper) phased(st *target) *targetgroup.Group {
	a := &s.a
	if st.phased != nil && st.phasedGen == a.phaseGen {
		return st.phased
	}
	var prev string
	if st.phased != nil && len(st.phased.Targets) == 1 {
		prev = string(st.phased.Targets[0][phaseLabel])
	}
	st.phased, st.phasedGen = st.tg, a.phaseGen
	if a.phaser != nil {
		if tg, ok := a.phaser.group(st.tg, st.t.Job, st.t.ID, prev); ok {
			st.phased = tg
		} else {
			s.logger.Debug("no phase label for target; it keeps Prometheus's host-seeded phase", "target", st.t.ID, "job", st.t.Job)
		}
	}
	return st.phased
}

func (s *Scraper) onMembers(ctx context.Context, ms []leases.Member) {
	a := &s.a
	old := a.rank
	a.members = ms
	a.rank = newZoneRanking(s.self, s.zoning(), ms, a.drained)
	left := old != nil && old.lost(a.rank)
	if !a.ready && slices.ContainsFunc(ms, func(m leases.Member) bool { return m.ID == s.cfg.ID }) {
		if a.readySince.IsZero() {
			a.readySince = time.Now()
		}
		a.readyTimer.Reset(min(slotsSettle, max(slotsMaxDelay-time.Since(a.readySince), 0)))
	}
	for _, st := range a.targets {
		if st.phase != phaseIdle && st.phase != phaseGrace {
			continue
		}
		// A member left (or weighs less): targets we became first choice
		// for are ours to claim now, whatever a grace wait said.
		if r := a.rank.of(st); r == 0 && (old == nil || old.of(st) != 0 || st.phase == phaseGrace) {
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
			st.tg, st.phased = targetGroup(t), nil
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
