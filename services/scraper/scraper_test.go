package scraper

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/events"
	"github.com/allot-dev/allot/pkg/leases"
)

// TestPool runs three scrapers over 300 targets and checks that every
// target is scraped by exactly one of them, every interval; then that bad
// input disturbs nothing, and that catalog changes take effect at once.
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
		from := time.Now()
		observe(5 * testInterval)
		to := time.Now().Add(-testInterval) // leave time for the last commits
		owner := checkEveryInterval(t, f.sink, all, from, to)

		// Scrapers, claims and status agree, and no target is owned twice.
		claims := f.claims()
		seen := map[string]string{}
		per := map[string]int{}
		for _, r := range scrapers {
			for id, st := range r.owned() {
				require.NotContains(t, seen, id, "target %s owned by %s and %s", id, seen[id], r.s.ID())
				seen[id] = r.s.ID()
				require.Equal(t, r.s.ID(), claims[id], "claim of %s", id)
				require.Equal(t, r.s.ID(), owner[id], "samples of %s", id)
				require.Equal(t, "up", st.Health, "target %s: %s", id, st.LastError)
				require.Equal(t, testJob, st.ScrapePool)
				// requests_total, temperature and the five scrape_* and up
				// series; dropped_metric is dropped by metric_relabel_configs.
				require.Equal(t, 7, st.Series)
				require.Equal(t, r.s.ID(), st.Scraper)
				per[r.s.ID()]++
			}
		}
		require.ElementsMatch(t, all, slices.Collect(maps.Keys(seen)))
		t.Logf("targets per scraper: %v", per)
		for _, r := range scrapers {
			require.Equal(t, float64(per[r.s.ID()]), r.counter("allot_scraper_targets"))
		}

		// metric_relabel_configs stayed, relabel_configs did not.
		require.True(t, f.sink.seen("temperature"))
		require.False(t, f.sink.seen("dropped_metric"))

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
	})

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
		}, 10*time.Second, 50*time.Millisecond, "invalid events counted")
		require.Eventually(t, func() bool {
			n := 0.0
			for _, r := range scrapers {
				n += r.counter("allot_scraper_invalid_jobs_total")
			}
			return n == 3 // every scraper reads every job
		}, 10*time.Second, 50*time.Millisecond, "invalid job counted")

		for _, bad := range []events.Target{garbage, slow} {
			require.Eventually(t, func() bool {
				for _, r := range scrapers {
					if st, ok := r.owned()[bad.ID]; ok && st.Health == "down" && st.LastError != "" {
						t.Logf("%s: health %s, last error %q", bad.Labels["__metrics_path__"], st.Health, st.LastError)
						return true
					}
				}
				return false
			}, 15*time.Second, 50*time.Millisecond, "target %s down with an error", bad.Labels["__metrics_path__"])
			got := false
			for _, b := range f.sink.target(bad.ID) {
				require.Equal(t, 0.0, b.up, "up of %s", bad.Labels["__metrics_path__"])
				got = true
			}
			require.True(t, got, "up=0 forwarded for %s", bad.Labels["__metrics_path__"])
		}

		// The target whose event was garbled is still known and scraped,
		// as is everything else.
		from := time.Now()
		observe(3 * testInterval)
		checkEveryInterval(t, f.sink, all, from, time.Now().Add(-testInterval))
	})

	t.Run("catalog changes take effect within a second", func(t *testing.T) {
		added := f.target("/t/added/metrics")
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
		}, 10*time.Second, 20*time.Millisecond)
		loopAfter := time.Since(at)
		require.Eventually(t, func() bool {
			_, ok := firstAfter(f.sink, added.ID, at, owner.s.ID())
			return ok
		}, 10*time.Second, 20*time.Millisecond)
		first, _ := firstAfter(f.sink, added.ID, at, owner.s.ID())
		t.Logf("added target: scrape loop running after %s, first sample after %s", loopAfter.Round(time.Millisecond), first.at.Sub(at).Round(time.Millisecond))
		require.Less(t, loopAfter, time.Second, "scrape loop of a new target")
		// The first scrape waits for the target's phase in the interval.
		require.Less(t, first.at.Sub(at), time.Second+testInterval, "first sample of a new target")

		gone := targets[1]
		var goneOwner *running
		for _, r := range scrapers {
			if _, ok := r.owned()[gone.ID]; ok {
				goneOwner = r
			}
		}
		require.NotNil(t, goneOwner)
		at = time.Now()
		require.NoError(t, f.pub.DeleteTargets(context.Background(), []string{gone.ID}))
		require.Eventually(t, func() bool {
			_, claimed := f.claims()[gone.ID]
			return !claimed && !goneOwner.s.scraping(testJob, gone.ID)
		}, 10*time.Second, 20*time.Millisecond)
		stopped := time.Since(at)
		t.Logf("deleted target: released and scrape loop stopped after %s", stopped.Round(time.Millisecond))
		require.Less(t, stopped, time.Second, "stop of a deleted target")
		// It left discovery: its series get end-of-run staleness markers,
		// and nobody scrapes it any more.
		require.Eventually(t, func() bool {
			for _, b := range f.sink.target(gone.ID) {
				if b.stale && b.scraper == goneOwner.s.ID() {
					return true
				}
			}
			return false
		}, 10*time.Second, 50*time.Millisecond, "staleness markers of a deleted target")
		for _, b := range f.sink.target(gone.ID) {
			require.False(t, !b.stale && b.at.After(at.Add(time.Second)), "sample of a deleted target %s after the delete", b.at.Sub(at))
		}
	})
}
