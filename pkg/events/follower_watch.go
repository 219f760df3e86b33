package events

import (
	"context"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// startWatch creates w's KV watcher with the current filter and a goroutine
// that forwards its entries to r.events. It reports false (and schedules a
// retry) if the watcher could not be created.
func (r *run) startWatch(w *watch, reason string) bool {
	kv := r.tgtKV
	if w.kind == kindJobs {
		kv = r.jobsKV
	}
	filters := r.filters(w)
	// The watcher's subscription ends when this context does (nats.go
	// unsubscribes on ctx.Done), so it lives until stopWatch; creating the
	// consumer is bounded by cancelling it if that takes too long.
	ctx, cancel := context.WithCancel(r.ctx)
	var created atomic.Bool
	watchdog := time.AfterFunc(startTimeout, func() {
		if !created.Load() {
			cancel()
		}
	})
	kw, err := kv.WatchFiltered(ctx, filters)
	created.Store(true)
	watchdog.Stop()
	if err == nil && ctx.Err() != nil {
		r.drains.Add(1)
		go func(done <-chan struct{}) {
			defer r.drains.Done()
			<-done
		}(stopWatcher(kw))
		err = ctx.Err()
	}
	if err != nil {
		cancel()
		w.failures++
		w.retryAt = time.Now().Add(backoff(w.failures))
		if r.ctx.Err() == nil {
			r.f.log.Warn("cannot start watch; will retry", "bucket", w.bucket(), "filters", len(filters), "err", err, "retry_in", backoff(w.failures))
		}
		return false
	}
	r.f.m.restarts.WithLabelValues(w.bucket(), reason).Inc()
	w.kw = kw
	w.cancel = cancel
	w.stop = make(chan struct{})
	w.gen++
	w.synced = false
	w.dirty = ""
	// Entries processed from now on have ticks >= startTick.
	w.startTick = r.f.tick + 1
	r.f.needSynced = true
	r.drains.Add(1)
	go r.forward(w, kw, w.gen, w.stop)
	return true
}

// forward copies a watcher's entries to r.events until the watcher's
// channel closes (Stop closes it, so the forwarder also drains after Stop,
// which the watcher needs to let go of its subscription).
func (r *run) forward(w *watch, kw jetstream.KeyWatcher, gen uint64, stop <-chan struct{}) {
	defer r.drains.Done()
	send := func(ev watchEvent) {
		select {
		case <-stop:
			return
		default:
		}
		select {
		case r.events <- ev:
		case <-stop:
		}
	}
	for e := range kw.Updates() {
		send(watchEvent{w: w, gen: gen, e: e})
	}
	send(watchEvent{w: w, gen: gen, closed: true})
}

func (r *run) stopWatch(w *watch) {
	if w.kw == nil {
		return
	}
	_ = w.kw.Stop()
	w.cancel()
	close(w.stop)
	w.kw = nil
	w.synced = false
}

// shutdown stops every watch and waits (boundedly) for the forwarders.
func (r *run) shutdown() {
	for _, w := range r.all() {
		r.stopWatch(w)
	}
	if r.f.gaugeSlots != 0 {
		// The gauge sums over followers; this one no longer follows.
		r.f.m.followedSlots.Sub(float64(r.f.gaugeSlots))
		r.f.gaugeSlots = 0
	}
	done := make(chan struct{})
	go func() {
		r.drains.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		r.f.log.Warn("watchers did not close within 5s")
	}
	r.timer.Stop()
}

// filters is the subject filter of w (relative to the bucket).
func (r *run) filters(w *watch) []string {
	f := r.f
	switch w.kind {
	case kindJobs:
		return nil // all
	case kindSlots:
		if f.nslots == Slots {
			return nil
		}
		out := make([]string, 0, f.nslots)
		for s := range f.slots {
			if f.slots[s] {
				out = append(out, slotPrefix(s)+"*")
			}
		}
		return out
	default:
		ids := f.tracked[w.group]
		if len(ids) <= maxTrackKeys {
			out := make([]string, 0, len(ids))
			for id := range ids {
				out = append(out, slotPrefix(slotOf(id))+formatID(id))
			}
			slices.Sort(out)
			return out
		}
		// Too many single keys for one consumer: follow their slots and
		// let apply drop the untracked targets in them.
		var seen [Slots]bool
		var out []string
		for id := range ids {
			s := slotOf(id)
			if !seen[s] {
				seen[s] = true
				out = append(out, slotPrefix(s)+"*")
			}
		}
		slices.Sort(out)
		return out
	}
}

// maybeSynced calls Handler.Synced once every wanted watch has delivered
// its snapshot since the last (re)start.
func (r *run) maybeSynced() {
	if !r.f.needSynced || !r.jobsReady {
		return
	}
	for _, w := range r.all() {
		if r.wanted(w) && (w.kw == nil || !w.synced) {
			return
		}
	}
	r.f.needSynced = false
	r.f.h.Synced()
}

// handle processes one event of a watcher.
func (r *run) handle(ev watchEvent) {
	w := ev.w
	if ev.gen != w.gen || w.kw == nil {
		return // from a watcher stopped since
	}
	if ev.closed {
		// Backoff, in case the server keeps ending it at once.
		w.failures++
		w.retryAt = time.Now().Add(backoff(w.failures))
		r.f.log.Warn("watch ended; restarting", "bucket", w.bucket(), "retry_in", backoff(w.failures))
		r.stopWatch(w)
		w.dirty = "closed"
		return
	}
	if ev.e == nil {
		r.endOfSnapshot(w)
		return
	}
	e := ev.e
	m := r.f.m
	op := opPut
	switch e.Operation() {
	case jetstream.KeyValueDelete:
		op = opDelete
	case jetstream.KeyValuePurge:
		op = opPurge
	}
	m.received.WithLabelValues(w.bucket(), op).Inc()
	m.receivedBytes.WithLabelValues(w.bucket()).Add(float64(len(e.Value())))
	if w.synced {
		m.lag.Observe(time.Since(e.Created()).Seconds())
	}
	r.f.tick++
	if w.kind == kindJobs {
		r.f.applyJob(e, op != opPut)
	} else {
		r.f.applyTarget(e, op != opPut)
	}
}

// endOfSnapshot reports what vanished while w was not watching: keys it
// covers that no entry touched since it started.
func (r *run) endOfSnapshot(w *watch) {
	f := r.f
	w.synced = true
	w.failures = 0
	switch w.kind {
	case kindJobs:
		r.jobsReady = true
		for name, st := range f.jobs {
			if st.touched < w.startTick {
				delete(f.jobs, name)
				f.h.DeleteJob(name)
			}
		}
	case kindSlots:
		for id, st := range f.targets {
			if !st.deleted && f.slots[st.slot] && st.touched < w.startTick {
				f.vanish(id, st)
			}
		}
	case kindTracked:
		for id := range f.tracked[w.group] {
			st, known := f.targets[id]
			if _, owed := f.pending[id]; owed {
				// Track promised a value or a deletion; nothing came.
				delete(f.pending, id)
				st.slot = uint16(slotOf(id))
				f.vanish(id, st)
				continue
			}
			if known && !st.deleted && st.touched < w.startTick {
				f.vanish(id, st)
			}
		}
	}
	r.maybeSynced()
}

// vanish reports a target deleted and forgets it (or keeps a tombstone if
// it is tracked, see applyTarget).
func (f *Follower) vanish(id uint64, st targetState) {
	f.h.DeleteTarget(formatID(id))
	if f.isTracked(id) {
		st.deleted = true
		st.touched = f.tick
		f.targets[id] = st
		return
	}
	delete(f.targets, id)
}

func (f *Follower) isTracked(id uint64) bool {
	_, ok := f.tracked[slotOf(id)%trackGroups][id]
	return ok
}

func (f *Follower) invalid(bucket, key, reason string, err error) {
	f.m.invalid.WithLabelValues(bucket, reason).Inc()
	f.log.Warn("skipping invalid catalog entry", "bucket", bucket, "key", key, "reason", reason, "err", err)
}

// applyJob applies one jobs-bucket entry.
func (f *Follower) applyJob(e jetstream.KeyValueEntry, del bool) {
	name, ok := parseJobKey(e.Key())
	if !ok {
		f.invalid(bucketJobs, e.Key(), ReasonKey, nil)
		return
	}
	st, known := f.jobs[name]
	if known {
		st.touched = f.tick
		f.jobs[name] = st
		if e.Revision() <= st.rev {
			return // seen already (a restarted watch's snapshot)
		}
	}
	if del {
		if known {
			delete(f.jobs, name)
			f.h.DeleteJob(name)
		}
		return
	}
	j, err := DecodeJob(e.Value())
	if err == nil && j.Name != name {
		err = invalid("job", "name", ReasonKey, "key is for job %q", name)
	}
	if err != nil {
		f.invalid(bucketJobs, e.Key(), reasonOf(err), err)
		return
	}
	f.jobs[name] = entryState{rev: e.Revision(), touched: f.tick}
	f.h.UpsertJob(j)
}

// applyTarget applies one targets-bucket entry.
//
// A target can reach the follower through two watches (its slot's and its
// tracked group's), each replaying a snapshot when it restarts, so entries
// are applied only if newer than the last one applied (revisions are stream
// sequences, unique and increasing). A tracked target keeps a tombstone
// when deleted, so that an older put replayed by the other watch cannot
// bring it back.
func (f *Follower) applyTarget(e jetstream.KeyValueEntry, del bool) {
	slot, id, ok := parseTargetKey(e.Key())
	if !ok {
		f.invalid(bucketTargets, e.Key(), ReasonKey, nil)
		return
	}
	tracked := f.isTracked(id)
	if !f.slots[slot] && !tracked {
		return // in a slot followed only for other tracked targets
	}
	_, owed := f.pending[id]
	st, known := f.targets[id]
	if known {
		st.touched = f.tick
		f.targets[id] = st
		if e.Revision() <= st.rev && !owed {
			return
		}
	}
	if del {
		delete(f.pending, id)
		if (known && !st.deleted) || owed {
			f.h.DeleteTarget(formatID(id))
		}
		if tracked {
			f.targets[id] = targetState{entryState{rev: e.Revision(), touched: f.tick}, uint16(slot), true}
		} else {
			delete(f.targets, id)
		}
		return
	}
	t, err := DecodeTarget(e.Value())
	if err == nil {
		if v, _ := parseID(t.ID); v != id {
			err = invalid("target", "id", ReasonKey, "key is for %s", formatID(id))
		}
	}
	if err != nil {
		// Whatever was known stays; Track gets no answer for this id
		// until a valid value is published.
		delete(f.pending, id)
		f.invalid(bucketTargets, e.Key(), reasonOf(err), err)
		return
	}
	delete(f.pending, id)
	f.targets[id] = targetState{entryState{rev: e.Revision(), touched: f.tick}, uint16(slot), false}
	f.h.UpsertTarget(t)
}

// applyControl applies SetSlots, Track and Untrack calls, in order, and
// marks the watches whose filter changed.
func (f *Follower) applyControl(r *run) {
	f.mu.Lock()
	want, wantNew, ops := f.want, f.wantNew, f.trackOps
	f.wantNew, f.trackOps = false, nil
	f.mu.Unlock()

	if wantNew {
		var next [Slots]bool
		for _, s := range want {
			next[s] = true
		}
		if next != f.slots {
			for id, st := range f.targets {
				if !next[st.slot] && !f.isTracked(id) {
					delete(f.targets, id)
				}
			}
			f.slots = next
			f.nslots = len(want)
			r.slotsW.dirty = "filter"
			f.needSynced = true
		}
	}
	if d := f.nslots - f.gaugeSlots; d != 0 {
		f.m.followedSlots.Add(float64(d))
		f.gaugeSlots = f.nslots
	}
	for _, op := range ops {
		for _, s := range op.ids {
			id, ok := parseID(s)
			if !ok {
				f.log.Warn("ignoring invalid target id", "id", s, "track", op.add)
				continue
			}
			g := slotOf(id) % trackGroups
			if op.add {
				f.tracked[g][id] = struct{}{}
				f.pending[id] = struct{}{}
			} else {
				if _, ok := f.tracked[g][id]; !ok {
					continue
				}
				delete(f.tracked[g], id)
				delete(f.pending, id)
				if st, ok := f.targets[id]; ok && (st.deleted || !f.slots[st.slot]) {
					delete(f.targets, id)
				}
			}
			r.trackW[g].dirty = "filter"
			f.needSynced = true
		}
	}
}
