package component

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/services/scraper"
)

// BenchmarkScraperMemoryPerTarget: a catalog of 100k targets
// (ALLOT_BENCH_TARGETS overrides) and 20 in-process scrapers with their scrape
// loops effectively off: every target points at a closed port and has a
// 1h interval, so a loop waits for its offset in the hour and almost none
// scrapes during the run. The scrapers start first, on an empty catalog,
// so that what each one receives is what it follows once the pool is
// settled; then the catalog is published and claimed.
//
// Reported per scraper: catalog events received (allot_events_received_total
// for target puts) and their bytes, targets known and owned, and events
// received for 2000 later changes spread over the catalog. Reported for the
// pool: the heap and goroutine stacks the scrapers hold per target (what
// stopping all of them frees) and the constant cost of an idle scraper.
//
// Each scraper must take in about its share: it follows the slots where it
// is first or second choice, so it receives and knows about 2/20 of the
// catalog and owns about 1/20; the bound checked is 3/20 (the whole
// catalog would be 20/20).
//
// ALLOT_BENCH_HEAP_PROFILE=<file> writes the live heap, with every target
// claimed, for go tool pprof.
func BenchmarkScraperMemoryPerTarget(b *testing.B) {
	n := 100000
	if v := os.Getenv("ALLOT_BENCH_TARGETS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(b, err)
	}
	for i := 0; i < b.N; i++ {
		benchScraperMemory(b, n, 20)
	}
}

func benchScraperMemory(b *testing.B, catalog, pool int) {
	const (
		benchJob = "bench"
		changes  = 2000
	)
	ctx := context.Background()
	c := newCluster(b)
	jobCfg := events.NewJob(benchJob, "scrape_interval: 1h\nscrape_timeout: 10s\n")
	require.NoError(b, c.pub.PutJob(ctx, jobCfg))
	closed := closedAddr(b)
	target := func(i int, hash string) events.Target {
		return events.NewTarget(benchJob, map[string]string{
			"__address__":         closed,
			"__metrics_path__":    fmt.Sprintf("/t/%d/metrics", i),
			"__scheme__":          "http",
			"__scrape_interval__": "1h",
			"__scrape_timeout__":  "10s",
			"instance":            fmt.Sprintf("b-%d", i),
			"job":                 benchJob,
		}, hash)
	}

	heap0, stack0 := memory()
	ms := make([]*member, pool)
	for i := range ms {
		ms[i] = c.startScraperWith(scraper.Config{
			ID:           fmt.Sprintf("s%02d", i),
			LoadInterval: scraper.DefaultLoadInterval,
			// Every reload of the scrape manager relabels all of a
			// scraper's targets. While the catalog is claimed that is a
			// reload per DiscoveryReloadInterval over a growing set, which
			// 20 scrapers sharing two cores (and etcd and NATS) cannot keep
			// up with at the 100 ms default; at rest it makes no
			// difference to what a scraper holds.
			ReloadInterval: 5 * time.Second,
			// A scraper starved of CPU for longer than its lease allows
			// loses its session and everything it owns, as it should; the
			// pool then re-forms and the figures describe that, not the
			// steady state. 20 scrapers claiming 100k targets on a busy
			// two-core machine can be starved that long.
			Session: leases.SessionConfig{TTL: 10 * time.Second},
		}, c.sink)
	}
	// Settled: every slot followed by exactly its first and second choice.
	waitEvery(b, 2*time.Minute, time.Second, func() (bool, string) {
		slots := 0.0
		for _, m := range ms {
			slots += m.metric("allot_scraper_followed_slots")
		}
		return slots == 2*events.Slots, fmt.Sprintf("%v slots followed in all, want %d", slots, 2*events.Slots)
	})
	heap1, _ := memory()
	progress("%d scrapers settled", pool)
	b.ReportMetric((heap1-heap0)/float64(pool), "idle-heap-B/scraper")

	published := time.Now()
	const batch = 2000
	retries := 0
	for lo := 0; lo < catalog; lo += batch {
		ts := make([]events.Target, 0, batch)
		for i := lo; i < min(lo+batch, catalog); i++ {
			ts = append(ts, target(i, jobCfg.Hash))
		}
		// On a busy machine the acks of a batch can take longer than the
		// publisher waits; puts are idempotent, so publish it again, as
		// the discoverer does.
		for {
			err := c.pub.PutTargets(ctx, ts)
			if err == nil {
				break
			}
			retries++
			require.Less(b, retries, 20, "publishing the catalog: %v", err)
		}
	}
	publishTook := time.Since(published)
	// Claimed, and a scrape loop running for each.
	progress("published %d targets in %s", catalog, publishTook.Round(time.Millisecond))
	waitEvery(b, 20*time.Minute, 5*time.Second, func() (bool, string) {
		owned := 0.0
		for _, m := range ms {
			owned += m.metric("allot_scraper_targets")
		}
		progress("%s: %.0f of %d owned", time.Since(published).Round(time.Second), owned, catalog)
		if owned < float64(catalog) {
			return false, fmt.Sprintf("%.0f of %d owned", owned, catalog)
		}
		looping := 0
		for _, m := range ms {
			for _, ts := range m.s.Targets() {
				if ts.ScrapeURL != "" {
					looping++
				}
			}
		}
		return looping == catalog, fmt.Sprintf("%d of %d scrape loops running", looping, catalog)
	})
	claimTook := time.Since(published)
	claims, _, err := leases.ListClaims(ctx, c.cli, c.ks)
	require.NoError(b, err)
	require.Len(b, claims, catalog)
	heap2, stack2 := memory()
	goroutines2 := runtime.NumGoroutine()
	if path := os.Getenv("ALLOT_BENCH_HEAP_PROFILE"); path != "" {
		writeHeapProfile(b, path)
	}

	share := float64(catalog) / float64(pool)
	received := func(m *member) float64 {
		return m.metric("allot_events_received_total", "bucket", "targets", "op", "put")
	}
	var evs, bytes, known, owned, slots []float64
	for _, m := range ms {
		e := received(m)
		evs = append(evs, e)
		bytes = append(bytes, m.metric("allot_events_received_bytes_total", "bucket", "targets"))
		known = append(known, m.metric("allot_scraper_catalog_targets"))
		owned = append(owned, m.metric("allot_scraper_targets"))
		slots = append(slots, m.metric("allot_scraper_followed_slots"))
		require.LessOrEqual(b, e, 3*share, "scraper %s received %v target events of %d", m.s.ID(), e, catalog)
		require.LessOrEqual(b, known[len(known)-1], 3*share, "scraper %s knows %v targets of %d", m.s.ID(), known[len(known)-1], catalog)
		require.InDelta(b, share, owned[len(owned)-1], share/2, "scraper %s owns %v targets", m.s.ID(), owned[len(owned)-1])
	}

	// Changes spread over the catalog reach the scrapers following their
	// slots, twice each: first and second choice.
	before := slices.Clone(evs)
	changed := make([]events.Target, 0, changes)
	for i := 0; i < changes; i++ {
		changed = append(changed, target(i*(catalog/changes), "changed"))
	}
	require.NoError(b, c.pub.PutTargets(ctx, changed))
	tail := make([]float64, pool)
	waitEvery(b, time.Minute, 100*time.Millisecond, func() (bool, string) {
		sum := 0.0
		for i, m := range ms {
			tail[i] = received(m) - before[i]
			sum += tail[i]
		}
		return sum >= 2*changes, fmt.Sprintf("%v change events received in all, want %d", sum, 2*changes)
	})
	for i, m := range ms {
		require.LessOrEqual(b, tail[i], 3*float64(changes)/float64(pool), "scraper %s received %v of %d changes", m.s.ID(), tail[i], changes)
	}

	// What the scrapers hold: what stopping all of them at once frees (at
	// once, so that none claims what another lets go).
	for _, m := range ms {
		m.cancel()
	}
	for _, m := range ms {
		m.stop()
		m.s, m.reg = nil, nil
	}
	heap3, stack3 := memory()
	goroutines3 := runtime.NumGoroutine()

	b.ReportMetric(publishTook.Seconds(), "publish-s")
	b.ReportMetric(float64(retries), "publish-retries")
	b.ReportMetric(claimTook.Seconds(), "claimed-s")
	b.ReportMetric((heap2-heap3)/float64(catalog), "heap-B/target")
	b.ReportMetric((stack2-stack3)/float64(catalog), "stack-B/target")
	b.ReportMetric(float64(goroutines2-goroutines3)/float64(catalog), "goroutines/target")
	b.ReportMetric((heap2-heap3+stack2-stack3)/float64(pool)/1e6, "MB/scraper")
	b.ReportMetric(mean(evs), "events/scraper")
	b.ReportMetric(slices.Max(evs), "max-events/scraper")
	b.ReportMetric(slices.Max(evs)/float64(catalog), "max-events/catalog")
	b.ReportMetric(mean(bytes), "event-bytes/scraper")
	b.ReportMetric(mean(known), "known/scraper")
	b.ReportMetric(slices.Min(owned), "min-owned/scraper")
	b.ReportMetric(slices.Max(owned), "max-owned/scraper")
	b.ReportMetric(mean(tail), "change-events/scraper")
	b.ReportMetric(slices.Max(tail), "max-change-events/scraper")
	b.ReportMetric((heap2-heap1)/float64(catalog), "process-heap-B/target")
	b.Logf("%d targets, %d scrapers: published in %s, all claimed and looping after %s; per scraper: %.0f±%.0f target events (max %.0f, %.3f of the catalog), "+
		"%.0f known, %.0f..%.0f owned, %.0f followed slots; %.0f of %d changes each (max %.0f); scrapers hold %.0f B heap + %.0f B stack per target, %.1f MB each; "+
		"idle scraper %.0f KB; process heap grew %.0f B per target (etcd and NATS included); stacks %.0f→%.0f MB",
		catalog, pool, publishTook.Round(time.Millisecond), claimTook.Round(time.Millisecond), mean(evs), stddev(evs), slices.Max(evs),
		slices.Max(evs)/float64(catalog), mean(known), slices.Min(owned), slices.Max(owned), mean(slots), mean(tail), changes, slices.Max(tail),
		(heap2-heap3)/float64(catalog), (stack2-stack3)/float64(catalog), (heap2-heap3+stack2-stack3)/float64(pool)/1e6,
		(heap1-heap0)/float64(pool)/1e3, (heap2-heap1)/float64(catalog), stack0/1e6, stack2/1e6)
}

// progress tells whoever watches a long benchmark where it is.
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// memory returns the live heap and the goroutine stacks in use, after a
// full collection.
func memory() (heap, stack float64) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc), float64(ms.StackInuse)
}

// writeHeapProfile writes the live heap to path, to see what a target
// costs and where (go tool pprof -sample_index=inuse_space).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	require.NoError(b, err)
	defer f.Close()
	require.NoError(b, pprof.WriteHeapProfile(f))
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(b, err)
	addr := l.Addr().String()
	require.NoError(b, l.Close())
	return addr
}

// waitEvery is waitFor with its own polling period, for conditions that
// are costly to check.
func waitEvery(tb testing.TB, timeout, every time.Duration, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("not after %s: %s", timeout, why)
		}
		time.Sleep(every) // polling a costly condition
	}
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

func stddev(xs []float64) float64 {
	m, s := mean(xs), 0.0
	for _, x := range xs {
		s += (x - m) * (x - m)
	}
	if len(xs) < 2 {
		return 0
	}
	return math.Sqrt(s / float64(len(xs)-1))
}
