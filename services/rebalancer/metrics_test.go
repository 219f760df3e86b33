package rebalancer

import (
	"context"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/placement"
)

// The exported metrics agree with what happened in etcd after a rebalance
// and a drain: allot_moves_total{outcome="completed"} counts, by reason, the
// moves that ended by a takeover, allot_move_duration_seconds observed each
// of them once, and allot_recommended_scrapers is placement.Recommend's
// answer for the cluster's series.
func TestMoveMetrics(t *testing.T) {
	ctx := context.Background()
	c := newTestCluster(t, 60, 12)
	a := c.startScraper("a", simConfig{Seed: 1})
	b := c.startScraper("b", simConfig{Seed: 2, MaxPrepare: 50 * time.Millisecond})
	d := c.startScraper("c", simConfig{Seed: 3, MaxPrepare: 50 * time.Millisecond})
	scrapers := []*simScraper{a, b, d}
	require.NoError(t, a.claim(ctx, c.targets))
	cli := c.client()
	w := c.watchMoveKeys()

	// The load the scrapers report is the series of the targets they own;
	// a scraper's share is set so that the recommendation (5) differs
	// from the number of scrapers (3), which is the fallback.
	var total int64
	pc := placement.Cluster{}
	for _, sc := range scrapers {
		pc.Members = append(pc.Members, placement.Member{ID: sc.id, Weight: 1})
	}
	for _, id := range c.targets {
		total += c.series[id]
		pc.Targets = append(pc.Targets, placement.Target{ID: id, Series: float64(c.series[id])})
	}
	cfg := c.testConfig("r1")
	cfg.SeriesPerScraper = float64(total) / 4.5
	wantRecommended := placement.Recommend(pc, cfg.SeriesPerScraper)
	require.Equal(t, 5, wantRecommended)

	reg := prometheus.NewRegistry()
	r, _, _ := c.runRebalancer(cfg, reg)
	settled := func(ratioOf ...*simScraper) func() error {
		return func() error {
			claims := c.claims(ctx, cli)
			if ratio := c.seriesRatio(claims, ratioOf...); ratio > 1+DefaultTolerance+DefaultHysteresis {
				return fmt.Errorf("ratio %.3f, owned %v", ratio, countOwned(claims))
			}
			if st := r.Status(); st.Pending+st.Queued > 0 {
				return fmt.Errorf("%d moves pending, %d queued", st.Pending, st.Queued)
			}
			return checkConsistent(claims, c.targets, scrapers...)
		}
	}
	waitFor(t, 30*time.Second, "balanced", settled(a, b, d))
	require.NoError(t, r.Drain(ctx, "c"))
	waitFor(t, 30*time.Second, "c drained", func() error {
		if n := countOwned(c.claims(ctx, cli))["c"]; n != 0 {
			return fmt.Errorf("c owns %d", n)
		}
		return settled(a, b)()
	})

	// Counters are incremented once the rebalancer has resolved a move's
	// end, which may trail etcd; compare until they agree.
	var truth moveCounts
	waitFor(t, 10*time.Second, "metrics match etcd", func() error {
		w.Sync(t)
		truth = countMoves(t, w, r.cfg.MoveTimeout)
		got, err := gatherMoveMetrics(reg)
		if err != nil {
			return err
		}
		var completed int
		for _, n := range truth.completed {
			completed += n
		}
		if !maps.Equal(got.completed, truth.completed) {
			return fmt.Errorf("allot_moves_total{outcome=%q} by reason: %v, etcd saw %v", OutcomeCompleted, got.completed, truth.completed)
		}
		if got.durations != uint64(completed) {
			return fmt.Errorf("allot_move_duration_seconds count %d, %d moves completed", got.durations, completed)
		}
		if got.otherOutcomes != truth.aborted {
			return fmt.Errorf("allot_moves_total other outcomes: %d (%v), etcd saw %d aborted", got.otherOutcomes, got.byOutcome, truth.aborted)
		}
		if got.recommended != float64(wantRecommended) {
			return fmt.Errorf("allot_recommended_scrapers %v, want %d", got.recommended, wantRecommended)
		}
		if st := r.Status(); st.Recommended != wantRecommended {
			return fmt.Errorf("status recommends %d, want %d", st.Recommended, wantRecommended)
		}
		return nil
	})
	t.Logf("completed moves by reason: %v; %d aborted", truth.completed, truth.aborted)
	// The run exercised more than one reason: the balance onto the new
	// scrapers and the drain.
	require.Positive(t, truth.completed[string(placement.ReasonDrain)], "no drain move")
	require.Greater(t, len(truth.completed), 1, "only one reason")
}

// moveMetrics is what the registry exports about moves.
type moveMetrics struct {
	// completed: allot_moves_total{outcome="completed"} by reason;
	// otherOutcomes sums the rest, byOutcome all of it by outcome.
	completed     map[string]int
	otherOutcomes int
	byOutcome     map[string]int
	durations     uint64 // allot_move_duration_seconds_count
	recommended   float64
}

func gatherMoveMetrics(g prometheus.Gatherer) (moveMetrics, error) {
	mfs, err := g.Gather()
	if err != nil {
		return moveMetrics{}, fmt.Errorf("gather: %w", err)
	}
	out := moveMetrics{completed: map[string]int{}, byOutcome: map[string]int{}}
	seen := map[string]bool{}
	for _, mf := range mfs {
		seen[mf.GetName()] = true
		switch mf.GetName() {
		case "allot_moves_total":
			for _, m := range mf.GetMetric() {
				labels := labelMap(m)
				n := int(m.GetCounter().GetValue())
				out.byOutcome[labels["outcome"]] += n
				if labels["outcome"] == OutcomeCompleted {
					out.completed[labels["reason"]] += n
				} else {
					out.otherOutcomes += n
				}
			}
		case "allot_move_duration_seconds":
			out.durations = mf.GetMetric()[0].GetHistogram().GetSampleCount()
		case "allot_recommended_scrapers":
			out.recommended = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	for _, name := range []string{"allot_moves_total", "allot_move_duration_seconds", "allot_recommended_scrapers"} {
		if !seen[name] {
			return moveMetrics{}, fmt.Errorf("%s not exported", name)
		}
	}
	return out, nil
}

func labelMap(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}
