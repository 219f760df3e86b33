package discoverer

import (
	"cmp"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"sync"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery/targetgroup"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/scrape"

	"github.com/allot-dev/allot/pkg/events"
)

// catalog is the desired state of the published catalog: every job, every
// target group each provider of a job has reported, what relabelling made
// of each of its targets, and which jobs and targets changed since the last
// publish.
//
// All of it is keyed so that applying one group touches only that group:
// groups by (provider, source), targets by ID. Nothing here walks the whole
// catalog except [catalog.desired] (reconciliation) and [catalog.list]
// (the debugging API).
//
// The catalog does no I/O; its methods are safe for concurrent use.
type catalog struct {
	mu   sync.RWMutex
	jobs map[string]*jobState
	// targets holds every kept target of every job. An ID includes the job
	// name, so one target belongs to one job.
	targets map[uint64]*target

	// tracking says whether changes are recorded in dirty*: only a leader
	// publishes, so a follower keeps no backlog; a new leader reconciles
	// against the bucket instead.
	tracking     bool
	dirtyTargets map[uint64]struct{}
	dirtyJobs    map[string]struct{}

	// Scratch space of the writer (under mu).
	lb      *labels.Builder
	idInput map[string]string
	reasons *dropReasons
}

type jobState struct {
	name string
	cfg  *config.ScrapeConfig
	// event is the job as published: config YAML and its hash, which
	// every target of the job carries as its ConfigHash.
	event events.Job
	// groups by provider, then by target group source. A provider serves
	// one job (see tapConfig), so removing a provider removes its groups
	// here only.
	providers map[uint64]map[string]*group
	// active counts the distinct targets of the job, dropped the dropped
	// entries of its groups.
	active, dropped int
}

// group is what one target group produced: the IDs it keeps (with their
// index in tg.Targets, to show discovered labels) and what it dropped.
type group struct {
	tg      *targetgroup.Group
	kept    []keptRef
	dropped []droppedRef
}

type keptRef struct {
	id  uint64
	idx int32
}

type droppedRef struct {
	idx    int32
	reason string
}

// target is one kept target. Several groups may produce the same target
// (same job, same final labels); refs counts them so that it is deleted
// only when the last one goes, and a target moving between groups or
// providers (an SD config change) is never deleted and re-added.
type target struct {
	job    *jobState
	labels labels.Labels
	refs   int32
}

func newCatalog() *catalog {
	return &catalog{
		jobs:         map[string]*jobState{},
		targets:      map[uint64]*target{},
		dirtyTargets: map[uint64]struct{}{},
		dirtyJobs:    map[string]struct{}{},
		lb:           labels.NewBuilder(labels.EmptyLabels()),
		idInput:      map[string]string{},
		reasons:      newDropReasons(),
	}
}

// jobSpec is one job of a new config, ready to be published.
type jobSpec struct {
	cfg   *config.ScrapeConfig
	event events.Job
}

// setJobs replaces the set of jobs. A removed job loses all its targets; a
// job whose scrape config changed has all its groups relabelled (groups
// stay: providers whose SD config is unchanged keep running and do not
// send them again). It returns the names of jobs whose state changed.
func (c *catalog) setJobs(specs map[string]jobSpec) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Cached drop reasons point at rules of the old configs.
	c.reasons.reset()
	var touched []string
	for name, j := range c.jobs {
		if _, ok := specs[name]; ok {
			continue
		}
		for _, groups := range j.providers {
			for _, g := range groups {
				c.release(j, g)
			}
		}
		delete(c.jobs, name)
		c.markJob(name)
		touched = append(touched, name)
	}
	for name, spec := range specs {
		j, ok := c.jobs[name]
		if !ok {
			c.jobs[name] = &jobState{
				name:      name,
				cfg:       spec.cfg,
				event:     spec.event,
				providers: map[uint64]map[string]*group{},
			}
			c.markJob(name)
			touched = append(touched, name)
			continue
		}
		changed := false
		if j.event.Hash != spec.event.Hash {
			changed = true
			j.event = spec.event
			c.markJob(name)
			// Every target carries the job's config hash, so every
			// target of the job changes.
			for _, groups := range j.providers {
				for _, g := range groups {
					for _, k := range g.kept {
						c.markTarget(k.id)
					}
				}
			}
		}
		if !sameRelabelling(j.cfg, spec.cfg) {
			changed = true
			for _, groups := range j.providers {
				for src, g := range groups {
					groups[src] = c.rebuild(j, g, spec.cfg)
				}
			}
		}
		j.cfg = spec.cfg
		if changed {
			touched = append(touched, name)
		}
	}
	return touched
}

// rebuild relabels a group under a new scrape config.
func (c *catalog) rebuild(j *jobState, g *group, cfg *config.ScrapeConfig) *group {
	old := j.cfg
	j.cfg = cfg
	ng := c.build(j, g.tg)
	j.cfg = old
	c.release(j, g)
	return ng
}

// sameRelabelling reports whether two versions of a scrape config turn
// discovered targets into the same final labels. Only the SD configs are
// left out: what targets are discovered is the providers' business, and
// nearly every other field is copied into a label or checked by
// PopulateLabels.
func sameRelabelling(a, b *config.ScrapeConfig) bool {
	if a == b {
		return true
	}
	ac, bc := *a, *b
	ac.ServiceDiscoveryConfigs, bc.ServiceDiscoveryConfigs = nil, nil
	return reflect.DeepEqual(&ac, &bc)
}

// update is what a provider reported since the last apply.
type update struct {
	job      string
	provider uint64
	groups   []*targetgroup.Group
	// ended: the provider stopped (its config is gone or changed), so its
	// groups go away. Groups reported before the end are ignored.
	ended bool
}

// apply applies provider updates in order and returns the names of the
// jobs they touched (possibly repeated). Updates for a job that no longer exists are ignored:
// they come from providers that are being stopped.
func (c *catalog) apply(ups []update) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var touched []string
	for _, u := range ups {
		j, ok := c.jobs[u.job]
		if !ok {
			continue
		}
		touched = append(touched, u.job)
		if u.ended {
			for _, g := range j.providers[u.provider] {
				c.release(j, g)
			}
			delete(j.providers, u.provider)
			continue
		}
		groups := j.providers[u.provider]
		if groups == nil {
			groups = map[string]*group{}
			j.providers[u.provider] = groups
		}
		for _, tg := range u.groups {
			c.applyGroup(j, groups, tg)
		}
	}
	return touched
}

// applyGroup replaces one group, as discovery.Manager does: a group without
// targets removes the source. The cost is that of the group.
func (c *catalog) applyGroup(j *jobState, groups map[string]*group, tg *targetgroup.Group) {
	if tg == nil {
		return
	}
	old := groups[tg.Source]
	if len(tg.Targets) == 0 {
		if old != nil {
			c.release(j, old)
			delete(groups, tg.Source)
		}
		return
	}
	if old != nil && sameGroup(old.tg, tg) {
		// Many SDs resend groups that did not change (file SD sends a
		// whole file, refreshing SDs send everything every interval);
		// comparing is much cheaper than relabelling.
		old.tg = tg
		return
	}
	g := c.build(j, tg)
	// Take the new references before dropping the old ones, so a target
	// present in both is never deleted and re-added.
	if old != nil {
		c.release(j, old)
	}
	groups[tg.Source] = g
}

// build relabels a group and takes a reference on each target it keeps.
func (c *catalog) build(j *jobState, tg *targetgroup.Group) *group {
	g := &group{tg: tg}
	for i, tl := range tg.Targets {
		lset, err := scrape.PopulateLabels(c.lb, j.cfg, tl, tg.Labels)
		switch {
		case err != nil || lset.IsEmpty():
			// Only dropped targets pay for finding out why.
			g.dropped = append(g.dropped, droppedRef{idx: int32(i), reason: c.reasons.explain(j.cfg, tl, tg.Labels, err)})
		default:
			id := c.targetID(j.name, lset)
			// Receivers reject what events.Target.Validate rejects (e.g. a
			// UTF-8 label name Prometheus accepts), and the publisher
			// refuses a whole batch for one such target: keep it out of
			// the catalog, and say why.
			ev := events.Target{V: events.Version, ID: formatID(id), Job: j.name, Labels: c.idInput}
			if err := ev.Validate(); err != nil {
				g.dropped = append(g.dropped, droppedRef{idx: int32(i), reason: "not publishable: " + err.Error()})
				continue
			}
			g.kept = append(g.kept, keptRef{id: id, idx: int32(i)})
			c.ref(j, id, lset)
		}
	}
	j.dropped += len(g.dropped)
	return g
}

// release drops a group's references.
func (c *catalog) release(j *jobState, g *group) {
	for _, k := range g.kept {
		t := c.targets[k.id]
		if t == nil {
			continue
		}
		t.refs--
		if t.refs <= 0 {
			delete(c.targets, k.id)
			t.job.active--
			c.markTarget(k.id)
		}
	}
	j.dropped -= len(g.dropped)
}

func (c *catalog) ref(j *jobState, id uint64, lset labels.Labels) {
	if t := c.targets[id]; t != nil {
		t.refs++
		return
	}
	c.targets[id] = &target{job: j, labels: lset, refs: 1}
	j.active++
	c.markTarget(id)
}

// targetID is events.TargetID of the final labels, kept as the number its
// 16 hex digits spell: half the memory of the string, and a cheaper key.
func (c *catalog) targetID(job string, lset labels.Labels) uint64 {
	clear(c.idInput)
	lset.Range(func(l labels.Label) { c.idInput[l.Name] = l.Value })
	id, err := parseID(events.TargetID(job, c.idInput))
	if err != nil {
		// events.TargetID always returns 16 hex digits; anything else is
		// a programming error that must not be published under a wrong key.
		panic(err)
	}
	return id
}

func (c *catalog) markTarget(id uint64) {
	if c.tracking {
		c.dirtyTargets[id] = struct{}{}
	}
}

func (c *catalog) markJob(name string) {
	if c.tracking {
		c.dirtyJobs[name] = struct{}{}
	}
}

// sameGroup reports whether two versions of a group have the same content.
func sameGroup(a, b *targetgroup.Group) bool {
	if a == b {
		return true
	}
	if len(a.Targets) != len(b.Targets) || !a.Labels.Equal(b.Labels) {
		return false
	}
	for i := range a.Targets {
		if !a.Targets[i].Equal(b.Targets[i]) {
			return false
		}
	}
	return true
}

// track starts or stops recording changes. Either way the backlog is
// cleared: a leader starts with a full reconciliation, a follower keeps none.
func (c *catalog) track(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tracking = on
	c.dirtyTargets = map[uint64]struct{}{}
	c.dirtyJobs = map[string]struct{}{}
}

// changes is what must be published: jobs and targets changed since the
// last takeChanges. They are resolved against the state at publish time, so
// a burst of changes to one target costs one event.
type changes struct {
	jobs    map[string]struct{}
	targets map[uint64]struct{}
}

func (ch changes) empty() bool { return len(ch.jobs) == 0 && len(ch.targets) == 0 }

// takeChanges returns and forgets the recorded changes.
func (c *catalog) takeChanges() changes {
	c.mu.Lock()
	defer c.mu.Unlock()
	// An empty set stays in place (no allocation per idle publish), so it
	// must not be handed out: the writer keeps using it.
	var ch changes
	if len(c.dirtyJobs) > 0 {
		ch.jobs = c.dirtyJobs
		c.dirtyJobs = map[string]struct{}{}
	}
	if len(c.dirtyTargets) > 0 {
		ch.targets = c.dirtyTargets
		c.dirtyTargets = map[uint64]struct{}{}
	}
	return ch
}

// markChanged records changes found by reconciliation.
func (c *catalog) markChanged(jobs []string, ids []uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tracking {
		return
	}
	for _, n := range jobs {
		c.dirtyJobs[n] = struct{}{}
	}
	for _, id := range ids {
		c.dirtyTargets[id] = struct{}{}
	}
}

// resolveJobs turns changed job names into the jobs to put and the names
// to delete.
func (c *catalog) resolveJobs(names map[string]struct{}) (puts []events.Job, dels []string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for n := range names {
		if j, ok := c.jobs[n]; ok {
			puts = append(puts, j.event)
		} else {
			dels = append(dels, n)
		}
	}
	return puts, dels
}

// resolveTargets turns changed IDs into the targets to put (their current
// state) and the IDs to delete.
func (c *catalog) resolveTargets(ids []uint64) (puts []events.Target, dels []string) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, id := range ids {
		t, ok := c.targets[id]
		if !ok {
			dels = append(dels, formatID(id))
			continue
		}
		puts = append(puts, t.event(id))
	}
	return puts, dels
}

// event is the published form of a target. Call with the catalog locked.
func (t *target) event(id uint64) events.Target {
	return events.Target{
		V:          events.Version,
		ID:         formatID(id),
		Job:        t.job.name,
		Labels:     t.labels.Map(),
		ConfigHash: t.job.event.Hash,
	}
}

// desiredTarget is one target as a reconciliation sees it.
type desiredTarget struct {
	id     uint64
	job    string
	hash   string
	labels labels.Labels
}

func (dt desiredTarget) event() events.Target {
	return events.Target{
		V:          events.Version,
		ID:         formatID(dt.id),
		Job:        dt.job,
		Labels:     dt.labels.Map(),
		ConfigHash: dt.hash,
	}
}

// snapshotDesired copies what reconciliation compares against the bucket:
// every job's hash and every target. A target's labels never change once
// built and the job hash is copied now, so events can be built after the
// lock is released; anything that changes later is recorded as a change and
// published after the reconciliation.
func (c *catalog) snapshotDesired() (jobs map[string]string, targets []desiredTarget) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	jobs = make(map[string]string, len(c.jobs))
	for n, j := range c.jobs {
		jobs[n] = j.event.Hash
	}
	targets = make([]desiredTarget, 0, len(c.targets))
	for id, t := range c.targets {
		targets = append(targets, desiredTarget{id: id, job: t.job.name, hash: t.job.event.Hash, labels: t.labels})
	}
	return jobs, targets
}

// diffSnapshot compares the desired catalog with what the bucket holds and
// returns the jobs and targets that differ (missing, different or extra).
func diffSnapshot(snap events.Snapshot, jobs map[string]string, targets []desiredTarget) (jobDiff []string, idDiff []uint64, err error) {
	for n, h := range jobs {
		if snap.Jobs[n] != h {
			jobDiff = append(jobDiff, n)
		}
	}
	for n := range snap.Jobs {
		if _, ok := jobs[n]; !ok {
			jobDiff = append(jobDiff, n)
		}
	}
	seen := make(map[string]struct{}, len(targets))
	for _, dt := range targets {
		ev := dt.event()
		seen[ev.ID] = struct{}{}
		b, err := events.EncodeTarget(ev)
		if err != nil {
			return nil, nil, err
		}
		if h, ok := snap.Targets[ev.ID]; ok && h == events.ValueHash(b) {
			continue
		}
		idDiff = append(idDiff, dt.id)
	}
	for s := range snap.Targets {
		if _, ok := seen[s]; ok {
			continue
		}
		id, err := parseID(s)
		if err != nil {
			// Not a key this discoverer could have written; leave it
			// to whoever did (receivers reject it anyway).
			continue
		}
		idDiff = append(idDiff, id)
	}
	return jobDiff, idDiff, nil
}

// formatID spells an ID as events does: 16 lowercase hex digits.
func formatID(id uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	for i := 15; i >= 0; i-- {
		b[i] = digits[id&0xf]
		id >>= 4
	}
	return string(b[:])
}

func parseID(s string) (uint64, error) {
	if len(s) != 16 {
		return 0, fmt.Errorf("target id %q: not 16 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("target id %q: %w", s, err)
	}
	if formatID(v) != s {
		return 0, fmt.Errorf("target id %q: not lowercase hex", s)
	}
	return v, nil
}

// counts returns a job's active and dropped target counts.
func (c *catalog) counts(job string) (active, dropped int, ok bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	j, ok := c.jobs[job]
	if !ok {
		return 0, 0, false
	}
	return j.active, j.dropped, true
}

// list copies every active and dropped target, sorted by job, then by ID
// (active) or address (dropped).
func (c *catalog) list() (active []TargetInfo, dropped []DroppedTarget) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	active, dropped = []TargetInfo{}, []DroppedTarget{}
	lb := labels.NewBuilder(labels.EmptyLabels())
	discovered := func(j *jobState, tg *targetgroup.Group, idx int32) map[string]string {
		scrape.PopulateDiscoveredLabels(lb, j.cfg, tg.Targets[idx], tg.Labels)
		return lb.Labels().Map()
	}
	seen := make(map[uint64]struct{}, len(c.targets))
	for _, j := range c.jobs {
		for _, groups := range j.providers {
			for _, g := range groups {
				for _, k := range g.kept {
					if _, ok := seen[k.id]; ok {
						continue
					}
					seen[k.id] = struct{}{}
					t := c.targets[k.id]
					if t == nil {
						continue
					}
					active = append(active, TargetInfo{
						ID:               formatID(k.id),
						Job:              j.name,
						Labels:           t.labels.Map(),
						DiscoveredLabels: discovered(j, g.tg, k.idx),
					})
				}
				for _, dr := range g.dropped {
					dropped = append(dropped, DroppedTarget{
						Job:              j.name,
						DiscoveredLabels: discovered(j, g.tg, dr.idx),
						Reason:           dr.reason,
					})
				}
			}
		}
	}
	slices.SortFunc(active, func(a, b TargetInfo) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job), cmp.Compare(a.ID, b.ID))
	})
	slices.SortFunc(dropped, func(a, b DroppedTarget) int {
		return cmp.Or(cmp.Compare(a.Job, b.Job),
			cmp.Compare(a.DiscoveredLabels[model.AddressLabel], b.DiscoveredLabels[model.AddressLabel]),
			cmp.Compare(a.Reason, b.Reason))
	})
	return active, dropped
}
