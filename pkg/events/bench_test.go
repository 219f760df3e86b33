package events

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/placement"
)

// prefill publishes targets node/0..n-1 in batches.
func prefill(b *testing.B, pub *Publisher, n int) { prefillRange(b, pub, 0, n) }

func prefillRange(b *testing.B, pub *Publisher, from, to int) {
	b.Helper()
	const batch = 10000
	for i := from; i < to; i += batch {
		require.NoError(b, pub.PutTargets(context.Background(), targets("node", i, min(i+batch, to))))
	}
}

// BenchmarkPublishOneChange publishes a one-target diff into a catalog of
// the given size. The cost must not depend on the catalog size. One catalog
// grows from size to size, outside the timed sub-benchmarks.
//
// ALLOT_BENCH_800K=1 adds the 800k catalog (the prefill takes minutes).
func BenchmarkPublishOneChange(b *testing.B) {
	sizes := []int{1000, 10000, 100000}
	if os.Getenv("ALLOT_BENCH_800K") != "" {
		sizes = append(sizes, 800000)
	}
	e := newEnv(b)
	ctx := context.Background()
	have := 0
	for _, n := range sizes {
		prefillRange(b, e.pub, have, n)
		have = n
		b.Run(fmt.Sprintf("catalog=%d", n), func(b *testing.B) {
			tg := target("node", n/2)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				tg.ConfigHash = strconv.Itoa(i)
				if err := e.pub.PutTargets(ctx, []Target{tg}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// countingHandler counts deliveries and keeps nothing, so that memory
// measurements show the follower's own state.
type countingHandler struct {
	upserts, deletes atomic.Int64
	synced           chan struct{}
	once             sync.Once
}

func newCountingHandler() *countingHandler { return &countingHandler{synced: make(chan struct{})} }

func (h *countingHandler) UpsertJob(Job)       {}
func (h *countingHandler) DeleteJob(string)    {}
func (h *countingHandler) UpsertTarget(Target) { h.upserts.Add(1) }
func (h *countingHandler) DeleteTarget(string) { h.deletes.Add(1) }
func (h *countingHandler) Synced()             { h.once.Do(func() { close(h.synced) }) }
func (h *countingHandler) waitSynced(b *testing.B) {
	select {
	case <-h.synced:
	case <-time.After(2 * time.Minute):
		b.Fatal("follower did not sync")
	}
}

// BenchmarkFollowerFanOut: 100k targets, 20 followers each following the
// slots it wins by rendezvous among 20 members, against one follower of
// the whole catalog. Reports, per follower, the entries and value bytes
// received for the snapshot and for 2000 later changes, the targets it
// remembers and the bytes that takes, and for the 20 the heap they add to
// the process (NATS client and server side included, so only indicative).
func BenchmarkFollowerFanOut(b *testing.B) {
	const (
		catalog   = 100000
		followers = 20
		changes   = 2000
	)
	e := newEnv(b)
	prefill(b, e.pub, catalog)
	require.NoError(b, e.pub.PutJob(context.Background(), NewJob("node", "job_name: node\n")))

	members := make([]placement.Member, followers)
	for i := range members {
		members[i] = placement.Member{ID: fmt.Sprintf("scraper-%d", i), Weight: 1}
	}
	share := make([][]int, followers)
	for s := 0; s < Slots; s++ {
		i := placement.Rank(placement.HashString(strconv.Itoa(s)), members, 1)[0]
		share[i] = append(share[i], s)
	}

	type result struct {
		snapEvents, snapBytes, tailEvents float64
		known                             int
		heap, state                       float64
		syncTime                          time.Duration
	}
	run := func(b *testing.B, slotSets [][]int) result {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)

		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		fs := make([]*Follower, len(slotSets))
		hs := make([]*countingHandler, len(slotSets))
		start := time.Now()
		for i, slots := range slotSets {
			_, js := connect(b, e.n.URL())
			hs[i] = newCountingHandler()
			fs[i] = NewFollower(js, Config{}, hs[i], prometheus.NewRegistry(), nil)
			fs[i].SetSlots(slots)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = fs[i].Run(ctx)
			}()
		}
		for _, h := range hs {
			h.waitSynced(b)
		}
		syncTime := time.Since(start)
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)

		received := func(f *Follower) float64 {
			return testutil.ToFloat64(f.m.received.WithLabelValues(bucketTargets, opPut))
		}
		var r result
		r.syncTime = syncTime
		r.heap = (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(len(fs))
		snap := make([]float64, len(fs))
		for i, f := range fs {
			snap[i] = received(f)
			r.snapEvents += snap[i]
			r.snapBytes += testutil.ToFloat64(f.m.receivedBytes.WithLabelValues(bucketTargets))
		}

		// Changes spread over the whole catalog.
		put := make([]Target, 0, changes)
		for i := 0; i < changes; i++ {
			tg := target("node", i*(catalog/changes))
			tg.ConfigHash = "changed"
			put = append(put, tg)
		}
		require.NoError(b, e.pub.PutTargets(context.Background(), put))
		for i, slots := range slotSets {
			in := map[int]bool{}
			for _, s := range slots {
				in[s] = true
			}
			var want float64
			for _, tg := range put {
				if in[SlotOf(tg.ID)] {
					want++
				}
			}
			deadline := time.Now().Add(time.Minute)
			for received(fs[i])-snap[i] < want {
				if time.Now().After(deadline) {
					b.Fatal("changes not received")
				}
				time.Sleep(10 * time.Millisecond)
			}
		}
		for i, f := range fs {
			r.tailEvents += received(f) - snap[i]
			r.known += len(f.targets)
		}
		cancel()
		wg.Wait()
		// The follower's own memory: what dropping its state frees.
		var withState, without runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&withState)
		for _, f := range fs {
			f.targets = nil
		}
		runtime.GC()
		runtime.ReadMemStats(&without)
		r.state = (float64(withState.HeapAlloc) - float64(without.HeapAlloc)) / float64(len(fs))
		n := float64(len(fs))
		r.snapEvents /= n
		r.snapBytes /= n
		r.tailEvents /= n
		r.known /= len(fs)
		return r
	}

	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		share20 := run(b, share)
		whole := run(b, [][]int{allSlots()})
		b.ReportMetric(share20.snapEvents, "snap-events/follower")
		b.ReportMetric(share20.snapBytes, "snap-bytes/follower")
		b.ReportMetric(share20.tailEvents, "tail-events/follower")
		b.ReportMetric(float64(share20.known), "known/follower")
		b.ReportMetric(share20.state, "state-B/follower")
		b.ReportMetric(share20.heap, "heap-B/follower")
		b.ReportMetric(share20.syncTime.Seconds(), "sync-s(20)")
		b.ReportMetric(whole.snapEvents, "snap-events/whole")
		b.ReportMetric(whole.snapBytes, "snap-bytes/whole")
		b.ReportMetric(whole.tailEvents, "tail-events/whole")
		b.ReportMetric(whole.state, "state-B/whole")
		b.ReportMetric(whole.syncTime.Seconds(), "sync-s(whole)")
	}
}

// BenchmarkWatchFilters measures what a follower's watch costs against a
// 100k catalog as a function of its filter: consumer creation and the time
// to receive its snapshot. It backs the limits in README.md (one filter
// subject per slot is fine up to all 1024; single-key filters get slow past
// about a thousand, hence maxTrackKeys).
func BenchmarkWatchFilters(b *testing.B) {
	const catalog = 100000
	e := newEnv(b)
	prefill(b, e.pub, catalog)
	kv, err := e.js.KeyValue(context.Background(), defaultTargetsBucket)
	require.NoError(b, err)
	slots := func(k int) []string {
		out := make([]string, 0, k)
		for i := 0; i < k; i++ {
			out = append(out, slotPrefix(i*Slots/k)+"*")
		}
		return out
	}
	keys := func(k int) []string {
		out := make([]string, 0, k)
		for i := 0; i < k; i++ {
			out = append(out, TargetKey(target("node", i*(catalog/k)).ID))
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		filters []string
	}{
		{"all", nil},
		{"slots=51", slots(51)},
		{"slots=341", slots(341)},
		{"slots=1024", slots(1024)},
		{"keys=400", keys(400)},
		{"keys=1000", keys(1000)},
		{"keys=2000", keys(2000)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var create, snapshot time.Duration
			var entries int
			for i := 0; i < b.N; i++ {
				start := time.Now()
				w, err := kv.WatchFiltered(context.Background(), append([]string(nil), tc.filters...))
				require.NoError(b, err)
				create += time.Since(start)
				entries = 0
				for e := range w.Updates() {
					if e == nil {
						break
					}
					entries++
				}
				snapshot += time.Since(start)
				<-stopWatcher(w)
			}
			b.ReportMetric(float64(create.Milliseconds())/float64(b.N), "create-ms")
			b.ReportMetric(float64(snapshot.Milliseconds())/float64(b.N), "snapshot-ms")
			b.ReportMetric(float64(entries), "entries")
		})
	}
}
