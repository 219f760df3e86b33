package events

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

func slotsWhere(keep func(int) bool) []int {
	var out []int
	for s := 0; s < Slots; s++ {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

// The follower gets the snapshot and then every later change from the same
// ordered consumer: started while the catalog keeps changing, it ends up
// with exactly what the bucket holds, and never needed a second sync.
func TestFollowerSnapshotThenTail(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.pub.PutJob(ctx, NewJob("node", "job_name: node\n")))
	require.NoError(t, e.pub.PutJob(ctx, NewJob("gone", "job_name: gone\n")))
	require.NoError(t, e.pub.PutTargets(ctx, targets("node", 0, 1000)))

	var rounds atomic.Int64
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		for r := 0; ; r++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			// Change 50 existing targets, add 20, delete 10 of the last
			// round's additions.
			var put []Target
			for i := 0; i < 50; i++ {
				tg := target("node", (r*50+i)%1000)
				tg.ConfigHash = fmt.Sprintf("r%d", r)
				put = append(put, tg)
			}
			put = append(put, targets("node", 1000+r*20, 1000+(r+1)*20)...)
			if err := e.pub.PutTargets(ctx, put); err != nil {
				done <- err
				return
			}
			if r > 0 {
				if err := e.pub.DeleteTargets(ctx, ids(targets("node", 1000+(r-1)*20, 1000+(r-1)*20+10))); err != nil {
					done <- err
					return
				}
			}
			if r == 3 {
				if err := e.pub.DeleteJob(ctx, "gone"); err != nil {
					done <- err
					return
				}
			}
			rounds.Add(1)
		}
	}()
	eventually(t, "publisher running", func() error {
		if rounds.Load() < 2 {
			return errors.New("fewer than 2 rounds")
		}
		return nil
	})

	rec := newRecorder()
	e.follower(t, rec, allSlots(), nil)
	eventually(t, "synced", func() error {
		if rec.syncCount() == 0 {
			return errors.New("not synced")
		}
		return nil
	})
	atSync := rounds.Load()
	eventually(t, "tail", func() error {
		if rounds.Load() < atSync+3 {
			return errors.New("fewer than 3 rounds after sync")
		}
		return nil
	})
	close(stop)
	require.NoError(t, <-done)

	want := readBucket(t, e.js, nil)
	require.Greater(t, len(want), 1000)
	eventually(t, "follower equals bucket", func() error { return sameTargets(rec.snapshotTargets(), want) })
	require.Equal(t, map[string]Job{"node": NewJob("node", "job_name: node\n")}, rec.snapshotJobs())
	require.Equal(t, 1, rec.syncCount(), "no watch restarted")
}

// A follower of 1/20 of the slots reads only those; SetSlots adds and
// drops slots and reports what vanished from the kept ones meanwhile.
func TestFollowerSlots(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.pub.PutJob(ctx, NewJob("node", "x")))
	require.NoError(t, e.pub.PutTargets(ctx, targets("node", 0, 2000)))

	mine := func(s int) bool { return s%20 == 3 }
	reg := prometheus.NewRegistry()
	rec := newRecorder()
	f := e.follower(t, rec, slotsWhere(mine), reg)
	want := readBucket(t, e.js, mine)
	require.NotEmpty(t, want)
	require.Less(t, len(want), 2000/10)
	eventually(t, "slot share", func() error {
		if rec.syncCount() == 0 {
			return errors.New("not synced")
		}
		return sameTargets(rec.snapshotTargets(), want)
	})
	m := f.m
	require.Equal(t, float64(len(want)), testutil.ToFloat64(m.received.WithLabelValues(bucketTargets, opPut)), "received only its slots")
	require.Equal(t, float64(len(slotsWhere(mine))), testutil.ToFloat64(m.followedSlots))

	// Live changes outside the slots are not delivered either.
	outside, inside := -1, -1
	for i := 2000; outside < 0 || inside < 0; i++ {
		if mine(SlotOf(target("node", i).ID)) {
			inside = i
		} else {
			outside = i
		}
	}
	require.NoError(t, e.pub.PutTargets(ctx, []Target{target("node", outside), target("node", inside)}))
	eventually(t, "inside delivered", func() error {
		if _, ok := rec.target(target("node", inside).ID); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	_, ok := rec.target(target("node", outside).ID)
	require.False(t, ok)

	// Move: keep the low half of the slots, drop the high half, add s%20==7.
	next := func(s int) bool { return (mine(s) && s < 512) || s%20 == 7 }
	var keptGone, keptProbe, addedGone Target
	for _, tg := range want {
		if s := SlotOf(tg.ID); s < 512 {
			if keptGone.ID == "" {
				keptGone = tg
			} else {
				keptProbe = tg
				break
			}
		}
	}
	for _, tg := range readBucket(t, e.js, func(s int) bool { return s%20 == 7 }) {
		addedGone = tg
		break
	}
	require.NotEmpty(t, keptGone.ID)
	require.NotEmpty(t, keptProbe.ID)
	require.NotEmpty(t, addedGone.ID)
	syncs := rec.syncCount()

	// Hold the follower in its handler while the kept slot loses a target
	// without leaving a delete marker, so that it can learn of it only
	// from the new snapshot (or from an event it had already buffered).
	gate := make(chan struct{})
	rec.mu.Lock()
	rec.gate = gate
	rec.mu.Unlock()
	keptProbe.ConfigHash = "2"
	require.NoError(t, e.pub.PutTargets(ctx, []Target{keptProbe}))
	require.NoError(t, e.pub.DeleteTargets(ctx, []string{keptGone.ID, addedGone.ID}))
	kv, err := e.js.KeyValue(ctx, defaultTargetsBucket)
	require.NoError(t, err)
	require.NoError(t, kv.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(-1)))
	f.SetSlots(slotsWhere(next))
	close(gate)

	eventually(t, "new slots synced", func() error {
		if rec.syncCount() <= syncs {
			return errors.New("not synced again")
		}
		return nil
	})
	rec.forget(next)
	want = readBucket(t, e.js, next)
	eventually(t, "new share", func() error { return sameTargets(rec.snapshotTargets(), want) })
	require.Equal(t, 1, rec.deleteCount(keptGone.ID), "vanished target of a kept slot reported")
	require.Equal(t, 0, rec.deleteCount(addedGone.ID), "never known, never deleted")
	require.Equal(t, float64(len(slotsWhere(next))), testutil.ToFloat64(m.followedSlots))

	// Dropped slots are really dropped: a change there is not delivered.
	var dropped Target
	for _, tg := range readBucket(t, e.js, func(s int) bool { return mine(s) && !next(s) }) {
		dropped = tg
		break
	}
	changed := dropped
	changed.ConfigHash = "changed"
	keptProbe.ConfigHash = "3"
	require.NoError(t, e.pub.PutTargets(ctx, []Target{changed, keptProbe}))
	eventually(t, "probe", func() error {
		if got, _ := rec.target(keptProbe.ID); got.ConfigHash != "3" {
			return errors.New("not yet")
		}
		return nil
	})
	_, ok = rec.target(dropped.ID)
	require.False(t, ok)
}

// A malformed value is counted and skipped; what was known stays known.
func TestFollowerSkipsInvalidValues(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.pub.PutJob(ctx, NewJob("node", "x")))
	ts := targets("node", 0, 100)
	require.NoError(t, e.pub.PutTargets(ctx, ts))
	reg := prometheus.NewRegistry()
	rec := newRecorder()
	f := e.follower(t, rec, allSlots(), reg)
	eventually(t, "synced", func() error {
		return sameTargets(rec.snapshotTargets(), readBucket(t, e.js, nil))
	})

	kv, err := e.js.KeyValue(ctx, defaultTargetsBucket)
	require.NoError(t, err)
	jobs, err := e.js.KeyValue(ctx, defaultJobsBucket)
	require.NoError(t, err)
	known := ts[0]
	wrongVersion := target("node", 200)
	wrongVersion.V = 9
	otherID := target("node", 201)
	badName := target("node", 202)
	badName.Labels["a-b"] = "x"
	badName.ID = TargetID(badName.Job, badName.Labels)
	puts := []struct {
		key, value string
	}{
		{TargetKey(known.ID), `{"v":1,"id":`},                   // malformed json over a known target
		{TargetKey(target("node", 203).ID), `not json`},         // malformed json, new key
		{TargetKey(wrongVersion.ID), mustJSON(t, wrongVersion)}, // version
		{TargetKey(ts[1].ID), mustJSON(t, otherID)},             // valid value under another id's key
		{TargetKey(badName.ID), mustJSON(t, badName)},           // label name
		{"s0001.nothex", `{}`},                                  // key
	}
	for _, p := range puts {
		_, err := kv.Put(ctx, p.key, []byte(p.value))
		require.NoError(t, err)
	}
	_, err = jobs.Put(ctx, JobKey("broken"), []byte(`{"v":1,"name":"broken"}`))
	require.NoError(t, err)

	// Entries of one watch arrive in order: once the probe is in, all of
	// the above were handled.
	probe := target("node", 300)
	require.NoError(t, e.pub.PutTargets(ctx, []Target{probe}))
	eventually(t, "probe", func() error {
		if _, ok := rec.target(probe.ID); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	eventually(t, "broken job counted", func() error {
		if v := testutil.ToFloat64(f.m.invalid.WithLabelValues(bucketJobs, ReasonConfig)); v != 1 {
			return fmt.Errorf("jobs/config invalid = %v", v)
		}
		return nil
	})
	for reason, n := range map[string]float64{ReasonJSON: 2, ReasonVersion: 1, ReasonKey: 2, ReasonLabelName: 1} {
		require.Equal(t, n, testutil.ToFloat64(f.m.invalid.WithLabelValues(bucketTargets, reason)), reason)
	}
	got, ok := rec.target(known.ID)
	require.True(t, ok, "known target kept")
	require.Equal(t, known, got)
	got, ok = rec.target(ts[1].ID)
	require.True(t, ok)
	require.Equal(t, ts[1], got)
	require.Len(t, rec.snapshotTargets(), 101)
	require.Equal(t, map[string]Job{"node": NewJob("node", "x")}, rec.snapshotJobs())

	// A valid value repairs the known target.
	fixed := known
	fixed.ConfigHash = "fixed"
	require.NoError(t, e.pub.PutTargets(ctx, []Target{fixed}))
	eventually(t, "repaired", func() error {
		if got, _ := rec.target(known.ID); got.ConfigHash != "fixed" {
			return errors.New("not yet")
		}
		return nil
	})
}

func TestFollowerTrackAndGet(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.pub.PutJob(ctx, NewJob("node", "x")))
	ts := targets("node", 0, 500)
	require.NoError(t, e.pub.PutTargets(ctx, ts))

	mine := func(s int) bool { return s < 100 }
	var out []Target // targets outside the slots
	for _, tg := range ts {
		if !mine(SlotOf(tg.ID)) {
			out = append(out, tg)
		}
	}
	rec := newRecorder()
	f := e.follower(t, rec, slotsWhere(mine), nil)
	eventually(t, "synced", func() error {
		if rec.syncCount() == 0 {
			return errors.New("not synced")
		}
		return sameTargets(rec.snapshotTargets(), readBucket(t, e.js, mine))
	})

	a, b := out[0], out[1]
	absent := target("node", 9999)
	f.Track(a.ID, b.ID, absent.ID, "not-an-id")
	eventually(t, "tracked delivered", func() error {
		_, okA := rec.target(a.ID)
		_, okB := rec.target(b.ID)
		if !okA || !okB || rec.deleteCount(absent.ID) != 1 {
			return fmt.Errorf("a %v b %v absent deletes %d", okA, okB, rec.deleteCount(absent.ID))
		}
		return nil
	})

	// Changes and deletions of tracked targets are delivered.
	a2 := a
	a2.ConfigHash = "new"
	require.NoError(t, e.pub.PutTargets(ctx, []Target{a2}))
	require.NoError(t, e.pub.DeleteTargets(ctx, []string{b.ID}))
	eventually(t, "tracked changes", func() error {
		if got, _ := rec.target(a.ID); got.ConfigHash != "new" {
			return errors.New("update not seen")
		}
		if rec.deleteCount(b.ID) != 1 {
			return errors.New("delete not seen")
		}
		return nil
	})
	// The absent target appears later: delivered.
	require.NoError(t, e.pub.PutTargets(ctx, []Target{absent}))
	eventually(t, "late arrival", func() error {
		if _, ok := rec.target(absent.ID); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	// Tracking again delivers the current value again.
	syncs := rec.syncCount()
	rec.mu.Lock()
	before := rec.upserts
	rec.mu.Unlock()
	f.Track(a.ID)
	eventually(t, "re-track", func() error {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.upserts != before+1 || rec.synced <= syncs {
			return fmt.Errorf("upserts %d (before %d), synced %d", rec.upserts, before, rec.synced)
		}
		return nil
	})

	// Untrack: no more updates for it.
	syncs = rec.syncCount()
	f.Untrack(a.ID, absent.ID)
	eventually(t, "untracked", func() error {
		if rec.syncCount() <= syncs {
			return errors.New("not synced")
		}
		return nil
	})
	a3 := a
	a3.ConfigHash = "after-untrack"
	require.NoError(t, e.pub.PutTargets(ctx, []Target{a3}))
	c := out[2]
	f.Track(c.ID)
	eventually(t, "probe via track", func() error {
		if _, ok := rec.target(c.ID); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	got, _ := rec.target(a.ID)
	require.Equal(t, "new", got.ConfigHash)

	// GetTarget reads any target by key.
	g, err := f.GetTarget(ctx, a.ID)
	require.NoError(t, err)
	require.Equal(t, a3, g)
	_, err = f.GetTarget(ctx, b.ID)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = f.GetTarget(ctx, target("node", 12345).ID)
	require.ErrorIs(t, err, ErrNotFound)
	_, err = f.GetTarget(ctx, "xyz")
	require.Error(t, err)
	require.NotErrorIs(t, err, ErrNotFound)
}

// Many tracked targets in one group fall back to following their slots;
// untracked targets of those slots must still not be delivered.
func TestFollowerTrackMany(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	require.NoError(t, e.pub.PutJob(ctx, NewJob("node", "x")))
	var group0, others []Target
	for i := 0; len(group0) < maxTrackKeys+300 || len(others) < 10; i++ {
		tg := target("node", i)
		if SlotOf(tg.ID)%trackGroups == 0 {
			group0 = append(group0, tg)
		} else if len(others) < 10 {
			others = append(others, tg)
		}
	}
	require.NoError(t, e.pub.PutTargets(ctx, append(group0, others...)))
	// More than maxTrackKeys in group 0: that watch follows their slots,
	// where the untracked rest of group0 lives too.
	track := group0[:maxTrackKeys+100]
	rec := newRecorder()
	f := e.follower(t, rec, nil, prometheus.NewRegistry())
	f.Track(append(ids(track), ids(others)...)...)
	want := map[string]Target{}
	for _, tg := range append(track, others...) {
		want[tg.ID] = tg
	}
	eventually(t, "tracked", func() error {
		if rec.syncCount() == 0 {
			return errors.New("not synced")
		}
		return sameTargets(rec.snapshotTargets(), want)
	})
	require.Greater(t, testutil.ToFloat64(f.m.received.WithLabelValues(bucketTargets, opPut)), float64(len(want)+100),
		"the slot fallback read untracked targets (and dropped them)")
}

// The follower resumes after NATS restarts, and repairs a window it missed
// entirely, including deletions whose markers were purged meanwhile.
func TestFollowerSurvivesNATSRestart(t *testing.T) {
	dir := t.TempDir()
	n1 := startNATS(t, dir, "")
	u, err := url.Parse(n1.URL())
	require.NoError(t, err)
	addr := u.Host

	ctx := context.Background()
	_, js1 := connect(t, n1.URL())
	pub, err := NewPublisher(ctx, js1, Config{}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, pub.PutJob(ctx, NewJob("node", "x")))
	require.NoError(t, pub.PutJob(ctx, NewJob("old", "x")))
	ts := targets("node", 0, 300)
	require.NoError(t, pub.PutTargets(ctx, ts))

	reg := prometheus.NewRegistry()
	rec := newRecorder()
	_, fjs := connect(t, n1.URL())
	f := NewFollower(fjs, Config{}, rec, reg, nil)
	f.SetSlots(allSlots())
	runFollower(t, f)
	eventually(t, "synced", func() error {
		if rec.syncCount() == 0 {
			return errors.New("not synced")
		}
		return sameTargets(rec.snapshotTargets(), readBucket(t, js1, nil))
	})
	syncs := rec.syncCount()
	n1.Close()

	// Changes made on another port, where the follower cannot see them.
	n2 := startNATS(t, dir, "")
	_, js2 := connect(t, n2.URL())
	pub2, err := NewPublisher(ctx, js2, Config{}, nil, nil)
	require.NoError(t, err)
	changed := ts[0]
	changed.ConfigHash = "while-down"
	require.NoError(t, pub2.PutTargets(ctx, append([]Target{changed}, targets("node", 300, 310)...)))
	require.NoError(t, pub2.DeleteTargets(ctx, ids(ts[100:110])))
	require.NoError(t, pub2.DeleteJob(ctx, "old"))
	require.NoError(t, pub2.PutJob(ctx, NewJob("new", "y")))
	// Markers of the first five deletions disappear: only a diff finds them.
	kv2, err := js2.KeyValue(ctx, defaultTargetsBucket)
	require.NoError(t, err)
	stream, err := js2.Stream(ctx, "KV_"+defaultTargetsBucket)
	require.NoError(t, err)
	for _, id := range ids(ts[100:105]) {
		require.NoError(t, stream.Purge(ctx, jetstream.WithPurgeSubject("$KV."+defaultTargetsBucket+"."+TargetKey(id))))
	}
	_, err = kv2.Get(ctx, TargetKey(ts[100].ID))
	require.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	jobs2, err := js2.KeyValue(ctx, defaultJobsBucket)
	require.NoError(t, err)
	require.NoError(t, jobs2.PurgeDeletes(ctx, jetstream.DeleteMarkersOlderThan(-1)))
	want := readBucket(t, js2, nil)
	n2.Close()

	// Back on the original port with the same store.
	n3 := startNATS(t, dir, addr)
	t.Cleanup(n3.Close)
	eventually(t, "resynced after restart", func() error {
		if rec.syncCount() <= syncs {
			return errors.New("not synced again")
		}
		return sameTargets(rec.snapshotTargets(), want)
	})
	require.Equal(t, map[string]Job{"node": NewJob("node", "x"), "new": NewJob("new", "y")}, rec.snapshotJobs())
	for _, tg := range ts[100:110] {
		require.Equal(t, 1, rec.deleteCount(tg.ID), tg.ID)
	}

	// And it keeps following.
	_, js3 := connect(t, n3.URL())
	pub3, err := NewPublisher(ctx, js3, Config{}, nil, nil)
	require.NoError(t, err)
	require.NoError(t, pub3.PutTargets(ctx, targets("node", 400, 401)))
	eventually(t, "live after restart", func() error {
		if _, ok := rec.target(target("node", 400).ID); !ok {
			return errors.New("not yet")
		}
		return nil
	})
	require.GreaterOrEqual(t, testutil.ToFloat64(f.m.restarts.WithLabelValues(bucketTargets, "reconnect")), 1.0)
}

// Several followers share one registry (as in `allot all`).
func TestFollowerMetricsShared(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	r1, r2 := newRecorder(), newRecorder()
	_, js := connect(t, e.n.URL())
	f1 := NewFollower(js, Config{}, r1, reg, nil)
	f2 := NewFollower(js, Config{}, r2, reg, nil)
	f1.SetSlots([]int{1, 2, 3})
	f2.SetSlots([]int{4, 5, 6, 7, 7, 2000})
	ctx1, cancel1 := context.WithCancel(context.Background())
	done1 := make(chan error, 1)
	go func() { done1 <- f1.Run(ctx1) }()
	runFollower(t, f2)
	gauge := f1.m.followedSlots
	require.Same(t, f1.m.followedSlots, f2.m.followedSlots)
	eventually(t, "gauge", func() error {
		if r1.syncCount() == 0 || r2.syncCount() == 0 {
			return errors.New("not synced")
		}
		if v := testutil.ToFloat64(gauge); v != 7 {
			return fmt.Errorf("followed slots %v", v)
		}
		return nil
	})
	require.Error(t, f1.Run(context.Background()), "second Run")
	cancel1()
	require.NoError(t, <-done1)
	require.Equal(t, 4.0, testutil.ToFloat64(gauge))

	mfs, err := reg.Gather()
	require.NoError(t, err)
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, n := range []string{"allot_events_followed_slots", "allot_events_watch_restarts_total"} {
		require.True(t, names[n], n)
	}
}
