package placement

import (
	"cmp"
	"math"
	"slices"
)

// Target is one scrape target as the rebalancer sees it: its identity, its
// load and its current owner.
type Target struct {
	ID string
	// Key is HashString(ID), the target's rendezvous key.
	Key uint64
	// Series is the target's load (active series); what balance is measured in.
	Series float64
	// Owner is the ID of the member holding the target's claim, "" if none.
	Owner string
	// Zone, if set, is where the target runs: with PlanConfig.ZoneAware it
	// is kept on a member of that zone whenever the zone has members that
	// are not draining. A target without a zone can go anywhere.
	Zone string
}

// Cluster is the snapshot a plan is made over.
type Cluster struct {
	Members []Member
	Targets []Target
	// Moving holds the IDs of targets with a move in flight: they count at
	// their current owner and are never moved again until it completes.
	Moving map[string]bool
}

// Defaults for PlanConfig fields left at zero.
const (
	DefaultTolerance  = 0.05
	DefaultHysteresis = 0.02
)

// PlanConfig tunes Plan. The zero value is the default configuration with
// no limit on the number of moves.
type PlanConfig struct {
	// Tolerance: balancing starts when the busiest member is above
	// mean×(1+Tolerance), or the least busy below mean×(1−Tolerance).
	// Zero means DefaultTolerance.
	Tolerance float64
	// Hysteresis: once started, balancing goes on until every member is
	// within mean×(1±(Tolerance−Hysteresis)), so that the next plan has
	// slack before it starts again. Zero means DefaultHysteresis; it is
	// capped at Tolerance.
	Hysteresis float64
	// MaxMoves caps the moves in one plan; zero or less means no cap.
	// Unowned targets come first, then drains, then zone returns, then
	// balance.
	MaxMoves int
	// ZoneAware keeps every target that has a Zone on members of that zone
	// whenever the zone has members that are not draining, and moves those
	// found elsewhere back into it (after drains, before balance). Balance
	// can then only be reached as far as the zones' loads allow.
	ZoneAware bool
}

func (c PlanConfig) withDefaults() PlanConfig {
	if !(c.Tolerance > 0) {
		c.Tolerance = DefaultTolerance
	}
	if !(c.Hysteresis > 0) {
		c.Hysteresis = DefaultHysteresis
	}
	if c.Hysteresis > c.Tolerance {
		c.Hysteresis = c.Tolerance
	}
	return c
}

// MoveReason says why a move was planned; it is the reason label of
// allot_moves_total.
type MoveReason string

// The reasons for a move.
const (
	// ReasonBalance: from a busy member to a less busy one.
	ReasonBalance MoveReason = "balance"
	// ReasonDrain: off a member being drained.
	ReasonDrain MoveReason = "drain"
	// ReasonScaleOut: balance onto a member that had no targets.
	ReasonScaleOut MoveReason = "scale_out"
	// ReasonScaleIn: the owner is no longer a member.
	ReasonScaleIn MoveReason = "scale_in"
	// ReasonOrphan: the target had no owner.
	ReasonOrphan MoveReason = "orphan"
	// ReasonZone: back into the target's zone (PlanConfig.ZoneAware).
	ReasonZone MoveReason = "zone"
)

// Move is one planned change of owner. From is the target's Owner as given
// ("" for an orphan).
type Move struct {
	Target   string
	From, To string
	Reason   MoveReason
	Series   float64
}

// Plan returns the moves that place every unowned target, empty the members
// in drain, bring targets back into their zone (if zone-aware) and every
// member's load within tolerance of the mean, moving as few targets (and
// then as little load) as it can.
//
// Unowned targets, and those of members that are gone or draining, go to
// their rendezvous-preferred member among the members that are not
// draining, unless that would take it above the balance band; then to the
// least loaded member. They are placed heaviest first.
//
// Balancing moves targets from the busiest member to the least busy. From a
// member it takes the one target that brings it (or the destination) back
// into the band with the least load if there is one, otherwise the largest
// that fits; among candidates within a factor two of that size it prefers
// one the destination outranks the source for in rendezvous order (so at
// most twice the moves are spent on preference). A move never takes the
// destination's load above the source's (per unit of weight), so plans
// converge and never oscillate: applying a plan and planning again yields
// no moves, unless MaxMoves cut the first plan short.
//
// Plan is pure and deterministic: it does not depend on the order of
// c.Members or c.Targets, only on their contents. It takes time linear in
// the number of targets (only the members it takes targets from are
// sorted, and only as far as it reads them), O(log members) per move, and
// O(members) per unowned target: about 100 ms of CPU for 800k targets on
// 1000 members after a scraper joins or leaves.
func Plan(c Cluster, drain map[string]bool, cfg PlanConfig) []Move {
	p := plan(c, drain, cfg)
	if p == nil {
		return nil
	}
	return p.result()
}

func plan(c Cluster, drain map[string]bool, cfg PlanConfig) *planner {
	p := newPlanner(c, drain, cfg.withDefaults())
	if p == nil {
		return nil
	}
	p.placeHomeless(true)
	p.bringHome()
	p.balance()
	return p
}

// Assign places only the targets that have no live owner (Owner empty or
// not a member), by preference and current load as Plan does, and moves
// nothing else. It is the first step of Plan, for scaling events and the
// first start.
func Assign(c Cluster, cfg PlanConfig) []Move {
	p := newPlanner(c, nil, cfg.withDefaults())
	if p == nil {
		return nil
	}
	p.placeHomeless(false)
	return p.result()
}

type planner struct {
	cfg     PlanConfig
	members []Member
	targets []Target
	rk      *Ranker
	max     int

	w     []float64 // capacity weight per member
	elig  []bool    // can receive and keep targets
	load  []float64
	count []int32
	empty []bool  // had no targets when the plan started
	owner []int32 // per target: its member as planned so far, or -1
	// sv is each target's series as planned with: rounded to float32
	// precision so that the radix sort's order is exactly this order.
	sv     []float64
	frozen []bool // per target: a move is in flight (nil when none)

	// Members are grouped by zone when zone-aware, else all in group 0.
	group     []int32   // per member
	groups    [][]int32 // eligible members per group
	groupName []string
	zoneIdx   map[string]int32
	all       []int32 // every eligible member
	anyZone   []int32 // per member: movable targets it holds that may go to any zone (nil unless zone-aware)
	tz        []int16 // per target: the group it must stay in, -1 for any (nil unless zone-aware)

	src, dst []mheap // per group: busiest first, least busy first
	srcPos   []int32
	dstPos   []int32

	mu, hiMu, loMu, hiTrig, loTrig float64

	// Balance candidates: per eligible member a segment of list holding its
	// targets (heaviest first once sorted) between two sentinels.
	list        []int32
	segL        []int32
	segR        []int32
	sortedEnd   []int32
	nxt         []int32  // alive-skipping links for list positions
	keys, keys2 []uint64 // radix sort buffers
	ts2         []int32
	prv         []int32

	moves  []Move
	live   int     // moves not undone
	moved  []int32 // per target: 1 + its entry in moves, 0 if none
	passes int     // balance passes, each over freshly built lists
	merged int     // moves of targets already moved in this plan
}

func newPlanner(c Cluster, drain map[string]bool, cfg PlanConfig) *planner {
	n := len(c.Members)
	p := &planner{
		cfg:     cfg,
		members: c.Members,
		targets: c.Targets,
		rk:      NewRanker(c.Members),
		max:     cfg.MaxMoves,
		w:       make([]float64, n),
		elig:    make([]bool, n),
		load:    make([]float64, n),
		count:   make([]int32, n),
		empty:   make([]bool, n),
		group:   make([]int32, n),
		srcPos:  make([]int32, n),
		dstPos:  make([]int32, n),
		owner:   make([]int32, len(c.Targets)),
		sv:      make([]float64, len(c.Targets)),
	}
	if p.max <= 0 {
		p.max = math.MaxInt
	}
	idx := make(map[string]int32, n)
	var wsum float64
	for i, m := range c.Members {
		p.w[i] = weight(m)
		if _, dup := idx[m.ID]; dup {
			continue // a second entry for one ID is ignored
		}
		idx[m.ID] = int32(i)
		if !drain[m.ID] {
			p.elig[i] = true
			wsum += p.w[i]
		}
	}
	if wsum == 0 {
		return nil
	}
	p.makeGroups()

	if len(c.Moving) > 0 {
		p.frozen = make([]bool, len(c.Targets))
	}
	var total float64
	for t := range c.Targets {
		tg := &c.Targets[t]
		o := int32(-1)
		if tg.Owner != "" {
			if j, ok := idx[tg.Owner]; ok {
				o = j
			}
		}
		p.owner[t] = o
		s := float64(float32(min(series(tg), math.MaxFloat32)))
		p.sv[t] = s
		total += s
		if o >= 0 {
			p.load[o] += s
			p.count[o]++
		}
		if p.frozen != nil && c.Moving[tg.ID] {
			p.frozen[t] = true
		}
	}
	for i := range p.empty {
		p.empty[i] = p.count[i] == 0
	}
	tol, hys := cfg.Tolerance, cfg.Hysteresis
	p.mu = total / wsum
	p.hiTrig, p.loTrig = p.mu*(1+tol), p.mu*(1-tol)
	p.hiMu, p.loMu = p.mu*(1+tol-hys), p.mu*(1-tol+hys)

	for i := range p.srcPos {
		p.srcPos[i], p.dstPos[i] = -1, -1
	}
	p.src = make([]mheap, len(p.groups))
	p.dst = make([]mheap, len(p.groups))
	for g, ms := range p.groups {
		p.src[g] = mheap{pos: p.srcPos, less: p.busier}
		p.dst[g] = mheap{pos: p.dstPos, less: p.idler}
		for _, i := range ms {
			p.src[g].push(i)
			p.dst[g].push(i)
		}
	}
	return p
}

// makeGroups sets up the zone groups (a single group unless zone-aware)
// and, when zone-aware, the zone each target must stay in.
func (p *planner) makeGroups() {
	for i := range p.members {
		if p.elig[i] {
			p.all = append(p.all, int32(i))
		}
	}
	if !p.cfg.ZoneAware {
		p.groups = [][]int32{p.all}
		return
	}
	p.zoneIdx = make(map[string]int32)
	for i, m := range p.members {
		g, ok := p.zoneIdx[m.Zone]
		if !ok {
			g = int32(len(p.groups))
			p.zoneIdx[m.Zone] = g
			p.groups = append(p.groups, nil)
			p.groupName = append(p.groupName, m.Zone)
		}
		p.group[i] = g
		if p.elig[i] {
			p.groups[g] = append(p.groups[g], int32(i))
		}
	}
	p.tz = make([]int16, len(p.targets))
	for t := range p.targets {
		p.tz[t] = -1
		if z := p.targets[t].Zone; z != "" {
			if g, ok := p.zoneIdx[z]; ok && len(p.groups[g]) > 0 {
				p.tz[t] = int16(g)
			}
		}
	}
}

// zoneOf is the group target t must stay in, or -1 if it may go anywhere:
// it has no zone, its zone has no member that is not draining, or the plan
// is not zone-aware.
func (p *planner) zoneOf(t int32) int32 {
	if p.tz == nil {
		return -1
	}
	return int32(p.tz[t])
}

func (p *planner) full() bool { return p.live >= p.max }

func (p *planner) u(i int32) float64 { return p.load[i] / p.w[i] }

func (p *planner) busier(a, b int32) bool {
	ua, ub := p.u(a), p.u(b)
	if ua != ub {
		return ua > ub
	}
	return p.members[a].ID < p.members[b].ID
}

func (p *planner) idler(a, b int32) bool {
	ua, ub := p.u(a), p.u(b)
	if ua != ub {
		return ua < ub
	}
	return p.members[a].ID < p.members[b].ID
}

// busiest and idlest look across the groups' heaps; -1 when empty.
func (p *planner) busiest() int32 {
	best := int32(-1)
	for g := range p.src {
		if i := p.src[g].top(); i >= 0 && (best < 0 || p.busier(i, best)) {
			best = i
		}
	}
	return best
}

func (p *planner) idlest() int32 {
	best := int32(-1)
	for g := range p.dst {
		if i := p.dst[g].top(); i >= 0 && (best < 0 || p.idler(i, best)) {
			best = i
		}
	}
	return best
}

// placeHomeless places targets without a live owner and, if drains is set,
// those on draining members, heaviest first.
func (p *planner) placeHomeless(drains bool) {
	var orphans, drained []int32
	for t := range p.targets {
		if p.frozen != nil && p.frozen[t] {
			continue
		}
		switch o := p.owner[t]; {
		case o < 0:
			orphans = append(orphans, int32(t))
		case drains && !p.elig[o]:
			drained = append(drained, int32(t))
		}
	}
	p.sortRange(orphans)
	p.sortRange(drained)
	p.moves = slices.Grow(p.moves, min(len(orphans)+len(drained), p.max))
	for _, t := range append(orphans, drained...) {
		if p.full() {
			return
		}
		drain := p.owner[t] >= 0
		tg := &p.targets[t]
		d := p.place(t)
		s := p.sv[t]
		reason := ReasonOrphan
		switch {
		case drain:
			reason = ReasonDrain
			p.load[p.owner[t]] -= s
			p.count[p.owner[t]]--
		case tg.Owner != "":
			reason = ReasonScaleIn
		}
		p.owner[t] = d
		p.add(d, s)
		p.record(t, d, reason)
	}
}

// place chooses a member for target t: its rendezvous-preferred member
// (within its zone, if it must stay in one), unless that would take the
// member above the band; then the least busy member, if that leaves it
// less busy than the preferred one would be.
func (p *planner) place(t int32) int32 {
	among, l := p.all, int32(-1)
	if g := p.zoneOf(t); g >= 0 {
		among, l = p.groups[g], p.dst[g].top()
	} else {
		l = p.idlest()
	}
	s := p.sv[t]
	d := p.rk.preferredIn(p.targets[t].Key, among)
	if p.load[d]+s > p.w[d]*p.hiMu && l >= 0 && (p.load[l]+s)/p.w[l] < (p.load[d]+s)/p.w[d] {
		d = l
	}
	return d
}

// bringHome moves, when zone-aware, the targets that must stay in a zone
// but are owned outside it into that zone, heaviest first.
func (p *planner) bringHome() {
	if p.tz == nil {
		return
	}
	var away []int32
	for t, o := range p.owner {
		if g := p.tz[t]; g >= 0 && o >= 0 && p.group[o] != int32(g) && (p.frozen == nil || !p.frozen[t]) {
			away = append(away, int32(t))
		}
	}
	p.sortRange(away)
	for _, t := range away {
		if p.full() {
			return
		}
		o, d := p.owner[t], p.place(t)
		s := p.sv[t]
		p.load[o] -= s
		p.count[o]--
		p.fix(o)
		p.owner[t] = d
		p.add(d, s)
		p.record(t, d, ReasonZone)
	}
}

// record notes that target t now goes to member d. A target moved again in
// the same plan keeps one move, from its owner at the start to where it
// ends, and one that ends where it started is no move at all.
func (p *planner) record(t, d int32, reason MoveReason) {
	tg := &p.targets[t]
	to := p.members[d].ID
	if p.moved == nil {
		p.moved = make([]int32, len(p.targets))
	}
	if k := p.moved[t] - 1; k >= 0 {
		p.merged++
		m := &p.moves[k]
		m.To = to
		if m.Reason == ReasonBalance || m.Reason == ReasonScaleOut {
			m.Reason = reason
		}
		if m.To == m.From {
			m.Target = "" // dropped when the plan is returned
			p.moved[t] = 0
			p.live--
		}
		return
	}
	p.moved[t] = int32(len(p.moves)) + 1
	p.moves = append(p.moves, Move{Target: tg.ID, From: tg.Owner, To: to, Reason: reason, Series: tg.Series})
	p.live++
}

// result returns the moves without those that were undone.
func (p *planner) result() []Move {
	if p.live == len(p.moves) {
		return p.moves
	}
	return slices.DeleteFunc(p.moves, func(m Move) bool { return m.Target == "" })
}

// heavierFirst orders targets by series, descending, then by key and ID so
// that the order does not depend on the input's.
func (p *planner) heavierFirst(a, b int32) int {
	if c := cmp.Compare(p.sv[b], p.sv[a]); c != 0 {
		return c
	}
	ta, tb := &p.targets[a], &p.targets[b]
	if c := cmp.Compare(ta.Key, tb.Key); c != 0 {
		return c
	}
	return cmp.Compare(ta.ID, tb.ID)
}

func (p *planner) add(i int32, s float64) {
	p.load[i] += s
	p.count[i]++
	p.fix(i)
}

func (p *planner) fix(i int32) {
	g := p.group[i]
	p.src[g].fix(i)
	p.dst[g].fix(i)
}

func (p *planner) triggered() bool {
	h, l := p.busiest(), p.idlest()
	if h < 0 || h == l {
		return false
	}
	return p.u(h) > p.hiTrig || p.u(l) < p.loTrig
}

// balance moves targets until every member is within the stop band, or no
// allowed move improves the busiest or the idlest member. Each pass plans
// over the current owners, so targets placed or moved earlier in the plan
// can move again; the plan ends after a pass that moves nothing, which is
// what makes planning again from its result a no-op.
func (p *planner) balance() {
	for !p.full() && p.triggered() {
		p.passes++
		p.buildLists()
		if p.settle() == 0 {
			return
		}
	}
}

// settle runs rounds until one moves nothing, giving members that found no
// move another chance after others have changed.
func (p *planner) settle() (total int) {
	for {
		moved, stuck := p.balanceRound()
		total += moved
		for _, i := range stuck {
			g := p.group[i]
			if p.srcPos[i] < 0 {
				p.src[g].push(i)
			}
			if p.dstPos[i] < 0 {
				p.dst[g].push(i)
			}
		}
		if len(stuck) == 0 || moved == 0 || p.full() {
			return total
		}
	}
}

func (p *planner) balanceRound() (moved int, stuck []int32) {
	for !p.full() {
		h, l := p.busiest(), p.idlest()
		if h < 0 || l < 0 {
			break
		}
		topBad, botBad := p.u(h) > p.hiMu, p.u(l) < p.loMu
		if !topBad && !botBad {
			break
		}
		if topBad {
			d, pos := p.destFor(h)
			if pos < 0 {
				p.src[p.group[h]].remove(h)
				stuck = append(stuck, h)
				continue
			}
			p.apply(pos, h, d)
		} else {
			s, pos := p.sourceFor(l)
			if pos < 0 {
				p.dst[p.group[l]].remove(l)
				stuck = append(stuck, l)
				continue
			}
			p.apply(pos, s, l)
		}
		moved++
	}
	return moved, stuck
}

// destFor finds where the busiest member h should send a target: the least
// busy member of each group first, then any member a target of h fits on.
func (p *planner) destFor(h int32) (int32, int32) {
	var tops [8]int32
	cand := tops[:0]
	for g := range p.dst {
		if d := p.dst[g].top(); d >= 0 && d != h {
			cand = append(cand, d)
		}
	}
	slices.SortFunc(cand, func(a, b int32) int {
		if p.idler(a, b) {
			return -1
		}
		return 1
	})
	for _, d := range cand {
		if pos := p.pick(h, d, false); pos >= 0 {
			return d, pos
		}
	}
	// The least busy members took nothing h has: look at every member. The
	// smallest target h could send to each group decides which can.
	minS := p.smallestPerGroup(h)
	best := int32(-1)
	for _, ms := range p.groups {
		for _, d := range ms {
			if d == h || !(p.u(d) < p.u(h)) {
				continue
			}
			if s := minS[p.group[d]]; s > 0 && s <= p.noExceed(h, d) && (best < 0 || p.idler(d, best)) {
				best = d
			}
		}
	}
	if best < 0 {
		return -1, -1
	}
	return best, p.pick(h, best, true)
}

// sourceFor finds a member to send the idlest member l a target: the
// busiest overall, the busiest of l's group, then any that has one fitting.
func (p *planner) sourceFor(l int32) (int32, int32) {
	h := p.busiest()
	if h >= 0 && h != l {
		if pos := p.pick(h, l, false); pos >= 0 {
			return h, pos
		}
	}
	if h2 := p.src[p.group[l]].top(); h2 >= 0 && h2 != h && h2 != l {
		if pos := p.pick(h2, l, false); pos >= 0 {
			return h2, pos
		}
	}
	g := p.group[l]
	best := int32(-1)
	for _, s := range p.all {
		if s == l || !(p.u(s) > p.u(l)) || (best >= 0 && !p.busier(s, best)) {
			continue
		}
		if p.anyZone != nil && p.group[s] != g && p.anyZone[s] == 0 {
			continue // all its targets must stay in its own zone
		}
		if m := p.smallestFor(s, g); m > 0 && m <= p.noExceed(s, l) {
			best = s
		}
	}
	if best < 0 {
		return -1, -1
	}
	return best, p.pick(best, l, true)
}

// noExceed is the largest load that can go from h to d without d ending up
// busier (per unit of weight) than h.
func (p *planner) noExceed(h, d int32) float64 {
	wh, wd := p.w[h], p.w[d]
	return (p.u(h) - p.u(d)) / (1/wh + 1/wd)
}

// pick chooses which of h's targets to move to d, returning its position
// in list or -1 if no move from h to d is allowed. Unless thorough, it
// gives up after skipping maxSkips targets that may not go to d's zone, so
// that trying a zone h has little for stays cheap.
func (p *planner) pick(h, d int32, thorough bool) int32 {
	wh, wd := p.w[h], p.w[d]
	if !(p.u(h) > p.u(d)) {
		return -1
	}
	limit := p.noExceed(h, d)
	need := max(p.load[h]-wh*p.hiMu, wd*p.loMu-p.load[d])
	band := min(wd*p.hiMu-p.load[d], p.load[h]-wh*p.loMu, limit)
	L, R := p.segL[h], p.segR[h]
	g := p.group[d]
	skips := 0
	if thorough {
		skips = math.MinInt
	}

	// One target that settles it, as light as possible.
	if need > 0 && band >= need {
		a, b := p.firstAtMost(h, band), p.firstBelow(h, need)
		for q := p.prev(b - 1); q > L && q >= a; q = p.prev(q - 1) {
			if p.allowed(q, g) {
				return p.preferHeavier(q, a, h, d, g, min(band, 2*p.ser(q)))
			}
			if skips++; skips > maxSkips {
				return -1
			}
		}
	}
	// Otherwise the heaviest that keeps both in the band, or failing that
	// the heaviest that does not make d busier than h.
	for k, bound := range [2]float64{band, limit} {
		if !(bound > 0) || (k == 1 && bound == band) {
			continue
		}
		for q := p.next(p.firstAtMost(h, bound)); q < R; q = p.next(q + 1) {
			p.sortTo(h, q)
			s := p.ser(q)
			if !(s > 0) {
				break
			}
			if p.allowed(q, g) {
				return p.preferLighter(q, h, d, g, s/2)
			}
			if skips++; skips > maxSkips {
				return -1
			}
		}
	}
	return -1
}

// maxSkips bounds how many targets of the wrong zone a quick pick skips.
const maxSkips = 64

// preferSteps bounds the search for a candidate the destination outranks
// the source for. When the source holds the targets it is preferred for,
// about one in N+1 is one, so the bound grows with the members: about 86%
// of searches find one if there is one.
func (p *planner) preferSteps() int { return 2*len(p.all) + 8 }

// preferHeavier looks from position c towards heavier targets (not beyond
// position a or load upTo) for one whose rendezvous order favours d over h.
func (p *planner) preferHeavier(c, a, h, d, g int32, upTo float64) int32 {
	for q, n := c, 0; q > p.segL[h] && q >= a && n < p.preferSteps(); q, n = p.prev(q-1), n+1 {
		if p.ser(q) > upTo {
			break
		}
		if p.allowed(q, g) && p.rk.better(p.targets[p.list[q]].Key, int(d), int(h)) {
			return q
		}
	}
	return c
}

// preferLighter looks from c towards lighter targets, down to load downTo.
func (p *planner) preferLighter(c, h, d, g int32, downTo float64) int32 {
	R := p.segR[h]
	for q, n := c, 0; q < R && n < p.preferSteps(); q, n = p.next(q+1), n+1 {
		p.sortTo(h, q)
		if s := p.ser(q); s < downTo || !(s > 0) {
			break
		}
		if p.allowed(q, g) && p.rk.better(p.targets[p.list[q]].Key, int(d), int(h)) {
			return q
		}
	}
	return c
}

func (p *planner) allowed(q, g int32) bool {
	z := p.zoneOf(p.list[q])
	return z < 0 || z == g
}

// smallestFor returns the lightest non-empty target h still holds that may
// go to group g (0 if none).
func (p *planner) smallestFor(h, g int32) float64 {
	L := p.segL[h]
	for q := p.prev(p.firstAtMost(h, 0) - 1); q > L; q = p.prev(q - 1) {
		if p.allowed(q, g) {
			return p.ser(q)
		}
	}
	return 0
}

// smallestPerGroup returns, per group, the lightest non-empty target member
// h still holds that may go to that group (0 if none).
func (p *planner) smallestPerGroup(h int32) []float64 {
	out := make([]float64, len(p.groups))
	L := p.segL[h]
	left := len(out)
	for q := p.prev(p.firstAtMost(h, 0) - 1); q > L && left > 0; q = p.prev(q - 1) {
		if g := p.zoneOf(p.list[q]); g >= 0 {
			if out[g] == 0 {
				out[g] = p.ser(q)
				left--
			}
			continue
		}
		for g := range out { // a target without a zone fits every group
			if out[g] == 0 {
				out[g] = p.ser(q)
				left--
			}
		}
	}
	return out
}

func (p *planner) apply(pos, from, to int32) {
	t := p.list[pos]
	p.kill(pos)
	s := p.sv[t]
	p.load[from] -= s
	p.count[from]--
	p.fix(from)
	p.owner[t] = to
	p.add(to, s)
	if p.anyZone != nil && p.tz[t] < 0 {
		p.anyZone[from]-- // the target is not in to's list: it counts again after the next rebuild
	}
	reason := ReasonBalance
	if p.empty[to] {
		reason = ReasonScaleOut
	}
	p.record(t, to, reason)
}

// buildLists lays out every eligible member's movable targets in one array,
// each member's between two sentinel positions.
func (p *planner) buildLists() {
	n := len(p.members)
	if p.segL == nil {
		p.segL = make([]int32, n)
		p.segR = make([]int32, n)
		p.sortedEnd = make([]int32, n)
	}
	cnt := make([]int32, n)
	if p.tz != nil {
		p.anyZone = make([]int32, n)
	}
	for t, o := range p.owner {
		if o >= 0 && p.elig[o] && (p.frozen == nil || !p.frozen[t]) {
			cnt[o]++
			if p.anyZone != nil && p.tz[t] < 0 {
				p.anyZone[o]++
			}
		}
	}
	pos := int32(0)
	for i := range cnt {
		p.segL[i] = pos
		pos += cnt[i] + 1
		p.segR[i] = pos
		pos++
	}
	if cap(p.list) < int(pos) {
		p.list = make([]int32, pos)
		p.nxt = make([]int32, pos)
		p.prv = make([]int32, pos)
	}
	p.list, p.nxt, p.prv = p.list[:pos], p.nxt[:pos], p.prv[:pos]
	for i := range p.list {
		p.nxt[i], p.prv[i] = int32(i), int32(i)
	}
	fill := cnt // reused as the next free slot per member
	for i := range fill {
		fill[i] = p.segL[i] + 1
		p.sortedEnd[i] = p.segL[i] + 1
		p.list[p.segL[i]], p.list[p.segR[i]] = -1, -1
	}
	for t, o := range p.owner {
		if o >= 0 && p.elig[o] && (p.frozen == nil || !p.frozen[t]) {
			p.list[fill[o]] = int32(t)
			fill[o]++
		}
	}
}

// Segments are sorted lazily, heaviest first: sortedEnd[h] is where the
// sorted part of h's segment ends, and everything before it is at least as
// heavy as everything after. Most members are never a source, and of a
// source mostly the heavy end is read, so sorting is done a slice at a time
// from the heavy end (see extend). No position at or beyond sortedEnd has
// been moved, so all of them are alive.

// sortTo makes sure position q of h's segment is in the sorted part.
func (p *planner) sortTo(h, q int32) {
	for q >= p.sortedEnd[h] && q < p.segR[h] {
		p.extend(h)
	}
}

const (
	partialMin = 4096 // below this the rest of a segment is sorted at once
	binBits    = 12   // histogram of the top bits of a float32: 8 bins per octave
)

// extend sorts the next slice of h's segment: the heaviest eighth (at
// least partialMin targets) of what is not sorted yet, chosen with one
// histogram pass, or all of it when little is left.
func (p *planner) extend(h int32) {
	e, R := p.sortedEnd[h], p.segR[h]
	rest := p.list[e:R]
	if len(rest) <= partialMin {
		p.sortRange(rest)
		p.sortedEnd[h] = R
		return
	}
	var hist [1 << binBits]int32
	for _, t := range rest {
		hist[p.bin(t)]++
	}
	want, cum, cut := int32(max(len(rest)/8, partialMin)), int32(0), 0
	for cut = range hist {
		if cum += hist[cut]; cum >= want {
			break
		}
	}
	if int(cum) == len(rest) {
		p.sortRange(rest)
		p.sortedEnd[h] = R
		return
	}
	i := 0
	for j, t := range rest {
		if int(p.bin(t)) <= cut {
			rest[i], rest[j] = rest[j], rest[i]
			i++
		}
	}
	p.sortRange(rest[:i])
	p.sortedEnd[h] = e + int32(i)
}

// bin is a target's histogram bin; lower bins are heavier.
func (p *planner) bin(t int32) uint32 {
	return ^math.Float32bits(float32(p.sv[t])) >> (32 - binBits)
}

// sortRange sorts targets heaviest first (ties by key, then ID).
func (p *planner) sortRange(seg []int32) {
	n := len(seg)
	if n < 256 {
		slices.SortFunc(seg, p.heavierFirst)
		return
	}
	// A radix sort on (series, top of key): the targets are scattered over
	// a large slice, and comparisons would mostly wait on cache misses.
	if cap(p.keys) < n {
		p.keys, p.keys2 = make([]uint64, n), make([]uint64, n)
		p.ts2 = make([]int32, n)
	}
	keys, keys2, ts, ts2 := p.keys[:n], p.keys2[:n], seg, p.ts2[:n]
	for i, t := range seg {
		keys[i] = uint64(^math.Float32bits(float32(p.sv[t])))<<32 | p.targets[t].Key>>32
	}
	var hist [256]int
	for shift := uint(0); shift < 64; shift += 8 {
		hist = [256]int{}
		for _, k := range keys {
			hist[byte(k>>shift)]++
		}
		if hist[byte(keys[0]>>shift)] == n {
			continue // every key has the same digit here
		}
		sum := 0
		for d := range hist {
			hist[d], sum = sum, sum+hist[d]
		}
		for i, k := range keys {
			d := byte(k >> shift)
			keys2[hist[d]], ts2[hist[d]] = k, ts[i]
			hist[d]++
		}
		keys, keys2, ts, ts2 = keys2, keys, ts2, ts
	}
	if &ts[0] != &seg[0] {
		copy(seg, ts)
	}
	// Equal radix keys (rare) are put in full order.
	for i := 0; i < n; {
		j := i + 1
		for j < n && keys[j] == keys[i] {
			j++
		}
		if j-i > 1 {
			slices.SortFunc(seg[i:j], p.heavierFirst)
		}
		i = j
	}
}

func (p *planner) ser(q int32) float64 { return p.sv[p.list[q]] }

// firstAtMost is the first position of h's segment whose target is at
// most x (the right sentinel if none), sorting as far as needed.
func (p *planner) firstAtMost(h int32, x float64) int32 {
	for {
		lo, hi := p.segL[h]+1, p.sortedEnd[h]
		for lo < hi {
			m := int32(uint32(lo+hi) >> 1)
			if p.ser(m) <= x {
				hi = m
			} else {
				lo = m + 1
			}
		}
		if lo < p.sortedEnd[h] || lo == p.segR[h] {
			return lo
		}
		p.extend(h)
	}
}

// firstBelow is the first position of h's segment whose target is below x.
func (p *planner) firstBelow(h int32, x float64) int32 {
	for {
		lo, hi := p.segL[h]+1, p.sortedEnd[h]
		for lo < hi {
			m := int32(uint32(lo+hi) >> 1)
			if p.ser(m) < x {
				hi = m
			} else {
				lo = m + 1
			}
		}
		if lo < p.sortedEnd[h] || lo == p.segR[h] {
			return lo
		}
		p.extend(h)
	}
}

// kill removes position q from the alive lists; next and prev then skip it.
func (p *planner) kill(q int32) {
	p.nxt[q], p.prv[q] = q+1, q-1
}

// next is the first alive position at or after q (sentinels are alive).
func (p *planner) next(q int32) int32 {
	r := q
	for p.nxt[r] != r {
		r = p.nxt[r]
	}
	for q != r {
		q, p.nxt[q] = p.nxt[q], r
	}
	return r
}

// prev is the last alive position at or before q.
func (p *planner) prev(q int32) int32 {
	r := q
	for p.prv[r] != r {
		r = p.prv[r]
	}
	for q != r {
		q, p.prv[q] = p.prv[q], r
	}
	return r
}

// series is a target's load, with nonsense (negative, NaN, Inf) as zero.
func series(t *Target) float64 {
	s := t.Series
	if !(s > 0) || math.IsInf(s, 1) {
		return 0
	}
	return s
}
