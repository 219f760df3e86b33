package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotFound is returned by GetTarget for an id that is not in the catalog.
var ErrNotFound = errors.New("events: not found")

// Handler receives the catalog from a Follower. Its methods are called from
// the follower's single goroutine, in order, and must not block long: the
// follower reads nothing else meanwhile.
type Handler interface {
	// UpsertJob delivers a new or changed job.
	UpsertJob(Job)
	// DeleteJob says a job left the catalog.
	DeleteJob(name string)
	// UpsertTarget delivers a new or changed target, or the current value
	// of a target just passed to Track.
	UpsertTarget(Target)
	// DeleteTarget says a target left the catalog (or, after Track, that
	// it is not in it). It is not called for targets the follower stops
	// following (dropped slots, Untrack): the handler forgets those itself.
	DeleteTarget(id string)
	// Synced says the snapshot for the current filter has been delivered:
	// every job, every target of the followed slots and every tracked
	// target, as of some moment after the last (re)start of a watch. It is
	// called after each (re)start (Run, SetSlots, Track, reconnect).
	Synced()
}

const (
	// trackGroups splits tracked targets over this many watches (by slot),
	// so that a Track restarts one small watch, not all of them.
	trackGroups = 8
	// maxTrackKeys is the most single-key filters one tracked watch uses.
	// Creating a consumer costs about 0.3 s for 1000 filter subjects and
	// times out at 5000 on nats-server v2.15.2; a group with more tracked
	// targets follows their slots instead and drops the rest.
	maxTrackKeys = 400
	// startTimeout bounds creating one watch.
	startTimeout = 10 * time.Second
	minBackoff   = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// Follower follows the jobs, the targets of a set of slots and single
// tracked targets, and hands every change to a Handler.
//
// It remembers, per target it delivered, only its slot and revision (about
// 40 bytes), so its memory is proportional to its share of the catalog, not
// to the catalog.
type Follower struct {
	js  jetstream.JetStream
	cfg Config
	h   Handler
	m   *followerMetrics
	log *slog.Logger

	mu       sync.Mutex
	want     []int // desired slots, sorted, unique; applied by Run
	wantNew  bool
	trackOps []trackOp
	kick     chan struct{}

	running atomic.Bool

	kvMu      sync.Mutex
	targetsKV jetstream.KeyValue // for GetTarget

	// State below is owned by the goroutine in Run.
	slots      [Slots]bool
	nslots     int
	targets    map[uint64]targetState
	jobs       map[string]entryState
	tracked    [trackGroups]map[uint64]struct{}
	pending    map[uint64]struct{} // tracked ids whose current value is still owed
	tick       uint64              // counts processed entries; see entryState.touched
	needSynced bool
	gaugeSlots int // this follower's contribution to the followed-slots gauge
}

type trackOp struct {
	add bool
	ids []string
}

// entryState is what a follower remembers of a delivered job.
type entryState struct {
	rev uint64 // stream sequence of the last entry applied
	// touched is the tick of the last entry seen for the key, of any
	// watch. A key not touched since a watch started and absent from its
	// snapshot has vanished.
	touched uint64
}

// targetState is what a follower remembers of a delivered target.
type targetState struct {
	entryState
	slot    uint16
	deleted bool // a tombstone, kept only for tracked ids (see apply)
}

// NewFollower returns a follower that delivers to h. It follows no slots
// until SetSlots is called; Run does the work.
func NewFollower(js jetstream.JetStream, cfg Config, h Handler, reg prometheus.Registerer, logger *slog.Logger) *Follower {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Follower{
		js:      js,
		cfg:     cfg.withDefaults(),
		h:       h,
		m:       newFollowerMetrics(reg),
		log:     logger.With("component", "events-follower"),
		kick:    make(chan struct{}, 1),
		targets: map[uint64]targetState{},
		jobs:    map[string]entryState{},
		pending: map[uint64]struct{}{},
	}
	for g := range f.tracked {
		f.tracked[g] = map[uint64]struct{}{}
	}
	return f
}

// SetSlots changes the followed slots; it may be called before or during
// Run and does not block. Targets of newly added slots are delivered with
// UpsertTarget, and Synced follows once they all are. Targets of dropped
// slots are forgotten without DeleteTarget (unless tracked): the handler
// drops them itself, it knows SlotOf. When the watch restarts, targets of
// the kept slots that vanished meanwhile are reported with DeleteTarget.
// Slots outside 0..Slots-1 are ignored.
func (f *Follower) SetSlots(slots []int) {
	s := make([]int, 0, len(slots))
	for _, x := range slots {
		if x >= 0 && x < Slots {
			s = append(s, x)
		}
	}
	slices.Sort(s)
	s = slices.Compact(s)
	f.mu.Lock()
	f.want, f.wantNew = s, true
	f.mu.Unlock()
	f.poke()
}

// Track follows single targets whatever their slot (a scraper's targets
// that it owns outside its slots). Each id's current value is delivered
// with UpsertTarget, or DeleteTarget if it is not in the catalog; later
// changes are delivered like any other. Pass many ids in one call: each
// call restarts the watches of the affected tracked groups. Invalid ids are
// logged and ignored.
func (f *Follower) Track(ids ...string) { f.trackOp(true, ids) }

// Untrack stops following single targets. Targets in followed slots are
// still followed; others are forgotten without DeleteTarget.
func (f *Follower) Untrack(ids ...string) { f.trackOp(false, ids) }

func (f *Follower) trackOp(add bool, ids []string) {
	if len(ids) == 0 {
		return
	}
	f.mu.Lock()
	f.trackOps = append(f.trackOps, trackOp{add: add, ids: slices.Clone(ids)})
	f.mu.Unlock()
	f.poke()
}

func (f *Follower) poke() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// GetTarget reads one target by key, whether followed or not.
func (f *Follower) GetTarget(ctx context.Context, id string) (Target, error) {
	if !ValidID(id) {
		return Target{}, fmt.Errorf("get target: %q is not a target id", id)
	}
	kv, err := f.targetsBucket(ctx)
	if err != nil {
		return Target{}, fmt.Errorf("get target %s: %w", id, err)
	}
	e, err := kv.Get(ctx, TargetKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Target{}, fmt.Errorf("get target %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Target{}, fmt.Errorf("get target %s: %w", id, err)
	}
	t, err := DecodeTarget(e.Value())
	if err != nil {
		return Target{}, fmt.Errorf("get target %s: %w", id, err)
	}
	if t.ID != id {
		return Target{}, fmt.Errorf("get target %s: %w", id, invalid("target", "id", ReasonKey, "value has id %s", t.ID))
	}
	return t, nil
}

func (f *Follower) targetsBucket(ctx context.Context) (jetstream.KeyValue, error) {
	f.kvMu.Lock()
	defer f.kvMu.Unlock()
	if f.targetsKV == nil {
		kv, err := openBucket(ctx, f.js, f.cfg.targetsKV())
		if err != nil {
			return nil, err
		}
		f.targetsKV = kv
	}
	return f.targetsKV, nil
}

// watchKind says what a watch covers.
type watchKind int

const (
	kindJobs watchKind = iota
	kindSlots
	kindTracked
)

// watch is one KV watcher (an ordered consumer) with its life cycle.
type watch struct {
	kind  watchKind
	group int // for kindTracked

	kw        jetstream.KeyWatcher // nil when stopped
	cancel    context.CancelFunc   // ends kw's subscription
	stop      chan struct{}
	gen       uint64 // tells the entries of successive watchers apart
	synced    bool
	startTick uint64
	dirty     string // restart reason; "" if none
	failures  int
	retryAt   time.Time
}

func (w *watch) bucket() string {
	if w.kind == kindJobs {
		return bucketJobs
	}
	return bucketTargets
}

// watchEvent is one entry (nil: end of snapshot) or the close of a watcher.
type watchEvent struct {
	w      *watch
	gen    uint64
	e      jetstream.KeyValueEntry
	closed bool
}

// run is the state of one Run call that does not outlive it.
type run struct {
	f        *Follower
	ctx      context.Context
	jobsKV   jetstream.KeyValue
	tgtKV    jetstream.KeyValue
	openFail int
	openAt   time.Time
	jobsW    *watch
	slotsW   *watch
	trackW   [trackGroups]*watch
	watches  []*watch // all of the above
	events   chan watchEvent
	drains   sync.WaitGroup
	timer    *time.Timer
	// jobsReady is set when the jobs watch first synced in this Run.
	jobsReady bool
}

// Run follows all jobs, the targets in the current slots and the tracked
// targets until ctx ends, then returns nil. Jobs are delivered before the
// first targets.
//
// It survives NATS restarts: whenever the connection is re-established, or
// a watch ends, it starts the watches again, compares the fresh snapshot
// with what it delivered, and reports only the differences, so a missed
// window is repaired. Until then known targets stay as they are. An entry
// that fails validation is logged, counted in allot_events_invalid_total
// and skipped; the target it replaced stays known.
//
// Only one Run may be active at a time. It returns an error if the NATS
// connection is closed.
func (f *Follower) Run(ctx context.Context) error {
	if !f.running.CompareAndSwap(false, true) {
		return errors.New("events follower: already running")
	}
	defer f.running.Store(false)

	r := &run{
		f:      f,
		ctx:    ctx,
		jobsW:  &watch{kind: kindJobs},
		slotsW: &watch{kind: kindSlots},
		events: make(chan watchEvent, 256),
		timer:  time.NewTimer(time.Hour),
	}
	r.watches = []*watch{r.jobsW, r.slotsW}
	for g := range r.trackW {
		r.trackW[g] = &watch{kind: kindTracked, group: g}
		r.watches = append(r.watches, r.trackW[g])
	}
	r.timer.Stop()
	defer r.shutdown()

	nc := f.js.Conn()
	status := nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer nc.RemoveStatusListener(status)

	// Apply what SetSlots/Track said before Run.
	f.applyControl(r)
	for {
		r.reconcile()
		select {
		case <-ctx.Done():
			return nil
		case ev := <-r.events:
			r.handle(ev)
		case <-f.kick:
			f.applyControl(r)
		case s := <-status:
			if s == nats.CLOSED || nc.IsClosed() {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("events follower: %w", nats.ErrConnectionClosed)
			}
			f.log.Info("NATS reconnected; restarting watches")
			r.markDirty("reconnect")
			// A new server may not serve JetStream at once; start afresh.
			r.jobsKV, r.tgtKV = nil, nil
		case <-r.timer.C:
		}
	}
}

func (r *run) all() []*watch { return r.watches }

func (r *run) markDirty(reason string) {
	for _, w := range r.all() {
		if w.kw != nil || w.failures > 0 {
			w.dirty = reason
			w.failures, w.retryAt = 0, time.Time{}
		}
	}
	r.openFail, r.openAt = 0, time.Time{}
}

// wanted says whether w should be running now. Target watches wait for
// the first jobs snapshot, so that a handler knows a target's job.
func (r *run) wanted(w *watch) bool {
	switch w.kind {
	case kindJobs:
		return true
	case kindSlots:
		return r.jobsReady && r.f.nslots > 0
	default:
		return r.jobsReady && len(r.f.tracked[w.group]) > 0
	}
}

// reconcile opens the buckets and starts, stops and restarts watches until
// they match what is wanted, and arms the timer for the next retry.
func (r *run) reconcile() {
	now := time.Now()
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	if r.jobsKV == nil || r.tgtKV == nil {
		if now.Before(r.openAt) {
			later(r.openAt)
		} else if !r.open() {
			later(r.openAt)
		}
	}
	for _, w := range r.all() {
		want := r.wanted(w)
		if !want {
			if w.kw != nil {
				r.stopWatch(w)
			}
			w.dirty, w.failures = "", 0
			continue
		}
		if w.kw != nil && w.dirty == "" {
			continue
		}
		if r.jobsKV == nil || r.tgtKV == nil {
			continue
		}
		if now.Before(w.retryAt) {
			later(w.retryAt)
			continue
		}
		reason := w.dirty
		if reason == "" {
			reason = "start"
			if w.failures > 0 {
				reason = "retry"
			}
		}
		r.stopWatch(w)
		if !r.startWatch(w, reason) {
			later(w.retryAt)
		}
	}
	r.timer.Stop()
	if !next.IsZero() {
		r.timer.Reset(time.Until(next))
	}
	r.maybeSynced()
}

func (r *run) open() bool {
	ctx, cancel := context.WithTimeout(r.ctx, startTimeout)
	defer cancel()
	jobs, err := openBucket(ctx, r.f.js, r.f.cfg.jobsKV())
	if err == nil {
		var tgt jetstream.KeyValue
		tgt, err = openBucket(ctx, r.f.js, r.f.cfg.targetsKV())
		if err == nil {
			r.jobsKV, r.tgtKV, r.openFail = jobs, tgt, 0
			return true
		}
	}
	if r.ctx.Err() == nil {
		r.f.log.Warn("cannot open the catalog buckets; will retry", "err", err)
	}
	r.openFail++
	r.openAt = time.Now().Add(backoff(r.openFail))
	return false
}

func backoff(failures int) time.Duration {
	d := minBackoff
	for i := 1; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	return min(d, maxBackoff)
}
