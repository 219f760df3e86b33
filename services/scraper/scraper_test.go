package scraper

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// TestPool runs three scrapers over 300 targets and checks that every
// target is scraped by exactly one of them, every interval.
func TestPool(t *testing.T) {
	f := newFixture(t)
	scrapers := []*running{f.start("a", poolTTL), f.start("b", poolTTL), f.start("c", poolTTL)}
	f.waitMembers("a", "b", "c")
	targets := f.putTargets("", 300)
	all := ids(targets)

	warm := time.Now()
	waitScraped(t, f.sink, all, 2)
	t.Logf("warm-up: all 300 targets scraped twice after %s", time.Since(warm).Round(time.Millisecond))

	t.Run("every target by one scraper every interval", func(t *testing.T) {
		calmly(t, scrapers, "steady state", func() func() {
			from := time.Now()
			observe(5 * testInterval)
			to := time.Now().Add(-testInterval) // leave time for the last commits
			claims := f.claims()
			owned := map[string]map[string]TargetStatus{}
			for _, r := range scrapers {
				owned[r.s.ID()] = r.owned()
			}
			return func() {
				owner := checkEveryInterval(t, f.sink, all, from, to)
				// Scrapers, claims and status agree, and no target is
				// owned twice.
				seen := map[string]string{}
				per := map[string]int{}
				for id, sts := range owned {
					for tid, st := range sts {
						require.NotContains(t, seen, tid, "target %s owned by %s and %s", tid, seen[tid], id)
						seen[tid] = id
						require.Equal(t, id, claims[tid], "claim of %s", tid)
						require.Equal(t, id, owner[tid], "samples of %s", tid)
						require.Equal(t, "up", st.Health, "target %s: %s", tid, st.LastError)
						require.Equal(t, testJob, st.ScrapePool)
						// requests_total, temperature, up and the four
						// scrape_* series; dropped_metric is dropped by
						// metric_relabel_configs.
						require.Equal(t, 7, st.Series)
						require.Equal(t, id, st.Scraper)
						require.NotEmpty(t, st.DiscoveredLabels["__address__"])
						require.NotContains(t, st.DiscoveredLabels, phaseLabel, "bookkeeping labels are not discovered")
						require.NotContains(t, st.DiscoveredLabels, targetIDLabel, "bookkeeping labels are not discovered")
						per[id]++
					}
				}
				require.ElementsMatch(t, all, slices.Collect(maps.Keys(seen)))
				t.Logf("targets per scraper: %v", per)
				for _, r := range scrapers {
					require.Equal(t, float64(per[r.s.ID()]), r.counter("allot_scraper_targets"))
				}
				// Load reports follow ownership.
				require.Eventually(t, func() bool {
					loads, err := leases.ListLoads(context.Background(), f.cli, f.ks)
					if err != nil || len(loads) != 3 {
						return false
					}
					for id, l := range loads {
						if l.Targets != per[id] || l.Series != int64(7*per[id]) || len(l.PerTarget) != per[id] || l.SamplesPerSecond != float64(7*per[id]) {
							return false
						}
					}
					return true
				}, 10*time.Second, 100*time.Millisecond, "load reports")
			}
		})
		// metric_relabel_configs stayed, relabel_configs did not.
		require.True(t, f.sink.seen("temperature"))
		require.False(t, f.sink.seen("dropped_metric"))
	})

	t.Run("never two scrapers for one target", func(t *testing.T) { checkExclusive(t, f.sink) })
}

// TestCatalog checks that bad input is counted and disturbs nothing, and
// that catalog changes take effect within a second. It runs a smaller pool
// than TestPool, so that its latencies are the scraper's and not those of a
// test process starved by its own 300 scrape loops.
func TestCatalog(t *testing.T) {
	f := newFixture(t)
	scrapers := []*running{f.start("a", poolTTL), f.start("b", poolTTL), f.start("c", poolTTL)}
	f.waitMembers("a", "b", "c")
	targets := f.putTargets("", 60)
	all := ids(targets)
	waitScraped(t, f.sink, all, 2)

	t.Run("bad input is counted and disturbs nothing", func(t *testing.T) {
		kv, err := f.js.KeyValue(context.Background(), "allot_targets")
		require.NoError(t, err)
		invalidBefore := 0.0
		for _, r := range scrapers {
			invalidBefore += r.counter("allot_events_invalid_total")
		}
		// A value that is not JSON under a well-formed key, a key that is
		// not a target key, and a job whose config Prometheus rejects.
		_, err = kv.Put(context.Background(), events.TargetKey(targets[0].ID), []byte("{garbage"))
		require.NoError(t, err)
		_, err = kv.Put(context.Background(), "s0001.nope", []byte(`{"v":1}`))
		require.NoError(t, err)
		require.NoError(t, f.pub.PutJob(context.Background(), events.NewJob("broken", "scrape_interval: 1s\nscrape_timeout: 9s\n")))
		// Targets that answer garbage or too slowly.
		garbage, slow := f.target("/garbage/metrics"), f.target("/slow/metrics")
		require.NoError(t, f.pub.PutTargets(context.Background(), []events.Target{garbage, slow}))

		require.Eventually(t, func() bool {
			n := 0.0
			for _, r := range scrapers {
				n += r.counter("allot_events_invalid_total")
			}
			return n >= invalidBefore+2
		}, 20*time.Second, 50*time.Millisecond, "invalid events counted")
		require.Eventually(t, func() bool {
			n := 0.0
			for _, r := range scrapers {
				n += r.counter("allot_scraper_invalid_jobs_total")
			}
			return n == 3 // every scraper reads every job
		}, 20*time.Second, 50*time.Millisecond, "invalid job counted")

		for _, bad := range []events.Target{garbage, slow} {
			require.Eventually(t, func() bool {
				for _, r := range scrapers {
					if st, ok := r.owned()[bad.ID]; ok && st.Health == "down" && st.LastError != "" {
						t.Logf("%s: health %s, last error %q", bad.Labels["__metrics_path__"], st.Health, st.LastError)
						return true
					}
				}
				return false
			}, 20*time.Second, 50*time.Millisecond, "target %s down with an error", bad.Labels["__metrics_path__"])
			got := false
			for _, b := range f.sink.target(bad.ID) {
				require.Equal(t, 0.0, b.up, "up of %s", bad.Labels["__metrics_path__"])
				got = true
			}
			require.True(t, got, "up=0 forwarded for %s", bad.Labels["__metrics_path__"])
		}

		// The target whose event was garbled is still known and scraped,
		// as is everything else.
		calmly(t, scrapers, "after bad input", func() func() {
			from := time.Now()
			observe(3 * testInterval)
			to := time.Now().Add(-testInterval)
			return func() { checkEveryInterval(t, f.sink, all, from, to) }
		})
	})

	t.Run("catalog changes take effect within a second", func(t *testing.T) {
		attempt := 0
		calmly(t, scrapers, "new target", func() func() {
			attempt++
			added := f.target(fmt.Sprintf("/t/added-%d/metrics", attempt))
			at := time.Now()
			require.NoError(t, f.pub.PutTargets(context.Background(), []events.Target{added}))
			var owner *running
			require.Eventually(t, func() bool {
				for _, r := range scrapers {
					if r.s.scraping(testJob, added.ID) {
						owner = r
						return true
					}
				}
				return false
			}, 20*time.Second, 10*time.Millisecond)
			loopAfter := time.Since(at)
			require.Eventually(t, func() bool {
				_, ok := firstAfter(f.sink, added.ID, at, owner.s.ID())
				return ok
			}, 20*time.Second, 10*time.Millisecond)
			first, _ := firstAfter(f.sink, added.ID, at, owner.s.ID())
			return func() {
				t.Logf("added target: scrape loop running after %s, first sample after %s", loopAfter.Round(time.Millisecond), first.at.Sub(at).Round(time.Millisecond))
				require.Less(t, loopAfter, time.Second, "scrape loop of a new target")
				// The first scrape waits for the target's slot in the interval.
				require.Less(t, first.at.Sub(at), time.Second+testInterval, "first sample of a new target")
			}
		})

		attempt = 1
		calmly(t, scrapers, "deleted target", func() func() {
			attempt++
			gone := targets[attempt]
			var owner *running
			for _, r := range scrapers {
				if _, ok := r.owned()[gone.ID]; ok {
					owner = r
				}
			}
			require.NotNil(t, owner)
			at := time.Now()
			require.NoError(t, f.pub.DeleteTargets(context.Background(), []string{gone.ID}))
			require.Eventually(t, func() bool {
				_, claimed := f.claims()[gone.ID]
				return !claimed && !owner.s.scraping(testJob, gone.ID)
			}, 20*time.Second, 10*time.Millisecond)
			stopped := time.Since(at)
			// It left discovery: its series get end-of-run staleness
			// markers, and nobody scrapes it any more.
			require.Eventually(t, func() bool {
				for _, b := range f.sink.target(gone.ID) {
					if b.stale && b.scraper == owner.s.ID() {
						return true
					}
				}
				return false
			}, 20*time.Second, 50*time.Millisecond, "staleness markers of a deleted target")
			return func() {
				t.Logf("deleted target: released and scrape loop stopped after %s", stopped.Round(time.Millisecond))
				require.Less(t, stopped, time.Second, "stop of a deleted target")
				for _, b := range f.sink.target(gone.ID) {
					require.False(t, !b.stale && b.at.After(at.Add(time.Second)), "sample of a deleted target %s after the delete", b.at.Sub(at))
				}
			}
		})
	})

	t.Run("never two scrapers for one target", func(t *testing.T) { checkExclusive(t, f.sink) })
}

// disturbances counts the sessions opened and the targets lost in the
// pool; if it changes, a scraper lost its lease.
func disturbances(rs []*running) float64 {
	n := 0.0
	for _, r := range rs {
		n += r.counter("allot_scraper_sessions_total") + r.counter("allot_scraper_targets_lost_total")
	}
	return n
}

// calmly runs measure until a run passes without any scraper losing its
// lease, at most three times, then runs the assertions measure returned.
// Timing is asserted only over such calm runs: a test process starved of
// CPU for seconds (-race on a busy machine) loses leases and then, rightly,
// stops scraping. Correctness is asserted regardless (see "never two
// scrapers for one target").
func calmly(t *testing.T, rs []*running, what string, measure func() func()) {
	t.Helper()
	for range 3 {
		before := disturbances(rs)
		check := measure()
		if disturbances(rs) == before {
			check()
			return
		}
		t.Logf("%s: a scraper lost its lease while measuring (CPU starvation); measuring again", what)
		settle(t, rs)
	}
	t.Fatalf("%s: a scraper lost its lease in each of 3 measurements; the machine is too busy for this test", what)
}

// settle waits until every target a scraper owns has been scraped since a
// lost lease's targets were taken over: the next measurement starts from a
// pool that is whole again.
func settle(t *testing.T, rs []*running) {
	t.Helper()
	since := time.Now()
	require.Eventually(t, func() bool {
		before := disturbances(rs)
		n := 0
		for _, r := range rs {
			for id := range r.owned() {
				if _, ok := firstAfter(r.f.sink, id, since, r.s.ID()); !ok {
					return false
				}
				n++
			}
		}
		// A lost lease's claims live on the server for up to one TTL and
		// are then reclaimed by the first choice at once or by the second
		// after the grace: before that its targets are in nobody's owned
		// set, and a measurement would find them unscraped.
		return n > 0 && disturbances(rs) == before && time.Since(since) > 2*poolTTL+DefaultClaimGrace
	}, 90*time.Second, 100*time.Millisecond, "pool whole again")
}

// checkExclusive asserts that no two scrapers ever forwarded samples of one
// target for the same interval, whatever happened (leases lost to a starved
// CPU included): the gate stops a scraper at its local deadline, before its
// claims can expire and be taken over.
func checkExclusive(t *testing.T, sink *recorder) {
	t.Helper()
	for id, bs := range sink.byTarget() {
		slices.SortFunc(bs, func(x, y batch) int { return int(x.ts - y.ts) })
		for i := 1; i < len(bs); i++ {
			if bs[i].scraper != bs[i-1].scraper {
				require.GreaterOrEqual(t, bs[i].ts-bs[i-1].ts, testInterval.Milliseconds()/2,
					"target %s: %s and %s scraped it for the same interval", id, bs[i-1].scraper, bs[i].scraper)
			}
		}
	}
}
