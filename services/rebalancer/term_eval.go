package rebalancer

import (
	"context"
	"fmt"
	"math"
	"math/bits"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/placement"
)

// startEvaluation takes the load reports from the term's load watch
// outside the loop (the first time, it waits for the watch's listing; then
// it copies the per-target series) and then evaluates. Only one evaluation
// is under way at a time.
func (t *term) startEvaluation(ctx context.Context) {
	t.evaluating = true
	t.forgetDrains(ctx)
	t.do(ctx, func() func() {
		loads, err := t.loadWatch.Loads(ctx)
		return func() {
			t.evaluating = false
			if err != nil {
				// Measure with the last reports, but plan nothing on them.
				t.logger.Warn("read load reports", "err", err)
				t.evaluate(ctx, t.loads, false)
				return
			}
			t.loads = loads
			t.evaluate(ctx, loads, true)
		}
	})
}

// evaluate measures the cluster, publishes the measurement and, if the last
// plan is finished and the cluster is out of balance or a scraper drains,
// plans the next moves (if plan).
//
// The measurement is cheap, O(members): targets per member come from the
// claim counts kept with the claim watch, series from each member's last
// report, scaled to the targets it owns now. Only when that says a plan may
// be needed is the full view built, O(targets), from every claim and the
// per-target series, and checked again before planning. So a balanced
// cluster of 800k targets costs next to nothing per interval.
func (t *term) evaluate(ctx context.Context, loads map[string]leases.Load, plan bool) {
	t.r.metrics.evaluations.Inc()
	t.abortStale(ctx)

	members, owned := t.summary(loads)
	stats, recommended := t.measure(members, owned)
	t.r.metrics.balanceRatio.Set(stats.Ratio)
	t.r.metrics.balanceRatioByCount.Set(stats.ByCountRatio)
	t.r.metrics.recommended.Set(float64(recommended))
	t.publishStatus(owned, loads, stats, recommended)

	if !plan || len(t.pending) > 0 || len(t.queue) > 0 {
		return // hysteresis: never plan over an unfinished plan
	}
	draining := false
	for id := range t.drains {
		if ml := owned[id]; ml != nil && ml.targets > 0 {
			draining = true
		}
	}
	if !draining && !t.outOfBalance(members, owned) && !t.reportedAway(loads) {
		return
	}
	c, exact := t.cluster(loads)
	if !draining && !t.outOfBalance(c.Members, exact) && t.away(c) == 0 {
		return // the reports lag the claims: balanced after all
	}
	start := time.Now()
	moves := placement.Plan(c, t.memberDrains(), placement.PlanConfig{
		Tolerance:  t.cfg.Tolerance,
		Hysteresis: t.cfg.Hysteresis,
		MaxMoves:   t.planSize(),
		ZoneAware:  t.cfg.ZoneAware,
	})
	took := time.Since(start)
	if len(moves) == 0 {
		// Out of balance, but no move helps (e.g. one huge target).
		t.logger.Debug("plan found no moves", "balance_ratio", stats.Ratio, "plan_time", took)
		return
	}
	t.r.metrics.plans.Inc()
	t.logger.Info("planned moves", "moves", len(moves), "balance_ratio", stats.Ratio,
		"draining", draining, "plan_time", took)
	for _, m := range moves {
		if m.From == "" {
			continue // an orphan: the scrapers claim those themselves
		}
		t.queue = append(t.queue, queuedMove{Move: m, epoch: t.claims[m.Target].Epoch})
	}
}

// summary is the cheap view of the cluster: the live members and, per
// member, the targets it owns by claim and its series estimated from its
// last report (the report's series per target times the targets owned now;
// without a usable report, the mean over all reports, or 1 per target).
func (t *term) summary(loads map[string]leases.Load) ([]placement.Member, map[string]*memberLoad) {
	var series, targets float64
	for _, l := range loads {
		if l.Targets > 0 && l.Series > 0 {
			series += float64(l.Series)
			targets += float64(l.Targets)
		}
	}
	mean := 1.0
	if targets > 0 {
		mean = series / targets
	}
	ids := sortedKeys(t.members)
	members := make([]placement.Member, 0, len(ids))
	owned := make(map[string]*memberLoad, len(ids))
	for _, id := range ids {
		m := t.members[id]
		members = append(members, placement.Member{ID: m.ID, Weight: m.Weight, Zone: m.Zone})
		n := t.ownedCount[id]
		perTarget := mean
		if l, ok := loads[id]; ok && l.Targets > 0 && l.Series > 0 {
			perTarget = float64(l.Series) / float64(l.Targets)
		}
		owned[id] = &memberLoad{targets: n, series: float64(n) * perTarget}
	}
	return members, owned
}

// measure computes the balance and the recommendation from the summary:
// placement.Measure and Recommend over one stand-in target per member
// carrying its series, and the count ratio from the claim counts.
func (t *term) measure(members []placement.Member, owned map[string]*memberLoad) (placement.Stats, int) {
	c := placement.Cluster{Members: members, Targets: make([]placement.Target, 0, len(members))}
	var count, wsum, busiest float64
	for _, m := range members {
		ml := owned[m.ID]
		c.Targets = append(c.Targets, placement.Target{ID: "member/" + m.ID, Owner: m.ID, Series: ml.series})
		w := m.Weight
		if w <= 0 {
			w = 1
		}
		count += float64(ml.targets)
		wsum += w
		busiest = max(busiest, float64(ml.targets)/w)
	}
	st := placement.Measure(c)
	st.ByCountRatio = 1
	if count > 0 {
		st.ByCountRatio = busiest / (count / wsum)
	}
	return st, placement.Recommend(c, t.cfg.SeriesPerScraper)
}

// outOfBalance says whether the busiest member is above mean×(1+Tolerance)
// or the least busy below mean×(1−Tolerance), per unit of weight, among
// the members not draining. The lower bound is what gives a new scraper
// load when the cluster is large: with 100 equal scrapers one more makes
// the busiest only 1% above the new mean, but the new one is 100% below.
func (t *term) outOfBalance(members []placement.Member, owned map[string]*memberLoad) bool {
	var total, wsum float64
	hi, lo := math.Inf(-1), math.Inf(1)
	for _, m := range members {
		if t.drains[m.ID] {
			continue
		}
		w := m.Weight
		if w <= 0 {
			w = 1
		}
		var load float64
		if ml := owned[m.ID]; ml != nil {
			load = ml.series
		}
		wsum += w
		total += load
		hi, lo = max(hi, load/w), min(lo, load/w)
	}
	if wsum == 0 || total == 0 {
		return false
	}
	mean := total / wsum
	return hi > mean*(1+t.cfg.Tolerance) || lo < mean*(1-t.cfg.Tolerance)
}

// homeZones is, when zone-aware, the zones that have a member not
// draining: a target of such a zone belongs on one of them (placement.Plan
// keeps it there). nil when not zone-aware.
func (t *term) homeZones() map[string]bool {
	if !t.cfg.ZoneAware {
		return nil
	}
	out := map[string]bool{}
	for id, m := range t.members {
		if m.Zone != "" && !t.drains[id] {
			out[m.Zone] = true
		}
	}
	return out
}

// reportedAway says whether, zone-aware, some load report lists a target
// outside its zone (it belongs on another zone's scrapers): the cheap
// check, by the reports, of what away counts exactly. It costs a pass over
// the reports, which reading them (LoadWatch.Loads) costs anyway.
func (t *term) reportedAway(loads map[string]leases.Load) bool {
	home := t.homeZones()
	if len(home) == 0 {
		return false
	}
	for id, l := range loads {
		m, ok := t.members[id]
		if !ok {
			continue
		}
		for _, tl := range l.PerTarget {
			if tl.Zone != "" && tl.Zone != m.Zone && home[tl.Zone] {
				return true
			}
		}
	}
	return false
}

// away counts the targets of c that are owned outside their zone although
// it has members not draining, leaving out those in motion: the zone moves
// a zone-aware plan would make.
func (t *term) away(c placement.Cluster) int {
	home := t.homeZones()
	if len(home) == 0 {
		return 0
	}
	zone := make(map[string]string, len(c.Members))
	for _, m := range c.Members {
		zone[m.ID] = m.Zone
	}
	n := 0
	for _, tg := range c.Targets {
		if tg.Zone != "" && home[tg.Zone] && zone[tg.Owner] != tg.Zone && !c.Moving[tg.ID] {
			n++
		}
	}
	return n
}

// planSize bounds one plan: enough to keep the rate limit busy for one
// interval, and at least one full set of concurrent moves. The next plan
// comes once it has finished, from a fresh view.
func (t *term) planSize() int {
	return max(t.cfg.MaxConcurrentMoves, int(math.Ceil(t.cfg.MovesPerSecond*t.cfg.Interval.Seconds())))
}

func (t *term) memberDrains() map[string]bool {
	out := make(map[string]bool, len(t.drains))
	for id := range t.drains {
		if _, ok := t.members[id]; ok {
			out[id] = true
		}
	}
	return out
}

// forgetDrains deletes, outside the loop, the marks of drained scrapers
// that left. The drain watch then reports the deletions.
func (t *term) forgetDrains(ctx context.Context) {
	var gone []string
	for id := range t.drains {
		if _, ok := t.members[id]; !ok {
			gone = append(gone, id)
		}
	}
	if len(gone) == 0 {
		return
	}
	t.do(ctx, func() func() {
		for _, id := range gone {
			forgot, err := forgetDrain(ctx, t.cli, t.ks, id)
			switch {
			case err != nil:
				t.logger.Warn("forget drain", "scraper", id, "err", err)
			case forgot:
				t.logger.Info("drained scraper left; drain mark removed", "scraper", id)
			}
		}
		return func() {}
	})
}

// memberLoad is what a member owns by its claims.
type memberLoad struct {
	targets int
	series  float64
	// per is the member's last per-target report (looked up once per
	// member, not once per target).
	per map[string]leases.TargetLoad
}

// cluster builds placement's view: live members, the targets they own by
// claim with their series (and zones), and the targets in motion. Targets
// whose owner is not a live member are left out: their lease is about to
// expire and the scrapers will claim them again. It also returns what each
// member owns.
//
// Zone-aware, a target's zone comes from the load reports, so a target in
// no report yet (just claimed or moved) has no known zone: it counts as in
// motion, and stays where it is until its owner reports it, rather than be
// moved out of its zone and back.
func (t *term) cluster(loads map[string]leases.Load) (placement.Cluster, map[string]*memberLoad) {
	ids := sortedKeys(t.members)
	c := placement.Cluster{
		Members: make([]placement.Member, 0, len(ids)),
		Targets: make([]placement.Target, 0, len(t.claims)),
		Moving:  make(map[string]bool, len(t.pending)+len(t.queue)),
	}
	series := newSeriesLookup(loads)
	owned := make(map[string]*memberLoad, len(ids))
	for _, id := range ids {
		m := t.members[id]
		c.Members = append(c.Members, placement.Member{ID: m.ID, Weight: m.Weight, Zone: m.Zone})
		owned[id] = &memberLoad{per: series.per[id]}
	}
	// Plan and Measure do not depend on the order of targets: no sort.
	for target, cl := range t.claims {
		ml, ok := owned[cl.Owner]
		if !ok {
			continue
		}
		tl, reported := ml.per[target]
		s := float64(tl.Series)
		if !reported || tl.Series <= 0 {
			s = series.of(target, cl.Owner)
		}
		if t.cfg.ZoneAware && !reported {
			if other, ok := series.find(target); ok {
				tl.Zone = other.Zone
			} else {
				c.Moving[target] = true
			}
		}
		ml.targets++
		ml.series += s
		c.Targets = append(c.Targets, placement.Target{ID: target, Key: targetKey(target), Series: s, Owner: cl.Owner, Zone: tl.Zone})
	}
	for target := range t.pending {
		c.Moving[target] = true
	}
	for _, q := range t.queue {
		c.Moving[q.Target] = true
	}
	return c, owned
}

func (t *term) publishStatus(owned map[string]*memberLoad, loads map[string]leases.Load, stats placement.Stats, recommended int) {
	scrapers := make([]ScraperStatus, 0, len(t.members))
	targets := 0
	for _, id := range sortedKeys(t.members) {
		st := scraperStatus(t.members[id], t.drains[id])
		if l, ok := loads[id]; ok {
			st.Load = loadStatus(l)
		}
		if ml := owned[id]; ml != nil {
			st.Targets, st.Series = ml.targets, ml.series
			targets += ml.targets
		}
		scrapers = append(scrapers, st)
	}
	r := t.r
	r.mu.Lock()
	defer r.mu.Unlock()
	r.status.Updated = time.Now()
	r.status.Scrapers = scrapers
	r.status.Targets = targets
	r.status.BalanceRatio = stats.Ratio
	r.status.ByCountRatio = stats.ByCountRatio
	r.status.Recommended = recommended
	r.status.Draining = sortedKeys(t.drains)
}

// seriesLookup finds a target's series (and zone) in the load reports: the
// owner's report first, then any other (a target that just moved is still
// in its old owner's last report). A target in no report counts as the mean of
// those known, or 1 when none is known, so that the cluster is balanced by
// target count until reports arrive, and a target not yet reported by its
// new owner does not look lighter than it is.
type seriesLookup struct {
	per      map[string]map[string]leases.TargetLoad // scraper → target → load
	ids      []string                                // scrapers, sorted: the search order for misses
	fallback float64
}

func newSeriesLookup(loads map[string]leases.Load) seriesLookup {
	s := seriesLookup{per: make(map[string]map[string]leases.TargetLoad, len(loads)), ids: sortedKeys(loads), fallback: 1}
	var sum float64
	var n int
	for id, l := range loads {
		s.per[id] = l.PerTarget
		for _, tl := range l.PerTarget {
			if tl.Series > 0 {
				sum += float64(tl.Series)
				n++
			}
		}
	}
	if n > 0 {
		s.fallback = sum / float64(n)
	}
	return s
}

// find is target's entry in any report, in the order of s.ids.
func (s seriesLookup) find(target string) (leases.TargetLoad, bool) {
	for _, id := range s.ids {
		if tl, ok := s.per[id][target]; ok {
			return tl, true
		}
	}
	return leases.TargetLoad{}, false
}

func (s seriesLookup) of(target, owner string) float64 {
	if tl, ok := s.per[owner][target]; ok && tl.Series > 0 {
		return float64(tl.Series)
	}
	// Rare (moves since the last reports): a look in every other report.
	for _, id := range s.ids {
		if tl, ok := s.per[id][target]; ok && tl.Series > 0 {
			return float64(tl.Series)
		}
	}
	return s.fallback
}

// slots and slotKeys mirror the scrapers' preference: a scraper claims a
// target at once when it ranks first in rendezvous order for the target's
// catalog slot (events.SlotOf: the top 10 bits of the 16-hex-digit ID),
// keyed by HashString("slot-<n>"). Giving placement the same key makes
// "prefer targets whose preferred owner is the destination" agree with
// where a target would land after a failover. (Duplicated rather than
// imported so that the rebalancer does not link the NATS client;
// TestTargetKeyMatchesCatalogSlots pins it to pkg/events.)
const slots = 1024

var slotKeys = func() [slots]uint64 {
	var k [slots]uint64
	for s := range k {
		k[s] = placement.HashString(fmt.Sprintf("slot-%d", s))
	}
	return k
}()

// targetKey is the rendezvous key of target id: its slot's key, or the
// hash of the id when it is not in allot's form (16 lowercase hex digits).
func targetKey(id string) uint64 {
	if len(id) != 16 {
		return placement.HashString(id)
	}
	var v uint64
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint64(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return placement.HashString(id)
		}
	}
	hi, _ := bits.Mul64(v, slots)
	return slotKeys[hi]
}
